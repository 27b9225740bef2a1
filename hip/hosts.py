"""The HIP hosts file: peer names to HITs, HITs to locators.

One peer per line, fields separated by blanks, ``#`` starts a comment::

    # name            HIT                                    locators (optional)
    correspondent     2001:2a:4a1f:7c1e:91a2:37c0:3b1e:55d0  10.3.0.2 fd00::3
    mobile            2001:2a:11c4:0d21:8f0e:5b02:77aa:e193

Names and HITs are unique.  Locators are where hipd sends the first I1; mobility
keeps them current afterwards, so a stale locator only matters for the first contact.
Parsing refuses the whole file on the first bad line (quoting it), so hipd never runs
with half a configuration.  Saving is atomic (write a temporary file, then rename).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from hip.errors import DaemonError, IdentityError
from hip.orchid import ORCHID_PREFIX, hit_from_str

#: Default place of the hosts file; hipd and hipctl take ``--config-dir``.
DEFAULT_HOSTS_FILE = "/etc/hip/hosts"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class HostsFileError(DaemonError):
    """The hosts file or an edit to it is invalid; nothing was changed."""


@dataclass(frozen=True)
class PeerEntry:
    """One peer: its name, HIT and the locators to try first."""

    name: str
    hit: IPv6Address
    locators: tuple[IPv4Address | IPv6Address, ...] = ()

    def line(self) -> str:
        """The entry as one hosts-file line."""
        return " ".join([self.name, str(self.hit), *(str(loc) for loc in self.locators)])


def parse_hit(text: str) -> IPv6Address:
    """Parse a HIT, refusing anything outside the ORCHIDv2 prefix (:func:`hit_from_str`)."""
    try:
        return IPv6Address(hit_from_str(text))
    except IdentityError as exc:
        # A hosts-file or command-line mistake: hipctl reports it as a usage error.
        raise HostsFileError(str(exc)) from None


#: IPv4's limited broadcast address: no unicast peer ever answers from it.
_LIMITED_BROADCAST = IPv4Address("255.255.255.255")


def locator_problem(loc: IPv4Address | IPv6Address) -> str | None:
    """Why ``loc`` can never be a locator (ours or a peer's), or None if it can be one.

    A locator is where HIP and ESP packets to one host go: a HIT, the unspecified,
    loopback, multicast, broadcast or link-local address would send them nowhere, to
    ourselves, to many hosts, or out of no particular interface.
    """
    if isinstance(loc, IPv6Address) and loc in ORCHID_PREFIX:
        return "is a HIT, not a locator; locators are routable addresses"
    for test, what in ((loc.is_unspecified, "unspecified"), (loc.is_loopback, "loopback"),
                       (loc.is_multicast, "multicast"), (loc == _LIMITED_BROADCAST, "broadcast"),
                       (loc.is_link_local, "link-local")):
        if test:
            return (f"is a {what} address, which cannot be a locator; give a unicast "
                    "address, like 10.3.0.2")
    return None


def parse_locator(text: str) -> IPv4Address | IPv6Address:
    """Parse a locator: a unicast IPv4 or IPv6 address that is not a HIT."""
    try:
        loc = ip_address(text)
    except ValueError:
        raise HostsFileError(
            f"{text!r} is not an IP address; give a locator like 10.3.0.2"
        ) from None
    problem = locator_problem(loc)
    if problem is not None:
        raise HostsFileError(f"{text!r} {problem}")
    return loc


def check_name(name: str) -> str:
    """Refuse names that are empty, too long, or look like addresses."""
    if not _NAME.match(name):
        raise HostsFileError(
            f"peer name {name!r} is invalid: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    try:
        ip_address(name)
    except ValueError:
        return name
    raise HostsFileError(f"peer name {name!r} looks like an address; pick a host name")


@dataclass
class HostsFile:
    """All peer entries, in file order."""

    entries: list[PeerEntry] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, source: str = "<hosts>") -> HostsFile:
        """Parse hosts-file text; :class:`HostsFileError` names the file and line."""
        hosts = cls()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) < 2:
                raise HostsFileError(
                    f"{source}:{number}: {raw.strip()!r} needs at least a name and a HIT"
                )
            try:
                entry = PeerEntry(
                    check_name(fields[0]),
                    parse_hit(fields[1]),
                    tuple(parse_locator(f) for f in fields[2:]),
                )
                hosts.add(entry)
            except HostsFileError as exc:
                raise HostsFileError(f"{source}:{number}: {exc}") from None
        return hosts

    def serialize(self) -> str:
        """The file's text; :meth:`parse` of it gives back the same entries."""
        head = "# HIP hosts file: name HIT [locator ...]  (edit with `hipctl peer add/del`)\n"
        return head + "".join(e.line() + "\n" for e in self.entries)

    def add(self, entry: PeerEntry, *, replace: bool = False) -> None:
        """Add ``entry``; a clash of name or HIT is refused unless ``replace``."""
        for old in self.entries:
            if (old.name == entry.name or old.hit == entry.hit) and not replace:
                raise HostsFileError(
                    f"peer {entry.name} {entry.hit} clashes with existing entry "
                    f"{old.line()!r}; delete it first or use --replace"
                )
        if replace:
            self.entries = [
                e for e in self.entries if e.name != entry.name and e.hit != entry.hit
            ]
        self.entries.append(entry)

    def remove(self, key: str) -> PeerEntry:
        """Remove the entry named ``key`` or with HIT ``key``; return it."""
        entry = self.find(key)
        if entry is None:
            raise HostsFileError(f"no peer {key!r} in the hosts file; `hipctl peer` lists them")
        self.entries.remove(entry)
        return entry

    def find(self, key: str) -> PeerEntry | None:
        """The entry whose name or HIT is ``key``, or ``None``."""
        for entry in self.entries:
            if entry.name == key:
                return entry
        try:
            hit = IPv6Address(key)
        except ValueError:
            return None
        return next((e for e in self.entries if e.hit == hit), None)

    def resolve(self, key: str) -> IPv6Address:
        """A HIT for ``key``: a literal HIT, or a name looked up in the file."""
        entry = self.find(key)
        if entry is not None:
            return entry.hit
        if ":" in key:
            return parse_hit(key)
        raise HostsFileError(f"unknown peer {key!r}: not a HIT and not a name in the hosts file")

    def locators_of(self, hit: IPv6Address) -> tuple[IPv4Address | IPv6Address, ...]:
        """The configured locators of ``hit`` (empty if unknown)."""
        return next((e.locators for e in self.entries if e.hit == hit), ())


def load_hosts(path: str | Path) -> HostsFile:
    """Read the hosts file at ``path``; a missing file is an empty one."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return HostsFile()
    except OSError as exc:
        raise HostsFileError(f"cannot read hosts file {str(p)!r}: {exc.strerror}") from exc
    return HostsFile.parse(text, str(p))


def save_hosts(path: str | Path, hosts: HostsFile) -> None:
    """Write ``hosts`` to ``path`` atomically (mode 0644; the directory must exist)."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".hosts.", dir=p.parent)
    except OSError as exc:
        raise HostsFileError(
            f"cannot write hosts file {str(p)!r}: {exc.strerror}; create {str(p.parent)!r} "
            "(`hipctl keygen` does) or pass --config-dir"
        ) from exc
    try:
        with os.fdopen(fd, "w") as out:
            out.write(hosts.serialize())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
