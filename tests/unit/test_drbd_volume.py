"""The copies ``xenwam disk`` makes and removes, two things the fault matrix found:

- ``reattach``: after a reboot, a resource's files go back behind loop devices and its
  file is rewritten when the numbers changed (a crashed destination's copy could not be
  attached again);
- ``unprovision``: a Primary copy is refused unless ``--demote``, and then removed only if
  DRBD agrees to demote it (nothing holds it open); a cut during the memory phase had
  left the destination's copy Primary, and every later migration there was refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from xenwam.drbd.resource import Host, Resource, install, load
from xenwam.drbd.volume import (
    Loops,
    install_from_peer,
    provision_fresh,
    reattach,
    unprovision,
)
from xenwam.errors import DrbdError
from xenwam.runner import CommandResult
from xenwam.site import Site, SiteNetwork

pytestmark = pytest.mark.unit


class LoopTable:
    """``losetup`` as a table of device -> file (no process: pure logic)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)

    def run(self, argv: Sequence[str], **_: object) -> CommandResult:
        if argv[1] == "-j":
            out = "".join(f"{dev}: []: ({path})\n" for dev, path in self.table.items()
                          if path == argv[2])
        else:
            assert list(argv[1:3]) == ["--find", "--show"]
            dev = f"/dev/loop{len(self.table) + 3}"
            self.table[dev] = argv[3]
            out = dev + "\n"
        return CommandResult(tuple(argv), 0, out, "", 0.0)


def make(tmp_path: Path, disk_file: str | None) -> tuple[Site, Path]:
    storage = tmp_path / "disks"
    storage.mkdir()
    site = Site(name="a", network=SiteNetwork("br", "10.1.0.0/24", "10.1.0.1", "keep"),
                replication_address="10.0.0.1", port_first=7800, port_last=7899,
                storage_directory=str(storage), rtt_ms=40.0, bandwidth_mbit=50.0)
    me = Host("a", "10.0.0.1", 7801, "/dev/loop0", "/dev/loop1", disk_file=disk_file)
    peer = Host("b", "10.0.0.2", 7801, "/dev/loop5", "/dev/loop6")
    config = tmp_path / "drbd.d"
    config.mkdir()
    install(Resource(name="g1-disk", minor=1, hosts=(me, peer), shared_secret="s" * 32),
            config)
    (storage / "g1-disk.md").write_bytes(b"")
    return site, config


def test_an_adopted_file_and_its_metadata_get_loops_again_and_the_file_is_rewritten(
        tmp_path: Path) -> None:
    guest_disk = tmp_path / "g1.img"
    guest_disk.write_bytes(b"")
    site, config = make(tmp_path, str(guest_disk))
    loops = LoopTable({})  # after the reboot: no loop devices at all
    doc = reattach("g1-disk", site, config, Loops(loops), hostname="a")  # type: ignore[arg-type]
    assert doc["changed"] is True
    res = load("g1-disk", config)
    me = res.host("a")
    assert loops.table[me.disk] == str(guest_disk)
    assert loops.table[me.meta_disk] == str(tmp_path / "disks" / "g1-disk.md")
    assert res.host("b") == Host("b", "10.0.0.2", 7801, "/dev/loop5", "/dev/loop6")
    # A second run finds the loops in place: nothing changes.
    again = reattach("g1-disk", site, config, Loops(loops), hostname="a")  # type: ignore[arg-type]
    assert again["changed"] is False and load("g1-disk", config) == res


def test_a_provisioned_copy_is_found_in_the_site_storage(tmp_path: Path) -> None:
    site, config = make(tmp_path, None)
    (tmp_path / "disks" / "g1-disk.img").write_bytes(b"")
    loops = LoopTable({"/dev/loop0": str(tmp_path / "disks" / "g1-disk.img"),
                       "/dev/loop1": str(tmp_path / "disks" / "g1-disk.md")})
    doc = reattach("g1-disk", site, config, Loops(loops), hostname="a")  # type: ignore[arg-type]
    assert doc == {"resource": "g1-disk", "changed": False, "disk": "/dev/loop0",
                   "meta_disk": "/dev/loop1"}


def test_a_copy_whose_files_are_gone_is_reported_not_invented(tmp_path: Path) -> None:
    site, config = make(tmp_path, str(tmp_path / "gone.img"))
    before = load("g1-disk", config)
    with pytest.raises(DrbdError, match=r"gone\.img missing on this host"):
        reattach("g1-disk", site, config, Loops(LoopTable({})),  # type: ignore[arg-type]
                 hostname="a")
    assert load("g1-disk", config) == before


def test_block_devices_are_left_alone(tmp_path: Path) -> None:
    site, config = make(tmp_path, None)
    res = load("g1-disk", config)
    lvm = replace(res.host("a"), disk="/dev/vg/g1", meta_disk="/dev/vg/g1-meta")
    install(replace(res, hosts=(lvm, res.host("b"))), config)
    doc = reattach("g1-disk", site, config, Loops(LoopTable({})),  # type: ignore[arg-type]
                   hostname="a")
    assert doc["changed"] is False and doc["disk"] == "/dev/vg/g1"


# ------------------------------------------------------------------ unprovision


@dataclass
class State:
    is_primary: bool


@dataclass
class Device:
    """The DRBD device as unprovision sees it (pure logic: no drbdadm)."""

    primary: bool
    held_open: bool = False
    calls: list[str] = field(default_factory=list)

    def state(self) -> State:
        return State(self.primary)

    def demote(self, *, attempts: int = 10) -> bool:
        self.calls.append("demote")
        if self.held_open:
            raise DrbdError("resource 'g1-disk': demoting failed: held open")
        self.primary = False
        return True

    def down(self) -> None:
        self.calls.append("down")


def test_a_primary_copy_is_refused_without_demote(tmp_path: Path) -> None:
    site, config = make(tmp_path, None)
    dev = Device(primary=True)
    with pytest.raises(DrbdError, match="--demote"):
        unprovision("g1-disk", site, config, Loops(LoopTable({})), device=dev)  # type: ignore[arg-type]
    assert dev.calls == [] and load("g1-disk", config)


def test_with_demote_an_unused_primary_copy_is_demoted_and_removed(tmp_path: Path) -> None:
    site, config = make(tmp_path, None)
    dev = Device(primary=True)
    got = unprovision("g1-disk", site, config, Loops(LoopTable({})), demote=True,
                      device=dev)  # type: ignore[arg-type]
    assert dev.calls == ["demote", "down"]
    assert got["demoted"] is True and got["removed"]
    assert not (config / "xenwam-g1-disk.res").exists()


def test_a_copy_in_use_is_never_removed(tmp_path: Path) -> None:
    site, config = make(tmp_path, None)
    dev = Device(primary=True, held_open=True)
    with pytest.raises(DrbdError, match="held open"):
        unprovision("g1-disk", site, config, Loops(LoopTable({})), demote=True,
                    device=dev)  # type: ignore[arg-type]
    assert dev.calls == ["demote"]
    assert (config / "xenwam-g1-disk.res").exists()
    assert (Path(site.storage_directory) / "g1-disk.md").exists()


def test_provision_fresh_replaces_a_stale_primary_copy_with_an_empty_one(tmp_path: Path) -> None:
    """What a migration's prepare asks the destination in one call: the copy an aborted
    migration left there (Primary, a data file of another size) is demoted and removed,
    and a new all-zero copy of the right size is made."""
    site, config = make(tmp_path, None)
    data = Path(site.storage_directory) / "g1-disk.img"
    data.write_bytes(b"old" * 4096)
    dev = Device(primary=True)
    got = provision_fresh("g1-disk", 1 << 20, site, config, Loops(LoopTable({})),
                          device=dev)  # type: ignore[arg-type]
    assert dev.calls == ["demote", "down"]
    assert got["stale"]["demoted"] is True and str(data) in got["stale"]["removed"]
    assert got["zeroed"] is True and data.stat().st_size == 1 << 20
    with open(data, "rb") as f:
        assert f.read(4096) == bytes(4096)
    assert not (config / "xenwam-g1-disk.res").exists()


def test_provision_fresh_makes_nothing_when_the_old_copy_is_in_use(tmp_path: Path) -> None:
    site, config = make(tmp_path, None)
    dev = Device(primary=True, held_open=True)
    with pytest.raises(DrbdError, match="held open"):
        provision_fresh("g1-disk", 1 << 20, site, config, Loops(LoopTable({})),
                        device=dev)  # type: ignore[arg-type]
    assert not (Path(site.storage_directory) / "g1-disk.img").exists()
    assert (config / "xenwam-g1-disk.res").exists()


def test_a_peers_definition_keeps_this_hosts_own_devices(tmp_path: Path) -> None:
    """After a reboot `reattach` put host a's copy behind other loop devices; the
    migration's source still sends the devices it knew.  Installing its definition on a
    keeps a's devices (and their file) and takes everything else from the sender."""
    _site, config = make(tmp_path, "/var/lib/xenwam-lab/g1-data.img")
    current = load("g1-disk", config)
    renumbered = replace(current, hosts=tuple(
        replace(h, disk="/dev/loop7", meta_disk="/dev/loop8") if h.hostname == "a" else h
        for h in current.hosts))
    install(renumbered, config)
    sent = replace(current, mode="handover")  # the sender's view: loop0/loop1 on a
    install_from_peer(sent, config, hostname="a")
    got = load("g1-disk", config)
    assert got.mode == "handover"
    assert (got.host("a").disk, got.host("a").meta_disk) == ("/dev/loop7", "/dev/loop8")
    assert got.host("a").disk_file == "/var/lib/xenwam-lab/g1-data.img"
    assert got.host("b") == sent.host("b")


def test_a_peers_definition_is_taken_whole_where_there_is_none(tmp_path: Path) -> None:
    _site, config = make(tmp_path, None)
    sent = load("g1-disk", config)
    (config / "xenwam-g1-disk.res").unlink()
    install_from_peer(sent, config, hostname="a")
    assert load("g1-disk", config) == sent
    # On a host the definition does not name, it is written as sent.
    install_from_peer(replace(sent, mode="handover"), config, hostname="c")
    assert load("g1-disk", config) == replace(sent, mode="handover")


def test_an_unreadable_file_is_replaced_by_the_peers_definition(tmp_path: Path) -> None:
    _site, config = make(tmp_path, None)
    sent = load("g1-disk", config)
    (config / "xenwam-g1-disk.res").write_text("resource g1-disk { garbage")
    install_from_peer(sent, config, hostname="a")
    assert load("g1-disk", config) == sent
