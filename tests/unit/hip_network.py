"""An in-memory network of :class:`hip.host.HIPHost` objects with a controllable clock.

Test helper (not a test module).  Datagrams go from ``packets_to_send()`` of one host to
``receive_packet`` of the host that owns the destination address; a ``policy`` may drop,
duplicate or delay each one, which is how loss and reordering are tested.  Nothing here
is a fake of the protocol: the hosts are the real ones, only the wire is simulated.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address

from hip.config import HIPConfig
from hip.events import Address, AnyEvent
from hip.host import HIPHost
from hip.identity import HostIdentity
from hip.outbox import OutgoingPacket
from hip.packet import PacketType
from hip.random import SeededRandom


def packet_type(data: bytes) -> PacketType:
    """The HIP packet type of a datagram."""
    return PacketType(data[2] & 0x7F)


@dataclass(frozen=True)
class Sent:
    """One datagram put on the wire, with when and by whom."""

    time: float
    sender: str
    packet: OutgoingPacket
    delivered: bool

    @property
    def type(self) -> PacketType:
        """Its HIP packet type."""
        return packet_type(self.packet.data)


#: A policy returns the list of delays for a datagram: [] drops it, [0.0] delivers it
#: now, [0.0, 0.0] duplicates it, [2.5] delays (and so reorders) it.
Policy = Callable[[Sent, int], list[float]]


def deliver_all(_sent: Sent, _index: int) -> list[float]:
    """The default policy: every datagram arrives once, at once."""
    return [0.0]


@dataclass
class Network:
    """Hosts by name and by address, an event queue of datagrams in flight, a clock."""

    now: float = 0.0
    hosts: dict[str, HIPHost] = field(default_factory=dict)
    owners: dict[Address, str] = field(default_factory=dict)
    log: list[Sent] = field(default_factory=list)
    events: dict[str, list[AnyEvent]] = field(default_factory=dict)
    policy: Policy = deliver_all
    _queue: list[tuple[float, int, str, OutgoingPacket]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def add(self, name: str, address: str, *, kind: str = "ecdsa-p256",
            config: HIPConfig | None = None, seed: bytes | None = None,
            identity: HostIdentity | None = None) -> HIPHost:
        """A new host ``name`` owning ``address`` (a given ``identity``, or a new one)."""
        rng = SeededRandom(seed or name.encode())
        if identity is None:
            identity = HostIdentity.generate(kind, rng)
        host = HIPHost(identity, [address], config=config or HIPConfig(), rng=rng,
                       now=self.now)
        self.hosts[name] = host
        self.owners[ip_address(address)] = name
        self.events[name] = []
        return host

    def move(self, name: str, address: str) -> None:
        """Host ``name`` loses its addresses and gets ``address`` (it is told so)."""
        new = ip_address(address)
        for addr, owner in list(self.owners.items()):
            if owner == name:
                del self.owners[addr]
        self.owners[new] = name
        self.hosts[name].update_locators([new], self.now)

    def _collect(self) -> None:
        for name, host in self.hosts.items():
            for pkt in host.packets_to_send():
                sent_index = len(self.log)
                owner = self.owners.get(pkt.dst)
                probe = Sent(self.now, name, pkt, owner is not None)
                delays = self.policy(probe, sent_index) if owner is not None else []
                self.log.append(Sent(self.now, name, pkt, bool(delays)))
                for delay in delays:
                    heapq.heappush(self._queue, (self.now + delay, next(self._seq), owner or "",
                                                 pkt))
            while (event := host.next_event()) is not None:
                self.events[name].append(event)

    def step(self) -> bool:
        """Deliver the next datagram due now; False if none is due."""
        self._collect()
        if not self._queue or self._queue[0][0] > self.now:
            return False
        _t, _n, owner, pkt = heapq.heappop(self._queue)
        self.hosts[owner].receive_packet(pkt.data, pkt.src, pkt.dst, self.now)
        self._collect()
        return True

    def run(self, until: float | None = None, max_steps: int = 10_000) -> None:
        """Deliver datagrams and fire timers until nothing is left (or ``until``)."""
        for _ in range(max_steps):
            if self.step():
                continue
            times = [t for h in self.hosts.values() if (t := h.get_timer()) is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times:
                return
            nxt = min(times)
            if until is not None and nxt > until:
                self.now = until
                return
            self.now = max(self.now, nxt)
            for host in self.hosts.values():
                host.handle_timer(self.now)
            self._collect()
        raise AssertionError(f"network still busy after {max_steps} steps")

    def sent_by(self, name: str, ptype: PacketType | None = None) -> list[Sent]:
        """Datagrams ``name`` sent, optionally of one type."""
        return [s for s in self.log if s.sender == name and (ptype is None or s.type is ptype)]

    def events_of(self, name: str, cls: type) -> list:  # type: ignore[type-arg]
        """Events of class ``cls`` that ``name`` reported so far."""
        self._collect()
        return [e for e in self.events[name] if isinstance(e, cls)]
