"""RFC 8046 host mobility bookkeeping: peer locators, credit, UPDATE sequencing.

Pure logic with the clock passed in; :class:`hip.association.Association` drives it and
builds the packets.  Three pieces:

* :class:`PeerLocatorSet` -- the peer's locators with their RFC 8046 section 5.2 states
  (UNVERIFIED, ACTIVE, DEPRECATED) and the nonce of the return routability check in
  flight for each unverified one.
* :class:`CreditAccount` -- credit-based authorization (RFC 8046 section 5.5, after
  RFC 4225 3.4): while the peer's preferred locator is unverified, bytes sent to it are
  limited by credit earned from bytes received from the peer; credit ages (halves) with
  time, so an idle attacker cannot bank it.
* :class:`UpdateSequencer` -- UPDATE Update IDs (RFC 7401 section 6.12): at most one
  UPDATE with an unacknowledged SEQ, retransmitted with backoff until ACKed; received
  SEQs below or equal to the last one processed are duplicates to be re-acknowledged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from hip.errors import StateTransitionError
from hip.events import Address, LocatorState, PeerLocator
from hip.outbox import OutgoingPacket

__all__ = [
    "LOCATOR_TRANSITIONS",
    "AnnouncedLocator",
    "CreditAccount",
    "LocatorState",
    "PeerLocatorEntry",
    "PeerLocatorSet",
    "PendingUpdate",
    "UpdatePurpose",
    "UpdateSequencer",
]

_S = LocatorState
#: Every legal change of a peer locator's state (RFC 8046 5.2), in one table.  A new
#: locator starts UNVERIFIED (the base-exchange address ACTIVE); it becomes ACTIVE when
#: its return routability check succeeds; any locator the peer no longer lists becomes
#: DEPRECATED; a DEPRECATED one listed again must be verified again.
LOCATOR_TRANSITIONS: Mapping[LocatorState, frozenset[LocatorState]] = MappingProxyType({
    _S.UNVERIFIED: frozenset({_S.ACTIVE, _S.DEPRECATED}),
    _S.ACTIVE: frozenset({_S.DEPRECATED}),
    _S.DEPRECATED: frozenset({_S.UNVERIFIED}),
})


@dataclass
class PeerLocatorEntry:
    """One locator of the peer.  Change ``state`` only through :meth:`move_to`."""

    address: Address
    state: LocatorState
    preferred: bool = False
    lifetime: int = 0
    #: Nonce of the ECHO_REQUEST_SIGNED sent to verify this locator, if one is in flight.
    nonce: bytes | None = None

    def move_to(self, new: LocatorState) -> None:
        """Take the transition to ``new``; an illegal one raises and changes nothing."""
        if new not in LOCATOR_TRANSITIONS[self.state]:
            raise StateTransitionError(
                f"peer locator {self.address}: {self.state} -> {new} is not a legal "
                f"RFC 8046 locator transition (from {self.state} only to "
                f"{sorted(LOCATOR_TRANSITIONS[self.state]) or 'nothing'})"
            )
        self.state = new


@dataclass(frozen=True)
class AnnouncedLocator:
    """A locator as the peer's LOCATOR_SET announced it (decoupled from the codec)."""

    address: Address
    preferred: bool
    lifetime: int


class PeerLocatorSet:
    """The peer's locators.  The address of the base exchange starts ACTIVE and preferred."""

    def __init__(self, initial: Address) -> None:
        self._entries: dict[Address, PeerLocatorEntry] = {
            initial: PeerLocatorEntry(initial, LocatorState.ACTIVE, preferred=True)
        }
        #: The last locator that was verified; HIP control packets go here while the
        #: preferred one is still unverified.
        self._last_verified: Address = initial

    def entries(self) -> list[PeerLocatorEntry]:
        """All known locators."""
        return list(self._entries.values())

    def get(self, address: Address) -> PeerLocatorEntry | None:
        """The entry for ``address``, if known."""
        return self._entries.get(address)

    def preferred(self) -> PeerLocatorEntry:
        """The locator the peer prefers (the base-exchange one until told otherwise)."""
        for entry in self._entries.values():
            if entry.preferred:
                return entry
        return self._entries[self._last_verified]

    def control_locator(self) -> Address:
        """Where HIP packets other than return-routability UPDATEs go: a verified locator."""
        pref = self.preferred()
        if pref.state is LocatorState.ACTIVE:
            return pref.address
        return self._last_verified

    def active_addresses(self) -> tuple[Address, ...]:
        """Verified locators, the preferred one first."""
        act = [e for e in self._entries.values() if e.state is LocatorState.ACTIVE]
        act.sort(key=lambda e: not e.preferred)
        return tuple(e.address for e in act)

    def apply_announcement(self, announced: Sequence[AnnouncedLocator]) -> list[Address]:
        """Take in a LOCATOR_SET; return the locators that now need return routability.

        Locators already ACTIVE stay ACTIVE (RFC 8046 5.2: a verified address need not be
        verified again); new ones start UNVERIFIED; known ones missing from the set become
        DEPRECATED.  The preferred locator is the first with the P bit, else the first.
        """
        if not announced:
            return []
        pref_addr = next((a.address for a in announced if a.preferred), announced[0].address)
        listed = {a.address for a in announced}
        for entry in self._entries.values():
            entry.preferred = False
            if entry.address not in listed and entry.state is not LocatorState.DEPRECATED:
                entry.move_to(LocatorState.DEPRECATED)
                entry.nonce = None
        needs_check: list[Address] = []
        for a in announced:
            known = self._entries.get(a.address)
            if known is None:
                entry = PeerLocatorEntry(a.address, LocatorState.UNVERIFIED)
                self._entries[a.address] = entry
            else:
                entry = known
                if entry.state is LocatorState.DEPRECATED:
                    entry.move_to(LocatorState.UNVERIFIED)
            entry.lifetime = a.lifetime
            entry.preferred = a.address == pref_addr
            if entry.state is LocatorState.UNVERIFIED:
                needs_check.append(a.address)
        # Verify the preferred locator first: it is the one traffic will move to.
        needs_check.sort(key=lambda addr: addr != pref_addr)
        return needs_check

    def start_check(self, address: Address, nonce: bytes) -> None:
        """Record the nonce sent in ECHO_REQUEST_SIGNED to ``address``."""
        self._entries[address].nonce = nonce

    def complete_check(self, nonce: bytes) -> Address | None:
        """Mark the locator whose nonce came back ACTIVE; return it, or None if unknown."""
        for entry in self._entries.values():
            if entry.nonce is not None and entry.nonce == nonce:
                entry.nonce = None
                if entry.state is not LocatorState.ACTIVE:
                    entry.move_to(LocatorState.ACTIVE)
                self._last_verified = entry.address
                return entry.address
        return None

    def fail_check(self, address: Address) -> None:
        """Return routability to ``address`` got no answer: forget the nonce."""
        entry = self._entries.get(address)
        if entry is not None:
            entry.nonce = None

    def snapshot(self) -> tuple[PeerLocator, ...]:
        """An immutable view for events."""
        return tuple(
            PeerLocator(e.address, e.state, e.preferred, e.lifetime)
            for e in self._entries.values()
        )


@dataclass
class CreditAccount:
    """Credit-based authorization for an unverified locator (RFC 8046 5.5)."""

    limit: int
    aging_interval: float
    credit: float = 0.0
    last_aged: float = 0.0

    def _age(self, now: float) -> None:
        # Credit aging: halve once per elapsed interval, so credit reflects recent traffic.
        if now <= self.last_aged:
            return
        periods = int((now - self.last_aged) / self.aging_interval)
        if periods:
            self.credit /= 2 ** min(periods, 64)
            self.last_aged += periods * self.aging_interval

    def earn(self, nbytes: int, now: float) -> None:
        """Bytes received from the peer earn as much credit, up to the limit."""
        self._age(now)
        self.credit = min(float(self.limit), self.credit + max(0, nbytes))

    def spend(self, nbytes: int, now: float) -> bool:
        """Take ``nbytes`` of credit if there is that much; say whether it was granted."""
        self._age(now)
        if nbytes <= self.credit:
            self.credit -= nbytes
            return True
        return False

    def available(self, now: float) -> float:
        """Credit left at ``now``."""
        self._age(now)
        return self.credit


class UpdatePurpose(enum.Enum):
    """What an UPDATE with SEQ is for."""

    LOCATORS = "announce our locators"
    ECHO = "verify a peer locator"
    REKEY = "rekey (new SPIs)"
    REKEY_REPLY = "answer a rekey"


@dataclass
class PendingUpdate:
    """An UPDATE with SEQ that waits for its ACK."""

    update_id: int
    purpose: UpdatePurpose
    data: bytes
    src: Address
    dst: Address
    deadline: float
    retries: int = 0
    #: For ECHO: the peer locator being verified.
    locator: Address | None = None


@dataclass
class UpdateSequencer:
    """Update ID bookkeeping for one association (RFC 7401 6.12)."""

    #: The next Update ID we send.
    next_id: int = 0
    #: The highest peer Update ID processed, ``None`` before the first.
    last_received: int | None = None
    outstanding: PendingUpdate | None = None
    #: Our answer to the last processed peer SEQ, re-sent when that SEQ arrives again.
    last_reply: OutgoingPacket | None = None

    def allocate(self) -> int:
        """A fresh Update ID (32-bit, wrapping)."""
        uid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return uid

    def is_new(self, update_id: int) -> bool:
        """Whether a received SEQ is new (not a retransmission of one already processed)."""
        if self.last_received is None:
            return True
        # Serial-number comparison (RFC 1982 style) so the 32-bit counter may wrap.
        diff = (update_id - self.last_received) & 0xFFFFFFFF
        return 0 < diff < 0x80000000

    def acknowledge(self, update_ids: Sequence[int]) -> PendingUpdate | None:
        """Clear our outstanding UPDATE if ``update_ids`` acknowledges it; return it."""
        pending = self.outstanding
        if pending is not None and pending.update_id in update_ids:
            self.outstanding = None
            return pending
        return None
