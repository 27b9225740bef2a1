"""A running lab: two Xen hosts under QEMU, their switch, the correspondent.

Everything the lab starts is recorded in ``RUN_DIR/state.json`` before it is started, so
:meth:`Lab.down` can clean up after a crash of the process that brought the lab up.
QEMU runs inside the lab's *switch* namespace: its link tap appears there (joined to a
bridge with the other host's tap and the correspondent's veth), and its user-net ssh
forward listens on that namespace's 127.0.0.1, which nothing outside the lab can reach.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from xenwam.errors import CommandError, ConfigError, LabError, XenwamError
from xenwam.lab import config as cfg
from xenwam.lab.build import (
    Artifacts,
    newc_archive,
    package_piece,
    precompile_tree,
    with_parents,
)
from xenwam.lab.config import HOSTS, LabConfig, Layout, Shaping
from xenwam.lab.qemu import HostFiles, host_argv, overlay_argv
from xenwam.lab.xl import (
    GUEST_DIR,
    RECEIVE_PORT,
    TIMED_MIGRATE,
    ConsoleExec,
    GapReport,
    GuestSpec,
    Tick,
    XlDomain,
    clock_offset,
    console_exec_script,
    first_after,
    guest_mac,
    longest_gap,
    migrate_argv,
    parse_console_exec,
    parse_ping,
    parse_ticks,
    parse_timed_migrate,
    parse_xl_list,
    paused_seconds,
    rebounds,
    receive_listener_argv,
)
from xenwam.netns import Netns
from xenwam.runner import (
    DEFAULT_TIMEOUT,
    CommandResult,
    Process,
    Runner,
    default_runner,
    start_background,
)
from xenwam_guest import layout as agent_layout

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
#: How long both hosts may take from QEMU start to answering ssh.
BOOT_TIMEOUT = 300.0
SWITCH_BRIDGE = "br0"
#: The correspondent's hipd: its identity, socket, log, pidfile and TUN device.
CORR_HIP_DIR = "corr-hip"
CORR_HIPD_SOCKET = "corr-hipd.sock"
CORR_HIPD_PID = "corr-hipd.pid"
CORR_HIP_TUN = "xwlabhip0"
HIP_MODULE = "hip.daemon"
RECORDS_MODULE = "xenwam.lab.records"
#: The TCP port the records echo server listens on in hip guests.
RECORDS_PORT = 7001
#: What a --hip guest starts at boot (guest-init.sh runs /etc/xenwam-lab/services): the
#: xenwam guest agent, hipd with the kernel data plane, the records echo server.
GUEST_SERVICES = """#!/bin/sh
export PATH=/usr/bin:/bin PYTHONPATH=/opt/xenwam PYTHONDONTWRITEBYTECODE=1
mkdir -p /var/log /var/lib/hip
python3 -m xenwam_guest.agent -v --interface eth0{agent} > /var/log/xenwam-agent.log 2>&1 &
python3 -m hip.daemon -v --config-dir /etc/hip --socket /run/hipd.sock \\
    --data-plane kernel --state-dir /var/lib/hip > /var/log/hipd.log 2>&1 &
python3 /opt/xenwam/xwrecords.py serve --port {port} > /var/log/xwrecords.log 2>&1 &
"""


@dataclass
class GuestRecord:
    """A guest the lab created, and where it is now."""

    name: str
    host: str
    address: str
    number: int
    #: The guest's HIT when it runs hipd and the xenwam guest agent (``--hip``).
    hit: str | None = None


@dataclass
class LabState:
    """What ``state.json`` holds."""

    run_dir: str
    artifacts: str
    layout: str
    rtt_ms: float
    rate_kbit: int
    loss_percent: float
    ssh_port_base: int
    source_dir: str | None
    status: str = "starting"
    started_at: float = 0.0
    boot_seconds: float | None = None
    guests: list[GuestRecord] = field(default_factory=list)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        """Parse ``state.json``."""
        doc = json.loads(text)
        doc["guests"] = [GuestRecord(**g) for g in doc.get("guests", [])]
        return cls(**doc)

    def config(self) -> LabConfig:
        """The :class:`LabConfig` this state was started with."""
        return LabConfig(
            run_dir=Path(self.run_dir), layout=Layout(self.layout),
            shaping=Shaping(self.rtt_ms, self.rate_kbit, self.loss_percent),
            ssh_port_base=self.ssh_port_base,
            source_dir=Path(self.source_dir) if self.source_dir else None,
        )


@dataclass(frozen=True)
class HostStatus:
    """One host as ``xenwam lab status`` reports it."""

    host: str
    qemu_pid: int | None
    running: bool
    reachable: bool
    domains: list[XlDomain]


@dataclass(frozen=True)
class MigrationReport:
    """What ``xenwam lab migrate-baseline`` measured."""

    domain: str
    source: str
    destination: str
    layout: str
    transport: str
    total_seconds: float
    ping_replies: int
    longest_gap_seconds: float | None
    answered_after: bool
    running_on_destination: bool
    ticks_before: int
    ticks_after: int
    #: From xl's suspend request to the destination's unpause, on the source's clock
    #: (see :func:`xenwam.lab.xl.paused_seconds`); None if either was not seen.
    paused_seconds: float | None = None


@dataclass(frozen=True)
class XenwamMigration:
    """What ``xenwam migrate`` reported in the lab, and what the correspondent saw."""

    domain: str
    source: str
    destination: str
    migration_id: str
    outcome: str
    report: dict[str, Any]
    events: int
    ping_replies: int
    longest_gap_seconds: float | None
    answered_at_new_address: bool
    renumber_seconds: float | None
    #: The client's silence: its last reply from the old address before the guest was
    #: suspended to its first reply from the new address (None if it never answered).
    new_address: str
    client_silence_seconds: float | None = None
    #: The records client's summary (a --hip guest): the TCP connection over the
    #: guest's HIT that the migration must not break (see xenwam/lab/records.py).
    connection: dict[str, Any] | None = None
    #: What the guest agent wrote back (data/xenwam/network), raw.
    agent_report: dict[str, str] | None = None
    #: When the destination's ``xl unpause`` returned, on this host's clock (the
    #: orchestrator's journal, shifted by the source dom0's measured clock offset), and
    #: the error bound of that shift.
    unpaused_at: float | None = None
    clock_error_seconds: float | None = None
    #: From unpause to the correspondent's hipd completing the rebinding (the guest's
    #: locator UPDATE acknowledged, return routability done), for a ``--hip`` guest.
    update_acked_seconds: float | None = None
    #: From unpause to the first echo on the records connection after its silence.
    first_record_seconds: float | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child of ours that exited stays a zombie (and answers signal 0) until it is
    # reaped: reap it here, and count any other zombie as dead too.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return not fields or fields[0] != "Z"


def _argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _has_arg_pair(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in itertools.pairwise(argv))


def _pidfile_pid(pidfile: Path) -> int | None:
    """The pid QEMU wrote into ``pidfile``; None while absent, empty or partial."""
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _is_our_qemu(pid: int, pidfile: Path) -> bool:
    """A pid can be reused after a crash: trust it only if it is a live QEMU started
    with exactly this pidfile."""
    argv = _argv_of(pid)
    return (_pid_alive(pid) and bool(argv) and "qemu" in Path(argv[0]).name
            and _has_arg_pair(argv, "-pidfile", str(pidfile)))


@dataclass
class Lab:
    """Handle on the lab in ``run_dir`` (default: ``$XENWAM_LAB_RUN``)."""

    run_dir: Path = field(default_factory=cfg.default_run_dir)
    runner: Runner = field(default=default_runner, repr=False)
    progress: Callable[[str], None] = field(default=lambda msg: log.info("%s", msg),
                                            repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    # ------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        """Where the state file lives."""
        return self.run_dir / STATE_FILE

    def load_state(self) -> LabState | None:
        """The recorded state, or None if the lab was never brought up here."""
        try:
            return LabState.from_json(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise LabError(
                f"{self.state_path} is unreadable ({exc}); run `xenwam lab down` to clean up"
            ) from exc

    def _save(self, state: LabState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        tmp.replace(self.state_path)

    def _require_up(self) -> LabState:
        state = self.load_state()
        if state is None or state.status != "up":
            raise LabError(f"no lab is up in {self.run_dir}; run `xenwam lab up` first")
        return state

    def qemu_pid(self, host: str) -> int | None:
        """The pid of ``host``'s QEMU if it is running and really ours."""
        pidfile = HostFiles.for_host(self.run_dir, host).pidfile
        pid = _pidfile_pid(pidfile)
        return pid if pid is not None and _is_our_qemu(pid, pidfile) else None

    # ------------------------------------------------------------ commands in dom0

    def ssh_argv(self, host: str, remote: Sequence[str] | None = None, *,
                 tty: bool = False, connect_timeout: int = 30) -> list[str]:
        """argv running ``remote`` (an argv list) in ``host``'s dom0 over the control path."""
        state = self.load_state()
        if state is None or state.status == "down":
            raise LabError(f"no lab is up in {self.run_dir}; run `xenwam lab up` first")
        config = state.config()
        arts = Artifacts(Path(state.artifacts))
        argv = [
            "ip", "netns", "exec", config.switch_netns,
            "ssh", "-i", str(arts.ssh_key), "-p", str(config.ssh_port(host)),
            "-o", "HostKeyAlias=xenwam-lab",
            "-o", f"UserKnownHostsFile={arts.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=10",
        ]
        control = self._ssh_control_path(host)
        if control is not None:
            # One connection per dom0, shared by every command: a handshake costs an
            # emulated dom0 CPU seconds, and a dom0 busy with a migration was too slow to
            # answer the banner of each new one.
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
                     "-o", "ControlPersist=120"]
        argv.append("-t" if tty else "-T")
        argv.append("root@127.0.0.1")
        if remote:
            argv += ["--", shlex.join(remote)]
        return argv

    def _ssh_control_path(self, host: str) -> Path | None:
        """The shared ssh connection's socket for ``host``, None if the run directory's
        path is too long for a socket address."""
        path = self.run_dir.resolve() / f"ssh-{host}.ctl"
        return path if len(str(path)) < 100 else None

    def _close_ssh(self, host: str) -> bool:
        """Ask ``host``'s shared ssh connection to exit; True if one was there."""
        control = self._ssh_control_path(host)
        if control is None or not control.exists():
            return False
        self.runner.run(["ssh", "-o", f"ControlPath={control}", "-O", "exit",
                         "root@127.0.0.1"], check=False, timeout=15)
        control.unlink(missing_ok=True)
        return True

    def clock_offset(self, host: str) -> tuple[float, float]:
        """``host``'s dom0 clock minus this host's, and the error bound (half the round
        trip of the reading); dom0 clocks under TCG drift from the host's."""
        before = time.time()
        remote = float(self.exec(host, ["date", "+%s.%N"], timeout=60).stdout)
        return clock_offset(before, remote, time.time())

    def rebind_timeline(self, name: str, unpaused_at: float,
                        connection: dict[str, Any] | None) -> tuple[float | None, float | None]:
        """For ``--hip`` guest ``name`` unpaused at ``unpaused_at`` (this host's clock):
        seconds to the correspondent's hipd completing the rebinding, and to the first
        echo on the records ``connection`` (a records summary) after its silence."""
        record = self.guest(name)
        acked = None
        log_path = self.run_dir / "corr-hipd.log"
        if record.hit is not None and log_path.exists():
            acked = first_after(rebounds(log_path.read_text(errors="replace"), record.hit),
                                unpaused_at)
        first = None
        if connection is not None:
            first = first_after([end for _start, end in connection.get("gaps", [])],
                                unpaused_at)
        return acked, first

    def exec(self, host: str, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
             check: bool = True, input: str | None = None) -> CommandResult:
        """Run ``argv`` in ``host``'s dom0 and wait for it."""
        cfg.host_index(host)
        return self.runner.run(self.ssh_argv(host, argv), timeout=timeout, check=check,
                               input=input)

    def correspondent(self) -> Netns:
        """The correspondent's namespace (run commands in it with ``.run([...])``)."""
        state = self._require_up()
        return Netns(state.config().correspondent_netns, self.runner)

    # ------------------------------------------------------------ up

    def up(self, config: LabConfig, artifacts: Artifacts) -> LabState:
        """Boot both hosts, join them, shape the link; return the state once both answer."""
        if config.run_dir.resolve() != self.run_dir.resolve():
            raise ConfigError(f"config run_dir {config.run_dir} is not this lab's {self.run_dir}")
        if os.geteuid() != 0:
            raise LabError("`xenwam lab up` needs root (network namespaces, taps); run as root")
        old = self.load_state()
        if old is not None and any(self.qemu_pid(h) for h in HOSTS):
            raise LabError(f"a lab is already running in {self.run_dir}; "
                           "run `xenwam lab down` first (or set XENWAM_LAB_RUN elsewhere)")
        if old is not None:
            self.down()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = LabState(
            run_dir=str(config.run_dir), artifacts=str(artifacts.directory),
            layout=config.layout.value, rtt_ms=config.shaping.rtt_ms,
            rate_kbit=config.shaping.rate_kbit, loss_percent=config.shaping.loss_percent,
            ssh_port_base=config.ssh_port_base,
            source_dir=str(config.source_dir) if config.source_dir else None,
            started_at=time.time(),
        )
        self._save(state)
        try:
            self._start(config, artifacts)
            boot_start = time.monotonic()
            self._wait_for_hosts(config)
            state.boot_seconds = round(time.monotonic() - boot_start, 1)
            self._configure_hosts(config)
        except BaseException:
            self.progress("lab start failed; cleaning up")
            self.down()
            raise
        state.status = "up"
        self._save(state)
        self.progress(f"lab up in {state.boot_seconds} s ({config.layout.value} layout)")
        return state

    def _start(self, config: LabConfig, artifacts: Artifacts) -> None:
        sw = Netns(config.switch_netns, self.runner)
        corr = Netns(config.correspondent_netns, self.runner)
        self.progress("creating the lab's switch and correspondent namespaces")
        for ns in (sw, corr):
            self.runner.run(["ip", "netns", "add", ns.name])
            ns.ip("link", "set", "lo", "up")
        sw.ip("link", "add", SWITCH_BRIDGE, "type", "bridge")
        sw.ip("link", "set", SWITCH_BRIDGE, "up")
        veth_sw = f"xw{config.tag}s"
        self.runner.run(["ip", "link", "add", veth_sw, "netns", sw.name, "type", "veth",
                         "peer", "name", "eth0", "netns", corr.name])
        sw.ip("link", "set", veth_sw, "master", SWITCH_BRIDGE)
        sw.ip("link", "set", veth_sw, "up")
        corr.add_address("eth0", str(cfg.correspondent_address()))
        for route in cfg.correspondent_routes(config.layout):
            corr.run(route)

        if config.source_dir is not None:
            shutil.rmtree(config.dom0_pycache, ignore_errors=True)
            config.dom0_pycache.mkdir(parents=True)
            count = precompile_tree(config.source_dir, config.dom0_pycache)
            log.debug("compiled %d modules of %s for the dom0s", count, config.source_dir)
        for host in HOSTS:
            files = HostFiles.for_host(config.run_dir, host)
            files.disk.unlink(missing_ok=True)
            self.runner.run(overlay_argv(artifacts.dom0_image, files.disk))
            self._start_qemu(config, artifacts, host)
        for host in HOSTS:
            self._join_switch(config, host)

    def _start_qemu(self, config: LabConfig, artifacts: Artifacts, host: str) -> None:
        """Start ``host``'s QEMU on its existing disk, in the switch namespace."""
        files = HostFiles.for_host(config.run_dir, host)
        for stale in (files.pidfile, files.serial_socket):
            stale.unlink(missing_ok=True)
        argv = host_argv(config, host, xen=artifacts.xen, kernel=artifacts.kernel,
                         initrd=artifacts.initrd)
        self.progress(f"starting host {host} (QEMU TCG, Xen 4.17, PV dom0)")
        start_background(Netns(config.switch_netns, self.runner).argv(argv),
                         stdout_path=str(files.qemu_log))

    def _join_switch(self, config: LabConfig, host: str) -> None:
        """Put ``host``'s link tap on the switch's bridge once its QEMU has made it."""
        sw = Netns(config.switch_netns, self.runner)
        tap = config.tap_name(host)
        self._wait(partial(self._link_exists, sw, tap),
                   30, f"QEMU of host {host} to create its tap {tap}", config, host)
        sw.ip("link", "set", tap, "master", SWITCH_BRIDGE)
        sw.ip("link", "set", tap, "up")

    @staticmethod
    def _link_exists(ns: Netns, ifname: str) -> bool:
        return ns.run(["ip", "link", "show", ifname], check=False).ok

    def _answers(self, host: str) -> bool:
        # A dom0 still booting accepts the connection (QEMU's port forward) but sends no
        # banner: give up on this try after 5 s and let the caller try again.
        argv = self.ssh_argv(host, ["xl", "list"], connect_timeout=5)
        try:
            return self.runner.run(argv, check=False, timeout=30).ok
        except CommandError:
            return False

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str,
              config: LabConfig, host: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            hosts = [host] if host else list(HOSTS)
            for h in hosts:
                files = HostFiles.for_host(config.run_dir, h)
                if self._qemu_exited(files.pidfile):
                    raise LabError(
                        f"QEMU of host {h} exited while waiting for {what}; see "
                        f"{files.qemu_log} and {files.serial_log}"
                        + self._tail(files.qemu_log)
                    )
            if time.monotonic() > deadline:
                raise LabError(
                    f"timed out after {timeout:g} s waiting for {what}; see the consoles in "
                    f"{config.run_dir}/*.console.log")
            self.sleep(1.0)

    @staticmethod
    def _qemu_exited(pidfile: Path) -> bool:
        """True once the QEMU wrote its pid and that process is gone.

        QEMU creates its pidfile before it writes the pid into it: an empty or partial
        file means "still starting", not "exited" (reading it then as gone made `up`
        fail at random on a busy machine).
        """
        pid = _pidfile_pid(pidfile)
        return pid is not None and not _is_our_qemu(pid, pidfile)

    @staticmethod
    def _tail(path: Path) -> str:
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return f"; last output: {text[-500:]!r}" if text else ""

    def _wait_for_hosts(self, config: LabConfig) -> None:
        self.progress("waiting for both dom0s to answer ssh (about 30-60 s under TCG)")
        for host in HOSTS:
            self._wait(partial(self._answers, host), BOOT_TIMEOUT,
                       f"host {host} to run `xl list`", config)
            self.progress(f"host {host} is up")

    def _configure_hosts(self, config: LabConfig) -> None:
        for host in HOSTS:
            self._configure_host(config, host)

    def _configure_host(self, config: LabConfig, host: str) -> None:
        for argv in cfg.dom0_network_commands(config.layout, host):
            self.exec(host, argv)
        self.apply_shaping(host, config.shaping)
        self.install_xenwam(host, config)

    def install_xenwam(self, host: str, config: LabConfig) -> None:
        """Make dom0 a xenwam host (:func:`~xenwam.lab.config.xenwam_host_steps`)."""
        for step in cfg.xenwam_host_steps(config.layout, host, config.shaping):
            self.exec(host, list(step.argv), input=step.input)

    def apply_shaping(self, host: str, shaping: Shaping) -> None:
        """Shape ``host``'s link egress with netem (half the RTT each way)."""
        self.exec(host, shaping.netem_argv("wan"), check=not shaping.is_null)

    def cut_link(self, cut: bool = True) -> None:
        """Cut the link between the two sites (or, with ``cut=False``, restore it), both
        directions at once; each site still reaches the correspondent.  Done in the
        switch namespace by isolating the two hosts' bridge ports from each other, so a
        busy or hung dom0 cannot delay it: to the dom0s it is a WAN outage, DRBD's
        connection times out and reconnects by itself once the link is back."""
        state = self._require_up()
        config = state.config()
        sw = Netns(config.switch_netns, self.runner)
        for host in HOSTS:
            sw.run(["bridge", "link", "set", "dev", config.tap_name(host),
                    "isolated", "on" if cut else "off"])

    def cut_one_way(self, sender: str, receiver: str, cut: bool = True) -> None:
        """Drop (or, with ``cut=False``, stop dropping) everything ``sender``'s site sends
        to ``receiver`` over the link, the other direction untouched: an ingress filter on
        ``receiver``'s link interface for ``sender``'s link address and site subnet (this
        host's kernel has no tc classifier to do it in the switch namespace)."""
        state = self._require_up()
        layout = state.config().layout
        if cut:
            self.exec(receiver, ["tc", "qdisc", "replace", "dev", "wan", "ingress"])
            for source in (cfg.link_address(sender).ip, cfg.site_subnet(layout, sender)):
                self.exec(receiver, ["tc", "filter", "add", "dev", "wan", "parent", "ffff:",
                                     "protocol", "ip", "prio", "1", "u32", "match", "ip",
                                     "src", str(source), "action", "drop"])
        else:
            self.exec(receiver, ["tc", "qdisc", "del", "dev", "wan", "ingress"], check=False)

    def crash_host(self, host: str) -> int:
        """Crash ``host``'s dom0, and every guest on it, as a power cut would: its QEMU is
        stopped at once.  SIGTERM, not SIGKILL: QEMU then closes its disk image cleanly,
        so the dom0's disk keeps every write that reached it, as a real disk does, while
        the dom0 itself runs not one more instruction.  Returns the pid stopped."""
        pid = self.qemu_pid(host)
        if pid is None:
            raise LabError(f"host {host} is not running; nothing to crash")
        self._stop_qemu(pid)
        self._close_ssh(host)
        self.progress(f"host {host} crashed (QEMU pid {pid} stopped)")
        return pid

    def boot_host(self, host: str) -> float:
        """Boot a crashed ``host`` again on its own disk, as after a power cut: network,
        shaping and xenwam set up as ``up`` does, then the DRBD resources its files
        define brought up, as Debian's drbd service does at boot, after ``xenwam disk
        reattach --all`` has put their files back behind loop devices.  Returns the boot's
        seconds."""
        state = self._require_up()
        if self.qemu_pid(host) is not None:
            raise LabError(f"host {host} is running; crash it first")
        config = state.config()
        artifacts = Artifacts(Path(state.artifacts))
        start = time.monotonic()
        self._start_qemu(config, artifacts, host)
        self._join_switch(config, host)
        self._wait(partial(self._answers, host), BOOT_TIMEOUT,
                   f"host {host} to run `xl list`", config, host)
        self._configure_host(config, host)
        self.exec(host, ["sh", "-c", "ls /etc/drbd.d/*.res >/dev/null 2>&1 || exit 0; "
                                     "xenwam disk reattach --all; drbdadm adjust all"],
                  check=False, timeout=180)
        seconds = round(time.monotonic() - start, 1)
        self.progress(f"host {host} booted again in {seconds} s")
        return seconds

    # ------------------------------------------------------------ down and status

    def down(self) -> list[str]:
        """Stop everything the lab in ``run_dir`` started; return what was done.

        Works from the state file and the derived names alone, so it also cleans up
        after a crash; safe to run twice.
        """
        done: list[str] = []
        state = self.load_state()
        config = (state.config() if state is not None
                  else LabConfig(run_dir=self.run_dir))
        for host in HOSTS:
            if self._close_ssh(host):
                done.append(f"closed the shared ssh connection to host {host}")
        for host in HOSTS:
            pid = self.qemu_pid(host)
            if pid is None:
                continue
            self._stop_qemu(pid)
            done.append(f"stopped QEMU of host {host} (pid {pid})")
        for pidfile in self.run_dir.glob("ping-*.pid"):
            self._stop_helper(pidfile)
        for pidfile in self.run_dir.glob("records-*.pid"):
            self._stop_helper(pidfile, expect=RECORDS_MODULE, sig=signal.SIGKILL)
        self.stop_correspondent_hipd()
        existing = self.runner.run(["ip", "netns", "list"], check=False).stdout.split()
        for ns in (config.switch_netns, config.correspondent_netns):
            if ns in existing:
                self.runner.run(["ip", "netns", "del", ns], check=False)
                done.append(f"removed namespace {ns}")
        for host in HOSTS:
            files = HostFiles.for_host(self.run_dir, host)
            for p in (files.disk, files.pidfile, files.serial_socket):
                p.unlink(missing_ok=True)
        if state is not None:
            state.status = "down"
            self._save(state)
        return done

    def _stop_qemu(self, pid: int) -> None:
        """SIGTERM to one of our QEMUs (it closes its disk image cleanly), SIGKILL if it is
        still there after 15 s."""
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _pid_alive(pid) and time.monotonic() < deadline:
            self.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _stop_helper(self, pidfile: Path, *, expect: str = "ping",
                     sig: signal.Signals = signal.SIGINT, wait: float = 5.0) -> None:
        """Signal the helper in ``pidfile`` if it is still the process we started (its
        command line names ``expect``), wait for it, forget the pidfile."""
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            return
        argv = _argv_of(pid)
        ours = bool(argv) and (Path(argv[0]).name == expect
                               or any(expect in a for a in argv[1:3]))
        if _pid_alive(pid) and ours:
            os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while _pid_alive(pid) and time.monotonic() < deadline:
                self.sleep(0.1)
        pidfile.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """A JSON-ready description of the lab and each host's domains."""
        state = self.load_state()
        if state is None:
            return {"run_dir": str(self.run_dir), "status": "absent", "hosts": []}
        hosts = []
        for host in HOSTS:
            pid = self.qemu_pid(host)
            domains: list[XlDomain] = []
            reachable = False
            if pid is not None:
                try:
                    res = self.exec(host, ["xl", "list"], check=False, timeout=20)
                    if res.ok:
                        reachable = True
                        domains = parse_xl_list(res.stdout)
                except (CommandError, LabError) as exc:
                    log.info("host %s unreachable: %s", host, exc)
            hosts.append(asdict(HostStatus(host, pid, pid is not None, reachable, domains)))
        running = sum(1 for h in hosts if h["running"])
        overall = state.status if running else ("down" if state.status == "down" else "crashed")
        config = state.config()
        return {
            "run_dir": str(self.run_dir), "status": overall, "layout": state.layout,
            "shaping": asdict(config.shaping), "boot_seconds": state.boot_seconds,
            "switch_netns": config.switch_netns,
            "correspondent_netns": config.correspondent_netns,
            "correspondent_address": str(cfg.correspondent_address()),
            "hosts": hosts, "guests": [asdict(g) for g in state.guests],
        }

    # ------------------------------------------------------------ guests

    def xl_list(self, host: str) -> list[XlDomain]:
        """``xl list`` on ``host``, parsed."""
        return parse_xl_list(self.exec(host, ["xl", "list"]).stdout)

    def guest(self, name: str) -> GuestRecord:
        """The record of guest ``name``."""
        state = self._require_up()
        for g in state.guests:
            if g.name == name:
                return g
        known = ", ".join(g.name for g in state.guests) or "none"
        raise ConfigError(f"the lab has no guest {name!r} (guests: {known}); "
                          "create one with `xenwam lab guest create HOST`")

    def create_guest(self, host: str, name: str | None = None, *,
                     memory_mib: int | None = None, python: bool = False,
                     xenwam_disk: bool = False, hip: bool = False,
                     disk_mib: int | None = None,
                     agent_options: Sequence[str] = ()) -> GuestRecord:
        """Create a PVH guest on ``host`` with an address on that host's site subnet.

        With ``python`` the guest also carries python3, ``cryptography``, pyroute2,
        iproute2's ``ip`` and the project's current ``hip`` package (at /opt/xenwam, on its
        PYTHONPATH); it needs more memory (default 192 MiB instead of 128) to unpack them.
        With ``hip`` (implies ``python``) it also gets a HIP identity peered with the
        correspondent's, and starts hipd (kernel ESP), the xenwam guest agent and the
        records echo server at boot (default 224 MiB); it is up once its agent runs and
        the correspondent reaches it at its HIT.
        ``disk_mib`` sizes its disk (default :attr:`GuestSpec.data_disk_mib`);
        ``agent_options`` are added to a ``--hip`` guest's ``xenwam-guest-agent`` command
        line.
        """
        python = python or hip
        if memory_mib is None:
            memory_mib = 224 if hip else 192 if python else 128
        state = self._require_up()
        config = state.config()
        number = max((g.number for g in state.guests), default=0) + 1
        name = name or f"g{number}"
        if any(g.name == name for g in state.guests):
            raise ConfigError(f"a guest named {name!r} already exists in the lab")
        address = cfg.guest_address(config.layout, host, number)
        spec = GuestSpec(name=name, address=address,
                         gateway=cfg.site_gateway(config.layout, host).ip,
                         mac=guest_mac(number), memory_mib=memory_mib)
        if disk_mib is not None:
            spec = replace(spec, data_disk_mib=disk_mib)
        hit: str | None = None
        if python:
            spec = replace(spec, ramdisk=f"{GUEST_DIR}/{name}-initrd.gz")
            pieces = package_piece(cfg.source_tree() / "hip", "opt/xenwam/hip")
            if hip:
                hit, hip_piece = self._guest_hip_piece(name, str(address.ip), agent_options)
                pieces += hip_piece
        # The data disk (and ramdisk) must exist at the same path on both hosts for xl
        # migrate to re-attach it (without DRBD its contents do not follow the guest).
        # A xenwam disk exists on the guest's host only: xenwam migrate makes the copy.
        for h in HOSTS:
            if h == host or not xenwam_disk:
                self.exec(h, ["truncate", "-s", f"{spec.data_disk_mib}M", spec.data_disk])
            if python:
                self.runner.run(self.ssh_argv(h, [
                    "sh", "-c", f"cat {GUEST_DIR}/guest-initrd.gz "
                                f"{GUEST_DIR}/guest-python.cpio.gz - > {spec.ramdisk}"]),
                    input=pieces)
        if xenwam_disk:
            resource = f"{name}-disk"
            self.exec(host, ["xenwam", "disk", "adopt", resource, "--disk", spec.data_disk,
                             "--minor", str(number), "--json"], timeout=120)
            spec = replace(spec, disk_resource=resource)
        self.exec(host, ["tee", spec.config_path], input=spec.xl_config())
        self.progress(f"creating PVH guest {name} on host {host} at {address.ip}"
                      + (f", HIT {hit}" if hit else ""))
        began = time.monotonic()
        self.exec(host, ["xl", "create", spec.config_path], timeout=180)
        record = GuestRecord(name=name, host=host, address=str(address.ip), number=number,
                             hit=hit)
        state.guests.append(record)
        self._save(state)
        corr = Netns(config.correspondent_netns, self.runner)
        self._wait(lambda: corr.run(["ping", "-c", "1", "-W", "1", record.address],
                                    check=False).ok,
                   120, f"guest {name} to answer ping at {record.address}", config)
        if hit is not None:
            try:
                self._wait(lambda: self.guest_agent_running(record), 300,
                           f"guest {name}'s xenwam agent to start", config)
                # The guest's hipd starts beside the agent and may be ready well after it
                # (three Pythons starting on one emulated CPU). Until the correspondent
                # reaches the guest by its HIT, a first connection races hipd's start:
                # its base exchange gives up after 31 s of unanswered I1s, and a client
                # with a 60 s connect timeout may fail (bench sweep, 2026-12-04).
                self.start_correspondent_hipd()
                reach = hit
                self._wait(lambda: self.ping_from_correspondent(reach), 300,
                           f"guest {name} to answer the correspondent at its HIT {hit} "
                           "(a HIP base exchange)", config)
            except LabError as exc:
                raise LabError(f"{exc}{self._guest_logs(name)}") from exc
        self.progress(f"guest {name} up {time.monotonic() - began:.0f} s after `xl create`"
                      + (" (its agent running, reached at its HIT)" if hit is not None
                         else ""))
        return record

    def _guest_logs(self, name: str) -> str:
        """The tails of a --hip guest's agent and hipd logs and of its memory figures, read
        through its console, for an error message (best effort)."""
        try:
            res = self.guest_exec(name, "tail -n 15 /var/log/xenwam-agent.log "
                                        "/var/log/hipd.log; grep -E 'MemFree|MemAvail' "
                                        "/proc/meminfo; ps", timeout=60)
        except (LabError, CommandError) as exc:
            return f"\n(the guest's logs could not be read: {exc})"
        return "\n--- in the guest ---\n" + res.output

    # ------------------------------------------------------------ HIP in the lab

    def _hip(self, *args: str, input: str | None = None) -> str:
        """``hipctl ARGS`` on this host, from the source tree."""
        argv = [sys.executable, "-m", "hip.ctl", *args]
        env = {**os.environ, "PYTHONPATH": str(cfg.source_tree())}
        return self.runner.run(argv, env=env, input=input, timeout=120).stdout

    def correspondent_hit(self) -> str:
        """The correspondent's HIT (its identity is made once per run directory)."""
        directory = self.run_dir / CORR_HIP_DIR
        hit_file = directory / "hit"
        if not hit_file.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            doc = json.loads(self._hip("keygen", "--json", "--config-dir", str(directory)))
            hit_file.write_text(doc["hit"] + "\n")
        return hit_file.read_text().strip()

    def _guest_hip_piece(self, name: str, address: str,
                         agent_options: Sequence[str] = ()) -> tuple[str, bytes]:
        """A HIP identity for guest ``name`` peered with the correspondent (and the
        correspondent with it), the agent, pyxs, the records server and the boot
        services, as an initramfs piece; the guest's HIT."""
        import pyxs  # on the host: the lab ships the copy setup installed

        corr_hit = self.correspondent_hit()
        corr_locator = str(cfg.correspondent_address().ip)
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "hip"
            hit = json.loads(self._hip("keygen", "--json", "--config-dir", str(d)))["hit"]
            self._hip("peer", "add", "corr", corr_hit, corr_locator, "--config-dir", str(d))
            files: dict[str, tuple[int, bytes]] = {
                f"etc/hip/{p.name}": (stat.S_IFREG | (0o600 if p.suffix == ".pem" else 0o644),
                                      p.read_bytes())
                for p in sorted(d.iterdir()) if p.is_file()}
        files["etc/xenwam-lab/services"] = (stat.S_IFREG | 0o755,
                                            GUEST_SERVICES.format(
            port=RECORDS_PORT,
            agent="".join(f" {shlex.quote(o)}" for o in agent_options)).encode())
        files["opt/xenwam/xwrecords.py"] = (stat.S_IFREG | 0o644,
                                            (Path(__file__).parent / "records.py").read_bytes())
        piece = gzip.compress(newc_archive(with_parents(files)), compresslevel=6)
        piece += package_piece(cfg.source_tree() / "xenwam_guest", "opt/xenwam/xenwam_guest")
        piece += package_piece(Path(pyxs.__file__).parent, "opt/xenwam/pyxs", sources=False)
        peer = ["peer", "add", name, hit, address, "--replace",
                "--config-dir", str(self.run_dir / CORR_HIP_DIR)]
        if (self.run_dir / CORR_HIPD_SOCKET).exists():
            peer += ["--socket", str(self.run_dir / CORR_HIPD_SOCKET)]
        self._hip(*peer)
        return hit, piece

    def guest_agent_running(self, record: GuestRecord) -> bool:
        """True once guest ``record``'s xenwam agent has said so in its xenstore area."""
        res = self.exec(record.host, [
            "sh", "-c", f'xenstore-read "/local/domain/$(xl domid {shlex.quote(record.name)})'
                        f'/{agent_layout.AGENT_KEY}"'], check=False)
        return res.ok and res.stdout.startswith("xenwam-guest-agent")

    def guest_agent_report(self, name: str) -> dict[str, str]:
        """What guest ``name``'s agent last wrote under data/xenwam/network (raw)."""
        record = self.guest(name)
        script = ('base="/local/domain/$(xl domid "$1")/$2"; shift 2; '
                  'for k in "$@"; do echo "$k=$(xenstore-read "$base/$k" 2>/dev/null)"; done')
        out = self.exec(record.host, ["sh", "-c", script, "sh", name, agent_layout.REPORT_DIR,
                                      *agent_layout.REPORT_KEYS]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write_guest_network(self, name: str, values: Sequence[tuple[str, str]]) -> None:
        """Write ``values`` under guest ``name``'s xenwam/network keys, in order, as dom0
        does after a migration (tests use it to feed the agent garbage)."""
        record = self.guest(name)
        script = ('base="/local/domain/$(xl domid "$1")/$2"; shift 2; '
                  'while [ $# -ge 2 ]; do xenstore-write "$base/$1" "$2"; shift 2; done')
        self.exec(record.host, ["sh", "-c", script, "sh", name, agent_layout.NETWORK_DIR,
                                *(x for kv in values for x in kv)])

    def start_correspondent_hipd(self) -> None:
        """hipd (userspace ESP, TUN) in the correspondent's namespace; idempotent."""
        state = self._require_up()
        config = state.config()
        pidfile = self.run_dir / CORR_HIPD_PID
        sock = self.run_dir / CORR_HIPD_SOCKET
        if pidfile.exists() and sock.exists():
            try:
                if _pid_alive(int(pidfile.read_text())):
                    return
            except ValueError:
                pass
        self.correspondent_hit()
        sock.unlink(missing_ok=True)
        corr = Netns(config.correspondent_netns, self.runner)
        proc = start_background(
            corr.argv([sys.executable, "-m", HIP_MODULE, "-v",
                       "--config-dir", str(self.run_dir / CORR_HIP_DIR),
                       "--socket", str(sock), "--data-plane", "userspace",
                       "--locator", str(cfg.correspondent_address().ip),
                       "--tun", CORR_HIP_TUN,
                       "--state-dir", str(self.run_dir / "corr-hip-state")]),
            stdout_path=str(self.run_dir / "corr-hipd.log"),
            env={"PYTHONPATH": str(cfg.source_tree())})
        pidfile.write_text(str(proc.pid))
        self._wait(lambda: sock.exists() or proc.poll() is not None, 60,
                   "the correspondent's hipd to open its control socket", config)
        if proc.poll() is not None:
            raise LabError("the correspondent's hipd exited at start: "
                           + self._tail(self.run_dir / "corr-hipd.log"))

    def stop_correspondent_hipd(self) -> None:
        """Stop the correspondent's hipd if it runs (it removes its TUN device)."""
        self._stop_helper(self.run_dir / CORR_HIPD_PID, expect=HIP_MODULE,
                          sig=signal.SIGTERM, wait=10.0)
        (self.run_dir / CORR_HIPD_SOCKET).unlink(missing_ok=True)

    def start_records(self, name: str, rate: float = 50.0) -> tuple[Process, Path]:
        """The correspondent's records client to guest ``name``'s HIT (hipd must run);
        returns it and the path its summary will be written to (:meth:`stop_records`)."""
        record = self.guest(name)
        if record.hit is None:
            raise ConfigError(f"guest {name} runs no hipd: create it with --hip")
        state = self._require_up()
        corr = Netns(state.config().correspondent_netns, self.runner)
        summary = self.run_dir / f"records-{name}.json"
        summary.unlink(missing_ok=True)
        proc = start_background(
            corr.argv([sys.executable, "-m", RECORDS_MODULE, "client", "--to", record.hit,
                       "--port", str(RECORDS_PORT), "--rate", f"{rate:g}",
                       "--summary", str(summary), "--timeout", "60"]),
            stdout_path=str(self.run_dir / f"records-{name}.log"),
            env={"PYTHONPATH": str(cfg.source_tree())})
        (self.run_dir / f"records-{name}.pid").write_text(str(proc.pid))
        return proc, summary

    def stop_records(self, proc: Process, summary: Path, *, wait: float = 90.0
                     ) -> dict[str, Any]:
        """Tell the records client to stop, wait for its summary; the summary."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=wait)
        except Exception:  # subprocess.TimeoutExpired: it hangs; kill what we started
            proc.kill()
            proc.wait(timeout=10)
        for pidfile in self.run_dir.glob("records-*.pid"):
            if pidfile.read_text().strip() == str(proc.pid):
                pidfile.unlink()
        if not summary.exists():
            log_path = summary.with_suffix(".log")
            raise LabError(f"the records client wrote no summary; see {log_path}")
        return dict(json.loads(summary.read_text()))

    def guest_console_text(self, host: str) -> str:
        """Everything the guests on ``host`` wrote to their consoles (xenconsoled logs)."""
        res = self.exec(host, ["sh", "-c", "cat /var/log/xen/console/guest-*.log"],
                        check=False)
        return res.stdout

    def guest_ticks(self, host: str, name: str) -> list[Tick]:
        """The counter lines guest ``name`` wrote to its console on ``host``."""
        res = self.exec(host, ["sh", "-c",
                               f"cat /var/log/xen/console/guest-{shlex.quote(name)}*.log"],
                        check=False)
        return parse_ticks(res.stdout)

    def guest_run(self, name: str, command: str) -> None:
        """Type ``command`` into guest ``name``'s console shell (no output is returned)."""
        record = self.guest(name)
        script = ('tty=$(xenstore-read "/local/domain/$(xl domid "$1")/console/tty") && '
                  'printf "%s\\n" "$2" > "$tty"')
        self.exec(record.host, ["sh", "-c", script, "sh", name, command])

    def guest_exec(self, name: str, command: str, *, timeout: float = 60.0) -> ConsoleExec:
        """Run a shell ``command`` in guest ``name`` through its console; its result.

        The output is read back from the console log, so it is text only and shares the
        console with the guest's counter (whose lines are left out).
        """
        record = self.guest(name)
        nonce = secrets.token_hex(4)
        self.guest_run(name, console_exec_script(command, nonce))
        deadline = time.monotonic() + timeout
        while True:
            result = parse_console_exec(self.guest_console_text(record.host), nonce)
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise LabError(f"guest {name} did not finish {command!r} within {timeout:g} s; "
                               f"see `xenwam lab exec {record.host} -- cat "
                               f"/var/log/xen/console/guest-{name}.log`")
            self.sleep(0.5)

    def renumber_guest(self, name: str) -> str:
        """Give guest ``name`` an address on its current host's site subnet; return it."""
        state = self._require_up()
        record = self.guest(name)
        layout = state.config().layout
        address = cfg.guest_address(layout, record.host, record.number)
        gateway = cfg.site_gateway(layout, record.host).ip
        self.guest_run(name, f"ip addr flush dev eth0 && ip addr add {address} dev eth0 && "
                             f"ip route replace default via {gateway}")
        record.address = str(address.ip)
        for i, g in enumerate(state.guests):
            if g.name == name:
                state.guests[i] = record
        self._save(state)
        return record.address

    def ping_from_correspondent(self, address: str, count: int = 1) -> bool:
        """True if ``address`` answers the correspondent."""
        return self.correspondent().run(
            ["ping", "-n", "-c", str(count), "-W", "1", address], check=False).ok

    # ------------------------------------------------------------ migration

    def _start_receiver(self, host: str, bind_ip: str) -> int:
        """Start the one-shot socat migrate-receive listener in ``host``; its pid there."""
        argv = shlex.join(receive_listener_argv(bind_ip))
        out = self.exec(host, ["sh", "-c", f"setsid {argv} </dev/null "
                                           ">>/var/log/xen/xenwam-receive.log 2>&1 & echo $!"])
        pid = int(out.stdout.strip())
        deadline = time.monotonic() + 20
        while not self.exec(host, ["sh", "-c", f"ss -ltn | grep -q '{bind_ip}:{RECEIVE_PORT} '"],
                            check=False).ok:
            if time.monotonic() > deadline:
                raise LabError(f"the migrate-receive listener on host {host} did not start; "
                               "see /var/log/xen/xenwam-receive.log there")
            self.sleep(0.3)
        return pid

    def _start_pinger(self, config: LabConfig, name: str, address: str
                      ) -> tuple[Process, Path, Path]:
        """A 50 ms ping of ``address`` from the correspondent, logged with timestamps
        (``ping -D``); its pid is recorded so :meth:`down` can stop it after a crash."""
        ping_log = self.run_dir / f"ping-{name}.log"
        ping_pidfile = self.run_dir / f"ping-{name}.pid"
        ping_log.unlink(missing_ok=True)
        corr = Netns(config.correspondent_netns, self.runner)
        pinger = start_background(corr.argv(["ping", "-n", "-D", "-i", "0.05", "-W", "1",
                                             address]),
                                  stdout_path=str(ping_log))
        ping_pidfile.write_text(str(pinger.pid))
        return pinger, ping_log, ping_pidfile

    def migrate_baseline(self, name: str, destination: str | None = None, *,
                         transport: str = "ssh") -> MigrationReport:
        """Stock ``xl migrate``, watched by a 50 ms ping from the correspondent.

        ``transport`` ``ssh`` (xl's default, between the dom0s over the link) or
        ``socat`` (xl's ``-s`` hook and a one-shot listener on the destination's link
        address).
        """
        migrate_argv(name, "0.0.0.0", transport)  # refuse a bad transport before acting
        state = self._require_up()
        config = state.config()
        record = self.guest(name)
        source = record.host
        destination = destination or HOSTS[1 - cfg.host_index(source)]
        if destination == source:
            raise ConfigError(f"guest {name} is already on host {source}")
        ticks_before = self.guest_ticks(source, name)
        pinger, ping_log, ping_pidfile = self._start_pinger(config, name, record.address)
        try:
            self.sleep(2.0)
            dest_ip = str(cfg.link_address(destination).ip)
            listener = self._start_receiver(destination, dest_ip) if transport == "socat" \
                else None
            self.progress(f"xl migrate {name} {dest_ip} over {transport} "
                          f"(host {source} -> {destination})")
            start = time.time()
            watch_log = f"/tmp/xwlab-suspend-{name}.log"
            try:
                timed = parse_timed_migrate(self.exec(
                    source, ["sh", "-c", TIMED_MIGRATE, "sh", name, watch_log,
                             *migrate_argv(name, dest_ip, transport)], timeout=900).stdout)
                if timed.status != 0:
                    raise LabError(f"xl migrate {name} failed on host {source} (exit "
                                   f"{timed.status}): {timed.output[-400:]}")
            finally:
                if listener is not None:
                    # Gone by itself after one connection; this covers a failed start.
                    self.exec(destination, ["sh", "-c",
                                            f'[ "$(cat /proc/{listener}/comm 2>/dev/null)" '
                                            f'= socat ] && kill {listener}; true'])
            end = time.time()
            # Leave the client time to see the guest answer again (lan) or not (wan).
            self.sleep(5.0)
        finally:
            self._stop_helper(ping_pidfile)
            pinger.wait(timeout=10)
        gap: GapReport = longest_gap(parse_ping(ping_log.read_text()), start, end)
        paused = paused_seconds(self.exec(source, ["cat", watch_log], check=False).stdout,
                                timed)
        domains = self.xl_list(destination)
        running = any(d.name == name for d in domains)
        record.host = destination
        state.guests = [record if g.name == name else g for g in state.guests]
        self._save(state)
        ticks_after = self.guest_ticks(destination, name)
        return MigrationReport(
            domain=name, source=source, destination=destination, layout=config.layout.value,
            transport=transport,
            total_seconds=round(end - start, 1), ping_replies=gap.replies,
            longest_gap_seconds=gap.longest_gap, answered_after=gap.answered_after,
            running_on_destination=running,
            ticks_before=ticks_before[-1].count if ticks_before else 0,
            ticks_after=ticks_after[-1].count if ticks_after else 0,
            paused_seconds=paused,
        )

    def start_xenwam_migrate(self, name: str, extra: Sequence[str] = (),
                             env: Sequence[tuple[str, str]] = ()) -> str:
        """Start ``xenwam migrate --json`` for guest ``name`` in its dom0, in the
        background (with ``env`` added to its environment); return the path of its NDJSON
        output there (see :meth:`xenwam_events`)."""
        state = self._require_up()
        record = self.guest(name)
        destination = HOSTS[1 - cfg.host_index(record.host)]
        address = cfg.guest_address(state.config().layout, destination, record.number)
        out = f"/root/xenwam-migrate-{name}.ndjson"
        argv = ["env", *(f"{k}={v}" for k, v in env), "xenwam", "migrate", "--json", *extra,
                "--ip", str(address), name, str(cfg.link_address(destination).ip)]
        self.exec(record.host, ["sh", "-c", f'rm -f {out}; setsid {shlex.join(argv)} '
                                            f'> {out} 2> {out}.err < /dev/null &'])
        return out

    def xenwam_migrate_running(self, host: str) -> bool:
        """Whether a ``xenwam migrate --json`` started by :meth:`start_xenwam_migrate`
        still runs in ``host``'s dom0."""
        return bool(self.exec(host, ["sh", "-c", "pgrep -f 'xenwam.cli migrate --json' "
                                                 ">/dev/null && echo yes || true"]
                              ).stdout.strip())

    def xenwam_events(self, host: str, path: str) -> list[dict[str, Any]]:
        """The NDJSON events written so far by :meth:`start_xenwam_migrate`."""
        text = self.exec(host, ["sh", "-c", f"cat {path} 2>/dev/null || true"]).stdout
        events = []
        for line in text.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line still being written
        return events

    def migrate_xenwam(self, name: str, *, timeout: float = 1800.0,
                       extra: Sequence[str] = (), watch_connection: bool = True
                       ) -> XenwamMigration:
        """``xenwam migrate`` of guest ``name`` to the other host, watched by a 50 ms ping
        from the correspondent.  In the wan layout a ``--hip`` guest's agent applies its
        new address; any other guest is renumbered through its console.

        For a ``--hip`` guest, with ``watch_connection``, the correspondent also keeps a
        records stream open to the guest's HIT across the move (started 5 s before,
        stopped 10 s after) and the result carries its summary.  A caller that watches
        one connection across several moves starts :meth:`start_records` itself and
        passes ``watch_connection=False``."""
        state = self._require_up()
        config = state.config()
        record = self.guest(name)
        source = record.host
        destination = HOSTS[1 - cfg.host_index(source)]
        new_address = cfg.guest_address(config.layout, destination, record.number)
        pinger, ping_log, ping_pidfile = self._start_pinger(config, name, record.address)
        renumber_seconds: float | None = None
        answered = False
        first_new_reply: float | None = None
        records: tuple[Process, Path] | None = None
        connection: dict[str, Any] | None = None
        agent_report: dict[str, str] | None = None
        try:
            if record.hit is not None and watch_connection:
                self.start_correspondent_hipd()
                records = self.start_records(name)
                self.sleep(5.0)
            self.progress(f"xenwam migrate {name}: host {source} -> {destination}")
            out = self.start_xenwam_migrate(name, extra)
            deadline = time.monotonic() + timeout
            events: list[dict[str, Any]] = []
            shown = 0
            while True:
                try:
                    events = self.xenwam_events(source, out)
                    finished = [e for e in events if e.get("event") == "finished"]
                    if finished:
                        shown = self._show_events(events, shown)
                        break
                    running = "yes" if self.xenwam_migrate_running(source) else ""
                except CommandError as exc:
                    # A dom0 busy with the migration may not answer the lab's ssh within
                    # its connect timeout: one missed look is not a failed migration.
                    log.info("no answer from host %s this time: %s", source, exc)
                    running = "unknown"
                if not running:
                    err = self.exec(source, ["cat", f"{out}.err"], check=False).stdout
                    raise LabError(f"xenwam migrate ended without a report: {err[-800:]!r}")
                if time.monotonic() > deadline:
                    raise LabError(f"xenwam migrate of {name} did not finish in {timeout:g} s")
                shown = self._show_events(events, shown)
                self.sleep(5.0)
            final = finished[-1]
            outcome = str(final["outcome"])
            if outcome.startswith("done"):
                record.host = destination
                if config.layout is Layout.WAN:
                    t0 = time.monotonic()
                    record.address = str(new_address.ip)
                    state.guests = [record if g.name == name else g for g in state.guests]
                    self._save(state)
                    if record.hit is None:
                        # A guest without the xenwam agent: renumber it through its console.
                        gateway = cfg.site_gateway(config.layout, destination).ip
                        self.guest_run(name, f"ip addr flush dev eth0 && ip addr add "
                                             f"{new_address} dev eth0 && "
                                             f"ip route replace default via {gateway}")
                    while time.monotonic() - t0 < 60 and not answered:
                        answered = self.ping_from_correspondent(record.address)
                    first_new_reply = time.time() if answered else None
                    renumber_seconds = round(time.monotonic() - t0, 1)
                else:
                    answered = self.ping_from_correspondent(record.address)
                state.guests = [record if g.name == name else g for g in state.guests]
                self._save(state)
                if record.hit is not None:
                    agent_report = self.guest_agent_report(name)
            if records is not None:
                self.sleep(10.0)
        finally:
            self._stop_helper(ping_pidfile)
            pinger.wait(timeout=10)
            if records is not None:
                connection = self.stop_records(*records)
        unpaused_at = clock_error = acked = first_record = None
        unpause = [e for e in events if e.get("event") == "note"
                   and str(e.get("message", "")).startswith("guest unpaused")]
        if unpause and outcome.startswith("done"):
            offset, clock_error = self.clock_offset(source)
            unpaused_at = float(unpause[-1]["at"]) - offset
            acked, first_record = self.rebind_timeline(name, unpaused_at, connection)
        replies = parse_ping(ping_log.read_text())
        start = events[0]["at"] if events else time.time()
        gap = longest_gap(replies, start, final["at"])
        silence = None
        if first_new_reply is not None and replies:
            silence = round(first_new_reply - max(r.time for r in replies), 1)
        started = next((e for e in events if e.get("event") == "migration-started"), {})
        return XenwamMigration(
            domain=name, source=source, destination=destination,
            migration_id=str(started.get("id", "?")), outcome=outcome,
            report=dict(final.get("report") or {}), events=len(events),
            ping_replies=gap.replies, longest_gap_seconds=gap.longest_gap,
            answered_at_new_address=answered, renumber_seconds=renumber_seconds,
            client_silence_seconds=silence,
            new_address=str(new_address.ip), connection=connection,
            agent_report=agent_report, unpaused_at=unpaused_at,
            clock_error_seconds=None if clock_error is None else round(clock_error, 3),
            update_acked_seconds=acked, first_record_seconds=first_record)

    def _show_events(self, events: list[dict[str, Any]], shown: int) -> int:
        """Print the phases, notes and failures of ``events`` after the first ``shown``
        (the last look's too: finalize's notes come just before ``finished``)."""
        for e in events[shown:]:
            if e.get("event") in ("phase-started", "note", "failed"):
                said = e.get("what") or e.get("message") or e.get("error")
                self.progress(f"  [{e.get('phase')}] {said}")
        return len(events)

    # ------------------------------------------------------------ guests moved by others

    def move_guest_record(self, name: str, host: str) -> GuestRecord:
        """Record that guest ``name`` now runs on ``host``, moved by something other than
        the lab's own migrations (``xl save`` and ``xl restore`` in ``xenwam bench
        migrate``); its address stays as it was until :meth:`renumber_guest`."""
        cfg.host_index(host)
        state = self._require_up()
        record = self.guest(name)
        record.host = host
        state.guests = [record if g.name == name else g for g in state.guests]
        self._save(state)
        return record

    def remove_guest(self, name: str, resources: Sequence[str] = ()) -> None:
        """Destroy guest ``name`` on both hosts with its DRBD ``resources`` (default
        NAME-disk) and its files there, then forget it.  Best effort, for a test's or a
        benchmark's cleanup: what cannot be removed is reported, not raised."""
        names = " ".join(resources or (f"{name}-disk",))
        script = (f"xl destroy {name} 2>/dev/null; "
                  f"for r in {names}; do drbdadm down $r 2>/dev/null; "
                  "xenwam disk unprovision $r >/dev/null 2>&1; "
                  "rm -f /etc/drbd.d/xenwam-$r.res /var/lib/xenwam/disks/$r*; done; "
                  f"for f in {GUEST_DIR}/{name}-*.img {GUEST_DIR}/{name}.save; do "
                  "for l in $(losetup -n -O NAME -j $f 2>/dev/null); do losetup -d $l; done; "
                  f"rm -f $f; done; rm -f {GUEST_DIR}/{name}-initrd.gz; true")
        for host in HOSTS:
            try:
                self.exec(host, ["sh", "-c", script], timeout=300, check=False)
            except XenwamError as exc:
                self.progress(f"cleaning up {name} on {host}: {exc}")
        self.forget_guest(name)

    def forget_guest(self, name: str) -> None:
        """Drop guest ``name`` from the lab's records once it was destroyed (its number,
        address and MAC can then be given to a new guest); harmless if unknown."""
        state = self.load_state()
        if state is None:
            return
        state.guests = [g for g in state.guests if g.name != name]
        self._save(state)
