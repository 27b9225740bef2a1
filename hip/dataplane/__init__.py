"""The ESP data plane behind one interface, with a kernel and a userspace implementation.

hipd hands every security association the protocol core negotiates to a
:class:`DataPlane`: :meth:`~DataPlane.install` when the base exchange (or a rekey)
completes, :meth:`~DataPlane.update_locators` when either end moves, and
:meth:`~DataPlane.remove` on CLOSE.  Inner addresses are always the two HITs, outer
addresses the current locators (BEET, RFC 7402 section 3).

* :mod:`hip.dataplane.kernel` programs Linux XFRM states and policies in BEET mode;
* :mod:`hip.dataplane.userspace` runs a TUN device and does ESP in Python, with
  :mod:`hip.dataplane.esp` (the sans-I/O ESP packet transform);
* :mod:`hip.dataplane.probe` picks one of them at start-up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from hip.orchid import ORCHID_PREFIX

#: Inner addresses (HITs) are IPv6 ORCHIDs; locators are either family.
Locator = IPv4Address | IPv6Address

#: The ORCHIDv2 prefix every HIT lives in (hip.orchid's, RFC 7343), as ``ip`` wants it:
#: routed into the data plane.
HIT_PREFIX = str(ORCHID_PREFIX)
#: UDP port of RFC 5770 encapsulation, shared by HIP control and ESP.
HIP_UDP_PORT = 10500


class Encapsulation(enum.Enum):
    """How ESP packets travel between locators."""

    RAW = "raw"  # IP protocol 50
    UDP = "udp"  # RFC 5770: UDP port 10500, non-zero SPI tells ESP from HIP


@dataclass(frozen=True)
class SecurityAssociation:
    """A pair of ESP SAs with one peer, as the protocol core negotiated it.

    ``*_in`` protect packets from the peer to us, ``*_out`` packets from us to the peer.
    """

    own_hit: IPv6Address
    peer_hit: IPv6Address
    spi_in: int
    spi_out: int
    suite_id: int
    # Keys stay out of repr(), so that no log line or error message quoting an SA
    # carries key material.
    enc_key_in: bytes = field(repr=False)
    auth_key_in: bytes = field(repr=False)
    enc_key_out: bytes = field(repr=False)
    auth_key_out: bytes = field(repr=False)
    own_locator: Locator
    peer_locator: Locator
    encapsulation: Encapsulation = Encapsulation.RAW

    def redacted(self) -> dict[str, object]:
        """A JSON-ready description with no key material, for ``hipctl show``."""
        return {
            "own_hit": str(self.own_hit),
            "peer_hit": str(self.peer_hit),
            "spi_in": f"{self.spi_in:#010x}",
            "spi_out": f"{self.spi_out:#010x}",
            "esp_transform": self.suite_id,
            "own_locator": str(self.own_locator),
            "peer_locator": str(self.peer_locator),
            "encapsulation": self.encapsulation.value,
        }


class DataPlane(Protocol):
    """What hipd needs from an ESP data plane."""

    #: "kernel" or "userspace", for ``hipctl show`` and logs.
    kind: str

    def install(self, sa: SecurityAssociation) -> None:
        """Install (or replace, on rekey) both directions of ``sa``."""
        ...

    def update_locators(self, peer_hit: IPv6Address, own: Locator, peer: Locator) -> None:
        """Move the SAs with ``peer_hit`` to new outer addresses, keeping keys and SPIs."""
        ...

    def remove(self, peer_hit: IPv6Address) -> None:
        """Remove every SA with ``peer_hit``; removing an absent peer does nothing."""
        ...

    def counters(self) -> dict[str, object]:
        """Packets, bytes and drops by reason, JSON-ready."""
        ...

    def close(self) -> None:
        """Remove everything this data plane installed."""
        ...
