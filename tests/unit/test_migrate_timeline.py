"""A finished migration's timeline: what is read from its journal, and the PNG drawn from it.

The journal is written with the real event classes and :class:`Journal` (never
hand-written JSON), the way the orchestrator writes it: a seed with two progress events
and its ``seeded`` note, a catch-up with DRBD's rate, a throttle, the memory phase (no
progress events), the ``guest unpaused`` note and the report.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from xenwam import cli
from xenwam.errors import ConfigError
from xenwam.migrate import timeline
from xenwam.migrate.events import (
    Event,
    Finished,
    Journal,
    MigrationStarted,
    Note,
    PhaseFinished,
    PhaseStarted,
    Progress,
    Throttled,
)
from xenwam.migrate.timeline import PhaseSpan, RateSegment, Span

pytestmark = pytest.mark.unit

MID = "20261201T081500-g1-1a2b"
T0 = 1_000.0
REPORT = {"id": MID, "domain": "g1", "outcome": "done", "total_seconds": 60.0,
          "downtime_seconds": 6.5, "seed_wire_bytes": 12_000_000, "resync_kib": 500,
          "memory_raw_bytes": 150_000_000, "memory_wire_bytes": 30_000_000,
          "memory_backward_bytes": 1_000_000,
          "phase_seconds": {"plan": 10.0, "prepare": 10.0, "seed": 5.0, "catch-up": 3.0,
                            "handover": 2.0, "memory": 20.0, "rebind": 3.0,
                            "finalize": 7.0}}


def _phase(start: float, end: float, phase: str) -> list[Event]:
    return [PhaseStarted(T0 + start, phase, f"the {phase} phase"),
            PhaseFinished(T0 + end, phase, end - start)]


def migration_events(finished: bool = True) -> list[Event]:
    """A whole migration's events, in the order the orchestrator emits them."""
    out: list[Event] = [MigrationStarted(T0, MID, "g1", "localhost", "10.0.0.2", 4242)]
    out += _phase(0, 10, "plan") + _phase(10, 20, "prepare")
    out += [PhaseStarted(T0 + 20, "seed", "seed"),
            Progress(T0 + 22, "seed", "g1-disk", None, 4_000_000, 2e6, None),
            Progress(T0 + 24, "seed", "g1-disk", None, 10_000_000, 2.5e6, None),
            Note(T0 + 25, "seed", "g1-disk: seeded 20000000 bytes of data as 12000000 "
                                  "bytes on the wire",
                 {"resource": "g1-disk", "data_bytes": 20_000_000,
                  "stream_bytes": 12_000_000}),
            PhaseFinished(T0 + 25, "seed", 5.0),
            PhaseStarted(T0 + 25, "catch-up", "catch-up"),
            Throttled(T0 + 26.5, "g1-disk", "no progress for 1 s"),
            Progress(T0 + 27, "catch-up", "g1-disk", 50.0, 1_000_000, 500_000.0, 2.0),
            Progress(T0 + 28, "catch-up", "g1-disk", 100.0, 0, None, None),
            PhaseFinished(T0 + 28, "catch-up", 3.0)]
    out += _phase(28, 30, "handover") + _phase(30, 50, "memory")
    out += [PhaseStarted(T0 + 50, "rebind", "rebind"),
            Note(T0 + 52, "rebind", "guest unpaused on the destination",
                 {"downtime_seconds": 6.5}),
            PhaseFinished(T0 + 53, "rebind", 3.0)]
    out += _phase(53, 60, "finalize")
    if finished:
        out.append(Finished(T0 + 60, "done", REPORT))
    return out


def write_journal(base: Path, events: list[Event]) -> Journal:
    journal = Journal.create(MID, base)
    for e in events:
        journal.append(e)
    return journal


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_phase_spans_from_the_journal(tmp_path: Path) -> None:
    line = timeline.load(write_journal(tmp_path, migration_events()).directory)
    assert line.phases == (
        PhaseSpan("plan", Span(0, 10)), PhaseSpan("prepare", Span(10, 20)),
        PhaseSpan("seed", Span(20, 25)), PhaseSpan("catch-up", Span(25, 28)),
        PhaseSpan("handover", Span(28, 30)), PhaseSpan("memory", Span(30, 50)),
        PhaseSpan("rebind", Span(50, 53)), PhaseSpan("finalize", Span(53, 60)))
    assert (line.migration_id, line.domain, line.destination, line.outcome) == (
        MID, "g1", "10.0.0.2", "done")
    assert line.end == 60.0
    assert line.throttled == (26.5,)


def test_a_phase_without_its_end_runs_to_the_next_start() -> None:
    events = [MigrationStarted(T0, MID, "g1", "localhost", "b", 1),
              PhaseStarted(T0 + 1, "plan", "x"), PhaseStarted(T0 + 4, "prepare", "y"),
              Finished(T0 + 9, "failed", {})]
    assert timeline.phase_spans(events, T0) == [PhaseSpan("plan", Span(1, 4)),
                                                PhaseSpan("prepare", Span(4, 9))]


def test_per_stream_rates() -> None:
    line = timeline.extract(migration_events())
    assert line.streams["seed"] == (RateSegment(20, 22, 2e6), RateSegment(22, 24, 3e6),
                                    RateSegment(24, 25, 2e6))
    # The seed's segments carry exactly its stream's bytes.
    assert sum(s.bytes for s in line.streams["seed"]) == REPORT["seed_wire_bytes"]
    assert line.streams["resync"] == (RateSegment(25, 27, 500_000.0),
                                      RateSegment(27, 28, 0.0))
    # Memory without progress events (an older journal): the transport's bytes both ways
    # over the phase, as one average.
    assert line.streams["memory"] == (RateSegment(30, 50, 31_000_000 / 20),)


def test_two_resources_resyncing_at_once_add_up_on_one_line() -> None:
    # The orchestrator waits for one pair, then the other, though both resync all along:
    # the second pair's first segment spans the first pair's whole wait.
    disk = [RateSegment(0, 2, 1e6), RateSegment(2, 4, 3e6)]
    big = [RateSegment(0, 4, 5e6), RateSegment(4, 6, 8e6)]
    line = timeline.summed(disk + big)
    assert line == [RateSegment(0, 2, 6e6), RateSegment(2, 4, 8e6), RateSegment(4, 6, 8e6)]
    assert sum(s.bytes for s in line) == sum(s.bytes for s in disk + big)
    # Time runs one way along the line, and a gap between segments stays a gap.
    assert timeline.summed([RateSegment(5, 6, 1.0), RateSegment(0, 1, 2.0),
                            RateSegment(3, 3, 9.0)]) == [RateSegment(0, 1, 2.0),
                                                         RateSegment(5, 6, 1.0)]


def test_memory_progress_draws_the_stream_segment_by_segment() -> None:
    events = migration_events(finished=False)
    at = next(i for i, e in enumerate(events)
              if isinstance(e, PhaseStarted) and e.phase == "rebind")
    events[at:at] = [Progress(T0 + 34, "memory", "g1", None, 8_000_000, None, None),
                     Progress(T0 + 44, "memory", "g1", None, 28_000_000, 2e6, None)]
    events.append(Finished(T0 + 60, "done", REPORT))
    line = timeline.extract(events)
    assert line.streams["memory"] == (RateSegment(30, 34, 2e6), RateSegment(34, 44, 2e6),
                                      RateSegment(44, 50, 3_000_000 / 6))
    # The segments carry exactly the report's total.
    assert sum(s.bytes for s in line.streams["memory"]) == 31_000_000


def test_seeding_two_resources_one_after_the_other() -> None:
    events = [MigrationStarted(T0, MID, "g1", "localhost", "b", 1),
              PhaseStarted(T0, "seed", "s"),
              Progress(T0 + 2, "seed", "d1", None, 100, 50.0, None),
              Note(T0 + 3, "seed", "d1: seeded 100 bytes of data as 150 bytes on the wire",
                   {"resource": "d1", "stream_bytes": 150}),
              Progress(T0 + 5, "seed", "d2", None, 40, 20.0, None),
              Finished(T0 + 6, "done", {})]
    line = timeline.extract(events)
    assert line.streams["seed"] == (RateSegment(0, 2, 50.0), RateSegment(2, 3, 50.0),
                                    RateSegment(3, 5, 20.0))


def test_the_guest_pause_ends_at_the_unpause_note() -> None:
    line = timeline.extract(migration_events())
    assert line.pause == Span(45.5, 52.0)
    assert line.pause.seconds == 6.5


def test_pause_from_the_report_when_the_note_has_none() -> None:
    events = migration_events()
    i = next(i for i, e in enumerate(events) if isinstance(e, Note)
             and e.message.startswith("guest unpaused"))
    events[i] = Note(T0 + 52, "rebind", "guest unpaused on the destination",
                     {"downtime_seconds": None})
    assert timeline.extract(events).pause == Span(45.5, 52.0)
    del events[i]
    assert timeline.extract(events).pause is None


def test_client_gaps_on_the_journal_clock() -> None:
    client = {"gaps": [[1040.0, 1058.25], [1070, 1071]], "clock_offset_seconds": 1.0,
              "sent": 9}
    line = timeline.extract(migration_events(), client)
    assert line.client_gaps == (Span(41.0, 59.25), Span(71.0, 72.0))
    assert timeline.client_gaps({"gaps": []}, T0) == []


@pytest.mark.parametrize("doc", [{}, {"gaps": 3}, {"gaps": [[1]]}, {"gaps": [["a", 2]]},
                                 {"gaps": [[5, 1]]}])
def test_bad_client_figures_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        timeline.client_gaps(doc, T0)


def test_an_unfinished_journal_is_refused(tmp_path: Path) -> None:
    journal = write_journal(tmp_path, migration_events(finished=False))
    with pytest.raises(ConfigError, match="no finished migration"):
        timeline.load(journal.directory)


def test_plot_writes_a_png_of_sane_size(tmp_path: Path) -> None:
    line = timeline.extract(migration_events(), {"gaps": [[1044.0, 1056.0]]})
    out = timeline.plot(line, tmp_path / "sub" / "t.png")
    width, height = png_size(out)
    assert 600 <= width <= 2000 and 300 <= height <= 1500
    assert out.stat().st_size > 10_000


def test_plot_of_a_migration_without_streams(tmp_path: Path) -> None:
    events = [MigrationStarted(T0, MID, "g1", "localhost", "b", 1),
              PhaseStarted(T0, "plan", "p"), Finished(T0 + 2, "refused", {"error": "no"})]
    out = timeline.plot(timeline.extract(events), tmp_path / "t.png")
    assert png_size(out)[0] > 0


def test_cli_plot_writes_beside_the_journal(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    journal = write_journal(tmp_path, migration_events())
    assert cli.main(["migrate", "--plot", MID, "--state-dir", str(tmp_path)]) == 0
    assert png_size(journal.directory / timeline.DEFAULT_NAME)[0] > 0
    assert str(journal.directory / "timeline.png") in capsys.readouterr().out


def test_cli_plot_to_a_file_with_client_figures(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    write_journal(tmp_path, migration_events())
    client = tmp_path / "client.json"
    client.write_text(json.dumps({"gaps": [[1044.0, 1056.0]]}))
    out = tmp_path / "mine.png"
    assert cli.main(["migrate", "--plot", MID, "--state-dir", str(tmp_path), "--output",
                     str(out), "--client", str(client), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": MID, "output": str(out)}
    assert png_size(out)[0] > 0


@pytest.mark.parametrize("case", ["unknown", "unfinished", "output-alone", "bad-client"])
def test_cli_plot_refusals_are_one_line_and_exit_2(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["migrate", "--plot", MID, "--state-dir", str(tmp_path)]
    if case == "unfinished":
        write_journal(tmp_path, migration_events(finished=False))
    elif case == "output-alone":
        argv = ["migrate", "--output", str(tmp_path / "x.png"), "--state-dir", str(tmp_path)]
    elif case == "bad-client":
        write_journal(tmp_path, migration_events())
        (tmp_path / "c.json").write_text("[1, 2]")
        argv += ["--client", str(tmp_path / "c.json")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
