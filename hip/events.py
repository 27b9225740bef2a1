"""Events the HIP protocol core reports to its driver (hipd, tests, the data plane).

Every event is a frozen dataclass naming the peer by its HIT.  Drain them with
``next_event()`` on :class:`hip.host.HIPHost` or :class:`hip.association.Association`.
:class:`SecurityAssociationsChanged` carries everything the ESP data plane needs to
program kernel XFRM states or the userspace ESP of :mod:`hip.dataplane.esp`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

#: An IP address used as a locator (RFC 8046): where a host can be reached.
Address = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Event:
    """Base of every event: the association it concerns."""

    our_hit: IPv6Address
    peer_hit: IPv6Address


@dataclass(frozen=True)
class AssociationEstablished(Event):
    """The base exchange completed; ``initiator`` says which role we played."""

    initiator: bool
    peer_locator: Address
    local_locator: Address


class CloseReason(enum.Enum):
    """Why an association ended."""

    LOCAL_CLOSE = "closed by us, CLOSE_ACK received"
    PEER_CLOSE = "closed by the peer (CLOSE received)"
    CLOSE_TIMEOUT = "closed by us, no CLOSE_ACK before retries ran out"
    ABORTED = "closed by us before the base exchange completed"
    IDLE = "closed by us after the idle timeout, CLOSE_ACK received"


@dataclass(frozen=True)
class AssociationClosed(Event):
    """The association is closed; the data plane must remove its security associations."""

    reason: CloseReason


@dataclass(frozen=True)
class AssociationFailed(Event):
    """The base exchange failed (E-FAILED): retries exhausted or negotiation impossible."""

    reason: str


class SAChangeReason(enum.Enum):
    """Why :class:`SecurityAssociationsChanged` was emitted."""

    ESTABLISHED = "established"
    REKEYED = "rekeyed"
    LOCAL_MOVED = "our locator changed"
    PEER_MOVED = "peer locator verified"


@dataclass(frozen=True)
class SecurityAssociationsChanged(Event):
    """The ESP security association pair to install (RFC 7402), replacing any earlier one.

    ``spi_in``/``enc_key_in``/``auth_key_in`` protect what the peer sends us,
    ``spi_out``/``enc_key_out``/``auth_key_out`` what we send.  ESP packets go from
    ``local_locator`` to ``peer_locator``; the inner addresses are the HITs (BEET mode).
    """

    reason: SAChangeReason
    esp_transform: int
    spi_in: int
    spi_out: int
    enc_key_in: bytes = field(repr=False)
    auth_key_in: bytes = field(repr=False)
    enc_key_out: bytes = field(repr=False)
    auth_key_out: bytes = field(repr=False)
    local_locator: Address
    peer_locator: Address
    local_locators: tuple[Address, ...]
    peer_locators: tuple[Address, ...]


class LocatorState(enum.StrEnum):
    """RFC 8046 section 5.2 address states of a peer locator.

    A ``StrEnum`` so that ``str()``, comparisons with the plain names and JSON (hipd's
    status output) keep giving ``"UNVERIFIED"``, ``"ACTIVE"``, ``"DEPRECATED"``.
    The transitions are in :data:`hip.mobility.LOCATOR_TRANSITIONS`.
    """

    UNVERIFIED = "UNVERIFIED"
    ACTIVE = "ACTIVE"
    DEPRECATED = "DEPRECATED"


@dataclass(frozen=True)
class PeerLocator:
    """One locator of the peer with its RFC 8046 state."""

    address: Address
    state: LocatorState
    preferred: bool
    lifetime: int


@dataclass(frozen=True)
class PeerLocatorsChanged(Event):
    """The peer announced a new LOCATOR_SET; new locators start UNVERIFIED."""

    locators: tuple[PeerLocator, ...]


@dataclass(frozen=True)
class LocatorVerified(Event):
    """Return routability to a peer locator succeeded; it is ACTIVE now."""

    locator: Address


@dataclass(frozen=True)
class LocatorVerificationFailed(Event):
    """Return routability to a peer locator got no answer before retries ran out."""

    locator: Address


class Mover(enum.Enum):
    """Which end of the association changed its address, for :class:`Rebound`."""

    LOCAL = "we moved"
    PEER = "the peer moved"


@dataclass(frozen=True)
class Rebound(Event):
    """A move has been taken in by both ends: ESP now runs between these locators.

    After our move (``mover`` LOCAL): the peer acknowledged the UPDATE announcing our
    locators, and the return routability check of our preferred locator was answered
    (or the peer had verified that locator before and needs no check).  After the
    peer's move (``mover`` PEER): its preferred locator is verified and in use.
    The peer's own :class:`LocatorVerified` follows our echo answer by one trip.
    """

    mover: Mover
    local_locator: Address
    peer_locator: Address


@dataclass(frozen=True)
class UpdateFailed(Event):
    """An UPDATE of ours was never acknowledged; what it carried did not take effect."""

    reason: str


@dataclass(frozen=True)
class PacketDropped:
    """A received packet was discarded; ``reason`` is the counter it was added to."""

    reason: str
    packet_type: str | None = None
    peer_hit: IPv6Address | None = None


@dataclass(frozen=True)
class NotifyReceived(Event):
    """A NOTIFY arrived; ``authenticated`` is False when its signature could not be checked."""

    notify_type: int
    data: bytes
    authenticated: bool


#: Anything ``next_event()`` can return.
AnyEvent = Event | PacketDropped
