"""The lab's settings and the address plan, as pure data.

Nothing here runs a command: these functions turn a :class:`LabConfig` into addresses,
``ip``/``tc`` argv lists and QEMU arguments, so they are unit-tested without QEMU.

Address plan (``wan`` layout, the default)::

    site A 10.1.0.0/24 (xenbr0 in dom0 a)   site B 10.2.0.0/24 (xenbr0 in dom0 b)
            dom0 a 10.0.0.1 ---- WAN link 10.0.0.0/24 ---- dom0 b 10.0.0.2
                                     |
                         correspondent 10.0.0.100

Each dom0 routes between its site subnet and the link, so a guest that moves from A to B
keeps an address that is wrong for B until it is renumbered.  In the ``lan`` layout the
link NIC is a port of each dom0's ``xenbr0`` and everything (dom0s, guests,
correspondent) is in 10.0.0.0/24 on one layer-2 segment.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from xenwam.errors import ConfigError

#: The two lab hosts, in boot order.
HOSTS = ("a", "b")

#: Where QEMU user-net forwards ssh to in every dom0 (set by dom0-start.sh).
CONTROL_ADDRESS = "10.0.2.15"

LINK_SUBNET = ipaddress.IPv4Network("10.0.0.0/24")
SITE_SUBNETS = {
    "a": ipaddress.IPv4Network("10.1.0.0/24"),
    "b": ipaddress.IPv4Network("10.2.0.0/24"),
}
CORRESPONDENT_HOST_NUMBER = 100


class Layout(enum.Enum):
    """How the two sites are joined."""

    #: Two routed subnets joined by the WAN link (the problem xenwam solves).
    WAN = "wan"
    #: One layer-2 segment and one subnet (the classic datacentre case).
    LAN = "lan"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)?$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$", re.IGNORECASE)
_LOSS = re.compile(r"^(\d+(?:\.\d+)?)%?$")


def parse_duration_ms(text: str) -> float:
    """``"40ms"``, ``"0.04s"``, ``"40"`` (ms) -> milliseconds."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ConfigError(
            f"cannot read the duration {text!r}; write it like 40ms, 0.5s or 500us"
        )
    value = float(m.group(1))
    unit = m.group(2) or "ms"
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_rate_kbit(text: str) -> int:
    """``"50mbit"`` -> kbit/s; ``"0"`` or ``""`` -> 0 (unlimited)."""
    if text.strip() in ("", "0"):
        return 0
    m = _RATE.fullmatch(text.strip())
    if not m:
        raise ConfigError(
            f"cannot read the rate {text!r}; write it like 50mbit, 800kbit or 1gbit "
            "(0 for unlimited)"
        )
    value = float(m.group(1))
    factor = {"bit": 0.001, "kbit": 1, "mbit": 1000, "gbit": 1000000}[m.group(2).lower()]
    kbit = round(value * factor)
    if kbit <= 0:
        raise ConfigError(f"the rate {text!r} is below 1 kbit/s; give at least 1kbit")
    return kbit


def parse_loss_percent(text: str) -> float:
    """``"0.5"`` or ``"0.5%"`` -> 0.5, checked to lie in [0, 100)."""
    m = _LOSS.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"cannot read the loss {text!r}; write a percentage like 0 or 0.5%")
    value = float(m.group(1))
    if value >= 100:
        raise ConfigError(f"a loss of {text!r} would drop every packet; give less than 100%")
    return value


@dataclass(frozen=True)
class Shaping:
    """WAN link properties, applied with netem on each dom0's link NIC."""

    rtt_ms: float = 0.0
    rate_kbit: int = 0
    loss_percent: float = 0.0

    @classmethod
    def parse(cls, rtt: str = "0ms", rate: str = "0", loss: str = "0") -> Shaping:
        """Build from the ``--rtt/--rate/--loss`` texts, refusing bad values."""
        return cls(parse_duration_ms(rtt), parse_rate_kbit(rate), parse_loss_percent(loss))

    @property
    def is_null(self) -> bool:
        """True when nothing needs shaping."""
        return self.rtt_ms == 0 and self.rate_kbit == 0 and self.loss_percent == 0

    def netem_argv(self, ifname: str) -> list[str]:
        """The ``tc`` argv that shapes ``ifname``'s egress: half the RTT each way."""
        if self.is_null:
            return ["tc", "qdisc", "del", "dev", ifname, "root"]
        argv = ["tc", "qdisc", "replace", "dev", ifname, "root", "netem"]
        if self.rtt_ms:
            argv += ["delay", f"{self.rtt_ms / 2:g}ms"]
        if self.rate_kbit:
            argv += ["rate", f"{self.rate_kbit}kbit"]
        if self.loss_percent:
            argv += ["loss", f"{self.loss_percent:g}%"]
        return argv


@dataclass(frozen=True)
class LabConfig:
    """Everything ``xenwam lab up`` needs to know; checked on construction."""

    run_dir: Path
    layout: Layout = Layout.WAN
    shaping: Shaping = field(default_factory=Shaping)
    #: First host port for ssh; host ``a`` gets this, ``b`` the next.  The ports live in
    #: the lab's own network namespace, so two labs do not collide on them.
    ssh_port_base: int = 2201
    memory_mib: int = 1536
    dom0_mem_mib: int = 512
    #: TCG translation cache per QEMU.  QEMU's default (1 GiB) makes each host's RSS
    #: about 2.5 GB; a quarter of it is plenty for Xen, dom0 and a small guest.
    tcg_cache_mib: int = 256
    source_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 1024 <= self.ssh_port_base <= 65000:
            raise ConfigError(
                f"ssh port base {self.ssh_port_base} is outside 1024-65000; pick another"
            )
        if self.dom0_mem_mib + 256 > self.memory_mib:
            raise ConfigError(
                f"host memory {self.memory_mib} MiB leaves no room for guests beside "
                f"dom0's {self.dom0_mem_mib} MiB; give at least {self.dom0_mem_mib + 256}"
            )

    @property
    def tag(self) -> str:
        """Six hex digits naming this lab's namespaces and taps (derived from run_dir)."""
        return hashlib.sha256(str(self.run_dir.resolve()).encode()).hexdigest()[:6]

    @property
    def switch_netns(self) -> str:
        """Namespace holding the QEMUs, their link taps and the link bridge."""
        return f"xwlab-{self.tag}-sw"

    @property
    def correspondent_netns(self) -> str:
        """Namespace of the correspondent host."""
        return f"xwlab-{self.tag}-c"

    @property
    def dom0_pycache(self) -> Path:
        """The share's bytecode, compiled on the lab host for the dom0s (see
        :func:`xenwam.lab.build.precompile_tree`)."""
        return self.run_dir / "dom0-pycache"

    def tap_name(self, host: str) -> str:
        """The link tap of ``host`` inside the switch namespace (<= 15 bytes)."""
        return f"xw{self.tag}{host}"

    def ssh_port(self, host: str) -> int:
        """The 127.0.0.1 port (in the switch namespace) forwarded to ``host``'s sshd."""
        return self.ssh_port_base + host_index(host)


def host_index(host: str) -> int:
    """0 for ``a``, 1 for ``b``; anything else is refused with the valid names."""
    try:
        return HOSTS.index(host)
    except ValueError:
        raise ConfigError(
            f"unknown lab host {host!r}; the lab's hosts are {', '.join(HOSTS)}"
        ) from None


def link_address(host: str) -> ipaddress.IPv4Interface:
    """``host``'s dom0 address on the link (the lab's third, transit subnet)."""
    return ipaddress.IPv4Interface(f"{LINK_SUBNET[1 + host_index(host)]}/{LINK_SUBNET.prefixlen}")


def correspondent_address() -> ipaddress.IPv4Interface:
    """The correspondent's address on the link subnet."""
    return ipaddress.IPv4Interface(
        f"{LINK_SUBNET[CORRESPONDENT_HOST_NUMBER]}/{LINK_SUBNET.prefixlen}"
    )


def site_subnet(layout: Layout, host: str) -> ipaddress.IPv4Network:
    """The subnet guests on ``host`` are numbered from."""
    host_index(host)
    return LINK_SUBNET if layout is Layout.LAN else SITE_SUBNETS[host]


def site_gateway(layout: Layout, host: str) -> ipaddress.IPv4Interface:
    """dom0's address on its ``xenbr0``: the guests' default gateway."""
    if layout is Layout.LAN:
        return link_address(host)
    net = SITE_SUBNETS[host]
    return ipaddress.IPv4Interface(f"{net[1]}/{net.prefixlen}")


def guest_address(layout: Layout, host: str, number: int) -> ipaddress.IPv4Interface:
    """Address of guest ``number`` (1-based) created on ``host``.

    In the lan layout guests of A count from .10 and guests of B from .50 so they never
    collide in the shared subnet.
    """
    if not 1 <= number <= 39:
        raise ConfigError(f"guest number {number} is outside 1-39")
    net = site_subnet(layout, host)
    base = 10 if layout is Layout.WAN or host == "a" else 50
    return ipaddress.IPv4Interface(f"{net[base + number - 1]}/{net.prefixlen}")


def dom0_network_commands(layout: Layout, host: str) -> list[list[str]]:
    """The argv lists that number ``host``'s dom0 for ``layout`` (run once after boot).

    dom0-start.sh has already named the NICs ``ctl`` and ``wan`` and created ``xenbr0``.
    """
    peer = HOSTS[1 - host_index(host)]
    link = str(link_address(host))
    cmds: list[list[str]] = []
    if layout is Layout.LAN:
        cmds.append(["ip", "link", "set", "wan", "master", "xenbr0"])
        cmds.append(["ip", "addr", "add", link, "dev", "xenbr0"])
    else:
        cmds.append(["ip", "addr", "add", link, "dev", "wan"])
        cmds.append(["ip", "addr", "add", str(site_gateway(layout, host)), "dev", "xenbr0"])
        cmds.append(
            ["ip", "route", "add", str(SITE_SUBNETS[peer]), "via", str(link_address(peer).ip)]
        )
        cmds.append(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        # Sites filter like real ones: a packet from an address that does not route back
        # through the interface it came in on is dropped (strict reverse-path filtering),
        # so a moved guest still using its old site's address is not let out.
        for scope in ("all", "default", "wan", "xenbr0"):
            cmds.append(["sysctl", "-q", "-w", f"net.ipv4.conf.{scope}.rp_filter=1"])
    return cmds


def site_file(layout: Layout, host: str, shaping: Shaping) -> str:
    """The xenwam site file of ``host`` (``/etc/xenwam/site.toml`` in its dom0).

    The WAN figures are the lab's shaping, or a nominal 1 ms / 1 gbit when unshaped.
    """
    from xenwam.site import Site, SiteNetwork, render

    net = site_subnet(layout, host)
    gateway = site_gateway(layout, host)
    return render(Site(
        name=f"site-{host}",
        network=SiteNetwork(bridge="xenbr0", subnet=str(net), gateway=str(gateway.ip),
                            assign="host-part"),
        replication_address=str(link_address(host).ip), port_first=7800, port_last=7899,
        storage_directory="/var/lib/xenwam/disks",
        rtt_ms=shaping.rtt_ms or 1.0,
        bandwidth_mbit=(shaping.rate_kbit / 1000) if shaping.rate_kbit else 1000.0))


#: Commands the lab puts on each dom0's PATH, running the shared source tree.  The share
#: is read-only, so bytecode is cached on dom0's disk (else every call recompiles).
DOM0_COMMANDS = {
    "/usr/local/bin/xenwam":
        '#!/bin/sh\nexport PYTHONPATH=/opt/xenwam PYTHONPYCACHEPREFIX=/var/cache/xenwam/pycache\n'
        'exec python3 -m xenwam.cli "$@"\n',
    "/usr/local/bin/xenwam-transport":
        '#!/bin/sh\nexport PYTHONPATH=/opt/xenwam PYTHONPYCACHEPREFIX=/var/cache/xenwam/pycache\n'
        'exec python3 -m xenwam.transport "$@"\n',
}


@dataclass(frozen=True)
class HostStep:
    """One command of making a dom0 a xenwam host, with what goes to its stdin."""

    argv: tuple[str, ...]
    input: str | None = None


#: dom0's scheduler weight against a guest's 256: Xen's advice for hosts whose dom0 does
#: the I/O (a migration's memory stream, DRBD, the transport's compression).  In the lab
#: each host has one emulated CPU; with equal weights a busy guest took 70% of it
#: ("steal" in dom0's top) and the memory phase crawled.
DOM0_WEIGHT = 1024
DOM0_WEIGHT_COMMAND = ("sh", "-c", f"xl sched-credit2 -d Domain-0 -w {DOM0_WEIGHT} 2>/dev/null"
                       f" || xl sched-credit -d Domain-0 -w {DOM0_WEIGHT}")

#: sshd ends a session whose client has gone silent for 30 s.  A source dom0 that died
#: mid-migration otherwise leaves the destination's `xl migrate-receive` waiting on its
#: ssh session for as long as TCP keeps it (the fault matrix saw one 20 minutes after
#: `crash-source@paused`).  The orchestrator's own ssh sends keep-alives every 10 s.
SSHD_KEEPALIVE_PATH = "/etc/ssh/sshd_config.d/xenwam.conf"
SSHD_KEEPALIVE = "ClientAliveInterval 10\nClientAliveCountMax 3\n"
SSHD_KEEPALIVE_COMMAND = (
    "sh", "-c", f"mkdir -p /etc/ssh/sshd_config.d && cat > {SSHD_KEEPALIVE_PATH} && "
    "/usr/sbin/sshd -t && "
    "{ systemctl reload ssh 2>/dev/null || kill -HUP \"$(cat /run/sshd.pid)\"; }")


def xenwam_host_steps(layout: Layout, host: str, shaping: Shaping) -> list[HostStep]:
    """What makes ``host``'s dom0 a xenwam host, as commands to run in it: ``xenwam`` and
    ``xenwam-transport`` on its PATH (running the shared source tree at /opt/xenwam), the
    ``block-xenwam`` hook where xl looks for it, the host's site file, DRBD loaded, dom0's
    scheduler weight and sshd's keep-alive.  The QEMU lab runs them over ssh
    (:meth:`Lab.install_xenwam`), Vagrant's provisioner in dom0 itself
    (:func:`xenwam.lab.hostnet.install_xenwam`)."""
    from xenwam.drbd import cmdgen

    steps = [HostStep(("sh", "-c", f"cat > {path} && chmod 755 {path}"), text)
             for path, text in DOM0_COMMANDS.items()]
    steps += [
        HostStep(("ln", "-sf", "/opt/xenwam/hooks/block-xenwam",
                  "/etc/xen/scripts/block-xenwam")),
        HostStep(("mkdir", "-p", "/etc/xenwam")),
        HostStep(("sh", "-c", "cat > /etc/xenwam/site.toml"),
                 site_file(layout, host, shaping)),
        HostStep(tuple(cmdgen.load_module())),
        HostStep(DOM0_WEIGHT_COMMAND),
        HostStep(SSHD_KEEPALIVE_COMMAND, SSHD_KEEPALIVE),
    ]
    return steps


def correspondent_routes(layout: Layout) -> list[list[str]]:
    """``ip route`` argv lists for the correspondent (none needed in the lan layout)."""
    if layout is Layout.LAN:
        return []
    return [
        ["ip", "route", "add", str(SITE_SUBNETS[h]), "via", str(link_address(h).ip)]
        for h in HOSTS
    ]


def default_run_dir() -> Path:
    """``$XENWAM_LAB_RUN``, else ``~/.cache/xenwam/lab-run``."""
    env = os.environ.get("XENWAM_LAB_RUN")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "xenwam" / "lab-run"


def default_cache_dir() -> Path:
    """``$XENWAM_LAB_CACHE``, else ``~/.cache/xenwam/lab``."""
    env = os.environ.get("XENWAM_LAB_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "xenwam" / "lab"


def source_tree() -> Path:
    """The directory holding the ``xenwam`` and ``hip`` packages (shared into dom0)."""
    return Path(__file__).resolve().parents[2]
