"""hipd's journal of protocol events, read by ``hipctl events`` and ``hipctl wait-rebound``.

Pure bookkeeping: hipd appends every core event (except per-packet drops) with the
wall-clock time it passes in; a reader asks for the records after the last id it saw.
Records are JSON-ready and never hold key material: fields declared ``repr=False`` on
an event (the ESP keys of :class:`hip.events.SecurityAssociationsChanged`) are left out.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from hip.errors import DaemonError
from hip.events import PacketDropped

#: Records kept; older ones are forgotten (a reader that fell behind is told how many).
DEFAULT_CAPACITY = 4096


def _json_value(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str | int) else value.name
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return event_fields(value)
    return value


def event_fields(event: object) -> dict[str, object]:
    """The JSON-ready fields of a dataclass event, without those kept out of its repr."""
    if not dataclasses.is_dataclass(event) or isinstance(event, type):
        raise DaemonError(f"{event!r} is not an event dataclass")
    return {
        f.name: _json_value(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.repr
    }


@dataclass(frozen=True)
class EventRecord:
    """One journaled event: its id (increasing from 1), time, name and fields."""

    id: int
    time: float
    name: str
    fields: dict[str, Any]

    @property
    def peer_hit(self) -> str | None:
        """The peer's HIT as text, if the event names one."""
        peer = self.fields.get("peer_hit")
        return str(peer) if peer is not None else None

    def as_dict(self) -> dict[str, Any]:
        """The record as hipctl prints it (one JSON object per line)."""
        return {"id": self.id, "time": self.time, "event": self.name, **self.fields}


class EventJournal:
    """A bounded, append-only list of :class:`EventRecord` with increasing ids."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise DaemonError(f"event journal capacity must be at least 1, not {capacity}")
        self._records: deque[EventRecord] = deque(maxlen=capacity)
        self._last_id = 0

    @property
    def last_id(self) -> int:
        """The id of the newest record (0 before the first)."""
        return self._last_id

    def append(self, event: object, now: float) -> EventRecord | None:
        """Journal ``event`` at wall-clock ``now``; per-packet drops are not journaled."""
        if isinstance(event, PacketDropped):
            return None
        self._last_id += 1
        record = EventRecord(self._last_id, now, type(event).__name__, event_fields(event))
        self._records.append(record)
        return record

    def after(
        self, after_id: int, *, names: Iterable[str] = (), peer_hit: str | None = None
    ) -> tuple[list[EventRecord], int]:
        """Records newer than ``after_id`` that match, and how many newer ones were
        already forgotten (the reader fell more than the capacity behind)."""
        wanted = set(names)
        records = [
            r for r in self._records
            if r.id > after_id and (not wanted or r.name in wanted)
            and (peer_hit is None or r.peer_hit == peer_hit)
        ]
        oldest = self._records[0].id if self._records else self._last_id + 1
        lost = max(0, oldest - after_id - 1)
        return records, lost
