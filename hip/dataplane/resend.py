"""The TCP segments a peer may have missed, to send again when its locator changes.

Why (issue 10, finding 6): a migrating guest is paused for 15-20 s.  Its correspondent
keeps sending; every segment is lost, so the correspondent's TCP backs its
retransmission timer off (RTO doubling: after 15 s of loss the next retry can be 8-16 s
away).  The HIP UPDATE re-binds the association within a round trip of the guest's
resumption, yet TCP sat idle until that backed-off retransmission.  Sending the last
unacknowledged segments again as soon as the locator changes makes the guest answer
with an ACK at once, and TCP resumes; the duplicate bytes are harmless (the receiver
drops what it already has and acknowledges).

A :class:`ResendBuffer` keeps, per peer, the segments sent since the peer was last
heard from, bounded in count, bytes and age (:class:`ResendBounds`).  Hearing from the
peer empties it: what was sent before is not known to be lost, and a peer that answers
is reachable.  Sans-I/O: every time is passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hip.errors import DataPlaneError

#: Inner IPv6 header length, and where its payload length and next header are.
_IPV6_HEADER_LEN = 40
_TCP = 6
#: TCP flags that take sequence space (and so are retransmitted by TCP): SYN and FIN.
_TCP_SYN_OR_FIN = 0x03
_TCP_HEADER_MIN = 20


@dataclass(frozen=True)
class ResendBounds:
    """How much a :class:`ResendBuffer` keeps per peer, and how old it may resend.

    ``packets`` 0 (see :data:`NO_RESEND`) turns re-sending off.
    """

    packets: int = 32
    bytes: int = 64 * 1024
    #: Seconds; older segments are not re-sent (TCP has given up on them or resent them).
    max_age: float = 60.0

    def __post_init__(self) -> None:
        if self.packets < 0 or self.bytes < 0 or not self.max_age >= 0:
            raise DataPlaneError(
                f"resend bounds must not be negative: {self.packets} packets, {self.bytes} "
                f"bytes, {self.max_age} s; use packets=0 to turn re-sending off"
            )

    @property
    def enabled(self) -> bool:
        """False when nothing would ever be kept."""
        return self.packets > 0 and self.bytes > 0


#: The bounds of hipd's userspace data plane unless told otherwise.
DEFAULT_RESEND = ResendBounds()
#: Keep nothing, re-send nothing (``hipd --no-resend-after-move``).
NO_RESEND = ResendBounds(packets=0, bytes=0)


def worth_resending(inner: bytes) -> bool:
    """True for a TCP segment TCP itself would retransmit: one with data, SYN or FIN.

    Pure ACKs are left out: sent again they carry nothing new and could count as
    duplicate ACKs at the peer.  Other protocols are left out too: they have no
    backed-off timer this would shorten, and their duplicates need not be harmless.
    A TCP header behind an extension header is not looked for.
    """
    if len(inner) < _IPV6_HEADER_LEN + _TCP_HEADER_MIN or inner[6] != _TCP:
        return False
    payload_len = int.from_bytes(inner[4:6], "big")
    tcp = inner[_IPV6_HEADER_LEN:]
    data_offset = (tcp[12] >> 4) * 4
    if data_offset < _TCP_HEADER_MIN or payload_len < data_offset:
        return False
    return payload_len > data_offset or bool(tcp[13] & _TCP_SYN_OR_FIN)


@dataclass(frozen=True)
class SentPacket:
    """An inner packet as it was sent toward the peer, and when."""

    at: float
    inner: bytes


@dataclass
class ResendBuffer:
    """One peer's segments sent since it was last heard from, oldest first."""

    bounds: ResendBounds = DEFAULT_RESEND
    packets: deque[SentPacket] = field(default_factory=deque)
    #: Bytes of inner packets held.
    size: int = 0
    #: When a packet from the peer was last authenticated (None: not yet).
    last_heard: float | None = None

    def record(self, inner: bytes, now: float) -> bool:
        """Keep ``inner``, sent at ``now``, if it is worth re-sending and fits at all;
        the oldest kept packets make room.  True if it was kept."""
        if not self.bounds.enabled or len(inner) > self.bounds.bytes:
            return False
        if not worth_resending(inner):
            return False
        self.packets.append(SentPacket(now, inner))
        self.size += len(inner)
        while len(self.packets) > self.bounds.packets or self.size > self.bounds.bytes:
            self.size -= len(self.packets.popleft().inner)
        return True

    def heard(self, now: float) -> None:
        """The peer was heard from at ``now``: what was sent before is not re-sent."""
        self.last_heard = now
        self.packets.clear()
        self.size = 0

    def take(self, now: float) -> list[bytes]:
        """The packets to send again at ``now``, in the order they were first sent:
        sent after the peer was last heard and at most ``max_age`` seconds ago.
        The buffer is empty afterwards."""
        heard = self.last_heard
        due = [p.inner for p in self.packets
               if (heard is None or p.at > heard) and now - p.at <= self.bounds.max_age]
        self.packets.clear()
        self.size = 0
        return due
