"""What the protocol core hands its driver: packets to send, events, drop counters.

Kept apart from :mod:`hip.association` so that the pieces an association is built
from (:mod:`hip.mobility` keeps the last UPDATE reply it sent) can name an outgoing
packet without importing the association itself.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from hip.events import Address, AnyEvent, PacketDropped

__all__ = ["Outbox", "OutgoingPacket"]


@dataclass(frozen=True)
class OutgoingPacket:
    """A datagram to send: HIP packet bytes from locator ``src`` to locator ``dst``."""

    data: bytes
    src: Address
    dst: Address


@dataclass
class Outbox:
    """Where associations and their host put packets, events and drop counts."""

    packets: list[OutgoingPacket] = field(default_factory=list)
    events: deque[AnyEvent] = field(default_factory=deque)
    drops: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str, packet_type: str | None = None,
             peer_hit: bytes | None = None) -> None:
        """Count a dropped packet under ``reason`` and report it as an event."""
        self.drops[reason] += 1
        self.events.append(PacketDropped(
            reason, packet_type, IPv6Address(peer_hit) if peer_hit else None))
