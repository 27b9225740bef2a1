"""Where each peer was last seen for sure: its last verified locator, kept across restarts.

The hosts file names the address a peer had when it was added; after the peer moves,
that entry is stale and a restarted hipd would look for the peer where it no longer is
(issue 10 finding 7).  hipd records here, in its state directory, the locator every
peer's ESP security associations last used (an address the base exchange or return
routability verified) and tries it before the hosts file.  A hosts file edited after
the last verification wins: the administrator then knows something newer.

The file is JSON, replaced atomically; a missing, unreadable or garbled file is an empty
memory (logged), never a reason not to start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from hip.errors import DaemonError

log = logging.getLogger(__name__)

#: Default state directory of hipd.
DEFAULT_STATE_DIR = "/var/lib/hip"
FILE_NAME = "peers.json"
_VERSION = 1

Locator = IPv4Address | IPv6Address


@dataclass(frozen=True)
class RememberedPeer:
    """A peer's last verified locator and the wall-clock time it was verified."""

    locator: Locator
    verified_at: float


class PeerMemory:
    """Peers' last verified locators, by HIT, persisted in ``path``."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._peers: dict[IPv6Address, RememberedPeer] = {}
        self._save_failed = False

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str] | None) -> PeerMemory:
        """The memory kept in ``state_dir`` (None: a memory that is never saved)."""
        memory = cls(Path(state_dir) / FILE_NAME if state_dir is not None else None)
        if memory.path is None:
            return memory
        try:
            text = memory.path.read_text()
        except FileNotFoundError:
            return memory
        except OSError as exc:
            log.warning("cannot read %s (%s); starting without remembered peer locators",
                        memory.path, exc.strerror)
            return memory
        try:
            memory._peers = parse_memory(text)
        except DaemonError as exc:
            log.warning("%s; starting without remembered peer locators", exc)
        return memory

    def get(self, hit: IPv6Address) -> RememberedPeer | None:
        """What is remembered of ``hit``."""
        return self._peers.get(hit)

    def hits_at(self, locator: Locator) -> list[IPv6Address]:
        """The peers last verified at ``locator``."""
        return [hit for hit, peer in self._peers.items() if peer.locator == locator]

    def remember(self, hit: IPv6Address, locator: Locator, now: float) -> bool:
        """Record ``locator`` as verified for ``hit`` at wall-clock ``now``; save if it
        changed.  Returns whether it changed."""
        known = self._peers.get(hit)
        if known is not None and known.locator == locator:
            return False
        self._peers[hit] = RememberedPeer(locator, now)
        self.save()
        return True

    def forget(self, hit: IPv6Address) -> bool:
        """Drop what is remembered of ``hit``; returns whether there was anything."""
        if self._peers.pop(hit, None) is None:
            return False
        self.save()
        return True

    def save(self) -> None:
        """Write the file atomically; a failure is logged (once), not raised: hipd keeps
        running with what it remembers in memory."""
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(dump_memory(self._peers))
            os.replace(tmp, self.path)
            self._save_failed = False
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._save_failed:
                log.warning("cannot save peer locators to %s: %s; they will be forgotten "
                            "at the next restart (pass --state-dir)", self.path, exc.strerror)
            self._save_failed = True


def dump_memory(peers: dict[IPv6Address, RememberedPeer]) -> str:
    """The file's text for ``peers``."""
    return json.dumps({
        "version": _VERSION,
        "peers": {str(hit): {"locator": str(p.locator), "verified_at": p.verified_at}
                  for hit, p in sorted(peers.items())},
    }, indent=2) + "\n"


def parse_memory(text: str) -> dict[IPv6Address, RememberedPeer]:
    """Parse the file's text; :class:`DaemonError` says what is wrong with it."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DaemonError(f"peer locator memory is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise DaemonError(f"peer locator memory has no version {_VERSION} document")
    peers = doc.get("peers")
    if not isinstance(peers, dict):
        raise DaemonError("peer locator memory has no 'peers' object")
    found: dict[IPv6Address, RememberedPeer] = {}
    for hit_text, entry in peers.items():
        try:
            hit = IPv6Address(hit_text)
            locator = ip_address(entry["locator"])
            verified_at = float(entry["verified_at"])
        except (ValueError, TypeError, KeyError) as exc:
            raise DaemonError(
                f"peer locator memory entry {hit_text!r}: {entry!r} is malformed ({exc})"
            ) from None
        found[hit] = RememberedPeer(locator, verified_at)
    return found
