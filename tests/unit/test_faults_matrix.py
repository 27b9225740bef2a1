"""The fault matrix's pure parts (issue 13): which cases exist, how a moment is found in
a migration's event stream, the report; and the orchestrator's hold points."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from xenwam.errors import ConfigError, DrbdError, MigrationError
from xenwam.lab import diskjournal as dj
from xenwam.lab import faults
from xenwam.lab.faults import Case, Fault, Moment, Result, Trigger
from xenwam.migrate import events as ev
from xenwam.migrate.orchestrator import (
    HOLD_POINTS,
    Migration,
    Options,
    hold_points_from_env,
)
from xenwam.runner import CommandResult
from xenwam.xen.xl import XlDomain, state_runs

pytestmark = pytest.mark.unit


def test_the_matrix_has_every_fault_and_moment_and_at_least_twenty_cases() -> None:
    cases = faults.matrix()
    assert len(cases) >= 20
    assert {c.fault for c in cases} == set(Fault)
    assert {c.moment for c in cases} == set(Moment)
    assert len({c.name for c in cases}) == len(cases)
    for case in cases:
        assert Case.parse(case.name) == case


def test_the_kinds_selection_has_one_case_per_fault_kind_and_ci_is_part_of_it() -> None:
    kinds = faults.select("kinds")
    assert sorted(c.fault.value for c in kinds) == sorted(f.value for f in Fault)
    assert set(faults.select("ci")) <= set(kinds) <= set(faults.matrix())


def test_what_is_left_out_says_why_and_is_refused_by_name() -> None:
    assert (Fault.CRASH_SOURCE, Moment.SEED) in faults.NOT_IN_MATRIX
    with pytest.raises(ConfigError, match="guest still runs on the source"):
        Case.parse("crash-source@seed")
    with pytest.raises(ConfigError, match="only copy"):
        Case.parse("crash-destination@rebind")


@pytest.mark.parametrize("text", ["cut", "cut@", "@seed", "cut@lunch", "fire@seed", ""])
def test_malformed_cases_are_refused_with_what_is_valid(text: str) -> None:
    with pytest.raises(ConfigError, match=r"FAULT@MOMENT|not in the matrix"):
        Case.parse(text)


def test_select_lists_and_all() -> None:
    assert faults.select("all") == faults.matrix()
    assert faults.select("cut@seed, lossy@memory") == [Case(Fault.CUT, Moment.SEED),
                                                       Case(Fault.LOSSY, Moment.MEMORY)]


EVENTS = [
    {"event": "migration-started", "id": "x", "pid": 42},
    {"event": "phase-started", "phase": "seed"},
    {"event": "phase-started", "phase": "rebind"},
    {"event": "note", "phase": "rebind", "message": "held",
     "data": {"hold": "before-unpause", "path": "/p"}},
]


def test_a_phase_trigger_fires_on_its_phase_only() -> None:
    assert Trigger("seed").fired(EVENTS)
    assert not Trigger("memory").fired(EVENTS)


def test_a_hold_trigger_needs_the_hold_note_not_just_the_phase() -> None:
    assert faults.TRIGGERS[Moment.PAUSED].fired(EVENTS)
    assert not faults.TRIGGERS[Moment.REBIND].fired(EVENTS)  # same phase, other hold
    released = [{"event": "note", "data": {"hold": "after-unpause", "released": True}}]
    assert not faults.TRIGGERS[Moment.REBIND].fired(released)


def test_every_hold_trigger_names_a_real_hold_point() -> None:
    holds = {t.hold for t in faults.TRIGGERS.values() if t.hold}
    assert holds == set(HOLD_POINTS)


def test_a_result_passes_only_with_every_invariant_checked_and_none_false() -> None:
    r = Result(case="cut@seed", source="a", destination="b")
    assert not r.passed  # nothing checked yet
    r.checks = {k: True for k in faults.INVARIANTS}
    r.checks["retry"] = None  # not applicable is not a failure
    assert r.passed
    r.checks["records"] = False
    assert not r.passed
    r.checks["records"] = True
    r.error = "boom"
    assert not r.passed


def test_the_report_marks_failures_and_says_what_was_seen() -> None:
    good = Result(case="cut@seed", source="a", destination="b", outcome="aborted",
                  recovered_with="automatic", ended_on="a", recover_seconds=12.5,
                  acked_before=40, checks={k: True for k in faults.INVARIANTS})
    bad = Result(case="kill-orchestrator@memory", source="b", destination="a",
                 outcome="done (rolled forward)", ended_on="a",
                 checks={**{k: True for k in faults.INVARIANTS}, "records": False},
                 seen={"records": "40 acknowledged before the fault, 1 missing on a"})
    text = faults.render_report({"results": [asdict(good), asdict(bad)]})
    assert "| `cut@seed` | a->b | aborted | automatic | a | 12.5 | 40 |" in text
    assert "**NO**" in text and "1 of 2 cases held every invariant" in text
    assert "1 missing on a" in text


class Dom0:
    """A dom0 whose console log and DRBD device hold given text (pure: no process)."""

    def __init__(self, console: str, disk: list[str]) -> None:
        self.console, self.disk = console, disk

    def exec(self, host: str, argv: list[str], *, timeout: float = 0,
             check: bool = True) -> CommandResult:
        if argv[0] == "sh":
            out = self.console
        else:
            count = int(next(a for a in argv if a.startswith("count="))[6:])
            out = "".join(f"{line:<511}\n" for line in self.disk[:count])
        return CommandResult(tuple(argv), 0, out, "", 0.0)


def test_acknowledged_records_missing_from_the_disk_are_found() -> None:
    console = ("boot\nxwj-ack xwj 00000001 1700000000\nnoise xwj-ack xwj 00000002 1700000001\n"
               "xwj-ack xwj 00000003 1700000002\n")
    lab = Dom0(console, ["xwj 00000001 1700000000", "", "xwj 00000003 1700000002"])
    records = dj.acked(lab, "a", "g1")
    assert [dj.record_number(r) for r in records] == [1, 2, 3]
    assert dj.missing(lab, "a", "/dev/drbd1", records) == ["xwj 00000002 1700000001"]
    assert dj.missing(lab, "a", "/dev/drbd1", []) == []


def test_the_hold_point_waits_until_its_file_is_removed(tmp_path: Path) -> None:
    journal = ev.Journal.create("m1", base=tmp_path)
    seen: list[ev.Event] = []
    now = [0.0]
    removed_at = 3.0

    def sleep(s: float) -> None:
        now[0] += s
        hold = journal.directory / "hold-finalize"
        if now[0] >= removed_at and hold.exists():
            hold.unlink()

    mig = Migration(Options(domain="g1", destination="b", hold_at=frozenset({"finalize"})),
                    bus=ev.EventBus(None, seen.append), journal=journal,
                    clock=lambda: now[0], sleep=sleep)
    mig._hold("before-unpause")  # not asked for: no wait
    assert now[0] == 0.0 and not seen
    mig._hold("finalize")
    assert removed_at <= now[0] < removed_at + 0.5
    notes = [e for e in seen if isinstance(e, ev.Note)]
    assert notes[0].data["hold"] == "finalize" and notes[0].data["path"].endswith(
        "hold-finalize")
    assert notes[-1].data.get("released") is True


def test_hold_points_come_from_the_environment_and_unknown_ones_are_refused() -> None:
    assert hold_points_from_env(None) == frozenset()
    assert hold_points_from_env("finalize, before-unpause") == {"finalize", "before-unpause"}
    with pytest.raises(ConfigError, match=r"unknown hold point 'lunch'.*valid: before-unpause"):
        hold_points_from_env("finalize,lunch")


PS = """\
    1 /sbin/init
  812 /usr/bin/python3 -m xenwam.cli migrate --json --ip 10.2.0.3/24 g1 10.0.0.2
  840 /usr/sbin/xl migrate -s xenwam-transport --stats /m/x/t.json --level 1 -p g1 10.0.0.2
  841 sh -c xenwam-transport --stats /m/x/t.json 10.0.0.2 xl migrate-receive
  850 xl migrate -p g10 10.0.0.2
  860 xl list
"""


def test_xl_migrate_processes_of_a_domain_are_found_in_ps_output() -> None:
    from xenwam.xen import xl
    assert xl.migrate_pids(PS, "g1") == [840]
    assert xl.migrate_pids(PS, "g10") == [850]
    assert xl.migrate_pids(PS, "g2") == []
    assert xl.migrate_pids("", "g1") == []


def test_the_doc_block_is_replaced_and_the_rest_kept() -> None:
    text = f"# title\n\nprose\n{faults.BEGIN}\nold table\n{faults.END}\n\nmore prose\n"
    doc = {"started": "2026-12-02", "commit": "abc1234", "outage_seconds": 30,
           "results": [asdict(Result(case="cut@seed", source="a", destination="b"))]}
    out = faults.update_doc(text, doc)
    assert out.startswith("# title\n\nprose\n") and out.endswith("\n\nmore prose\n")
    assert "old table" not in out and "`abc1234`" in out and "`cut@seed`" in out
    with pytest.raises(ConfigError, match="no"):
        faults.update_doc("no markers", doc)


def test_a_resumed_run_keeps_earlier_results_and_names_every_run(tmp_path: Path) -> None:
    earlier = {"started": "2026-12-03 06:17", "commit": "aaa1111", "outage_seconds": 45.0,
               "cases": ["cut@seed", "cut@catch-up"],
               "results": [asdict(Result(case="cut@seed", source="a", destination="b"))]}
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(earlier))
    held = asdict(Result(case="cut@seed", source="a", destination="b",
                         checks=dict.fromkeys(faults.INVARIANTS, True)))
    failed = asdict(Result(case="cut@memory", source="a", destination="b",
                           checks={**dict.fromkeys(faults.INVARIANTS, True), "retry": False}))
    earlier["results"] = [held, failed]
    path.write_text(json.dumps(earlier))
    got = faults.resumed(path, 45.0)
    assert [r["case"] for r in got["results"]] == ["cut@seed"]  # the failed one runs again
    assert got["runs"] == [{"started": "2026-12-03 06:17", "commit": "aaa1111",
                            "cases": ["cut@seed", "cut@memory"]}]
    doc = {"runs": got["runs"] + [{"started": "2026-12-03 09:00", "commit": "bbb2222",
                                   "cases": ["cut@catch-up"]}],
           "cases": earlier["cases"], "outage_seconds": 45.0,
           "results": got["results"] + [asdict(Result(case="cut@catch-up", source="b",
                                                      destination="a"))]}
    head = faults.update_doc(f"{faults.BEGIN}\n{faults.END}", doc)
    assert "`aaa1111` (2 cases)" in head and "`bbb2222` (1 cases)" in head
    assert "cases run: 2 of 2" in head


def test_resuming_with_another_outage_or_from_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text('{"outage_seconds": 30, "results": [{"case": "cut@seed"}]}')
    with pytest.raises(ConfigError, match="--outage 30"):
        faults.resumed(path, 45.0)
    path.write_text("not json")
    with pytest.raises(ConfigError, match="cannot resume"):
        faults.resumed(path, 45.0)


def test_split_brains_drbd_solved_by_policy_are_told_apart_from_unresolved_ones() -> None:
    log = (
        "[  812.1] block drbd1: Split-Brain detected, 1 primaries, automatically solved. "
        "Sync from peer node\n"
        "[  901.7] block drbd1: Split-Brain detected but unresolved, dropping connection!\n"
        "[  902.0] block drbd1: helper command: /sbin/drbdadm split-brain minor-1\n")
    assert faults.split_brain_counts(log) == (1, 1)
    rejoined = ("[ 99.1] block drbd1: Split-Brain detected, manually solved. "
                "Sync from peer node\n")
    assert faults.split_brain_counts(rejoined) == (0, 1)
    assert faults.split_brain_counts("") == (0, 0)


class HeldCopy:
    """A DRBD copy that a dying domain holds open for ``held`` demote attempts."""

    name = "g1-disk"

    def __init__(self, held: int) -> None:
        self.held = held
        self.tries = 0

    def demote(self) -> bool:
        self.tries += 1
        if self.tries <= self.held:
            raise DrbdError("resource 'g1-disk': demoting failed: '(-12) Device is held "
                            "open by someone'")
        return True


class SourceWithZombie:
    """The source's ``xl list``: a dying ``(null)`` domain until ``gone_after`` looks."""

    def __init__(self, gone_after: int) -> None:
        self.looks = 0
        self.gone_after = gone_after

    def xl_list(self) -> list[XlDomain]:
        self.looks += 1
        return [] if self.looks > self.gone_after else [
            XlDomain("(null)", 7, 0, 1, "--pssd", 150.7)]


def _finalizing(source: object, now: list[float]) -> tuple[Migration, list[ev.Event]]:
    seen: list[ev.Event] = []

    def sleep(s: float) -> None:
        now[0] += s

    mig = Migration(Options(domain="g1", destination="b"), bus=ev.EventBus(None, seen.append),
                    journal=None, source=source, destination=source,  # type: ignore[arg-type]
                    clock=lambda: now[0], sleep=sleep)
    return mig, seen


def test_finalize_waits_for_a_dying_domain_to_let_go_of_the_old_copy() -> None:
    plan = SimpleNamespace(destination="b")
    now = [0.0]
    mig, seen = _finalizing(SourceWithZombie(gone_after=3), now)
    copy = HeldCopy(held=3)
    mig._demote_source(copy, plan)  # type: ignore[arg-type]
    assert copy.tries == 4 and now[0] == 15.0
    assert next(e.message for e in seen if isinstance(e, ev.Note)).startswith(
        "g1-disk: domain 7 here is dying but still holds the old copy open")


def test_a_copy_held_for_ever_stops_the_migration_with_what_to_do() -> None:
    plan = SimpleNamespace(destination="b")
    mig, _ = _finalizing(SourceWithZombie(gone_after=10**6), [0.0])
    with pytest.raises(MigrationError, match=r"domain 7 \(\(null\), state --pssd\).*"
                                             r"xenwam migrate --recover"):
        mig._demote_source(HeldCopy(held=10**6), plan)  # type: ignore[arg-type]
    # Held by something else than a dying domain: no wait at all.
    mig, _ = _finalizing(SourceWithZombie(gone_after=0), [0.0])
    with pytest.raises(MigrationError, match="other than a guest"):
        mig._demote_source(HeldCopy(held=1), plan)  # type: ignore[arg-type]


@pytest.mark.parametrize(("split", "solved", "rejoined", "connected", "held"), [
    ({"a": 0, "b": 0}, {"a": 0, "b": 0}, False, True, True),     # nothing happened
    ({"a": 0, "b": 0}, {"a": 1, "b": 1}, False, True, True),     # DRBD's policy solved it
    ({"a": 1, "b": 1}, {"a": 0, "b": 0}, False, False, False),   # left for a person
    # cut-to-destination@memory, 2026-12-03: DRBD gave up when the link came back, the
    # finishing step rejoined the destination's unwritten copy, DRBD then solved it.
    ({"a": 1, "b": 1}, {"a": 1, "b": 1}, True, True, True),
    ({"a": 1, "b": 1}, {"a": 1, "b": 0}, True, True, False),     # one side never solved
    ({"a": 1, "b": 1}, {"a": 1, "b": 1}, False, True, False),    # solved, but not by xenwam
    ({"a": 0, "b": 0}, {"a": 0, "b": 0}, False, False, False),   # the copies do not connect
])
def test_a_split_brain_counts_as_held_only_when_nobody_had_to_choose(
        split: dict[str, int], solved: dict[str, int], rejoined: bool, connected: bool,
        held: bool) -> None:
    assert faults.split_brain_held(split, solved, rejoined=rejoined,
                                   connected=connected) is held


@pytest.mark.parametrize(("state", "running"), [
    ("r-----", True), ("-b----", True), ("------", True),
    ("--p---", False), ("---s--", False), ("----c-", False), ("-----d", False),
    ("---sc-", False),  # crash-destination@handover's retry left the guest so, 2026-12-03
])
def test_a_guest_runs_unless_paused_shut_down_crashed_or_dying(state: str,
                                                               running: bool) -> None:
    assert state_runs(state) is running
