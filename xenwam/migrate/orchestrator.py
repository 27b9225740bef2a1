"""``xenwam migrate``: the orchestrator that runs on the source dom0.

It walks :data:`xenwam.migrate.phases.TRANSITIONS`; every phase's start and end is written
to the journal (fsynced) before the next action.  The source's side is this host (its
resource files are read in-process); the destination is reached over ssh as root, as
``xl migrate`` reaches it, and runs ``xenwam`` there.  Every step is idempotent so that
``--recover`` can run it again.

Failure before the guest has moved aborts: the destination's copy is demoted and removed,
the source's resource is put back as it was, and the guest never stopped running on the
source.  Failure after the move rolls forward (finalize), because the guest then runs on
the destination.  Recovery first looks at both hosts, then repairs (STYLE rule 14).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from xenwam import site as sitecfg
from xenwam.drbd import cmdgen, seed, volume
from xenwam.drbd.device import DrbdDevice
from xenwam.drbd.device import Progress as DrbdProgress
from xenwam.drbd.info import (
    DIVERGED,
    LOCAL_AHEAD,
    PEER_AHEAD,
    SAME,
    DeviceState,
    Generations,
    parse_proc_drbd,
    relation,
)
from xenwam.drbd.phases import Lifecycle
from xenwam.drbd.resource import DEFAULT_CONFIG_DIR, Host, Resource, install, load
from xenwam.errors import CommandError, ConfigError, DrbdError, MigrationError, XenwamError
from xenwam.migrate import events as ev
from xenwam.migrate.phases import TERMINAL, Action, MigrationState, Phase
from xenwam.migrate.plan import (
    CALIBRATION_SAMPLES,
    DEFAULT_HANDOVER_OVERHEAD_MS,
    Plan,
    calibrated_overhead_ms,
    check_downtime,
    estimate_downtime_ms,
    plan_network,
    plan_resources,
)
from xenwam.runner import Background, CommandResult, Runner, default_runner, start_piped
from xenwam.xen import xl
from xenwam.xen.remote import SshRunner, ensure_control_dir, ssh_argv
from xenwam_guest import layout
from xenwam_guest.errors import LayoutError
from xenwam_guest.layout import AgentReport, NetworkAssignment, Status

log = logging.getLogger(__name__)

#: Where the guest finds its new network (read by the guest agent; docs/migrate.md).

#: Runs on the destination while the guest is paused: one ssh round trip instead of five.
#: Arguments: DOMAIN UNPAUSE(0|1) XENSTORE_DIR DRBD_MINORS(a,b) RAISE_WEIGHT(0|1) then
#: KEY VALUE pairs.  Prints ``weight=SCHED:OLD:NEW`` if it raised the guest's weight
#: (:class:`RaisedWeight`), then the domid.
FINISH_SCRIPT = r"""
set -eu
dom=$1; unpause=$2; dir=$3; minors=$4; raise_weight=$5; shift 5
copies=$(xl list | awk -v d="$dom" '$1 == d || $1 == d "--incoming" {n++} END {print n+0}')
[ "$copies" = 1 ] || { echo "expected one copy of $dom here, found $copies" >&2; exit 3; }
xl list "$dom" | awk 'NR == 2 && $5 !~ /p/ {exit 1}' \
    || { echo "$dom is not paused here: refusing to touch it" >&2; exit 3; }
for m in $(echo "$minors" | tr , ' '); do
    awk -v m="$m:" '$1 == m {getline two; print $0 " " two}' "${XENWAM_PROC_DRBD:-/proc/drbd}" \
        | grep -Eq 'cs:(Connected|SyncSource|PausedSyncS) .*ds:UpToDate/' \
        || { echo "DRBD minor $m is not connected with its disk up to date here" >&2; exit 4; }
done
id=$(xl domid "$dom")
base=/local/domain/$id/$dir
while [ $# -ge 2 ]; do xenstore-write "$base/$1" "$2"; shift 2; done
if [ "$unpause" = 1 ] && [ "$raise_weight" = 1 ]; then
    # Best effort, never a reason not to unpause: the guest gets dom0's scheduler weight
    # until finalize gives its own back (credit2, else credit; other schedulers: no-op).
    for sched in credit2 credit; do
        own=$(xl sched-$sched -d "$dom" 2>/dev/null | awk 'NR == 2 {print $3}') || own=
        top=$(xl sched-$sched -d Domain-0 2>/dev/null | awk 'NR == 2 {print $3}') || top=
        case "$own.$top" in *[!0-9.]*|.*|*.) continue ;; esac
        if [ "$top" -gt "$own" ] && xl sched-$sched -d "$dom" -w "$top" >/dev/null 2>&1
        then echo "weight=$sched:$own:$top"; fi
        break
    done
fi
[ "$unpause" = 1 ] && xl unpause "$dom"
echo "$id"
"""


@dataclass
class Side:
    """One dom0 as the orchestrator drives it: a runner and the way to call xenwam there."""

    label: str
    host: str
    runner: Runner
    xenwam_argv: tuple[str, ...]

    def run(self, argv: Sequence[str], *, timeout: float = 120.0, check: bool = True,
            input: str | None = None) -> CommandResult:
        """Run ``argv`` on this dom0."""
        return self.runner.run(argv, timeout=timeout, check=check, input=input)

    def xenwam(self, *args: str, timeout: float = 300.0, input: str | None = None) -> str:
        """Run ``xenwam ARGS`` on this dom0; its stdout."""
        try:
            return self.run([*self.xenwam_argv, *args], timeout=timeout, input=input).stdout
        except CommandError as exc:
            raise MigrationError(f"on the {self.label} ({self.host}): {exc}") from exc

    def disk_installing(self, action: str, model: Resource) -> str:
        """``xenwam disk ACTION NAME --install`` here, ``model`` on its stdin: the
        resource's definition written, then the action, in one call (each costs seconds
        of Python start-up in a busy dom0)."""
        return self.xenwam("disk", action, model.name, "--install",
                           input=json.dumps(model.to_json()))

    def xl_list(self) -> list[xl.XlDomain]:
        """``xl list`` here."""
        return xl.parse_xl_list(self.run(xl.list_(), timeout=60).stdout)

    def drbd(self, minor: int) -> DeviceState:
        """The DRBD device ``minor`` here, from one read of /proc/drbd."""
        res = self.run(["cat", "/proc/drbd"], check=False, timeout=30)
        found = parse_proc_drbd(res.stdout if res.ok else "").devices.get(minor)
        return found if found is not None else DeviceState(minor=minor)


#: Run on the destination (one ssh round trip): wait, up to $1 seconds, until the guest
#: agent's report under $0 has generation $2, then print each key named after it as
#: KEY=VALUE and the generation again as ``recheck``.  The agent writes the generation
#: last, so the keys read after a matching one are that answer's; a newer answer written
#: meanwhile shows as a recheck that differs.  It waits on a xenstore watch, 2 s at a
#: time (so a change between a read and setting the watch costs 2 s at most), not by
#: polling: dom0 is weighted above the guest, and a dom0 polling xenstore over ssh four
#: times a second kept the guest's agent from running for 20 s in the lab.
AGENT_WAIT_SCRIPT = r"""
base=$0 end=$(( $(date +%s) + $1 )) want=$2; shift 2
watch=; command -v xenstore-watch >/dev/null 2>&1 && watch=1
while [ "$(xenstore-read "$base/generation" 2>/dev/null)" != "$want" ] &&
      [ "$(date +%s)" -lt "$end" ]; do
    if [ -n "$watch" ]; then
        timeout 2 xenstore-watch -n 2 "$base/generation" >/dev/null 2>&1; s=$?
        [ "$s" -eq 0 ] || [ "$s" -eq 124 ] || sleep 1
    else
        sleep 0.5
    fi
done
for k in "$@"; do echo "$k=$(xenstore-read "$base/$k" 2>/dev/null)"; done
echo "recheck=$(xenstore-read "$base/generation" 2>/dev/null)"
"""

#: DRBD connection states in which the destination's copy holds every write the guest
#: made: in sync, or the source of a resync (the peer lags it).
CURRENT_CONNECTIONS = ("Connected", "SyncSource", "PausedSyncS")
#: How long finalize waits for a dying domain on the source (the guest's old self, which
#: Xen has not finished destroying: a backend still maps some of its pages) to let go of
#: the source's copy before it can be demoted.
DYING_WAIT_SECONDS = 120.0
#: How long the finishing step waits for a resync towards the destination's copy once
#: copies that parted during the move have been rejoined.
RESYNC_WAIT_SECONDS = 180.0
#: Times a verify's differing blocks are resynced and verified again before giving up.
VERIFY_REPAIRS = 2


def local_side(runner: Runner = default_runner) -> Side:
    """This host (the source)."""
    return Side("source", "localhost", runner, (sys.executable, "-m", "xenwam.cli"))


def remote_side(host: str, runner: Runner = default_runner,
                xenwam_command: str = "xenwam") -> Side:
    """The destination, over ssh."""
    return Side("destination", host, SshRunner(host, runner), tuple(shlex.split(xenwam_command)))


@dataclass(frozen=True)
class Options:
    """What the operator asked for (``xenwam migrate`` flags)."""

    domain: str
    destination: str
    config_path: str | None = None   # -C
    debug: bool = False              # --debug
    no_daemon: bool = False          # -e
    paused: bool = False             # -p: leave the guest paused on the destination
    address: str | None = None       # --ip
    max_downtime_ms: float | None = None
    verify: bool = True
    converge_after: float = 60.0     # seconds without progress before writes are slowed
    sync_timeout: float = 3600.0
    transport_level: int = 1
    agent_timeout: float = 20.0      # seconds to wait for the guest agent's answer
    forget: bool = False             # --forget: remove this host's copy afterwards
    #: From the unpause until finalize is done the guest has dom0's scheduler weight
    #: (``--no-rebind-priority``: leave it), so that its agent and hipd re-bind its
    #: network ahead of xenwam's own finalize work in dom0.
    rebind_priority: bool = True
    #: How long an abort that could not reach the destination waits for it to answer
    #: again (a crashed host reboots, a cut link heals), to finish there what it could
    #: not: the copy there demoted and given back its definition, the pair reconnected.
    destination_wait: float = 180.0
    #: Hold points (``$XENWAM_HOLD_AT``, for the fault matrix): see :data:`HOLD_POINTS`.
    hold_at: frozenset[str] = frozenset()


#: Where a migration can be held (``XENWAM_HOLD_AT=POINT[,POINT]``) so that a fault
#: injector can act at a moment too short to hit otherwise: the orchestrator creates
#: ``hold-POINT`` in its journal directory, says so in a ``note`` event (``hold`` and
#: ``path`` in its data) and goes on once the file is gone (or after
#: :data:`HOLD_TIMEOUT` seconds).  Nothing else changes; unset, nothing is held.
HOLD_POINTS = {
    "before-unpause": "the guest has arrived paused on the destination; not yet unpaused",
    "after-unpause": "the guest runs on the destination; the rebind phase not yet over",
    "finalize": "the finalize phase has started; nothing of it done yet",
}
HOLD_TIMEOUT = 900.0


def hold_points_from_env(value: str | None) -> frozenset[str]:
    """``$XENWAM_HOLD_AT`` parsed; :class:`ConfigError` naming the valid points."""
    points = frozenset(p.strip() for p in (value or "").split(",") if p.strip())
    unknown = sorted(points - set(HOLD_POINTS))
    if unknown:
        raise ConfigError(f"XENWAM_HOLD_AT: unknown hold point {unknown[0]!r} (valid: "
                          f"{', '.join(HOLD_POINTS)})")
    return points


@dataclass
class Report:
    """What the migration measured (printed at the end, ``report.json``)."""

    id: str
    domain: str
    outcome: str = "running"
    total_seconds: float = 0.0
    downtime_seconds: float | None = None
    downtime_estimate_ms: float | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    seed_wire_bytes: int = 0
    seed_data_bytes: int = 0
    resync_kib: int = 0
    memory_raw_bytes: int | None = None
    memory_wire_bytes: int | None = None
    memory_backward_bytes: int | None = None
    throttled_seconds: float = 0.0
    verify_out_of_sync_kib: int | None = None
    #: Blocks an online verify found differing and a resync then repaired (KiB).
    verify_repaired_kib: int = 0
    verify_seconds: float | None = None
    new_address: str | None = None
    #: The guest agent's answer (:class:`xenwam_guest.layout.AgentReport` as JSON) and
    #: the seconds from unpause until dom0 read it.
    agent_report: dict[str, Any] | None = None
    agent_seconds: float | None = None
    #: The guest's scheduler weight raised for the rebind (:class:`RaisedWeight` as
    #: JSON, and ``restored``: finalize gave it back); None if it was left alone.
    rebind_weight: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class RaisedWeight:
    """The guest's scheduler weight before the rebind, and what it was raised to."""

    scheduler: str
    weight: int
    raised_to: int

    @classmethod
    def parse(cls, stdout: str) -> RaisedWeight | None:
        """The ``weight=SCHED:OLD:NEW`` line of the finishing script's output, if any."""
        for line in stdout.splitlines():
            if line.startswith("weight="):
                sched, old, new = [*line[len("weight="):].split(":"), "", ""][:3]
                if sched in ("credit", "credit2") and old.isdigit() and new.isdigit():
                    return cls(sched, int(old), int(new))
        return None

    def restore_argv(self, domain: str) -> list[str]:
        """The ``xl`` command that gives the guest its own weight back."""
        return ["xl", f"sched-{self.scheduler}", "-d", domain, "-w", str(self.weight)]


def network_assignment(plan: Plan, generation: int) -> NetworkAssignment:
    """What dom0 writes into the guest's xenstore for the plan's network."""
    net = plan.network
    try:
        return NetworkAssignment(
            address=ipaddress.ip_interface(net.address) if net.address else None,
            gateway=ipaddress.ip_address(net.gateway) if net.gateway else None,
            subnet=ipaddress.ip_network(net.subnet) if net.subnet else None,
            migration=plan.id, generation=generation)
    except (ValueError, LayoutError) as exc:
        raise ConfigError(f"the guest's new network does not hold together: {exc}") from exc


def new_id(domain: str, clock: Callable[[], float] = time.time) -> str:
    """A migration id: time, domain and a random tag (sortable, unique)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock()))
    return f"{stamp}-{domain}-{secrets.token_hex(2)}"


class Migration:
    """One migration of one guest, from this host to ``options.destination``."""

    def __init__(self, options: Options, *, bus: ev.EventBus, journal: ev.Journal | None,
                 source: Side | None = None, destination: Side | None = None,
                 config_dir: Path = DEFAULT_CONFIG_DIR, site: sitecfg.Site | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 history_dir: Path | None = None) -> None:
        self.options = options
        #: Where earlier migrations' journals are (the downtime estimate learns from
        #: them); by default beside this migration's own journal.
        self.history_dir = history_dir or (journal.directory.parent if journal else None)
        self.bus = bus
        self.journal = journal
        self.source = source or local_side()
        self.destination = destination or remote_side(options.destination)
        self.config_dir = config_dir
        self.site = site
        self.clock = clock
        self.sleep = sleep
        self.state = MigrationState()
        self.lifecycles: dict[str, Lifecycle] = {}
        self.plan: Plan | None = None
        self.dest_site: sitecfg.Site | None = None
        self.report = Report(id=journal.directory.name if journal else "dry-run",
                             domain=options.domain)
        self._phase_start = 0.0
        self.pairs: dict[str, Resource] = {}
        self.suspended_at: float | None = None
        #: How the memory phase saw the guest suspend ("xenstore watch" or "xl list").
        self.suspend_seen_by: str | None = None

    # ------------------------------------------------------------ events

    def _emit(self, event: ev.Event) -> None:
        self.bus.emit(event)

    def _note(self, message: str, **data: Any) -> None:
        self._emit(ev.Note(self.clock(), self.state.phase.value, message, data))

    def _hold(self, point: str) -> None:
        """Wait at hold point ``point`` if it was asked for (see :data:`HOLD_POINTS`)."""
        if point not in self.options.hold_at or self.journal is None:
            return
        path = self.journal.directory / f"hold-{point}"
        path.touch()
        self._note(f"held at {point} ({HOLD_POINTS[point]}) until {path} is removed",
                   hold=point, path=str(path))
        deadline = self.clock() + HOLD_TIMEOUT
        while path.exists() and self.clock() < deadline:
            self.sleep(0.2)
        path.unlink(missing_ok=True)
        self._note(f"released from {point}", hold=point, released=True)

    def _step(self, action: Action) -> None:
        """Finish the current phase (event), move along the table, start the next."""
        now = self.clock()
        if self.state.phase is not Phase.PLAN or self._phase_start:
            seconds = round(now - self._phase_start, 3)
            self.report.phase_seconds[self.state.phase.value] = seconds
            self._emit(ev.PhaseFinished(now, self.state.phase.value, seconds))
        row = self.state.apply(action)
        for lifecycle in self.lifecycles.values():
            for drbd_step in row.drbd:
                lifecycle.apply(drbd_step)
        self._phase_start = now
        if row.target not in TERMINAL:
            self._emit(ev.PhaseStarted(now, row.target.value, row.what))

    # ------------------------------------------------------------ plan

    def make_plan(self) -> Plan:
        """Look at both hosts and decide; change nothing.  Refuses with the fix."""
        o = self.options
        site = self.site or sitecfg.load()
        self.site = site
        domains = self.source.xl_list()
        if not any(d.name == o.domain for d in domains):
            known = ", ".join(d.name for d in domains if d.domid != 0) or "none"
            raise ConfigError(f"no running domain {o.domain!r} on this host (domains: {known})")
        state = next(d.state for d in domains if d.name == o.domain)
        if any(flag in state for flag in "scd"):
            # xl would ask a dead guest to suspend and fail at the end of the memory copy
            # ("failed to suspend at sender"), after the disks had moved for nothing.
            what = ("crashed" if "c" in state else "dying" if "d" in state
                    else "shut down")
            raise ConfigError(f"domain {o.domain!r} is {what} here (`xl list` state "
                              f"{state}): there is nothing running to migrate; read its "
                              f"console log (/var/log/xen/console/guest-{o.domain}*.log) "
                              "and start it again (`xl destroy`, then `xl create`)")
        configs = xl.parse_list_long(self.source.run(xl.list_long(o.domain)).stdout)
        if not configs:
            raise ConfigError(f"`xl list -l {o.domain}` returned nothing")
        config = configs[0]
        source_hostname = self.source.run(["uname", "-n"]).stdout.strip()
        try:
            dest_hostname = self.destination.run(["uname", "-n"], timeout=30).stdout.strip()
        except CommandError as exc:
            raise ConfigError(f"cannot reach {o.destination} over ssh as root ({exc}); xenwam "
                              "reaches the destination as `xl migrate` does: set up root's "
                              "ssh key") from exc
        try:
            dest_site = sitecfg.Site.from_json(json.loads(
                self.destination.xenwam("site", "show", "--json", timeout=60)))
        except MigrationError as exc:
            if "not found" in str(exc) or "127" in str(exc):
                raise ConfigError(f"xenwam is not installed on {o.destination}: install it "
                                  "there (pip install xenwam) with a site file") from exc
            raise ConfigError(f"the destination's site file is unusable: {exc}") from exc
        self.dest_site = dest_site
        if dest_hostname == source_hostname:
            raise ConfigError(f"{o.destination} is this host ({source_hostname})")
        if any(d.name in (o.domain, o.domain + xl.INCOMING_SUFFIX)
               for d in self.destination.xl_list()):
            raise ConfigError(f"{o.destination} already has a domain named {o.domain!r}: "
                              "remove it there first")
        resources: dict[str, Resource] = {}
        states: dict[str, DeviceState] = {}
        sizes: dict[str, int] = {}
        for disk in config.disks:
            if disk.is_xenwam:
                try:
                    r = load(disk.target, self.config_dir)
                except ConfigError:
                    continue  # plan_resources says what is missing
                resources[r.name] = r
                states[r.name] = self.source.drbd(r.minor)
                sizes[r.name] = int(self.source.run(
                    ["blockdev", "--getsize64", r.device]).stdout.strip())
        planned = plan_resources(config, resources, states, sizes, source_hostname,
                                 dest_hostname)
        for rp in planned:
            if not rp.reuse_pair:
                there = self.destination.drbd(rp.minor)
                if there.connection != "Unconfigured" and \
                        self._resource_at(rp.minor) != rp.name:
                    raise ConfigError(f"DRBD minor {rp.minor} is in use on {o.destination}; "
                                      "give the resource another minor (`xenwam disk adopt`)")
                # The same resource there is a copy an aborted migration left behind
                # (the guest's running disk here is single): prepare removes it.
        network = plan_network(config, dest_site, o.address)
        agent = self.source.run(["xenstore-read",
                                 f"/local/domain/{config.domid}/{layout.AGENT_KEY}"],
                                check=False, timeout=30)
        guest_agent = agent.stdout.strip() if agent.ok and agent.stdout.strip() else None
        samples = self._earlier_downtimes()
        overhead = calibrated_overhead_ms(samples, site.bandwidth_mbit, site.rtt_ms)
        estimate = estimate_downtime_ms(config.memory_mib, site.bandwidth_mbit, site.rtt_ms,
                                        DEFAULT_HANDOVER_OVERHEAD_MS if overhead is None
                                        else overhead)
        self._note(f"expected paused time {estimate / 1000:.1f} s (handover overhead "
                   + (f"{overhead / 1000:.1f} s, the median of the last "
                      f"{min(len(samples), CALIBRATION_SAMPLES)} migrations from this host)"
                      if overhead is not None else
                      f"{DEFAULT_HANDOVER_OVERHEAD_MS / 1000:.1f} s by default: no earlier "
                      "migration from this host to learn it from)"),
                   estimate_ms=estimate, overhead_ms=overhead, samples=len(samples))
        check_downtime(estimate, o.max_downtime_ms)
        self.plan = Plan(id=self.report.id, domain=o.domain, domid=config.domid,
                         memory_mib=config.memory_mib, source_hostname=source_hostname,
                         destination=o.destination, destination_hostname=dest_hostname,
                         resources=planned, network=network, downtime_estimate_ms=estimate,
                         max_downtime_ms=o.max_downtime_ms, guest_agent=guest_agent)
        self._config = config
        self.report.downtime_estimate_ms = estimate
        self.report.new_address = network.address
        return self.plan

    def _earlier_downtimes(self) -> list[tuple[float, int]]:
        """``(paused seconds, guest MiB)`` of the completed migrations in this host's
        journal directory, oldest first (the ids start with their time)."""
        if self.history_dir is None or not self.history_dir.is_dir():
            return []
        samples = []
        for directory in sorted(self.history_dir.iterdir()):
            earlier = ev.Journal(directory)
            try:
                report = earlier.read_json("report.json")
                plan = earlier.read_json("plan.json")
                seconds, mib = report.get("downtime_seconds"), plan.get("memory_mib")
            except (OSError, ValueError, AttributeError):
                continue  # not a finished migration, or not ours to read
            if (str(report.get("outcome", "")).startswith("done")
                    and isinstance(seconds, (int, float)) and isinstance(mib, int)):
                samples.append((float(seconds), mib))
        return samples

    # ------------------------------------------------------------ run

    def run(self) -> Report:
        """Plan, then every phase; abort or roll forward on failure.  The report."""
        start = self.clock()
        self._phase_start = start
        self._emit(ev.PhaseStarted(start, Phase.PLAN.value, "check both hosts, the guest and "
                                                            "its disks"))
        assert self.journal is not None
        try:
            plan = self.make_plan()
        except BaseException as exc:
            self._emit(ev.Failed(self.clock(), Phase.PLAN.value, str(exc)))
            self._emit(ev.Finished(self.clock(), "refused", {"error": str(exc)}))
            raise
        self.journal.write_json("plan.json", plan.to_json())
        # The resource files as they were, secrets included (the directory is 0700): what
        # an abort puts back, even from `--recover` after this process died.
        self.journal.write_json("originals.json", {r.name: r.original
                                                   for r in plan.resources})
        os.chmod(self.journal.directory / "originals.json", 0o600)
        self.lifecycles = {r.name: Lifecycle() for r in plan.resources}
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            try:
                self._forward(plan)
                self.report.outcome = "done"
            except BaseException as exc:
                message = str(exc) if isinstance(exc, XenwamError) else repr(exc)
                self.report.error = message
                self._emit(ev.Failed(self.clock(), self.state.phase.value, message))
                self.report.outcome = "failed"
                try:
                    self.recover_after_failure()
                except BaseException as again:
                    self.report.outcome = "failed: the cleanup failed too; run --recover"
                    self.report.error = f"{message}; cleanup: {again}"
                    raise
                if isinstance(exc, KeyboardInterrupt):
                    raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.report.total_seconds = round(self.clock() - start, 3)
            self.journal.write_json("report.json", self.report.__dict__)
            self._emit(ev.Finished(self.clock(), self.report.outcome, dict(self.report.__dict__)))
        return self.report

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        raise MigrationError("stopped by SIGTERM (xenwam migrate --abort)")

    def _forward(self, plan: Plan) -> None:
        self._step(Action.START)
        self.prepare(plan)
        if all(r.reuse_pair for r in plan.resources):
            self._step(Action.SKIP_SEED)
        else:
            self._step(Action.SEED)
            self.seed_disks(plan)
            self._step(Action.CATCH_UP)
        self.catch_up(plan)
        self._step(Action.HANDOVER)
        self.handover(plan)
        self._step(Action.MIGRATE_MEMORY)
        self.migrate_memory(plan)
        self._step(Action.REBIND)
        self.rebind(plan)
        self._step(Action.FINALIZE)
        self.finalize(plan)
        self._step(Action.FINISH)

    # ------------------------------------------------------------ phases

    def _pair_model(self, plan: Plan, rp: Any, dest_disk: str, dest_meta: str) -> Resource:
        assert self.dest_site is not None and self.site is not None
        original = Resource.from_json(rp.original)
        mine = original.host(plan.source_hostname)
        peer = Host(hostname=plan.destination_hostname,
                    address=self.dest_site.replication_address,
                    port=self.dest_site.port_for(rp.minor), disk=dest_disk, meta_disk=dest_meta)
        return replace(original, hosts=(mine, peer), mode="bulk",
                       wan=replace(original.wan, rtt_ms=self.site.rtt_ms,
                                   bandwidth_mbit=self.site.bandwidth_mbit,
                                   csums_alg=original.wan.csums_alg or "md5"))

    def _model(self, name: str) -> Resource:
        """Resource ``name`` as this run made its pair, else as this host's file says."""
        return self.pairs.get(name) or load(name, self.config_dir)

    def _resource_at(self, minor: int) -> str | None:
        """The xenwam resource the destination has at DRBD ``minor``, if any."""
        doc = json.loads(self.destination.xenwam("disk", "status", "--json"))
        return next((str(r["resource"]) for r in doc.get("resources", ())
                     if r.get("minor") == minor), None)

    def _install_both(self, model: Resource) -> None:
        install(model, self.config_dir)
        self.destination.xenwam("disk", "install", input=json.dumps(model.to_json()))

    def prepare(self, plan: Plan) -> None:
        """Destination: DRBD loaded, an empty copy of each disk, the pair's definition."""
        self.destination.run(cmdgen.load_module())
        self.source.run(cmdgen.load_module())
        for rp in plan.resources:
            if rp.reuse_pair:
                self.pairs[rp.name] = Resource.from_json(rp.original)
                self._check_pair(plan, rp.name)
                continue
            # A copy left there by a migration whose abort could not reach the host (it
            # was down, or the link was cut) is not this disk's peer: the running disk
            # here is single, so it holds the newest data.  `provision --fresh` removes
            # it first; one the handover had made Primary is demoted first, which DRBD
            # refuses while anything holds it open (then nothing is removed and the
            # migration stops).
            made = json.loads(self.destination.xenwam(
                "disk", "provision", rp.name, "--size", str(rp.size_bytes), "--fresh",
                "--json"))
            stale = made["stale"]
            if stale["demoted"]:
                self._note(f"{rp.name}: the copy on {plan.destination} was still Primary "
                           "(left by a migration whose abort could not reach it): demoted",
                           resource=rp.name)
            if stale["removed"]:
                self._note(f"{rp.name}: removed a stale copy on {plan.destination} (left "
                           f"by an earlier migration that did not end there): "
                           f"{', '.join(stale['removed'])}", resource=rp.name)
            model = self._pair_model(plan, rp, made["disk"], made["meta_disk"])
            self.destination.xenwam("disk", "install", input=json.dumps(model.to_json()))
            self.pairs[rp.name] = model
            self._note(f"{rp.name}: empty copy {made['disk']} on {plan.destination}",
                       resource=rp.name, copy=made)

    def _check_pair(self, plan: Plan, name: str) -> None:
        """An existing pair that is not connected: attach the destination's copy (the
        host may have been off) and compare the two copies' data generations.  A copy
        that only lags is brought up to date by catch-up, which sends only the blocks its
        bitmap marks; copies both written while apart are refused, nothing changed."""
        local = DrbdDevice(self.pairs[name])
        if local.state().is_connected:
            return
        # After a reboot there its files are behind no loop device: set them up first.
        self.destination.xenwam("disk", "reattach", name)
        self.destination.xenwam("disk", "attach", name)
        doc = json.loads(self.destination.xenwam("disk", "status", name, "--json"))
        if doc["resources"][0].get("role") == "Primary":
            # Left Primary by a handover whose abort could not reach it; no guest of
            # this name runs there (plan checked), and DRBD refuses if anything holds it.
            self.destination.xenwam("disk", "demote", name)
            self._note(f"{name}: the copy on {plan.destination} was still Primary (left by "
                       "an aborted migration): demoted", resource=name)
        theirs = doc["resources"][0].get("generations")
        theirs_written = int(doc["resources"][0].get("out_of_sync_kib") or 0)
        mine = local.generations()
        if theirs is None or mine is None:
            raise MigrationError(f"resource {name!r}: cannot read the data generations of "
                                 f"both copies (here {mine}, {plan.destination} {theirs})")
        how = relation(mine, Generations.from_json(theirs))
        said = {SAME: "holds the same data as this one",
                LOCAL_AHEAD: "lags this one: catch-up sends only what it misses"}
        self._note(f"{name}: the copy on {plan.destination} "
                   f"{said.get(how, 'cannot be brought up to date: ' + how)}",
                   resource=name, relation=how, generations=mine.to_json(),
                   destination_generations=theirs)
        if how in (SAME, LOCAL_AHEAD):
            return
        if how == DIVERGED and theirs_written == 0:
            # Both copies started a generation when they parted, but nothing was written
            # there since: a copy that was Primary when the link died (a handover cut
            # off).  Giving up its empty side loses nothing (DRBD's discard-zero-changes).
            self.destination.xenwam("disk", "rejoin-unwritten", name)
            self._note(f"{name}: the copy on {plan.destination} parted Primary but holds no "
                       "writes of its own since: it rejoins giving up its empty side, and "
                       "catch-up resends what this copy wrote meanwhile", resource=name,
                       rejoin="destination-unwritten")
            return
        here, there = plan.source_hostname, plan.destination_hostname
        if how == DIVERGED:
            raise MigrationError(
                f"resource {name!r}: both copies were written while apart (split brain: "
                f"the guest, or something else, wrote to the copy on {there} while the one "
                f"here was in use). xenwam changed no data and will not choose whose writes "
                f"to drop. To keep this host's data and give up what was written on "
                f"{there}: save anything needed from it first, then on {there} run "
                f"`drbdadm disconnect {name}; drbdadm secondary {name}; drbdadm connect "
                f"--discard-my-data {name}` and here, if `xenwam disk status` shows it "
                f"StandAlone, `drbdadm connect {name}` (only the blocks written on either "
                f"side are resent); then migrate again (docs/migrate.md)")
        if how == PEER_AHEAD:
            raise MigrationError(
                f"resource {name!r}: the copy on {there} holds writes that the running "
                f"guest's disk here lacks (it was used on {there} after this copy was last "
                f"in sync). xenwam changed no data. Look at both copies before anything "
                f"else: `xenwam disk status {name}` here and on {there} (docs/migrate.md)")
        raise MigrationError(
            f"resource {name!r}: the copy on {there} shares no data generation with the one "
            f"on {here} (it is not a copy of this disk). xenwam changed no data; remove it "
            f"with `xenwam disk forget {name}` here and `xenwam disk unprovision {name}` on "
            f"{there}, then migrate again for a full copy")

    def seed_disks(self, plan: Plan) -> None:
        """Stream each live disk's non-zero blocks to the new copy (a fuzzy copy: what the
        guest writes meanwhile is fixed by the checksum resync that follows)."""
        for rp in plan.resources:
            if rp.reuse_pair:
                continue
            target = self.pairs[rp.name].host(plan.destination_hostname).disk
            ensure_control_dir()
            receiver = start_piped(
                ssh_argv(plan.destination, [*self.destination.xenwam_argv, "disk",
                                            "seed-receive", "--zeroed", target]),
                stdin=True, stdout=True)
            assert receiver.stdin is not None and receiver.stdout is not None
            counter = _ProgressWriter(receiver.stdin, self, rp.name, rp.size_bytes)
            try:
                with open(rp.device, "rb") as source:
                    stats = seed.send(source, counter)  # type: ignore[arg-type]
            finally:
                receiver.stdin.close()
            out = receiver.stdout.read().decode()
            if receiver.wait() != 0:
                raise MigrationError(f"seeding {rp.name} failed on {plan.destination}: {out!r}")
            self.report.seed_wire_bytes += stats.stream_bytes
            self.report.seed_data_bytes += stats.data_bytes
            self._note(f"{rp.name}: seeded {stats.data_bytes} bytes of data as "
                       f"{stats.stream_bytes} bytes on the wire", resource=rp.name,
                       **stats.to_json())

    def catch_up(self, plan: Plan) -> None:
        """Connect each pair; DRBD resyncs by checksum until both copies match, with the
        guest writing all along.  A guest that writes faster than the link is slowed to
        the link's pace (protocol C) so that the resync converges."""
        # DRBD's sent counter runs for as long as the device exists: read it before
        # connecting, since the resync may start before this side could read it after
        # (the lab once missed 2.8 MiB of a resync that way).
        before: dict[str, int] = {}
        for rp in plan.resources:
            model = self.pairs[rp.name]
            before[rp.name] = DrbdDevice(model).state().sent_kib
            # This side first, so that it waits with the pair's settings whatever it
            # was left with; then the destination, in one remote call (each costs
            # seconds of Python start-up in a busy dom0).  A pair from an earlier trip
            # gets the same definition there too: an abort that could not reach the
            # destination may have left its file and live settings in handover mode
            # (protocol C), and DRBD refuses peers whose protocols differ ("incompatible
            # protocol settings", both sides StandAlone).
            install(model, self.config_dir)
            device = DrbdDevice(model)
            device.adjust()
            device.connect()
            if rp.reuse_pair:
                self.destination.disk_installing("adjust", model)
            else:
                self.destination.xenwam("disk", "up", rp.name, "--create-md")
        for rp in plan.resources:
            device = DrbdDevice(self.pairs[rp.name], sleep=self.sleep)
            device.wait_connected(timeout=120)
            self._wait_converged(rp.name, device)
            self.report.resync_kib += max(0, device.state().sent_kib - before[rp.name])

    def _wait_converged(self, name: str, device: DrbdDevice) -> None:
        start = self.clock()
        best, best_at = None, start
        throttled_at: float | None = None
        new_pass = False
        last_emit = 0.0
        while True:
            st = device.state()
            oos = st.sync.out_of_sync_kib if st.sync else st.out_of_sync_kib
            now = self.clock()
            if now - last_emit >= 1.0 or st.in_sync:
                rate = st.sync.rate_kib_s * 1024 if st.sync and st.sync.rate_kib_s else None
                self._emit(ev.Progress(now, Phase.CATCH_UP.value, name,
                                       st.sync.percent if st.sync else
                                       (100.0 if st.in_sync else None),
                                       oos * 1024, rate,
                                       float(st.sync.eta_seconds) if st.sync and
                                       st.sync.eta_seconds is not None else None))
                last_emit = now
            if st.in_sync:
                if throttled_at is not None:
                    self.report.throttled_seconds += round(now - throttled_at, 3)
                return
            if best is None or oos < best:
                best, best_at = oos, now
            if (throttled_at is None and now - best_at > self.options.converge_after):
                # Writes outrun the link: synchronous replication paces them to it, and
                # the resync is given half the link so that it ends.
                device.to_handover()
                device.favour_resync()
                throttled_at = now
                self._emit(ev.Throttled(now, name, f"no progress for "
                                                   f"{self.options.converge_after:g} s"))
            elif (throttled_at is not None and not new_pass
                  and now - max(best_at, throttled_at) > self.options.converge_after):
                # Still stuck once paced: DRBD 8.4 can leave a bit set behind its resync
                # (seen in the lab: "100% (4/64820)K" for minutes after Ahead/Behind
                # cycles).  A new connection starts a new pass over the bitmap.
                self._new_resync_pass(name, device)
                new_pass = True
                best_at = self.clock()
            if now - start > self.options.sync_timeout:
                raise MigrationError(f"resource {name!r} did not converge within "
                                     f"{self.options.sync_timeout:g} s ({oos} KiB out of sync)")
            self.sleep(1.0)

    def _new_resync_pass(self, name: str, device: DrbdDevice) -> None:
        """Reconnect the pair so that DRBD resyncs what its bitmap still marks.  Both
        resource files first say the handover mode the live connection is in (protocol C):
        a reconnect from a file saying protocol A would be refused by the peer."""
        self._note(f"{name}: the resync made no progress while paced; reconnecting the "
                   "pair for a new pass over its bitmap", resource=name)
        model = replace(self.pairs[name], mode="handover")
        self._install_both(model)
        device.disconnect()
        deadline = self.clock() + 60
        while device.state().connection not in ("StandAlone", "Unconfigured"):
            if self.clock() > deadline:
                raise MigrationError(f"resource {name!r} did not disconnect for a new "
                                     "resync pass within 60 s")
            self.sleep(0.5)
        device.connect()
        device.wait_connected(timeout=120)
        device.favour_resync()

    def handover(self, plan: Plan) -> None:
        """Protocol C and two primaries (written into both files, so a reconnect keeps it),
        the online verify, and the destination promoted ahead of the memory copy."""
        for rp in plan.resources:
            model = replace(self.pairs[rp.name], mode="handover")
            install(model, self.config_dir)
            self.pairs[rp.name] = model
            DrbdDevice(model).to_handover()
            self.destination.disk_installing("handover", model)
            if self.options.verify:
                self._verify(rp.name, model)
            self.destination.xenwam("disk", "promote", rp.name)

    def _verify(self, name: str, model: Resource) -> None:
        """DRBD's online verify of the pair; blocks it finds differing are resynced from
        this (the running) side and verified again, at most :data:`VERIFY_REPAIRS` times.
        Seen in the lab after a guest outran the link (Ahead/Behind cycles, then paced
        writes): one 4 KiB block differed although DRBD counted the copies in sync."""
        for attempt in range(VERIFY_REPAIRS + 1):
            t0 = self.clock()

            def show(p: DrbdProgress) -> None:
                self._emit(ev.Progress(self.clock(), "verify", name, p.percent, None,
                                       None, None))
            device = DrbdDevice(model, sleep=self.sleep)
            oos = device.verify(on_progress=show)
            self.report.verify_seconds = round((self.report.verify_seconds or 0)
                                               + self.clock() - t0, 3)
            self._note(f"{name}: online verify found {oos} KiB out of sync",
                       resource=name, out_of_sync_kib=oos)
            if not oos:
                self.report.verify_out_of_sync_kib = self.report.verify_out_of_sync_kib or 0
                return
            if attempt == VERIFY_REPAIRS:
                self.report.verify_out_of_sync_kib = oos
                raise MigrationError(f"online verify of {name!r} still found {oos} KiB that "
                                     f"differ between the two copies after {VERIFY_REPAIRS} "
                                     "resyncs; not moving the guest")
            self.report.verify_repaired_kib += oos
            self._note(f"{name}: resyncing the {oos} KiB the verify found from this side, "
                       "then verifying again", resource=name, out_of_sync_kib=oos)
            self._new_resync_pass(name, device)
            self._wait_converged(name, device)

    def _config_override(self, plan: Plan) -> str | None:
        if self.options.config_path:
            return self.options.config_path
        if not plan.network.bridge_changes:
            return None  # xl sends the domain's own configuration: nothing lost
        text = xl.render_config(self._config.with_bridge(plan.network.destination_bridge))
        assert self.journal is not None
        path = self.journal.directory / f"{plan.domain}.cfg"
        path.write_text(text)
        return str(path)

    def migrate_memory(self, plan: Plan) -> None:
        """``xl migrate -p`` over xenwam's transport; the guest arrives paused."""
        assert self.journal is not None
        stats_path = self.journal.directory / "transport.json"
        transport = xl.transport_command("xenwam-transport", "--stats", str(stats_path),
                                         "--level", str(self.options.transport_level))
        argv = xl.migrate(plan.domain, plan.destination, xl.MigrateOptions(
            transport=transport, config_path=self._config_override(plan), paused=True,
            no_daemon=self.options.no_daemon, debug=self.options.debug))
        watcher = _SuspendWatcher(self.source, plan.domain, self.clock, plan.domid)
        progress = MemoryProgress(stats_path, plan.domain, self._emit, self.clock)
        watcher.start()
        progress.start()
        try:
            result = self.source.run(argv, timeout=3600, check=False)
        finally:
            watcher.stop()
            progress.stop()
        (self.journal.directory / "xl-migrate.log").write_text(result.stdout + result.stderr)
        self.suspended_at = watcher.suspended_at
        self.suspend_seen_by = watcher.how
        if stats_path.exists():
            stats = json.loads(stats_path.read_text())
            self.report.memory_raw_bytes = stats.get("forward_raw_bytes")
            self.report.memory_wire_bytes = stats.get("forward_wire_bytes")
            self.report.memory_backward_bytes = stats.get("backward_bytes")
        if not result.ok:
            raise MigrationError(f"xl migrate failed (exit {result.exit_status}): "
                                 f"{(result.stderr or result.stdout).strip()[-400:]!r}")
        left = xl.copies_of(self.source.xl_list(), plan.domain)
        if left:
            raise MigrationError(f"xl migrate succeeded but {left[0].name} is still on the "
                                 "source; refusing to unpause the destination (two copies)")

    def _wait_for_current_copy(self, plan: Plan, timeout: float = 60.0) -> None:
        """Give the destination's copies a moment to be connected and current (or the
        source of a resync) before the finishing step checks it: a source host that was
        just booted again reconnects within seconds, and copies that parted in a split
        brain are rejoined (:meth:`_rejoin_left_copy`), after which the resync towards
        the destination gets :data:`RESYNC_WAIT_SECONDS` more.  The finishing step
        decides."""
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            try:
                states = [self.destination.drbd(rp.minor) for rp in plan.resources]
            except XenwamError:
                return
            if all(st.connection in CURRENT_CONNECTIONS and st.disk == "UpToDate"
                   for st in states):
                return
            for rp, st in zip(plan.resources, states, strict=True):
                if st.connection == "StandAlone" and self._rejoin_left_copy(plan, rp.name):
                    deadline = max(deadline, self.clock() + RESYNC_WAIT_SECONDS)
            self.sleep(2.0)

    def _rejoin_left_copy(self, plan: Plan, name: str) -> bool:
        """The destination's copy dropped the pair: a split brain after a cut (both
        copies were Primary when the link died, and each started a generation).  Which
        side gives up its side depends on which holds writes since they parted:

        - this host's copy holds none (the guest had left it): it rejoins giving up its
          empty side, and the destination's copy is the resync's source;
        - this host's copy holds writes and the destination's none (the link died during
          the memory copy: the guest wrote here until it was suspended, and its copy on
          the destination is held paused, never run): the destination's copy rejoins as
          the resync's target although Primary, and the guest is unpaused only once it
          is current (the finishing step checks).

        Copies both written refuse, and the finishing step keeps the guest paused.
        True if a rejoin was started."""
        local = DrbdDevice(self._model(name))
        st = local.state()
        if st.is_connected:
            return False
        if st.is_primary and not xl.copies_of(self.source.xl_list(), plan.domain):
            with contextlib.suppress(DrbdError):
                local.demote(attempts=3)  # no guest here holds it: the hook's job, left
            st = local.state()
        if st.is_primary:
            return False
        try:
            if not st.out_of_sync_kib:
                local.rejoin_unwritten()
                self.destination.xenwam("disk", "connect", name)
                kind = "this-copy-unwritten"
                how = (f"this copy (no writes since) rejoins giving up its empty side, and "
                       f"the one on {plan.destination} resyncs it")
            else:
                self.destination.xenwam("disk", "rejoin-as-target", name)
                local.reconnect_keeping_writes()
                kind = "destination-as-target"
                how = (f"the guest wrote {st.out_of_sync_kib} KiB here before it was "
                       f"suspended that the copy on {plan.destination} lacks; that copy "
                       "(held by the paused guest, no writes of its own) rejoins as the "
                       "resync's target, and the guest stays paused until it is current")
        except XenwamError as exc:
            self._note(f"{name}: could not rejoin the copies: {exc}", resource=name)
            return False
        self._note(f"{name}: the copies parted when the link failed during the move; {how}",
                   resource=name, rejoin=kind)
        return True

    def rebind(self, plan: Plan) -> None:
        """On the destination, in one round trip (the guest is paused meanwhile): check it
        holds exactly one copy, write the guest's new network into its xenstore, unpause.
        Then wait for the guest agent's answer, if the guest runs one."""
        self._hold("before-unpause")
        assignment = network_assignment(plan, generation=int(self.clock() * 1000))
        argv = ["sh", "-c", FINISH_SCRIPT, "xenwam-finish", plan.domain,
                "0" if self.options.paused else "1", layout.NETWORK_DIR,
                ",".join(str(rp.minor) for rp in plan.resources),
                "1" if self.options.rebind_priority else "0",
                *(x for kv in assignment.to_values() for x in kv)]
        result = self.destination.run(argv, timeout=120, check=False)
        if result.exit_status == 4:
            # One round trip while the guest is paused when all is well; only a copy
            # that is not current yet costs the wait (and perhaps a rejoin).
            self._wait_for_current_copy(plan)
            result = self.destination.run(argv, timeout=120, check=False)
        if result.exit_status == 4:
            # DRBD lost the link after the handover: writes the guest made here meanwhile
            # may be missing there.  Its only copy is the paused one: never unpause it on
            # a disk that may be stale (found by the fault matrix, cut@memory).
            raise MigrationError(
                f"not unpausing {plan.domain} on {plan.destination}: "
                f"{result.stderr.strip()[-200:]} (DRBD lost the link during the move, so "
                f"the copy there may lack writes the guest made here meanwhile). The guest "
                f"stays paused there, its memory intact; bring the copy there up to date "
                f"from this host's (docs/migrate.md, 'A link lost during the move'), then "
                f"run `xenwam migrate --recover {plan.id}`")
        if not result.ok:
            raise MigrationError(f"finishing on the destination failed: "
                                 f"{(result.stderr or result.stdout).strip()[-400:]!r}")
        unpaused = self.clock()
        domid = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "?"
        net = plan.network
        self._note(f"new network for the guest written to "
                   f"/local/domain/{domid}/{layout.NETWORK_DIR}",
                   address=net.address, gateway=net.gateway)
        if self.options.paused:
            self._note("left paused on the destination (-p): `xl unpause` it there")
            return
        if self.suspended_at is not None:
            self.report.downtime_seconds = round(unpaused - self.suspended_at, 3)
        self._note("guest unpaused on the destination",
                   downtime_seconds=self.report.downtime_seconds,
                   suspend_seen_by=self.suspend_seen_by)
        raised = RaisedWeight.parse(result.stdout)
        if raised is not None:
            self.report.rebind_weight = {**asdict(raised), "restored": False}
            self._note(f"the guest has dom0's scheduler weight ({raised.raised_to}, its own "
                       f"{raised.weight}) until finalize is done; should this migration "
                       f"stop before, give it back on {plan.destination} with `"
                       f"{' '.join(raised.restore_argv(plan.domain))}`", **asdict(raised))
        self._hold("after-unpause")
        if plan.guest_agent is None:
            self._note("the guest runs no xenwam guest agent: nothing applies its new "
                       f"network ({net.address or 'dhcp'}); renumber it by other means")
            return
        self.wait_for_agent(domid, str(assignment.generation), unpaused)

    def wait_for_agent(self, domid: str, generation: str, unpaused: float) -> None:
        """Read the agent's report until it answers ``generation`` (or the timeout).  Its
        error is a note, not a failure: the guest runs on the destination either way."""
        deadline = unpaused + self.options.agent_timeout
        base = f"/local/domain/{domid}/{layout.REPORT_DIR}"
        keys = ["generation", *(k for k in layout.REPORT_KEYS if k != "generation")]
        while True:
            left = max(1, int(deadline - self.clock()) + 1)
            res = self.destination.run(["sh", "-c", AGENT_WAIT_SCRIPT, base, str(left),
                                        generation, *keys], check=False, timeout=left + 60)
            values = dict(line.split("=", 1) for line in res.stdout.splitlines()
                          if "=" in line)
            if values.get("generation") == generation == values.pop("recheck", None):
                break
            if self.clock() > deadline:
                self._note(f"the guest agent did not answer within "
                           f"{self.options.agent_timeout:g} s; check the guest's address "
                           f"(it should be {self.report.new_address or 'from DHCP'})")
                return
            self.sleep(0.25)
        try:
            answer = AgentReport.parse(values)
        except LayoutError as exc:
            self._note(f"the guest agent's answer is unreadable: {exc}")
            return
        self.report.agent_report = answer.to_json()
        self.report.agent_seconds = round(self.clock() - unpaused, 3)
        if answer.status is Status.ERROR:
            self._note(f"the guest agent could not apply the new network: {answer.message}; "
                       "the guest runs on the destination with its old address",
                       agent=answer.to_json())
        else:
            self._note(f"guest agent {answer.status.value} the new network in "
                       f"{answer.took_ms} ms; the guest has {answer.address}",
                       agent=answer.to_json(), seconds_after_unpause=self.report.agent_seconds)

    def finalize(self, plan: Plan) -> None:
        """Back to protocol A with the destination the only primary; the old host keeps
        its copy as a peer (a return trip then sends only what changed).  Idempotent."""
        self._hold("finalize")
        for rp in plan.resources:
            model = replace(self._model(rp.name),
                            mode="bulk")
            local = DrbdDevice(model)
            self._demote_source(local, plan)  # the hook's remove already did, normally
            if self.options.forget:
                # The destination goes on alone; this host's copy is removed.
                self.destination.xenwam("disk", "forget", rp.name)
                removed = json.loads(self.source.xenwam("disk", "unprovision", rp.name,
                                                        "--json"))
                gone = removed["removed"] or "no files: an adopted disk stays where it is"
                self._note(f"{rp.name}: --forget: the copy here is taken down ({gone}); "
                           f"{plan.destination} runs it alone", resource=rp.name)
                continue
            install(model, self.config_dir)
            self.destination.disk_installing("bulk", model)
            local.to_bulk()
        self._restore_weight(plan)

    def _restore_weight(self, plan: Plan) -> None:
        """Give the guest back the scheduler weight the rebind raised (best effort: the
        guest runs either way; a failure is a note saying what to run)."""
        done = self.report.rebind_weight
        if done is None or done.get("restored"):
            return
        raised = RaisedWeight(done["scheduler"], done["weight"], done["raised_to"])
        argv = raised.restore_argv(plan.domain)
        try:
            result = self.destination.run(argv, timeout=60, check=False)
            ok, why = result.ok, (result.stderr or result.stdout).strip()[-200:]
        except XenwamError as exc:
            ok, why = False, str(exc)
        if ok:
            done["restored"] = True
            self._note(f"the guest's scheduler weight is its own again ({raised.weight})",
                       **asdict(raised))
        else:
            self._note(f"could not give the guest its scheduler weight back ({why}); run "
                       f"`{' '.join(argv)}` on {plan.destination}", **asdict(raised))

    def _demote_source(self, local: DrbdDevice, plan: Plan) -> None:
        """Demote this host's copy once the guest has left.  A copy still held open while
        a dying domain is left here (seen in the fault matrix after a migration that had
        been aborted and retried: ``(null)``, state ``--pssd``, three pages still mapped
        by a backend) is waited for, up to :data:`DYING_WAIT_SECONDS`; after that the
        migration stops with what to do (the guest runs on the destination either way)."""
        deadline = self.clock() + DYING_WAIT_SECONDS
        said = False
        while True:
            try:
                local.demote()
                return
            except DrbdError as exc:
                if "held open" not in str(exc):
                    raise
                dying = [d for d in self.source.xl_list() if "d" in d.state]
                if not dying or self.clock() > deadline:
                    what = (f"domain {dying[0].domid} ({dying[0].name}, state "
                            f"{dying[0].state}), which Xen has not finished destroying"
                            if dying else "something other than a guest (a mount, a dd?)")
                    raise MigrationError(
                        f"the guest runs on {plan.destination}, but this host's copy of "
                        f"{local.name!r} is still held open by {what}, so it cannot be "
                        f"demoted; once `xl list` here no longer shows it, run `xenwam "
                        f"migrate --recover {self.report.id}` "
                        "to finish") from exc
                if not said:
                    self._note(f"{local.name}: domain {dying[0].domid} here is dying but "
                               "still holds the old copy open; waiting up to "
                               f"{DYING_WAIT_SECONDS:.0f} s for Xen to release it",
                               resource=local.name, domid=dying[0].domid)
                    said = True
                self.sleep(5.0)

    # ------------------------------------------------------------ abort and recovery

    def _stop_reconnecting(self) -> None:
        """When a failure finds this side's copy Primary, the guest still here and the
        connection to the destination down (from the handover on, both copies are
        primary), drop the connection at once.  Otherwise DRBD reconnects by itself when
        the link comes back, which can be before the abort has reached the destination
        to demote its copy, and two primaries that each started a new data generation
        when the link died meet as an unresolved split brain (the fault matrix's
        ``cut@memory``: finding the destination unreachable takes ssh's 20 s)."""
        assert self.plan is not None
        try:
            here = [d for d in self.source.xl_list() if d.name == self.plan.domain]
        except XenwamError:
            return
        if not here:
            return
        for rp in self.plan.resources:
            with contextlib.suppress(XenwamError):
                local = DrbdDevice(self._model(rp.name))
                st = local.state()
                if st.is_primary and not st.is_connected and \
                        st.connection not in ("StandAlone", "Unconfigured"):
                    local.disconnect()
                    self._note(f"{rp.name}: the link to {self.plan.destination} is down; "
                               "this copy stops reconnecting until the copy there is "
                               "demoted", resource=rp.name)

    def recover_after_failure(self) -> None:
        """After a failure: observe where the guest runs, then abort or roll forward."""
        assert self.plan is not None
        self._wait_for_xl_migrate()
        self._stop_reconnecting()
        where = self.observe()
        self._note("after the failure: " + where.describe(), **where.to_json())
        if where.on_destination and not where.on_source:
            if self.state.phase is Phase.MEMORY:
                self._step(Action.REBIND)
            if where.destination_paused:
                # Arrived, never unpaused: the orchestrator died in between, or the
                # unpause could not reach the destination and an earlier recovery had
                # already moved on to finalize (the fault matrix's cut@paused).
                self.rebind(self.plan)  # checks it is one paused copy first
            if self.state.phase is Phase.REBIND:
                self._step(Action.FINALIZE)
            self.finalize(self.plan)
            self._step(Action.FINISH)
            self.report.outcome = "done (rolled forward)"  # only once it is
            return
        self._step(Action.ABORT)
        self.abort(where)
        if not where.destination_reachable:
            self._await_destination()
        self._step(Action.ABORTED)
        self.report.outcome = "aborted"

    def _await_destination(self) -> None:
        """After an abort that could not reach the destination: wait (up to
        :attr:`Options.destination_wait`) for it to answer again, then abort once more
        (it is idempotent), which now reaches it: its copy demoted, its definition put
        back (the handover may have left it in protocol C there, which DRBD refuses to
        pair with this side's protocol A), the pair reconnected.  A host that booted
        again is waited for until its own boot has brought its copies up (DRBD
        configured there: ``xenwam disk reattach --all`` and the drbd service), so that
        nothing here races it for its loop devices.  The guest runs here all along;
        only this command's end waits.  A first trip's new copy is not waited for: the
        pair did not exist before, and the next migration removes that copy."""
        assert self.plan is not None
        pairs = [rp.name for rp in self.plan.resources
                 if not Resource.from_json(rp.original).is_single]
        if not pairs or self.options.destination_wait <= 0:
            return
        dest = self.plan.destination
        self._note(f"the guest runs here again; waiting up to "
                   f"{self.options.destination_wait:g} s for {dest} to answer, to put its "
                   "copy back in the pair")
        deadline = self.clock() + self.options.destination_wait
        while self.clock() < deadline:
            self.sleep(10.0)
            where = self.observe()
            if where.destination_reachable and where.on_source and all(
                    where.roles[name][1] in ("Primary", "Secondary") for name in pairs):
                self._note(f"{dest} answers again: restoring its copy: " + where.describe(),
                           **where.to_json())
                self.abort(where)
                return
        self._note(f"{dest} did not answer within {self.options.destination_wait:g} s; "
                   "the copies stay apart as noted above until it does")

    def reattach_local(self) -> None:
        """After a reboot of this host (``--recover``): its copies' files back behind loop
        devices (``xenwam disk reattach``), so that DRBD can use them again."""
        assert self.plan is not None
        if self.site is None:
            return
        for rp in self.plan.resources:
            try:
                done = volume.reattach(rp.name, self.site, self.config_dir)
            except XenwamError as exc:
                self._note(f"{rp.name}: its files could not be put back behind loop devices "
                           f"here: {exc}", resource=rp.name)
                continue
            if done["changed"]:
                self._note(f"{rp.name}: files behind loop devices again after a reboot "
                           f"({done['disk']}, {done['meta_disk']})", resource=rp.name)

    def _wait_for_xl_migrate(self, timeout: float = 1800.0) -> None:
        """Wait until no ``xl migrate`` of the guest runs on the source: one started by an
        orchestrator that was killed goes on alone, and deciding where the guest is
        while it still moves could destroy the copy that is about to be the only one."""
        assert self.plan is not None
        deadline = self.clock() + timeout
        said = False
        while True:
            res = self.source.run(["ps", "-eo", "pid=,args="], check=False, timeout=30)
            pids = xl.migrate_pids(res.stdout, self.plan.domain)
            if not pids:
                return
            if not said:
                self._note(f"an `xl migrate` of {self.plan.domain} still runs here (pid "
                           f"{pids[0]}): waiting for it to end before deciding anything",
                           pids=pids)
                said = True
            if self.clock() > deadline:
                raise MigrationError(
                    f"`xl migrate` of {self.plan.domain} (pid {pids[0]}) still runs after "
                    f"{timeout:g} s; nothing was changed. Look at it (`ps`, `xl list` on "
                    "both hosts), then run --recover again")
            self.sleep(1.0)

    def observe(self) -> Whereabouts:
        """Ask both hosts where the guest is and what each copy's DRBD role is."""
        assert self.plan is not None
        name = self.plan.domain
        src = xl.copies_of(self.source.xl_list(), name)
        try:
            dst = xl.copies_of(self.destination.xl_list(), name)
            reachable = True
        except XenwamError:
            dst, reachable = [], False
        roles = {}
        for rp in self.plan.resources:
            roles[rp.name] = (self.source.drbd(rp.minor).role,
                              self.destination.drbd(rp.minor).role if reachable else "?")
        return Whereabouts(source=[d.name for d in src], destination=[d.name for d in dst],
                           destination_paused=any(d.paused for d in dst),
                           destination_reachable=reachable, roles=roles)

    def abort(self, where: Whereabouts) -> None:
        """Put everything back with the guest on the source.  Idempotent."""
        assert self.plan is not None
        plan = self.plan
        if not where.on_source:
            raise MigrationError(
                f"the guest runs on neither host ({where.describe()}); nothing was destroyed "
                "by xenwam: look at `xl list` on both hosts before anything else")
        if where.destination:
            # A paused, never-started copy on the destination while the source runs.
            for name in where.destination:
                self.destination.run(xl.destroy(name), check=False)
        for rp in plan.resources:
            original = Resource.from_json(rp.original)
            if where.destination_reachable:
                self.destination.run([*self.destination.xenwam_argv, "disk", "demote",
                                      rp.name], check=False)
                if not rp.reuse_pair:
                    self.destination.run([*self.destination.xenwam_argv, "disk",
                                          "unprovision", rp.name], check=False)
            if not where.destination_reachable and not rp.reuse_pair:
                self._note(f"{rp.name}: {plan.destination} did not answer: its new copy "
                           f"stays there, perhaps still Primary, until the next migration "
                           f"removes it; do not start the guest there (its data is older "
                           f"than this host's); `xenwam disk unprovision {rp.name} --demote` "
                           f"there removes it", resource=rp.name)
            local = DrbdDevice(replace(original, mode="bulk"))
            if original.is_single or not where.destination_reachable:
                local.disconnect()
            install(original, self.config_dir)
            if not original.is_single and where.destination_reachable:
                local.adjust()
                # The peer's file and settings too: the handover may have switched
                # them to protocol C, and DRBD refuses peers whose protocols differ.
                self.destination.run([*self.destination.xenwam_argv, "disk", "adjust",
                                      rp.name, "--install"], check=False,
                                     input=json.dumps(original.to_json()))
            elif not original.is_single:
                self._note(f"{rp.name}: this copy stays StandAlone, since the one on "
                           f"{plan.destination} may still be Primary: the next migration "
                           f"there reconnects them (by hand: `xenwam disk demote {rp.name}"
                           f"; xenwam disk rejoin-unwritten {rp.name}` there, then `xenwam "
                           f"disk connect {rp.name}` here)", resource=rp.name)
            self._note(f"{rp.name}: source resource restored as before the migration")


@dataclass(frozen=True)
class Whereabouts:
    """Where the guest's copies are, seen from outside xenwam's own records."""

    source: list[str]
    destination: list[str]
    destination_paused: bool
    destination_reachable: bool
    roles: dict[str, tuple[str, str]]

    @property
    def on_source(self) -> bool:
        """A copy is on the source."""
        return bool(self.source)

    @property
    def on_destination(self) -> bool:
        """A copy is on the destination."""
        return bool(self.destination)

    def describe(self) -> str:
        """One line for the journal."""
        return (f"source has {self.source or 'nothing'}, destination has "
                f"{self.destination or 'nothing'}"
                + ("" if self.destination_reachable else " (unreachable)")
                + "; DRBD roles " + ", ".join(f"{k}: {a}/{b}" for k, (a, b) in
                                              self.roles.items()))

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {"source": self.source, "destination": self.destination,
                "destination_paused": self.destination_paused,
                "destination_reachable": self.destination_reachable,
                "roles": {k: list(v) for k, v in self.roles.items()}}


class _ProgressWriter:
    """Counts the seeding stream's bytes on their way to ssh and reports progress."""

    def __init__(self, inner: Any, migration: Migration, name: str, size: int) -> None:
        self.inner = inner
        self.migration = migration
        self.name = name
        self.size = size
        self.written = 0
        self.start = migration.clock()
        self.last = 0.0

    def write(self, data: bytes) -> int:
        self.inner.write(data)
        self.written += len(data)
        now = self.migration.clock()
        if now - self.last >= 1.0:
            self.last = now
            elapsed = max(1e-6, now - self.start)
            self.migration._emit(ev.Progress(now, Phase.SEED.value, self.name, None,
                                             self.written, self.written / elapsed, None))
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


class MemoryProgress(Background):
    """The memory phase's progress: the transport rewrites its stats file every few
    seconds while xl's stream runs; each change becomes a ``memory`` progress event (bytes
    on the wire both ways so far, and the rate since the last one)."""

    def __init__(self, stats_path: Path, domain: str, emit: Callable[[ev.Event], None],
                 clock: Callable[[], float], interval: float = 2.0) -> None:
        super().__init__()
        self.stats_path = stats_path
        self.domain = domain
        self.emit = emit
        self.clock = clock
        self.interval = interval
        self.last: tuple[float, int] | None = None

    def poll(self) -> ev.Progress | None:
        """The event for the stats file as it is now, if it moved on (None otherwise)."""
        try:
            doc = json.loads(self.stats_path.read_text())
            wire = int(doc.get("forward_wire_bytes") or 0) + int(doc.get("backward_bytes") or 0)
        except (OSError, ValueError, TypeError, AttributeError):
            return None  # not written yet, or by a transport that writes it only at the end
        now = self.clock()
        if self.last is not None and wire == self.last[1]:
            return None
        rate = None
        if self.last is not None and now > self.last[0]:
            rate = (wire - self.last[1]) / (now - self.last[0])
        self.last = (now, wire)
        return ev.Progress(now, "memory", self.domain, None, wire, rate, None)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            event = self.poll()
            if event is not None:
                self.emit(event)


class _SuspendWatcher(Background):
    """The moment the guest is suspended on the source during ``xl migrate``: the start
    of its downtime.

    On the source (where the orchestrator runs) it waits on a xenstore watch of the
    guest's ``control/shutdown`` key, which libxl writes to ask the guest to suspend:
    the first change after the watch is set is that request, and the guest stops
    within milliseconds of it.  Waiting on a watch costs nothing.  Polling ``xl list``
    (the fallback, where no ``xenstore-watch`` can be run) costs 0.2 s of an emulated
    dom0's CPU per call under TCG, which the transport then lacks: at a 0.2 s interval
    it took half of dom0's CPU and made the memory phase about twice as long."""

    WATCH_COMMAND = "xenstore-watch"

    def __init__(self, side: Side, name: str, clock: Callable[[], float], domid: int,
                 interval: float = 1.0) -> None:
        super().__init__()
        self.side = side
        self.name = name
        self.domid = domid
        self.clock = clock
        self.interval = interval
        self.suspended_at: float | None = None
        self.how = "xl list"
        self._proc: Any = None

    def start(self) -> None:
        if self.side.host == "localhost" and shutil.which(self.WATCH_COMMAND):
            path = f"/local/domain/{self.domid}/control/shutdown"
            try:
                self._proc = start_piped([self.WATCH_COMMAND, path], stdout=True,
                                         stderr_path=os.devnull)
                self.how = "xenstore watch"
            except CommandError:
                self._proc = None
        super().start()

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # our own child, by its handle
        super().stop()
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()

    def _run(self) -> None:
        if self._proc is not None and self._watch():
            return
        self._poll()

    def _watch(self) -> bool:
        """Wait for the second watch event (the first fires when the watch is set).
        False if the watch ended without one while the migration still runs."""
        assert self._proc is not None and self._proc.stdout is not None
        for events, _line in enumerate(self._proc.stdout, start=1):
            if events >= 2:
                self.suspended_at = self.clock()
                return True
        return self._done.is_set()

    def _poll(self) -> None:
        self.how = "xl list"
        while not self._done.is_set() and self.suspended_at is None:
            t = self.clock()
            try:
                doms = self.side.xl_list()
            except XenwamError:
                doms = []
            mine = [d for d in doms if d.name == self.name]
            if not mine or "s" in mine[0].state or "p" in mine[0].state:
                self.suspended_at = t
                return
            self._done.wait(self.interval)


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs (an orchestrator recorded in a journal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
