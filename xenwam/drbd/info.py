"""Parsers of what DRBD prints: text in, dataclasses out, no I/O.

Three sources, all captured from the lab into ``tests/data/drbd/``:

* ``/proc/drbd`` of the in-kernel DRBD 8.4: one block per minor.  Reading it costs no
  subprocess, which matters in the hotplug script (it runs inside the migration downtime).
* ``drbdsetup status --verbose --statistics``: indented ``key:value`` records.
* ``drbdsetup events2 --now``: one ``exists <object> key:value ...`` line per object.

DRBD 8.4 names one connection state for what 9 splits in two: ``cs:SyncSource`` means
connection ``Connected`` with replication ``SyncSource``.  :class:`DeviceState` always holds
both, so callers need not know which kernel they talk to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from xenwam.errors import DrbdError

#: 8.4 ``cs:`` values that mean "connected, and this is what replication is doing".
_REPLICATION_STATES = frozenset({
    "Connected", "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT",
    "WFSyncUUID", "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT",
    "VerifyS", "VerifyT", "Ahead", "Behind", "Established",
})
SYNCING = frozenset({"SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT",
                     "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID"})


@dataclass(frozen=True)
class SyncProgress:
    """Where a resync stands, as DRBD reports it."""

    percent: float
    out_of_sync_kib: int
    total_kib: int | None = None
    eta_seconds: int | None = None
    rate_kib_s: int | None = None


@dataclass(frozen=True)
class DeviceState:
    """One DRBD device (a minor) with its single peer, normalised across 8.4 and 9."""

    minor: int
    resource: str | None = None
    connection: str = "Unconfigured"
    replication: str | None = None
    role: str = "Unknown"
    peer_role: str = "Unknown"
    disk: str = "Diskless"
    peer_disk: str = "DUnknown"
    protocol: str | None = None
    sent_kib: int = 0
    received_kib: int = 0
    out_of_sync_kib: int = 0
    size_kib: int | None = None
    sync: SyncProgress | None = None
    #: 8.4 I/O flags (``r-----``): suspended, peer/user/aftr isp, ...
    flags: str = ""

    @property
    def is_primary(self) -> bool:
        """True when this host holds the device as Primary."""
        return self.role == "Primary"

    @property
    def is_connected(self) -> bool:
        """True when the connection to the peer is up (whatever replication is doing)."""
        return self.connection == "Connected"

    @property
    def is_syncing(self) -> bool:
        """True while a resync runs or is about to."""
        return self.replication in SYNCING

    @property
    def in_sync(self) -> bool:
        """Connected, both disks UpToDate, nothing out of sync."""
        return (self.is_connected and self.disk == "UpToDate"
                and self.peer_disk == "UpToDate" and self.out_of_sync_kib == 0
                and not self.is_syncing)

    def to_json(self) -> dict[str, object]:
        """Plain data for ``--json`` output."""
        doc: dict[str, object] = {
            "minor": self.minor, "resource": self.resource, "connection": self.connection,
            "replication": self.replication, "role": self.role, "peer_role": self.peer_role,
            "disk": self.disk, "peer_disk": self.peer_disk, "protocol": self.protocol,
            "sent_kib": self.sent_kib, "received_kib": self.received_kib,
            "out_of_sync_kib": self.out_of_sync_kib, "size_kib": self.size_kib,
        }
        if self.sync is not None:
            doc["sync"] = {
                "percent": self.sync.percent, "out_of_sync_kib": self.sync.out_of_sync_kib,
                "total_kib": self.sync.total_kib, "eta_seconds": self.sync.eta_seconds,
                "rate_kib_s": self.sync.rate_kib_s,
            }
        return doc


@dataclass(frozen=True)
class ProcDrbd:
    """The whole of ``/proc/drbd``."""

    version: str | None
    api: str | None
    protocol_range: tuple[int, int] | None
    devices: dict[int, DeviceState] = field(default_factory=dict)


def _split_connection(cs: str) -> tuple[str, str | None]:
    if cs in _REPLICATION_STATES:
        return "Connected", "Established" if cs == "Connected" else cs
    return cs, None


def _int(text: str) -> int:
    return int(text.replace(",", ""))


_VERSION_RE = re.compile(r"^version:\s*(\S+)\s*\(api:(\d+)/proto:(\d+)-(\d+)\)")
_DEVICE_RE = re.compile(
    r"^\s*(?P<minor>\d+):\s+cs:(?P<cs>\S+)"
    r"(?:\s+ro:(?P<role>\S+?)/(?P<peer_role>\S+)"
    r"\s+ds:(?P<disk>\S+?)/(?P<peer_disk>\S+)"
    r"(?:\s+(?P<proto>[ABC]))?"
    r"\s+(?P<flags>\S+))?"
)
_COUNTER_RE = re.compile(r"\b([a-z]{2,3}):(\d+)\b")
_SYNCED_RE = re.compile(r"(?:sync'ed|verified):\s*([\d.]+)%\s*\(([\d,]+)/([\d,]+)\)([KMG])")
_FINISH_RE = re.compile(r"finish:\s*(\d+):(\d+):(\d+)\s+speed:\s*([\d,]+)")
_UNIT = {"K": 1, "M": 1024, "G": 1024 * 1024}


def parse_proc_drbd(text: str) -> ProcDrbd:
    """Parse the text of ``/proc/drbd`` (DRBD 8.4).

    Raises :class:`DrbdError` quoting the first line it cannot read.
    """
    version = api = None
    proto_range = None
    devices: dict[int, DeviceState] = {}
    current: DeviceState | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if m := _VERSION_RE.match(line):
            version, api = m.group(1), m.group(2)
            proto_range = (int(m.group(3)), int(m.group(4)))
            continue
        if line.startswith(("srcversion:", "GIT-hash:")):
            continue
        if m := _DEVICE_RE.match(line):
            if current is not None:
                devices[current.minor] = current
            connection, replication = _split_connection(m.group("cs"))
            current = DeviceState(
                minor=int(m.group("minor")),
                connection=connection,
                replication=replication,
                role=m.group("role") or "Unknown",
                peer_role=m.group("peer_role") or "Unknown",
                disk=m.group("disk") or "Diskless",
                peer_disk=m.group("peer_disk") or "DUnknown",
                protocol=m.group("proto"),
                flags=m.group("flags") or "",
            )
            continue
        if current is None:
            raise DrbdError(f"cannot read /proc/drbd: unexpected line {line!r} before any device")
        counters = dict(_COUNTER_RE.findall(line))
        if "ns" in counters or "oos" in counters:
            current = replace(
                current,
                sent_kib=int(counters.get("ns", 0)),
                received_kib=int(counters.get("nr", 0)),
                out_of_sync_kib=int(counters.get("oos", 0)),
            )
            continue
        if m := _SYNCED_RE.search(line):
            unit = _UNIT[m.group(4)]
            current = replace(current, sync=SyncProgress(
                percent=float(m.group(1)),
                out_of_sync_kib=_int(m.group(2)) * unit,
                total_kib=_int(m.group(3)) * unit,
            ))
            continue
        if m := _FINISH_RE.search(line):
            h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3))
            base = current.sync or SyncProgress(percent=0.0, out_of_sync_kib=0)
            current = replace(current, sync=replace(
                base, eta_seconds=h * 3600 + mi * 60 + s, rate_kib_s=_int(m.group(4))))
            continue
        if line.lstrip().startswith(("resync:", "act_log:", "[", "verified:")):
            continue  # lines 8.4 prints in some states that carry nothing we use
        raise DrbdError(f"cannot read /proc/drbd: unexpected line {line!r}")
    if current is not None:
        devices[current.minor] = current
    return ProcDrbd(version=version, api=api, protocol_range=proto_range, devices=devices)


# --- drbdsetup status --verbose --statistics ---------------------------------------------

_KV_RE = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):(\S*)")


def _pairs(text: str) -> dict[str, str]:
    return dict(_KV_RE.findall(text))


def _replication(value: str | None) -> str | None:
    # drbdsetup says "Off" where /proc/drbd has no replication state: there is no peer.
    return None if value in (None, "Off") else value


def _kib(value: str | None) -> int:
    # drbdsetup prints sizes and counters in KiB.
    return int(value) if value and value.isdigit() else 0


def parse_status(text: str) -> list[DeviceState]:
    """Parse ``drbdsetup status --verbose --statistics`` into one state per volume.

    A resource line starts at column 0 (``NAME role:... ``); its volumes, connection and
    peer volumes follow, indented.  Raises :class:`DrbdError` on a line it cannot place.
    """
    states: list[DeviceState] = []
    resource: str | None = None
    res_kv: dict[str, str] = {}
    volumes: dict[str, dict[str, str]] = {}
    conn_kv: dict[str, str] = {}
    peer_volumes: dict[str, dict[str, str]] = {}
    last: dict[str, str] | None = None

    def flush() -> None:
        if resource is None:
            return
        for vol, kv in sorted(volumes.items()):
            peer = peer_volumes.get(vol, {})
            repl = _replication(peer.get("replication"))
            done = peer.get("done")
            oos = _kib(peer.get("out-of-sync"))
            size = _kib(kv.get("size")) or None
            sync = None
            if done is not None:
                sync = SyncProgress(percent=float(done), out_of_sync_kib=oos, total_kib=size)
            states.append(DeviceState(
                minor=int(kv.get("minor", "-1")),
                resource=resource,
                connection=conn_kv.get("connection", "StandAlone" if not conn_kv else "Unknown"),
                replication=repl,
                role=res_kv.get("role", "Unknown"),
                peer_role=conn_kv.get("role", "Unknown"),
                disk=kv.get("disk", "Diskless"),
                peer_disk=peer.get("peer-disk", "DUnknown"),
                sent_kib=_kib(peer.get("sent")),
                received_kib=_kib(peer.get("received")),
                out_of_sync_kib=oos,
                size_kib=size,
                sync=sync,
            ))

    for raw in text.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        body = raw.strip()
        if indent == 0:
            flush()
            name, _, rest = body.partition(" ")
            resource, res_kv = name, _pairs(rest)
            volumes, conn_kv, peer_volumes = {}, {}, {}
            last = res_kv
            continue
        if resource is None:
            raise DrbdError(f"cannot read drbdsetup status: line {raw!r} before any resource")
        kv = _pairs(body)
        first = body.split(" ", 1)[0]
        if first.startswith("volume:") and ("replication" in kv or "peer-disk" in kv):
            peer_volumes[kv.get("volume", "0")] = kv
            last = peer_volumes[kv.get("volume", "0")]
        elif first.startswith("volume:"):
            volumes[kv["volume"]] = kv
            last = volumes[kv["volume"]]
        elif "connection" in kv or first == "peer" or (":" not in first and "role" in kv):
            conn_kv = kv
            last = conn_kv
        elif kv and last is not None:
            # A continuation line: statistics of the record just above.
            last.update(kv)
        elif ":" not in body and indent <= 2:
            # "NAME" of a peer with no connection details on the line.
            conn_kv = {}
            last = conn_kv
        else:
            raise DrbdError(f"cannot read drbdsetup status: unexpected line {raw!r}")
    flush()
    return states


# --- drbdsetup events2 ---------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One ``events2`` line: what happened (``exists``, ``change``, ...), to which object."""

    action: str
    kind: str
    fields: dict[str, str]


def parse_events2(text: str) -> list[Event]:
    """Parse ``drbdsetup events2`` lines; ``exists -`` (end of the snapshot) is skipped."""
    events = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        # With --timestamps each line starts with an ISO time stamp.
        if re.match(r"^\d{4}-\d\d-\d\dT", parts[0]):
            parts = parts[1:]
        if len(parts) < 2:
            raise DrbdError(f"cannot read drbdsetup events2: line {raw!r}")
        action, kind = parts[0], parts[1]
        if kind == "-":
            continue
        fields = _pairs(" ".join(parts[2:]))
        events.append(Event(action=action, kind=kind, fields=fields))
    return events


def states_from_events(events: list[Event]) -> list[DeviceState]:
    """Fold an ``events2 --now`` snapshot into one state per device."""
    resources: dict[str, dict[str, str]] = {}
    connections: dict[str, dict[str, str]] = {}
    devices: dict[tuple[str, str], dict[str, str]] = {}
    peer_devices: dict[tuple[str, str], dict[str, str]] = {}
    for ev in events:
        name = ev.fields.get("name", "")
        if ev.kind == "resource":
            resources.setdefault(name, {}).update(ev.fields)
        elif ev.kind == "connection":
            connections.setdefault(name, {}).update(ev.fields)
        elif ev.kind == "device":
            devices.setdefault((name, ev.fields.get("volume", "0")), {}).update(ev.fields)
        elif ev.kind == "peer-device":
            peer_devices.setdefault((name, ev.fields.get("volume", "0")), {}).update(ev.fields)
    states = []
    for (name, vol), dev in sorted(devices.items()):
        conn = connections.get(name, {})
        peer = peer_devices.get((name, vol), {})
        oos = _kib(peer.get("out-of-sync"))
        states.append(DeviceState(
            minor=int(dev.get("minor", "-1")),
            resource=name,
            connection=conn.get("connection", "StandAlone"),
            replication=_replication(peer.get("replication")),
            role=resources.get(name, {}).get("role", "Unknown"),
            peer_role=conn.get("role", "Unknown"),
            disk=dev.get("disk", "Diskless"),
            peer_disk=peer.get("peer-disk", "DUnknown"),
            sent_kib=_kib(peer.get("sent")),
            received_kib=_kib(peer.get("received")),
            out_of_sync_kib=oos,
            size_kib=_kib(dev.get("size")) or None,
        ))
    return states


def parse_role(text: str) -> tuple[str, str]:
    """Parse ``drbdadm role`` (``Primary/Secondary``) into (local, peer)."""
    value = text.strip()
    local, sep, peer = value.partition("/")
    if not sep or not local:
        raise DrbdError(f"cannot read drbdadm role output {value!r}")
    return local, peer


# ------------------------------------------------------------------ data generations

#: The bitmap UUID DRBD writes when metadata is new or a disk was forced UpToDate alone.
UUID_JUST_CREATED = 4


@dataclass(frozen=True)
class Generations:
    """A disk's data generation identifiers (``drbdadm get-gi``): the current one, the one
    the bitmap counts changes since (0 while in sync with the peer), and two older ones.

    DRBD starts a new current generation when a primary loses its peer, or when a disk is
    promoted without one; the old current becomes the bitmap's base.  Comparing two
    disks' generations tells whether one only lags the other (a bitmap resync brings it
    up to date) or both were written while apart (split brain)."""

    current: int
    bitmap: int
    history: tuple[int, int]

    def to_json(self) -> dict[str, object]:
        """Hex strings, as DRBD prints them."""
        return {"current": f"{self.current:016X}", "bitmap": f"{self.bitmap:016X}",
                "history": [f"{h:016X}" for h in self.history]}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Generations:
        """The inverse of :meth:`to_json`."""
        history = doc.get("history")
        if not isinstance(history, list) or len(history) != 2:
            raise DrbdError(f"malformed generations {doc!r}")
        try:
            return cls(int(str(doc["current"]), 16), int(str(doc["bitmap"]), 16),
                       (int(str(history[0]), 16), int(str(history[1]), 16)))
        except (KeyError, ValueError):
            raise DrbdError(f"malformed generations {doc!r}") from None


_GI_RE = re.compile(r"^([0-9A-Fa-f]{16}):([0-9A-Fa-f]{16}):([0-9A-Fa-f]{16}):([0-9A-Fa-f]{16})"
                    r"(?::[01])*\s*$")


def parse_gi(text: str) -> Generations:
    """The output of ``drbdadm get-gi NAME`` (DRBD 8.4): ``CURRENT:BITMAP:H1:H2:flags...``."""
    for line in text.splitlines():
        if m := _GI_RE.match(line.strip()):
            current, bitmap, h1, h2 = (int(g, 16) for g in m.groups())
            return Generations(current, bitmap, (h1, h2))
    raise DrbdError(f"no data generation identifiers in {text.strip()[:200]!r}")


#: How two copies' data relate; see :func:`relation`.
SAME, LOCAL_AHEAD, PEER_AHEAD, DIVERGED, UNRELATED = (
    "same", "local-ahead", "peer-ahead", "diverged", "unrelated")


def relation(local: Generations, peer: Generations) -> str:
    """How ``local``'s data relates to ``peer``'s, by DRBD's own rules (the lowest bit of a
    UUID is a flag and is ignored):

    * ``same``: one generation; at most the bitmap's blocks differ.
    * ``local-ahead`` / ``peer-ahead``: one side wrote since they parted, the other did
      not; a resync from that side sends only what its bitmap marks.
    * ``diverged``: both sides started a generation since they parted: both were written
      while apart (split brain).  Only a person can choose which writes to give up.
    * ``unrelated``: no shared generation: the copies are not of one disk (a full sync).
    """
    def bare(uuid: int) -> int:
        return uuid & ~1

    lc, pc = bare(local.current), bare(peer.current)
    if lc == pc:
        return SAME
    just = UUID_JUST_CREATED
    local_past = {bare(h) for h in (local.bitmap, *local.history)} - {0, just}
    peer_past = {bare(h) for h in (peer.bitmap, *peer.history)} - {0, just}
    # Each side's past holding the other's present cannot both be true of two real
    # copies; such metadata is treated as a split brain, which only a person resolves.
    ahead, behind = pc in local_past, lc in peer_past
    if ahead != behind:
        return LOCAL_AHEAD if ahead else PEER_AHEAD
    if ahead or local_past & peer_past:
        return DIVERGED
    return UNRELATED
