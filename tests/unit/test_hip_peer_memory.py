"""Peers remember: the last verified locator of each hosts-file peer, kept in hipd's state
directory and preferred to a stale hosts-file entry after a restart."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from hip.daemon.hipd import DaemonOptions, Hipd
from hip.daemon.peer_memory import FILE_NAME, PeerMemory, RememberedPeer, parse_memory
from hip.dataplane import SecurityAssociation
from hip.events import AssociationFailed, SAChangeReason, SecurityAssociationsChanged
from hip.hosts import HostsFile, PeerEntry, save_hosts
from hip.identity import HostIdentity
from hip.random import SeededRandom

pytestmark = pytest.mark.unit

PEER, STRANGER = IPv6Address("2001:2a::2"), IPv6Address("2001:2a::9")
OLD, NEW, OWN = IPv4Address("10.1.0.2"), IPv4Address("10.2.0.2"), IPv4Address("10.3.0.3")


def test_memory_round_trip_and_writes_only_changes(tmp_path: Path) -> None:
    memory = PeerMemory.load(tmp_path / "state")
    assert memory.get(PEER) is None
    assert memory.remember(PEER, NEW, 100.0)
    path = tmp_path / "state" / FILE_NAME
    assert json.loads(path.read_text())["peers"] == {
        str(PEER): {"locator": "10.2.0.2", "verified_at": 100.0}}
    before = path.stat().st_mtime_ns
    assert not memory.remember(PEER, NEW, 200.0)  # same locator: nothing to write
    assert path.stat().st_mtime_ns == before
    again = PeerMemory.load(tmp_path / "state")
    assert again.get(PEER) == RememberedPeer(NEW, 100.0)
    assert again.hits_at(NEW) == [PEER] and again.hits_at(OLD) == []
    assert again.forget(PEER) and not again.forget(PEER)
    assert PeerMemory.load(tmp_path / "state").get(PEER) is None
    assert not list((tmp_path / "state").glob(".*tmp*"))  # no temporary left behind


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"version": 2, "peers": {}}', '{"version": 1}',
    '{"version": 1, "peers": {"10.0.0.1": {"locator": "10.0.0.1", "verified_at": 1}}}',
    '{"version": 1, "peers": {"2001:2a::2": {"locator": "nowhere", "verified_at": 1}}}',
    '{"version": 1, "peers": {"2001:2a::2": {"verified_at": 1}}}',
    '{"version": 1, "peers": {"2001:2a::2": "10.0.0.1"}}',
    "[" * 100000,
])
def test_garbled_memory_is_an_empty_one(tmp_path: Path, text: str, caplog) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with caplog.at_level("WARNING"):
        memory = PeerMemory.load(tmp_path)
    assert memory.get(PEER) is None
    assert "starting without remembered peer locators" in caplog.text


def test_unwritable_state_dir_is_logged_once_not_raised(tmp_path: Path, caplog) -> None:
    (tmp_path / "file").write_text("")
    memory = PeerMemory.load(tmp_path / "file")  # a file where the directory should be
    with caplog.at_level("WARNING"):
        assert memory.remember(PEER, NEW, 1.0)
        assert memory.remember(PEER, OLD, 2.0)
    assert caplog.text.count("cannot save peer locators") == 1
    assert memory.get(PEER) == RememberedPeer(OLD, 2.0)  # still known while running
    assert parse_memory('{"version": 1, "peers": {}}') == {}


class RecordingPlane:
    """Stands in for the ESP data plane: what hipd asked it to do."""

    kind = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def install(self, sa: SecurityAssociation) -> None:
        self.calls.append(("install", sa.peer_locator))

    def update_locators(self, peer_hit: IPv6Address, own: object, peer: object) -> None:
        self.calls.append(("update", peer))

    def remove(self, peer_hit: IPv6Address) -> None:
        self.calls.append(("remove", peer_hit))

    def counters(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        pass


def _hipd(tmp_path: Path, clock: list[float]) -> Hipd:
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    hosts = HostsFile([PeerEntry("mobile", PEER, (OLD,))])
    save_hosts(config / "hosts", hosts)
    os.utime(config / "hosts", (50.0, 50.0))  # written long before any verification
    identity = HostIdentity.generate("ed25519", SeededRandom(b"memory"))
    hipd = Hipd(DaemonOptions(config_dir=str(config), state_dir=str(tmp_path / "state")),
                identity, hosts)
    hipd.wall_clock = lambda: clock[0]
    hipd.plane = RecordingPlane()
    return hipd


def _sa_changed(hipd: Hipd, peer: IPv6Address, locator: IPv4Address,
                reason: SAChangeReason) -> SecurityAssociationsChanged:
    key = bytes(32)
    return SecurityAssociationsChanged(hipd.hit, peer, reason, 9, 1, 2, key, key, key, key,
                                       OWN, locator, (OWN,), (locator,))


def test_restarted_hipd_looks_for_a_moved_peer_where_it_was_verified(tmp_path: Path) -> None:
    clock = [100.0]
    first = _hipd(tmp_path, clock)
    assert first.peer_candidates(PEER) == [OLD]  # nothing remembered: the hosts file
    first._on_event(_sa_changed(first, PEER, OLD, SAChangeReason.ESTABLISHED))
    clock[0] = 200.0
    first._on_event(_sa_changed(first, PEER, NEW, SAChangeReason.PEER_MOVED))
    first._on_event(_sa_changed(first, STRANGER, NEW, SAChangeReason.ESTABLISHED))
    assert first.peer_candidates(PEER) == [NEW, OLD]
    # A new hipd (a restart) with the same, now stale, hosts file.
    second = _hipd(tmp_path, clock)
    assert second.peer_candidates(PEER) == [NEW, OLD]
    assert second.peer_memory.get(STRANGER) is None  # strangers are not remembered
    # If that locator does not answer, it is forgotten and the hosts file is next.
    second._tried_memory[PEER] = NEW
    second._on_event(AssociationFailed(second.hit, PEER, "I1 retries exhausted"))
    assert second.peer_candidates(PEER) == [OLD]
    assert _hipd(tmp_path, clock).peer_memory.get(PEER) is None


def test_hosts_file_edited_after_the_verification_wins(tmp_path: Path) -> None:
    clock = [100.0]
    hipd = _hipd(tmp_path, clock)
    hipd._on_event(_sa_changed(hipd, PEER, NEW, SAChangeReason.PEER_MOVED))
    assert hipd.peer_candidates(PEER) == [NEW, OLD]
    os.utime(Path(hipd.options.config_dir) / "hosts", (150.0, 150.0))  # edited later
    assert hipd.peer_candidates(PEER) == [OLD, NEW]


def test_sas_announced_again_unchanged_do_not_touch_the_data_plane(tmp_path: Path) -> None:
    """After a move the core announces the SAs again when the old address goes away,
    with the same locators: a kernel move would cost two ``ip`` runs for nothing, and
    the UPDATE to the peer would wait for them (issue 10, finding 2)."""
    hipd = _hipd(tmp_path, [100.0])
    plane = hipd.plane
    assert isinstance(plane, RecordingPlane)
    hipd._on_event(_sa_changed(hipd, PEER, OLD, SAChangeReason.ESTABLISHED))
    hipd._on_event(_sa_changed(hipd, PEER, NEW, SAChangeReason.PEER_MOVED))
    assert plane.calls == [("install", OLD), ("update", NEW)]
    hipd._on_event(_sa_changed(hipd, PEER, NEW, SAChangeReason.LOCAL_MOVED))
    hipd._on_event(_sa_changed(hipd, PEER, NEW, SAChangeReason.PEER_MOVED))
    assert plane.calls == [("install", OLD), ("update", NEW)]
    hipd._on_event(_sa_changed(hipd, PEER, OLD, SAChangeReason.PEER_MOVED))
    assert plane.calls[-1] == ("update", OLD)
