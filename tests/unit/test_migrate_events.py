"""The migration's events: journal replay, summaries, JSON round trips, the JSON display."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from xenwam.errors import MigrationError
from xenwam.migrate.events import (
    EVENT_TYPES,
    Display,
    Event,
    EventBus,
    Failed,
    Finished,
    Journal,
    MigrationStarted,
    Note,
    PhaseFinished,
    PhaseStarted,
    Progress,
    Throttled,
    describe,
    event_from_json,
    summarize,
)

pytestmark = pytest.mark.unit

MID = "20261201T081500-g1-1a2b"

ONE_OF_EACH: tuple[Event, ...] = (
    MigrationStarted(1.0, MID, "g1", "hosta", "site-b", 4242),
    PhaseStarted(2.0, "seed", "non-zero blocks streamed"),
    Progress(3.0, "seed", "g1-disk", 42.5, 1 << 20, 2.5e6, 12.0),
    Progress(3.5, "seed", "g1-disk", None, None, None, None),
    Note(4.0, "plan", "downtime estimate", {"ms": 4321.5, "parts": [1, 2]}),
    Throttled(5.0, "g1-disk", "no progress for 60 s"),
    PhaseFinished(6.0, "seed", 4.0),
    Failed(7.0, "catch-up", "resync stalled"),
    Finished(8.0, "aborted", {"outcome": "aborted", "total_seconds": 7.0}),
)


def test_every_event_type_is_covered() -> None:
    assert {type(e).__name__ for e in ONE_OF_EACH} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: type(e).__name__)
def test_event_round_trips_through_json(event: Event) -> None:
    doc = json.loads(json.dumps(event.to_json()))
    assert doc["event"] == event.kind
    assert event_from_json(doc) == event


def test_kinds_are_kebab_case() -> None:
    assert MigrationStarted(0.0, MID, "g1", "a", "b", 1).kind == "migration-started"
    assert PhaseFinished(0.0, "seed", 1.0).kind == "phase-finished"


def test_an_unknown_event_is_refused() -> None:
    with pytest.raises(MigrationError, match="unknown event 'teleported'"):
        event_from_json({"event": "teleported", "at": 1.0})


def test_journal_appends_and_replays(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    assert journal.directory == tmp_path / MID
    assert (journal.directory.stat().st_mode & 0o777) == 0o700
    for event in ONE_OF_EACH:
        journal.append(event)
    assert (journal.path.stat().st_mode & 0o777) == 0o600
    assert list(Journal.open(MID, tmp_path).events()) == list(ONE_OF_EACH)


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    for event in ONE_OF_EACH[:3]:
        journal.append(event)
    whole = json.dumps(ONE_OF_EACH[3].to_json(), sort_keys=True)
    with open(journal.path, "a") as f:
        f.write(whole[: len(whole) // 2])  # the crash came mid-write
    assert list(journal.events()) == list(ONE_OF_EACH[:3])


def test_a_journal_without_a_file_has_no_events(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    assert list(journal.events()) == []
    with pytest.raises(MigrationError, match="no migration"):
        Journal.open("20261201T081500-g9-0000", tmp_path)


def test_a_journal_refuses_to_be_created_twice(tmp_path: Path) -> None:
    Journal.create(MID, tmp_path)
    with pytest.raises(FileExistsError):
        Journal.create(MID, tmp_path)


def test_json_documents_next_to_the_journal(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    journal.write_json("plan.json", {"domain": "g1", "resources": []})
    assert journal.read_json("plan.json") == {"domain": "g1", "resources": []}
    assert not list(journal.directory.glob("*.tmp"))


def test_summarize_a_running_and_a_finished_migration(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    for event in ONE_OF_EACH[:2]:
        journal.append(event)
    running = summarize(journal)
    assert (running.id, running.domain, running.destination, running.phase,
            running.outcome, running.started, running.pid) == (
        MID, "g1", "site-b", "seed", None, 1.0, 4242)
    journal.append(PhaseStarted(9.0, "catch-up", "resync"))
    for event in ONE_OF_EACH[2:]:
        journal.append(event)
    done = summarize(journal)
    assert (done.phase, done.outcome) == ("catch-up", "aborted")


def test_summarize_refuses_a_journal_without_a_start(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    journal.append(PhaseStarted(2.0, "seed", "x"))
    with pytest.raises(MigrationError, match="no start record"):
        summarize(journal)


def test_json_display_writes_one_object_per_line() -> None:
    out = io.StringIO()
    display = Display(json_output=True, stream=out)
    for event in ONE_OF_EACH:
        display(event)
    display.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == len(ONE_OF_EACH)
    assert [event_from_json(json.loads(line)) for line in lines] == list(ONE_OF_EACH)
    # Progress is not lost because the output is JSON.
    assert sum(json.loads(line)["event"] == "progress" for line in lines) == 2


def test_json_display_ignores_quiet() -> None:
    out = io.StringIO()
    Display(json_output=True, stream=out, quiet=True)(ONE_OF_EACH[0])
    assert json.loads(out.getvalue())["event"] == "migration-started"


def test_plain_display_writes_lines_and_quiet_writes_nothing() -> None:
    out = io.StringIO()
    display = Display(stream=out)
    for event in ONE_OF_EACH:
        display(event)
    assert out.getvalue().splitlines() == [describe(e) for e in ONE_OF_EACH]
    quiet = io.StringIO()
    Display(stream=quiet, quiet=True)(ONE_OF_EACH[0])
    assert quiet.getvalue() == ""


def test_bus_journals_before_it_shows(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    seen: list[tuple[Event, int]] = []
    bus = EventBus(journal, lambda e: seen.append((e, len(list(journal.events())))))
    for event in ONE_OF_EACH[:3]:
        bus.emit(event)
    assert seen == [(e, i + 1) for i, e in enumerate(ONE_OF_EACH[:3])]
    assert bus.timeline == list(ONE_OF_EACH[:3])


def test_a_line_that_is_not_an_object_is_skipped(tmp_path: Path) -> None:
    journal = Journal.create(MID, tmp_path)
    journal.append(ONE_OF_EACH[0])
    with open(journal.path, "a") as f:
        f.write("[1, 2]\n")
    assert list(journal.events()) == [ONE_OF_EACH[0]]


def test_recover_looks_again_at_a_migration_whose_cleanup_failed() -> None:
    from xenwam.migrate.cli import ended_for_good

    assert ended_for_good("done") and ended_for_good("done (rolled forward)")
    assert ended_for_good("aborted")
    assert not ended_for_good("failed: the cleanup failed too; run --recover")
    assert not ended_for_good("failed") and not ended_for_good(None)
    assert not ended_for_good("refused")


def test_a_recovery_that_fails_leaves_the_migration_open_for_another() -> None:
    """The fault matrix's cut@memory: --recover rolled forward, the finishing step refused
    to unpause, and the journal still said "done (rolled forward)"."""
    from xenwam.migrate.cli import ended_for_good

    assert not ended_for_good("failed: run --recover again once the cause is fixed")
