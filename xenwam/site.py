"""A host's site configuration: ``/etc/xenwam/site.toml`` (or ``$XENWAM_SITE``).

One small file per dom0 says what a guest that arrives there needs: the site's guest
network (bridge, subnet, gateway, how a moved guest gets its address), the address and
port range DRBD replicates on, where new disk copies are kept, and what the WAN path to
other sites looks like (for DRBD's WAN profile).  Example (docs/migrate.md has all keys)::

    [site]
    name = "site-b"

    [network]
    bridge = "xenbr0"
    subnet = "10.2.0.0/24"
    gateway = "10.2.0.1"
    assign = "host-part"      # keep the guest's host number in the new subnet; or "dhcp"

    [replication]
    address = "10.0.0.2"      # this dom0's address on the inter-site link
    ports = "7800-7899"

    [storage]
    directory = "/var/lib/xenwam/disks"

    [wan]
    rtt_ms = 40
    bandwidth_mbit = 50

Everything is validated when the file is read; a missing or bad file is refused with the
file and key named, before anything changes.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xenwam.cliargs import regular_file
from xenwam.errors import ConfigError

DEFAULT_PATH = Path("/etc/xenwam/site.toml")
ASSIGN_MODES = ("host-part", "dhcp")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_BRIDGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_PORTS_RE = re.compile(r"(\d{1,5})-(\d{1,5})")


def default_path() -> Path:
    """``$XENWAM_SITE`` if set, else ``/etc/xenwam/site.toml``."""
    return Path(os.environ.get("XENWAM_SITE") or DEFAULT_PATH)


@dataclass(frozen=True)
class SiteNetwork:
    """The guest network of a site."""

    bridge: str
    subnet: str
    gateway: str
    assign: str = "host-part"

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The subnet, parsed."""
        return ipaddress.ip_network(self.subnet)

    def address_for(self, old: str | None) -> str | None:
        """The address (``ADDR/PREFIX``) a guest that had ``old`` gets here; None for DHCP.

        ``host-part`` keeps the guest's host number: 10.1.0.10 in 10.1.0.0/24 becomes
        10.2.0.10 in 10.2.0.0/24.  An ``old`` without a prefix is read with this subnet's
        (as a /32 its host part would be empty: the new subnet's network address).
        """
        if self.assign == "dhcp" or old is None:
            return None
        net = self.network
        old_if = ipaddress.ip_interface(old if "/" in old else f"{old}/{net.prefixlen}")
        host_bits = int(old_if.ip) & int(old_if.network.hostmask)
        new = net.network_address + (host_bits & int(net.hostmask))
        return f"{new}/{net.prefixlen}"


@dataclass(frozen=True)
class Site:
    """One host's site configuration."""

    name: str
    network: SiteNetwork
    replication_address: str
    port_first: int
    port_last: int
    storage_directory: str
    rtt_ms: float
    bandwidth_mbit: float
    path: str = ""

    def port_for(self, minor: int) -> int:
        """The DRBD port of the resource with ``minor`` (one port per minor in the range)."""
        span = self.port_last - self.port_first + 1
        if minor < 0:
            raise ConfigError(f"DRBD minor {minor} is negative: minors are 0 or more")
        if minor >= span:
            raise ConfigError(f"{self.path}: [replication] ports {self.port_first}-"
                              f"{self.port_last} has no port for DRBD minor {minor}; "
                              "widen the range")
        return self.port_first + minor

    def to_json(self) -> dict[str, Any]:
        """Plain data, as ``xenwam site show --json`` prints it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Site:
        """The inverse of :meth:`to_json` (a destination's answer over ssh)."""
        try:
            net = SiteNetwork(**data["network"])
            fields = {k: v for k, v in data.items() if k != "network"}
            return cls(network=net, **fields)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"malformed site description from a peer: {exc}") from exc


def _key(doc: dict[str, Any], path: Path, table: str, key: str, kind: type,
         default: Any = None) -> Any:
    section = doc.get(table)
    if section is None or not isinstance(section, dict):
        if default is not None:
            return default
        raise ConfigError(f"{path}: missing table [{table}]; see docs/migrate.md")
    value = section.get(key, default)
    if value is None:
        raise ConfigError(f"{path}: missing key {key!r} in [{table}]; see docs/migrate.md")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{path}: [{table}] {key} = {value!r} is not a {kind.__name__}")
    return value


def _bad(path: Path, table: str, key: str, value: object, hint: str) -> ConfigError:
    return ConfigError(f"{path}: [{table}] {key} = {value!r}: {hint}")


def parse(text: str, path: Path) -> Site:
    """Parse and validate a site file's text; ``path`` names it in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    name = _key(doc, path, "site", "name", str)
    if not _NAME_RE.fullmatch(name):
        raise _bad(path, "site", "name", name, "use letters, digits, '.', '_' or '-'")
    bridge = _key(doc, path, "network", "bridge", str)
    if not _BRIDGE_RE.fullmatch(bridge):
        raise _bad(path, "network", "bridge", bridge, "use a Linux interface name")
    subnet = _key(doc, path, "network", "subnet", str)
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise _bad(path, "network", "subnet", subnet, f"{exc}; write it as 10.2.0.0/24") from None
    gateway = _key(doc, path, "network", "gateway", str)
    try:
        if ipaddress.ip_address(gateway) not in net:
            raise _bad(path, "network", "gateway", gateway, f"not inside {subnet}")
    except ValueError:
        raise _bad(path, "network", "gateway", gateway, "not an IP address") from None
    assign = _key(doc, path, "network", "assign", str, "host-part")
    if assign not in ASSIGN_MODES:
        raise _bad(path, "network", "assign", assign, "use " + " or ".join(ASSIGN_MODES))
    address = _key(doc, path, "replication", "address", str)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise _bad(path, "replication", "address", address,
                   "give this dom0's literal address on the inter-site link") from None
    ports = _key(doc, path, "replication", "ports", str, "7800-7899")
    m = _PORTS_RE.fullmatch(ports)
    if not m or not 1024 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
        raise _bad(path, "replication", "ports", ports, "write FIRST-LAST within 1024-65535")
    directory = _key(doc, path, "storage", "directory", str, "/var/lib/xenwam/disks")
    if not directory.startswith("/") or ".." in directory.split("/"):
        raise _bad(path, "storage", "directory", directory, "use an absolute path")
    rtt = _key(doc, path, "wan", "rtt_ms", float)
    if not 0 < rtt <= 6000:
        raise _bad(path, "wan", "rtt_ms", rtt, "give the measured round-trip time, 0-6000 ms")
    rate = _key(doc, path, "wan", "bandwidth_mbit", float)
    if not 0 < rate <= 100_000:
        raise _bad(path, "wan", "bandwidth_mbit", rate, "give the link rate in Mbit/s")
    return Site(name=name, network=SiteNetwork(bridge, subnet, gateway, assign),
                replication_address=address, port_first=int(m.group(1)),
                port_last=int(m.group(2)), storage_directory=directory, rtt_ms=rtt,
                bandwidth_mbit=rate, path=str(path))


def load(path: Path | None = None) -> Site:
    """Read this host's site file; :class:`ConfigError` (exit 2) if missing or bad."""
    path = path or default_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: write this host's site file "
                          "(docs/migrate.md shows one) or set XENWAM_SITE") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    return parse(text, path)


def render(site: Site) -> str:
    """A site file for ``site`` (what the lab writes into each dom0)."""
    n = site.network
    return "\n".join([
        "[site]", f'name = "{site.name}"', "",
        "[network]", f'bridge = "{n.bridge}"', f'subnet = "{n.subnet}"',
        f'gateway = "{n.gateway}"', f'assign = "{n.assign}"', "",
        "[replication]", f'address = "{site.replication_address}"',
        f'ports = "{site.port_first}-{site.port_last}"', "",
        "[storage]", f'directory = "{site.storage_directory}"', "",
        "[wan]", f"rtt_ms = {site.rtt_ms:g}", f"bandwidth_mbit = {site.bandwidth_mbit:g}", "",
    ])


def _show(args: argparse.Namespace) -> int:
    site = load(Path(args.site) if args.site else None)
    if args.json:
        print(json.dumps(site.to_json()))
    else:
        print(render(site), end="")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``xenwam site show``."""
    p = subparsers.add_parser(
        "site", parents=[common], help="this host's site file (network, replication, storage)",
        description="Show and check this host's site file (/etc/xenwam/site.toml or "
                    "$XENWAM_SITE): what a guest arriving here gets. See docs/migrate.md.")
    sub = p.add_subparsers(dest="site_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", parents=[common], help="check the site file and print it",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("--site", type=regular_file,
                      help=f"the file (default: $XENWAM_SITE or {DEFAULT_PATH})")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)
