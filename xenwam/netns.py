"""Throwaway network namespaces joined by veth pairs.

Used by the ``netns`` test tier and by the lab (the correspondent host lives in a
namespace).  Everything goes through the injected runner, and :meth:`NetnsSet.close`
removes every namespace and link it created, also after a failure half-way.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from xenwam.errors import CommandError, HostCheckError
from xenwam.runner import DEFAULT_TIMEOUT, CommandResult, Runner, default_runner

log = logging.getLogger(__name__)

_counter = itertools.count()


@dataclass
class Netns:
    """One network namespace and the runner used to act inside it."""

    name: str
    runner: Runner = field(default=default_runner, repr=False)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """Wrap ``argv`` so that it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> CommandResult:
        """Run ``argv`` inside the namespace and wait for it."""
        return self.runner.run(self.argv(argv), check=check, timeout=timeout)

    def ip(self, *args: str) -> CommandResult:
        """Run ``ip ARGS`` inside the namespace."""
        return self.run(["ip", *args])

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add ``cidr`` (e.g. ``10.1.0.2/24``) to ``ifname`` and bring it up."""
        self.ip("addr", "add", cidr, "dev", ifname)
        self.ip("link", "set", ifname, "up")


@dataclass
class NetnsSet:
    """A group of namespaces created together and removed together."""

    prefix: str = "xw"
    runner: Runner = field(default=default_runner, repr=False)
    namespaces: list[Netns] = field(default_factory=list)

    def _unique(self, name: str) -> str:
        # Linux caps interface names at 15 bytes; namespace names are free-form,
        # but keep both short and unique per process.
        return f"{self.prefix}{os.getpid() % 100000}{next(_counter)}{name}"[:40]

    def add(self, name: str) -> Netns:
        """Create a namespace (with ``lo`` up) and return it."""
        full = self._unique(name)
        self.runner.run(["ip", "netns", "add", full])
        ns = Netns(full, self.runner)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def link(
        self, a: Netns, b: Netns, *, a_ifname: str = "", b_ifname: str = ""
    ) -> tuple[str, str]:
        """Join ``a`` and ``b`` with a veth pair; return the interface names (in a, in b)."""
        n = next(_counter)
        a_if = a_ifname or f"v{n}a"
        b_if = b_ifname or f"v{n}b"
        tmp_a, tmp_b = f"xwt{os.getpid() % 10000}{n}a"[:15], f"xwt{os.getpid() % 10000}{n}b"[:15]
        self.runner.run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        try:
            self.runner.run(["ip", "link", "set", tmp_a, "netns", a.name, "name", a_if])
            self.runner.run(["ip", "link", "set", tmp_b, "netns", b.name, "name", b_if])
        except CommandError:
            self.runner.run(["ip", "link", "del", tmp_a], check=False)
            raise
        a.ip("link", "set", a_if, "up")
        b.ip("link", "set", b_if, "up")
        return a_if, b_if

    def close(self) -> None:
        """Delete every namespace this set created (their veth ends go with them)."""
        while self.namespaces:
            ns = self.namespaces.pop()
            res = self.runner.run(["ip", "netns", "del", ns.name], check=False)
            if not res.ok:
                log.warning("could not delete namespace %s: %s", ns.name, res.stderr.strip())

    def __enter__(self) -> NetnsSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_netns_support(runner: Runner = default_runner) -> None:
    """Raise :class:`HostCheckError` with the reason if namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise HostCheckError("network namespaces need root; run the netns tests as root")
    probe = f"xwprobe{os.getpid()}"
    res = runner.run(["ip", "netns", "add", probe], check=False)
    if not res.ok:
        raise HostCheckError(f"`ip netns add` failed: {res.stderr.strip()}")
    runner.run(["ip", "netns", "del", probe], check=False)
