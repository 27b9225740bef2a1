"""The xenstore keys of a moved guest's network: written by dom0, read by the guest's agent,
answered by the agent.  The one definition both sides use (docs/guest-agent.md).

All paths are relative to the guest's home, ``/local/domain/DOMID``: xenstored resolves a
relative path against the caller's home, so the guest reads ``xenwam/network/address``
and dom0 writes ``/local/domain/DOMID/xenwam/network/address``.

- ``xenwam/network/`` (dom0 writes, the guest may only read: keys dom0 creates under the
  guest's home inherit its permissions, read-only to the guest):
  ``address`` (``ADDR/PREFIX``, or ``dhcp``), ``gateway`` (empty if none), ``subnet``,
  ``migration`` (the migration's id) and ``generation`` (a decimal number that changes on
  every write, written last: the agent acts when it changes).
- ``data/xenwam/network/`` (the guest writes; ``data/`` is the one guest-writable area):
  ``status`` (``applied``, ``unchanged`` or ``error``), ``address`` (what the interface
  has now), ``message``, ``took-ms`` (from seeing the generation to the address being in
  place), ``at`` (the guest's wall clock, seconds) and ``generation`` (the one answered,
  written last: dom0 waits for it).

Parsing is strict: a value that does not parse is reported back and nothing is applied.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from xenwam_guest.errors import LayoutError

#: Where dom0 writes the guest's new network, relative to the guest's home.
NETWORK_DIR = "xenwam/network"
#: Where the agent answers, relative to the guest's home (guest-writable).
REPORT_DIR = "data/xenwam/network"
#: The keys under :data:`NETWORK_DIR`, in the order dom0 writes them (generation last).
NETWORK_KEYS = ("address", "gateway", "subnet", "migration", "generation")
#: The keys under :data:`REPORT_DIR`, in the order the agent writes them (generation last).
REPORT_KEYS = ("status", "address", "message", "took-ms", "at", "generation")
#: The ``address`` value that asks the guest to get its address from the site's DHCP.
DHCP = "dhcp"
#: Written by the agent when it starts (``xenwam-guest-agent VERSION``): dom0 can tell
#: that a guest will apply a new network before it moves it.
AGENT_KEY = "data/xenwam/agent"
#: Longest value accepted in any key (xenstore allows 4 KiB; nothing here needs more).
MAX_VALUE = 256

_MIGRATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

T = TypeVar("T")
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class NetworkAssignment:
    """What dom0 asks the guest's network to become."""

    address: IPInterface | None  # None: DHCP
    gateway: IPAddress | None
    subnet: IPNetwork | None
    migration: str
    generation: int

    def __post_init__(self) -> None:
        if self.generation < 0:
            raise LayoutError(f"generation {self.generation} is negative")
        if not _MIGRATION_ID.fullmatch(self.migration):
            raise LayoutError(f"migration id {self.migration!r} is not 1-64 letters, digits "
                              "or ._:-")
        if self.subnet is not None and self.address is not None and (
                self.address.version != self.subnet.version
                or self.address.ip not in self.subnet):
            raise LayoutError(f"address {self.address} is not in subnet {self.subnet}")
        if self.gateway is not None and self.address is not None:
            if self.gateway.version != self.address.version:
                raise LayoutError(f"gateway {self.gateway} and address {self.address} are "
                                  "of different IP versions")
            if self.gateway == self.address.ip:
                raise LayoutError(f"gateway {self.gateway} is the guest's own address")
            if self.gateway not in self.address.network:
                raise LayoutError(f"gateway {self.gateway} is not on the guest's link "
                                  f"({self.address.network})")

    @property
    def dhcp(self) -> bool:
        """True when the site hands out the address."""
        return self.address is None

    def to_values(self) -> list[tuple[str, str]]:
        """(key, value) pairs under :data:`NETWORK_DIR`, in write order (generation last)."""
        values = {
            "address": DHCP if self.address is None else str(self.address),
            "gateway": "" if self.gateway is None else str(self.gateway),
            "subnet": "" if self.subnet is None else str(self.subnet),
            "migration": self.migration,
            "generation": str(self.generation),
        }
        return [(k, values[k]) for k in NETWORK_KEYS]

    @classmethod
    def parse(cls, values: Mapping[str, str | None]) -> NetworkAssignment:
        """The assignment the values under :data:`NETWORK_DIR` describe.

        Raises :class:`LayoutError` naming the key for a missing or malformed value.
        """
        def get(key: str, *, required: bool = True) -> str:
            value = values.get(key)
            if value is None:
                if required:
                    raise LayoutError(f"{NETWORK_DIR}/{key} is missing")
                return ""
            if len(value) > MAX_VALUE:
                raise LayoutError(f"{NETWORK_DIR}/{key} is {len(value)} bytes long "
                                  f"(at most {MAX_VALUE})")
            return value.strip()

        raw_address = get("address")
        address: IPInterface | None = None
        if raw_address != DHCP:
            if "/" not in raw_address:
                raise LayoutError(f"{NETWORK_DIR}/address {raw_address!r} has no /PREFIX")
            address = _parse(ipaddress.ip_interface, "address", raw_address)
        raw_gateway = get("gateway", required=False)
        gateway = _parse(ipaddress.ip_address, "gateway", raw_gateway) if raw_gateway else None
        raw_subnet = get("subnet", required=False)
        subnet = _parse(ipaddress.ip_network, "subnet", raw_subnet) if raw_subnet else None
        raw_generation = get("generation")
        if not raw_generation.isascii() or not raw_generation.isdigit() \
                or len(raw_generation) > 20:
            raise LayoutError(f"{NETWORK_DIR}/generation {raw_generation!r} is not a "
                              "decimal number")
        return cls(address=address, gateway=gateway, subnet=subnet,
                   migration=get("migration"), generation=int(raw_generation))


def _parse(kind: Callable[[str], T], key: str, text: str) -> T:
    try:
        return kind(text)
    except ValueError as exc:
        raise LayoutError(f"{NETWORK_DIR}/{key} {text!r} is not valid: {exc}") from None


class Status(Enum):
    """What the agent did with a generation."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"  # the interface already had it
    ERROR = "error"  # nothing applied; the message says why


@dataclass(frozen=True)
class AgentReport:
    """The agent's answer for one generation."""

    generation: str  # as dom0 wrote it (it may be garbage: the report says so)
    status: Status
    address: str  # the interface's addresses now, comma-separated (may be empty)
    message: str
    took_ms: int
    at: float

    def to_values(self) -> list[tuple[str, str]]:
        """(key, value) pairs under :data:`REPORT_DIR`, in write order (generation last)."""
        values = {"status": self.status.value, "address": self.address,
                  "message": self.message[:MAX_VALUE], "took-ms": str(self.took_ms),
                  "at": f"{self.at:.3f}", "generation": self.generation[:MAX_VALUE]}
        return [(k, values[k]) for k in REPORT_KEYS]

    @classmethod
    def parse(cls, values: Mapping[str, str | None]) -> AgentReport:
        """The report the values under :data:`REPORT_DIR` hold (dom0 reads it)."""
        try:
            return cls(generation=values.get("generation") or "",
                       status=Status(values.get("status")),
                       address=values.get("address") or "",
                       message=values.get("message") or "",
                       took_ms=int(values.get("took-ms") or "0"),
                       at=float(values.get("at") or "0"))
        except ValueError as exc:
            raise LayoutError(f"the agent's report under {REPORT_DIR} does not parse: "
                              f"{exc}") from None

    def to_json(self) -> dict[str, object]:
        """The report as a JSON object (events, ``--json``)."""
        return {"generation": self.generation, "status": self.status.value,
                "address": self.address, "message": self.message,
                "took_ms": self.took_ms, "at": self.at}
