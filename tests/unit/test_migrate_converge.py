"""Catch-up with a guest that outruns the link: the orchestrator paces its writes, and
when DRBD still leaves out-of-sync bits behind (seen in the lab with DRBD 8.4), starts a
new resync pass over a connection whose files say the live (handover) mode."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from xenwam.drbd.info import DeviceState, SyncProgress
from xenwam.drbd.resource import Host, Resource, load
from xenwam.migrate import events as ev
from xenwam.migrate.orchestrator import Migration, Options, Side
from xenwam.runner import CommandResult

pytestmark = pytest.mark.unit

PAIR = Resource(name="g1-disk", minor=3,
                hosts=(Host("a", "10.0.0.1", 7803, "/dev/loop0", "/dev/loop1"),
                       Host("b", "10.0.0.2", 7803, "/dev/loop0", "/dev/loop1")),
                shared_secret="converge-test-secret")


def syncing(oos_kib: int) -> DeviceState:
    return DeviceState(minor=3, resource="g1-disk", connection="Connected",
                       replication="SyncSource", role="Primary", peer_role="Secondary",
                       disk="UpToDate", peer_disk="Inconsistent", out_of_sync_kib=oos_kib,
                       sync=SyncProgress(99.9, oos_kib, 65536, 0, 40))


IN_SYNC = DeviceState(minor=3, resource="g1-disk", connection="Connected",
                      replication="Established", role="Primary", peer_role="Secondary",
                      disk="UpToDate", peer_disk="UpToDate")


@dataclass
class StuckDevice:
    """A device whose resync stops 4 KiB short until it is reconnected."""

    calls: list[str] = field(default_factory=list)
    reconnected: bool = False
    dropped: bool = False

    def state(self) -> DeviceState:
        if self.dropped:
            return DeviceState(minor=3, resource="g1-disk", connection="StandAlone")
        return IN_SYNC if self.reconnected else syncing(4)

    def __getattr__(self, name: str) -> Any:
        def call(*_: object, **__: object) -> None:
            self.calls.append(name)
            if name == "disconnect":
                self.dropped = True
            if name == "connect":
                self.dropped, self.reconnected = False, True
        return call


@dataclass
class Remote:
    commands: list[list[str]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:
        self.commands.append(list(argv))
        if kw.get("input"):
            self.inputs.append(str(kw["input"]))
        return CommandResult(tuple(argv), 0, "", "", 0.0)


def test_paced_then_a_new_pass_over_handover_files(tmp_path: Path) -> None:
    remote = Remote()
    dest = Side("destination", "b", remote, ("xenwam",))
    events: list[ev.Event] = []
    now = [1000.0]

    def sleep(s: float) -> None:
        now[0] += s

    mig = Migration(Options(domain="g1", destination="b", converge_after=10.0),
                    bus=ev.EventBus(None, events.append), journal=None, source=dest,
                    destination=dest, config_dir=tmp_path, clock=lambda: now[0],
                    sleep=sleep)
    mig.pairs["g1-disk"] = PAIR
    device = StuckDevice()
    mig._wait_converged("g1-disk", device)  # type: ignore[arg-type]

    assert device.calls == ["to_handover", "favour_resync", "disconnect", "connect",
                            "wait_connected", "favour_resync"]
    throttled = [e for e in events if isinstance(e, ev.Throttled)]
    assert len(throttled) == 1 and throttled[0].at == pytest.approx(1011.0, abs=1.0)
    assert load("g1-disk", tmp_path).mode == "handover"
    (sent,) = remote.inputs
    assert json.loads(sent)["mode"] == "handover"
    assert mig.report.throttled_seconds > 10  # paced from the throttle to convergence


class VerifyingDevice(StuckDevice):
    """Verify finds ``found`` KiB each time until ``clean_after`` verifies."""

    found = 4
    clean_after = 1
    verifies = 0

    def __init__(self, *_: object, **__: object) -> None:
        super().__init__()
        self.reconnected = True

    def verify(self, **_: object) -> int:
        type(self).verifies += 1
        return self.found if type(self).verifies <= self.clean_after else 0


def migration(tmp_path: Path) -> tuple[Migration, Remote]:
    remote = Remote()
    dest = Side("destination", "b", remote, ("xenwam",))
    mig = Migration(Options(domain="g1", destination="b", converge_after=10.0),
                    bus=ev.EventBus(None, lambda e: None), journal=None, source=dest,
                    destination=dest, config_dir=tmp_path, clock=lambda: 0.0,
                    sleep=lambda s: None)
    mig.pairs["g1-disk"] = PAIR
    return mig, remote


def test_blocks_verify_finds_are_resynced_and_verified_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xenwam.migrate import orchestrator
    monkeypatch.setattr(orchestrator, "DrbdDevice", VerifyingDevice)
    VerifyingDevice.verifies, VerifyingDevice.clean_after = 0, 1
    mig, _ = migration(tmp_path)
    mig._verify("g1-disk", PAIR)
    assert VerifyingDevice.verifies == 2
    assert mig.report.verify_repaired_kib == 4 and mig.report.verify_out_of_sync_kib == 0


def test_copies_that_keep_differing_are_not_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xenwam.errors import MigrationError
    from xenwam.migrate import orchestrator
    monkeypatch.setattr(orchestrator, "DrbdDevice", VerifyingDevice)
    VerifyingDevice.verifies, VerifyingDevice.clean_after = 0, 99
    mig, _ = migration(tmp_path)
    with pytest.raises(MigrationError, match=r"still found 4 KiB .* after 2 resyncs"):
        mig._verify("g1-disk", PAIR)
    assert VerifyingDevice.verifies == orchestrator.VERIFY_REPAIRS + 1
    assert mig.report.verify_out_of_sync_kib == 4


def test_downtimes_learnt_only_from_completed_migrations(tmp_path: Path) -> None:
    for name, outcome, seconds in (("20261201T080000-g1-aaaa", "done", 9.6),
                                   ("20261201T090000-g1-bbbb", "aborted", None),
                                   ("20261201T100000-g1-cccc", "done (rolled forward)", 15.4)):
        journal = ev.Journal(tmp_path / name)
        journal.directory.mkdir()
        journal.write_json("report.json", {"outcome": outcome, "downtime_seconds": seconds})
        journal.write_json("plan.json", {"memory_mib": 224})
    (tmp_path / "20261201T110000-g1-dddd").mkdir()  # still running: no report yet
    mig = Migration(Options(domain="g1", destination="b"), bus=ev.EventBus(None, lambda e: None),
                    journal=None, source=object(), destination=object(),  # type: ignore[arg-type]
                    history_dir=tmp_path)
    assert mig._earlier_downtimes() == [(9.6, 224), (15.4, 224)]


class LoggedDevice:
    """The local DRBD device as catch-up drives it; every call lands in :attr:`log`."""

    log: ClassVar[list[str]] = []

    def __init__(self, *_: object, **__: object) -> None:
        pass

    def disconnect(self) -> None:
        self.log.append("local disconnect")

    def state(self) -> DeviceState:
        return IN_SYNC

    def adjust(self) -> None:
        self.log.append("local adjust")

    def connect(self) -> None:
        self.log.append("local connect")

    def wait_connected(self, **_: object) -> None:
        pass


@dataclass
class LoggedRemote(Remote):
    def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:
        LoggedDevice.log.append("remote " + " ".join(argv[1:]))
        return super().run(argv, **kw)


def logged_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> tuple[Migration, LoggedRemote]:
    """A migration whose local DRBD device and destination log every call, in order,
    into :attr:`LoggedDevice.log`."""
    from xenwam.migrate import orchestrator

    monkeypatch.setattr(orchestrator, "DrbdDevice", LoggedDevice)
    LoggedDevice.log = []
    remote = LoggedRemote()
    dest = Side("destination", "b", remote, ("xenwam",))
    mig = Migration(Options(domain="g1", destination="b"),
                    bus=ev.EventBus(None, lambda e: None), journal=None, source=dest,
                    destination=dest, config_dir=tmp_path, clock=lambda: 0.0,
                    sleep=lambda s: None)
    return mig, remote


@pytest.mark.parametrize("reuse", [True, False], ids=["earlier-trip", "new-copy"])
def test_catch_up_sets_this_side_first_then_gives_the_peer_the_same_definition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reuse: bool) -> None:
    """A pair from an earlier trip whose abort could not reach the destination may have
    been left there in handover mode (protocol C, the fault matrix's
    cut-to-destination@handover): DRBD refuses peers whose protocols differ, so the
    retry's catch-up sets this side to the pair's definition, then installs the same on
    the destination and adjusts it there, in one call.  A new copy (its definition
    installed by prepare) gets its metadata and comes up, in one call."""
    from types import SimpleNamespace

    from xenwam.migrate.plan import ResourcePlan

    mig, remote = logged_migration(tmp_path, monkeypatch)
    mig.pairs["g1-disk"] = PAIR
    rp = ResourcePlan(name="g1-disk", vdev="xvda", minor=3, device="/dev/drbd3",
                      size_bytes=1 << 20, original=PAIR.to_json(), reuse_pair=reuse)
    mig.catch_up(SimpleNamespace(resources=(rp,)))  # type: ignore[arg-type]
    remote_call = ("remote disk adjust g1-disk --install" if reuse
                   else "remote disk up g1-disk --create-md")
    assert LoggedDevice.log == ["local adjust", "local connect", remote_call]
    assert load("g1-disk", tmp_path) == PAIR
    if reuse:
        assert [json.loads(i) for i in remote.inputs] == [PAIR.to_json()]
    else:
        assert remote.inputs == []


def test_an_abort_that_reaches_the_destination_restores_the_pair_on_both_sides(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The abort of a return trip puts this side's file back and adjusts it, then gives
    the destination the same definition (its handover mode undone there too)."""
    from types import SimpleNamespace

    from xenwam.migrate.orchestrator import Whereabouts
    from xenwam.migrate.plan import ResourcePlan

    mig, remote = logged_migration(tmp_path, monkeypatch)
    rp = ResourcePlan(name="g1-disk", vdev="xvda", minor=3, device="/dev/drbd3",
                      size_bytes=1 << 20, original=PAIR.to_json(), reuse_pair=True)
    mig.plan = SimpleNamespace(resources=(rp,), destination="b")  # type: ignore[assignment]
    mig.abort(Whereabouts(source=["g1"], destination=[], destination_paused=False,
                          destination_reachable=True, roles={}))
    assert LoggedDevice.log == ["remote disk demote g1-disk", "local adjust",
                                "remote disk adjust g1-disk --install"]
    assert load("g1-disk", tmp_path) == PAIR and PAIR.mode == "bulk"
    assert [json.loads(i) for i in remote.inputs] == [PAIR.to_json()]


def _where(reachable: bool, role: str = "Unknown") -> Any:
    from xenwam.migrate.orchestrator import Whereabouts

    return Whereabouts(source=["g1"], destination=[], destination_paused=False,
                       destination_reachable=reachable,
                       roles={"g1-disk": ("Primary", role if reachable else "?")})


def waiting_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, original: Resource,
                      reuse: bool) -> tuple[Migration, list[float]]:
    """A migration of ``original``'s guest whose clock advances only by its sleeps (the
    list holds the time), for the abort's wait for the destination."""
    from types import SimpleNamespace

    from xenwam.migrate.plan import ResourcePlan

    mig, _ = logged_migration(tmp_path, monkeypatch)
    rp = ResourcePlan(name="g1-disk", vdev="xvda", minor=3, device="/dev/drbd3",
                      size_bytes=1 << 20, original=original.to_json(), reuse_pair=reuse)
    mig.plan = SimpleNamespace(resources=(rp,), destination="b")  # type: ignore[assignment]
    now = [0.0]
    mig.clock = lambda: now[0]  # type: ignore[method-assign]

    def sleep(s: float) -> None:
        now[0] += s
    mig.sleep = sleep  # type: ignore[method-assign]
    return mig, now


@pytest.mark.parametrize("single", [False, True], ids=["return-trip", "first-trip"])
def test_an_abort_that_missed_the_destination_finishes_there_once_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single: bool) -> None:
    """The fault matrix's crash-destination@memory on a return trip: the abort could not
    reach the crashed destination, whose file the handover had left in protocol C; once
    it answers again and its boot has brought its copy up, the abort runs again and
    reaches it.  A first trip's new copy (the original resource was single) is not
    waited for."""
    original = (Resource(name="g1-disk", minor=3, hosts=PAIR.hosts[:1],
                         shared_secret=PAIR.shared_secret) if single else PAIR)
    mig, now = waiting_migration(tmp_path, monkeypatch, original, reuse=not single)
    seen = iter([_where(False), _where(True), _where(True, "Secondary")])
    monkeypatch.setattr(mig, "observe", lambda: next(seen))
    aborts: list[bool] = []
    monkeypatch.setattr(mig, "abort", lambda where: aborts.append(where.destination_reachable))
    mig._await_destination()
    if single:
        assert aborts == [] and now[0] == 0.0
    else:
        # Unreachable, then reachable with DRBD not yet up there, then up: one abort.
        assert aborts == [True] and now[0] == 30.0


def test_an_abort_waits_for_the_destination_only_so_long(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mig, now = waiting_migration(tmp_path, monkeypatch, PAIR, reuse=True)
    monkeypatch.setattr(mig, "observe", lambda: _where(False))
    monkeypatch.setattr(mig, "abort", lambda where: pytest.fail("nothing to reach"))
    notes: list[str] = []
    monkeypatch.setattr(mig, "_note", lambda message, **data: notes.append(message))
    mig._await_destination()
    assert now[0] == 180.0
    assert "did not answer within 180 s" in notes[-1]


@pytest.mark.parametrize("state,what", [("---sc-", "crashed"), ("---s--", "shut down"),
                                        ("-----d", "dying")])
def test_a_guest_that_does_not_run_is_refused_before_anything_moves(
        tmp_path: Path, state: str, what: str) -> None:
    """The fault matrix's guest died of memory exhaustion after many moves; the next
    migration copied its disk and failed at xl's suspend.  Now the plan refuses it."""
    from types import SimpleNamespace

    from xenwam.errors import ConfigError

    listing = ("Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
               "Domain-0                                     0   512     1     r-----"
               "     131.9\n"
               f"g1                                           1    96     1     {state}"
               "       2.2\n")

    @dataclass
    class Lister:
        commands: list[list[str]] = field(default_factory=list)

        def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:
            self.commands.append(list(argv))
            return CommandResult(tuple(argv), 0, listing, "", 0.0)

    lister = Lister()
    here = Side("source", "localhost", lister, ("xenwam",))
    mig = Migration(Options(domain="g1", destination="b"),
                    bus=ev.EventBus(None, lambda e: None), journal=None, source=here,
                    destination=here, config_dir=tmp_path, clock=lambda: 0.0,
                    sleep=lambda s: None)
    mig.site = SimpleNamespace()  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=f"'g1' is {what} here .*{state}.*console log"):
        mig.make_plan()
    assert lister.commands == [["xl", "list"]]  # nothing but the look
