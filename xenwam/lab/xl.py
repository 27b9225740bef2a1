"""Lab guests and what the lab reads back: guest configs, ``xl list``, ping and tick logs.

All pure: text in, dataclasses out (and the reverse for guest configs).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from xenwam.errors import ConfigError
from xenwam.xen.xl import XlDomain, parse_xl_list

__all__ = ["XlDomain", "parse_xl_list"]  # re-exported: the lab reads `xl list` too

#: Where the lab image keeps the guest kernel and initramfs, and guest data disks.
GUEST_DIR = "/var/lib/xenwam-lab"

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def valid_guest_name(name: str) -> bool:
    """Whether ``name`` can name a lab guest."""
    return _NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class GuestSpec:
    """One lab guest: a PVH domU with a busybox initramfs, a vif and a data disk."""

    name: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    mac: str
    memory_mib: int = 128
    data_disk_mib: int = 64
    #: Initramfs file in dom0; guests with Python get their own (base + python + hip).
    ramdisk: str = f"{GUEST_DIR}/guest-initrd.gz"
    #: A xenwam DRBD resource to use as the data disk instead of the plain file.
    disk_resource: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"guest name {self.name!r} is not usable; use 1-31 lower-case letters, digits "
                "or dashes, starting with a letter"
            )
        if self.memory_mib < 96:
            # Debian's kernel does not fit below that ("segment kernel too large").
            raise ConfigError(
                f"guest memory {self.memory_mib} MiB is too small for Debian's kernel; "
                "give at least 96"
            )

    @property
    def data_disk(self) -> str:
        """Path of the data disk file in dom0 (the same on both hosts)."""
        return f"{GUEST_DIR}/{self.name}-data.img"

    @property
    def config_path(self) -> str:
        """Path of the xl config file in dom0."""
        return f"/etc/xen/{self.name}.cfg"

    def xl_config(self) -> str:
        """The xl domain configuration text."""
        cmdline = f"console=hvc0 quiet xw.ip={self.address} xw.gw={self.gateway}"
        return "\n".join([
            f'name = "{self.name}"',
            # PVH, not PV: Debian's Xen has no shadow paging, and PV live migration
            # needs it for log-dirty mode.
            'type = "pvh"',
            f'kernel = "{GUEST_DIR}/vmlinuz"',
            f'ramdisk = "{self.ramdisk}"',
            f'cmdline = "{cmdline}"',
            f"memory = {self.memory_mib}",
            "vcpus = 1",
            f'vif = ["bridge=xenbr0,mac={self.mac}"]',
            (f'disk = ["vdev=xvda,access=rw,script=block-xenwam,target={self.disk_resource}"]'
             if self.disk_resource else
             f'disk = ["format=raw,vdev=xvda,access=rw,target={self.data_disk}"]'),
            'on_crash = "preserve"',
            "",
        ])


def guest_mac(number: int) -> str:
    """A MAC in Xen's OUI for guest ``number``."""
    if not 1 <= number <= 255:
        raise ConfigError(f"guest number {number} is outside 1-255")
    return f"00:16:3e:58:57:{number:02x}"


@dataclass(frozen=True)
class PingReply:
    """One echo reply seen by ``ping -D``."""

    time: float
    seq: int


_PING = re.compile(r"^\[(\d+\.\d+)\]\s+\d+ bytes from [^:]+:\s+icmp_seq=(\d+)")


def parse_ping(text: str) -> list[PingReply]:
    """Replies in ``ping -D -n`` output, in order."""
    out = []
    for line in text.splitlines():
        m = _PING.match(line)
        if m:
            out.append(PingReply(float(m.group(1)), int(m.group(2))))
    return out


@dataclass(frozen=True)
class GapReport:
    """What a pinging client saw while something happened between ``start`` and ``end``."""

    replies: int
    longest_gap: float | None
    answered_after: bool


def longest_gap(replies: list[PingReply], start: float, end: float) -> GapReport:
    """The longest silence a pinging client saw around a migration from ``start`` to ``end``.

    Gaps are measured between consecutive replies from the last one before ``start``
    onwards.  If no reply came after ``end`` the guest never answered again: the silence
    has no end, so ``longest_gap`` is None and ``answered_after`` false.
    """
    if not any(r.time > end for r in replies):
        return GapReport(len(replies), None, False)
    before = [r.time for r in replies if r.time <= start]
    times = ([before[-1]] if before else [start]) + [r.time for r in replies if r.time > start]
    gap = max(b - a for a, b in itertools.pairwise(times))
    return GapReport(len(replies), round(gap, 3), True)


_HIPD_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) hipd \w+ (.*)$")


def rebounds(hipd_log: str, peer_hit: str) -> list[float]:
    """When (wall clock, the log's local time) hipd logged a completed rebinding with
    ``peer_hit``: its locator UPDATE acknowledged and return routability done."""
    found = []
    for line in hipd_log.splitlines():
        m = _HIPD_LINE.match(line)
        if m and m.group(3).startswith(f"rebound with {peer_hit} "):
            stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            found.append(stamp + int(m.group(2)) / 1000)
    return found


def first_after(times: Sequence[float], moment: float) -> float | None:
    """Seconds from ``moment`` to the first of ``times`` after it (None if none is)."""
    later = [t for t in times if t >= moment]
    return round(min(later) - moment, 3) if later else None


def clock_offset(before: float, remote: float, after: float) -> tuple[float, float]:
    """A remote clock's offset from ours (remote minus local) and its error bound, from a
    reading ``remote`` taken between our ``before`` and ``after``."""
    middle = (before + after) / 2
    return remote - middle, (after - before) / 2


@dataclass(frozen=True)
class Tick:
    """One line of a lab guest's counter (``xw-tick N UNIXTIME``)."""

    count: int
    time: int


_TICK = re.compile(r"xw-tick (\d+) (\d+)\r?\n")


def parse_ticks(text: str) -> list[Tick]:
    """Every complete counter line in a guest console log, in order."""
    return [Tick(int(m.group(1)), int(m.group(2))) for m in _TICK.finditer(text)]


@dataclass(frozen=True)
class ConsoleExec:
    """A command typed into a guest's console shell, and what it printed."""

    exit_status: int
    output: str


def console_exec_script(command: str, nonce: str) -> str:
    """The line typed into the guest shell for ``command``, framed by markers.

    The quotes inside the markers keep the echoed input line from matching them.
    """
    return (f'echo XW""BEGIN-{nonce}; ( {command} ) 2>&1; '
            f'echo XW""END-{nonce} $?')


def parse_console_exec(text: str, nonce: str) -> ConsoleExec | None:
    """The result framed by :func:`console_exec_script`'s markers, or None if unfinished.

    The guest's counter writes to the same console, so its lines are dropped.
    """
    begin = f"XWBEGIN-{nonce}"
    m = re.search(re.escape(begin) + r"\r?\n(.*?)XWEND-" + re.escape(nonce) + r" (\d+)",
                  text, re.S)
    if not m:
        return None
    lines = [ln.rstrip("\r") for ln in m.group(1).split("\n")]
    kept = [ln for ln in lines if ln and not _TICK.match(ln + "\n")]
    return ConsoleExec(int(m.group(2)), "\n".join(kept))


#: Ways ``migrate-baseline`` can carry the stream between the dom0s.
TRANSPORTS = ("ssh", "socat")
#: Port of the one-shot ``xl migrate-receive`` listener for the socat transport.
RECEIVE_PORT = 8002


def migrate_argv(name: str, dest_ip: str, transport: str, port: int = RECEIVE_PORT) -> list[str]:
    """Stock ``xl migrate`` argv run in the source dom0.

    ``ssh`` is xl's default (``ssh HOST xl migrate-receive``); ``socat`` uses xl's own
    ``-s`` hook with an empty ssh command, so xl runs the "host" string itself and
    streams through plain TCP to :func:`receive_listener_argv` on the destination.
    """
    if transport == "ssh":
        return ["xl", "migrate", name, dest_ip]
    if transport == "socat":
        return ["xl", "migrate", "-s", "", name, f"socat - TCP:{dest_ip}:{port}"]
    raise ConfigError(f"unknown transport {transport!r}; use one of {', '.join(TRANSPORTS)}")


def receive_listener_argv(bind_ip: str, port: int = RECEIVE_PORT) -> list[str]:
    """A one-connection ``xl migrate-receive`` listener bound to the lab link address only."""
    return ["socat", f"TCP-LISTEN:{port},bind={bind_ip},reuseaddr",
            "SYSTEM:xl migrate-receive"]


# ------------------------------------------------------------------ stock xl migrate, timed

#: Runs in the source dom0 around ``xl migrate``: each line xl prints, prefixed with the
#: dom0's clock, then ``xl-exit STATUS``; meanwhile a xenstore watch on the guest's
#: ``control/shutdown`` logs the time of each event (the first when the watch is set,
#: the second when xl writes ``suspend`` there, as xenwam's own downtime watch reads it).
#: Neither polls: ``xl list`` costs 0.2 s of an emulated dom0's CPU, and polling it
#: slowed the very migration it timed.
TIMED_MIGRATE = r"""
name=$1; log=$2; shift 2
domid=$(xl domid "$name")
key=/local/domain/$domid/control/shutdown
setsid sh -c 'xenstore-watch "$1" | while read -r p; do
    echo "$(date +%s.%N) $p"; done' sh "$key" > "$log" 2>&1 < /dev/null &
watcher=$!
sleep 0.5
{ "$@" 2>&1; echo "xl-exit $?"; } | while IFS= read -r line; do
    echo "$(date +%s.%N) $line"; done
kill -TERM -"$watcher" 2>/dev/null || true  # dash: no "--" here
"""

#: The sender's line once the destination has unpaused the guest (xl's own spelling).
STARTED_LINE = "migration sender: Target reports successful startup."


@dataclass(frozen=True)
class TimedMigrate:
    """What :data:`TIMED_MIGRATE` printed: xl's lines with their times, its exit status."""

    lines: tuple[tuple[float, str], ...]
    status: int | None

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def time_of(self, text: str) -> float | None:
        """When the first line containing ``text`` was printed."""
        return next((t for t, line in self.lines if text in line), None)


def _stamped(text: str) -> list[tuple[float, str]]:
    out = []
    for raw in text.splitlines():
        stamp, _, rest = raw.partition(" ")
        try:
            out.append((float(stamp), rest))
        except ValueError:
            continue  # not one of ours
    return out


def parse_timed_migrate(text: str) -> TimedMigrate:
    lines, status = [], None
    for t, line in _stamped(text):
        if line.startswith("xl-exit "):
            status = int(line.split()[1])
        else:
            lines.append((t, line))
    return TimedMigrate(tuple(lines), status)


def paused_seconds(watch_log: str, migrate: TimedMigrate) -> float | None:
    """The guest's paused time in a stock ``xl migrate``, on the source dom0's clock:
    from xl writing ``suspend`` into the guest's ``control/shutdown`` (the watch's second
    event) to the sender's :data:`STARTED_LINE` (the destination unpaused the guest, then
    told the sender: one round trip late at most).  None where either moment is missing."""
    events = _stamped(watch_log)
    suspended = events[1][0] if len(events) >= 2 else None
    started = migrate.time_of(STARTED_LINE)
    if suspended is None or started is None or started < suspended:
        return None
    return round(started - suspended, 3)
