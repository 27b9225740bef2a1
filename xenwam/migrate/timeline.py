"""A finished migration's timeline, drawn from its journal (``xenwam migrate --plot ID``).

Two steps, kept apart: :func:`extract` replays the journal's events (and the report the
``finished`` event carries) into a :class:`Timeline` of plain figures, in seconds from
the migration's start; :func:`plot` draws that as a PNG with matplotlib.  Only the
extraction is logic worth testing to the digit; the drawing is checked to produce a
valid image.

What the journal holds, and so what the plot can show:

- phases: every ``phase-started`` up to the next ``phase-finished`` of that phase (or the
  next phase's start, or the end);
- bytes per second per stream: the seed's progress events count the bytes of its stream
  so far (each segment's rate is the bytes between two events over their interval, and
  the ``seeded`` note closes it with the stream's total); the catch-up's progress events
  carry DRBD's own resync rate; the memory phase's progress events count the transport's
  wire bytes (both ways) so far, segment by segment like the seed's, and the report's
  total closes the last one (a journal written before those events existed gets one
  average over the phase);
- the guest's pause: it ends at the ``guest unpaused`` note and lasted the
  ``downtime_seconds`` that note (or the report) gives;
- the client's gaps, from an optional JSON of client-side figures (:func:`client_gaps`).

matplotlib is imported inside :func:`plot` only, so ``xenwam --help`` does not pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from xenwam.errors import ConfigError, HostCheckError
from xenwam.migrate import events as ev

#: The PNG written beside the journal when no ``--output`` is given.
DEFAULT_NAME = "timeline.png"
#: Streams in the order they are drawn.
STREAMS = ("seed", "resync", "memory")
#: The note the orchestrator writes right after the destination unpaused the guest.
UNPAUSED_NOTE = "guest unpaused"
#: The note the orchestrator writes after seeding one resource (its stats in ``data``).
SEEDED_NOTE = ": seeded "


@dataclass(frozen=True)
class Span:
    """An interval of the migration, seconds from its start."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        """How long it lasted."""
        return self.end - self.start


@dataclass(frozen=True)
class PhaseSpan:
    """One phase of the migration and when it ran."""

    phase: str
    span: Span


@dataclass(frozen=True)
class RateSegment:
    """A stream's rate over one interval: ``bytes_per_s`` from ``start`` to ``end``."""

    start: float
    end: float
    bytes_per_s: float

    @property
    def bytes(self) -> float:
        """What the segment carried."""
        return self.bytes_per_s * (self.end - self.start)


@dataclass(frozen=True)
class Timeline:
    """Everything the plot shows, seconds from the migration's start (``origin``)."""

    migration_id: str
    domain: str
    destination: str
    outcome: str
    origin: float
    end: float
    phases: tuple[PhaseSpan, ...]
    streams: dict[str, tuple[RateSegment, ...]]
    pause: Span | None
    throttled: tuple[float, ...]
    client_gaps: tuple[Span, ...] = ()
    report: dict[str, Any] = field(default_factory=dict)


def _finished(events: Sequence[ev.Event]) -> ev.Finished:
    done = [e for e in events if isinstance(e, ev.Finished)]
    if not done:
        raise ConfigError("the journal has no finished migration (it is still running, or "
                          "its orchestrator died: `xenwam migrate --recover ID` ends it)")
    return done[-1]


def _origin(events: Sequence[ev.Event]) -> float:
    started = [e for e in events if isinstance(e, ev.MigrationStarted)]
    return started[0].at if started else min(e.at for e in events)


def phase_spans(events: Sequence[ev.Event], origin: float) -> list[PhaseSpan]:
    """Each started phase and its interval: to its own ``phase-finished``, else to the
    next phase's start, else to the migration's last event."""
    out: list[PhaseSpan] = []
    last = max(e.at for e in events)
    for i, e in enumerate(events):
        if not isinstance(e, ev.PhaseStarted):
            continue
        end = last
        for later in events[i + 1:]:
            if isinstance(later, ev.PhaseFinished) and later.phase == e.phase:
                end = later.at
                break
            if isinstance(later, ev.PhaseStarted):
                end = later.at
                break
        out.append(PhaseSpan(e.phase, Span(e.at - origin, end - origin)))
    return out


def _span_of(spans: Iterable[PhaseSpan], phase: str) -> Span | None:
    found = [p.span for p in spans if p.phase == phase]
    return found[0] if found else None


def seed_rates(events: Sequence[ev.Event], origin: float,
               seed_span: Span | None) -> list[RateSegment]:
    """The seeding stream's rate between its progress events.

    A resource's first segment starts where the previous resource's last one ended (the
    seed phase's start for the first); the ``seeded`` note, which carries the stream's
    total, closes it.  The segments of one resource add up to its stream's bytes.
    """
    out: list[RateSegment] = []
    cursor = seed_span.start if seed_span else None
    done: dict[str, int] = {}
    for e in events:
        if isinstance(e, ev.Progress) and e.phase == "seed" and e.done_bytes is not None:
            resource, total = e.resource, e.done_bytes
        elif (isinstance(e, ev.Note) and e.phase == "seed" and SEEDED_NOTE in e.message
              and isinstance(e.data.get("stream_bytes"), int)):
            resource, total = str(e.data.get("resource")), int(e.data["stream_bytes"])
        else:
            continue
        at = e.at - origin
        start = at if cursor is None else cursor
        sent = total - done.get(resource, 0)
        if at > start:
            out.append(RateSegment(start, at, sent / (at - start)))
        done[resource] = total
        cursor = at
    return out


def resync_rates(events: Sequence[ev.Event], origin: float,
                 catch_up: Span | None) -> list[RateSegment]:
    """DRBD's resync rate as each catch-up progress event reported it, over the interval
    since the previous one (the catch-up's start for the first); no rate reads as 0."""
    out: list[RateSegment] = []
    cursor: dict[str, float] = {}
    for e in events:
        if not (isinstance(e, ev.Progress) and e.phase == "catch-up"):
            continue
        at = e.at - origin
        start = cursor.get(e.resource, catch_up.start if catch_up else at)
        if at > start:
            out.append(RateSegment(start, at, float(e.rate_bytes_s or 0.0)))
        cursor[e.resource] = at
    return out


def summed(segments: Iterable[RateSegment]) -> list[RateSegment]:
    """One stream's segments as a single step line: where segments overlap (two
    resources resyncing at once) their rates add up.  Gaps stay gaps."""
    segs = [s for s in segments if s.end > s.start]
    edges = sorted({x for s in segs for x in (s.start, s.end)})
    out: list[RateSegment] = []
    for a, b in pairwise(edges):
        covering = [s for s in segs if s.start <= a and s.end >= b]
        if covering:
            out.append(RateSegment(a, b, sum(s.bytes_per_s for s in covering)))
    return out


def memory_rates(report: dict[str, Any], memory: Span | None,
                 events: Sequence[ev.Event] = (), origin: float = 0.0) -> list[RateSegment]:
    """The memory stream: the transport's wire bytes, both directions, between its
    progress events (the phase's start opens the first segment, the report's total at
    the phase's end closes the last); one average over the phase without them."""
    wire = report.get("memory_wire_bytes")
    if memory is None or memory.seconds <= 0:
        return []
    total = None if wire is None else int(wire) + int(report.get("memory_backward_bytes") or 0)
    out: list[RateSegment] = []
    cursor, sent = memory.start, 0
    for e in events:
        if not (isinstance(e, ev.Progress) and e.phase == "memory"
                and e.done_bytes is not None):
            continue
        at = e.at - origin
        if at > cursor:
            out.append(RateSegment(cursor, at, (e.done_bytes - sent) / (at - cursor)))
        cursor, sent = at, e.done_bytes
    if total is None:
        return out
    if memory.end > cursor:
        out.append(RateSegment(cursor, memory.end, max(0, total - sent) / (memory.end - cursor)))
    return out


def guest_pause(events: Sequence[ev.Event], origin: float,
                report: dict[str, Any]) -> Span | None:
    """When the guest was paused: it ends at the ``guest unpaused`` note and lasted the
    ``downtime_seconds`` of that note, or of the report.  None if not recorded."""
    notes = [e for e in events if isinstance(e, ev.Note) and e.message.startswith(UNPAUSED_NOTE)]
    if not notes:
        return None
    note = notes[-1]
    seconds = note.data.get("downtime_seconds")
    if seconds is None:
        seconds = report.get("downtime_seconds")
    if seconds is None:
        return None
    end = note.at - origin
    return Span(end - float(seconds), end)


def client_gaps(doc: dict[str, Any], origin: float) -> list[Span]:
    """The client's silences, from a JSON of client-side figures, on the journal's clock.

    ``doc`` holds ``gaps``: ``[last answer before, first answer after]`` pairs of wall
    clock times taken on the client (a records client's summary has them, see
    ``xenwam/lab/records.py``), and optionally ``clock_offset_seconds``: the journal's
    clock minus the client's, added to every time.
    """
    raw = doc.get("gaps")
    if not isinstance(raw, list):
        raise ConfigError("the client figures hold no 'gaps' list of [start, end] times")
    offset = float(doc.get("clock_offset_seconds") or 0.0)
    out = []
    for pair in raw:
        if (not isinstance(pair, list | tuple) or len(pair) != 2
                or not all(isinstance(t, int | float) for t in pair)):
            raise ConfigError(f"a client gap is not [start, end] in seconds: {pair!r:.60}")
        start, end = float(pair[0]), float(pair[1])
        if end < start:
            raise ConfigError(f"a client gap ends before it starts: {pair!r:.60}")
        out.append(Span(start + offset - origin, end + offset - origin))
    return out


def extract(events: Sequence[ev.Event], client: dict[str, Any] | None = None) -> Timeline:
    """The timeline of a finished migration from its journal's events."""
    if not events:
        raise ConfigError("the journal is empty")
    finished = _finished(events)
    report = dict(finished.report)
    origin = _origin(events)
    phases = phase_spans(events, origin)
    started = next((e for e in events if isinstance(e, ev.MigrationStarted)), None)
    streams = {
        "seed": tuple(seed_rates(events, origin, _span_of(phases, "seed"))),
        "resync": tuple(resync_rates(events, origin, _span_of(phases, "catch-up"))),
        "memory": tuple(memory_rates(report, _span_of(phases, "memory"), events, origin)),
    }
    return Timeline(
        migration_id=started.id if started else str(report.get("id", "?")),
        domain=started.domain if started else str(report.get("domain", "?")),
        destination=started.destination if started else "?",
        outcome=finished.outcome, origin=origin, end=finished.at - origin,
        phases=tuple(phases), streams=streams,
        pause=guest_pause(events, origin, report),
        throttled=tuple(e.at - origin for e in events if isinstance(e, ev.Throttled)),
        client_gaps=tuple(client_gaps(client, origin)) if client is not None else (),
        report=report)


def load(directory: Path, client_path: Path | None = None) -> Timeline:
    """The timeline of the migration whose journal is in ``directory``."""
    journal = ev.Journal(directory)
    if not journal.path.is_file():
        raise ConfigError(f"{directory} holds no migration journal; `xenwam migrate "
                          "--status` lists the migrations")
    client = None
    if client_path is not None:
        try:
            client = json.loads(client_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the client figures {client_path}: {exc}") from exc
        if not isinstance(client, dict):
            raise ConfigError(f"{client_path} is not a JSON object with 'gaps'")
    return extract(list(journal.events()), client)


#: One colour per phase (matplotlib's tab10 and tab20 entries), so plots compare.
PHASE_COLOURS = {
    "plan": "#c7c7c7", "prepare": "#aec7e8", "seed": "#98df8a", "catch-up": "#ffbb78",
    "handover": "#c5b0d5", "memory": "#ff9896", "rebind": "#f7b6d2", "finalize": "#dbdb8d",
    "aborting": "#7f7f7f",
}
STREAM_COLOURS = {"seed": "#2ca02c", "resync": "#ff7f0e", "memory": "#d62728"}
#: DRBD reports the resync's progress, not its bytes: with checksums, blocks both copies
#: hold alike count at their size although only a digest crosses the link.
STREAM_LABELS = {"resync": "resync (DRBD's sync rate)"}


def plot(timeline: Timeline, output: Path) -> Path:
    """Draw ``timeline`` as a PNG at ``output``: phases as coloured bands, the guest's
    pause and the client's gaps as bars above them, bytes per second per stream below."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise HostCheckError("drawing the timeline needs matplotlib: `pip install "
                             "matplotlib` or `apt-get install python3-matplotlib`") from exc
    fig, (top, rates) = plt.subplots(
        2, 1, sharex=True, figsize=(11, 5.5), gridspec_kw={"height_ratios": [1, 2.2]})
    try:
        rows = ["client gap", "guest paused", "phases"]
        for p in timeline.phases:
            colour = PHASE_COLOURS.get(p.phase, "#bcbd22")
            top.broken_barh([(p.span.start, p.span.seconds)], (2 - 0.4, 0.8),
                            facecolors=colour, edgecolors="white")
            rates.axvspan(p.span.start, p.span.end, color=colour, alpha=0.25, lw=0)
            if p.span.seconds > 0.04 * max(timeline.end, 1e-9):
                top.text(p.span.start + p.span.seconds / 2, 2, p.phase, ha="center",
                         va="center", fontsize=8)
        if timeline.pause is not None:
            top.broken_barh([(timeline.pause.start, timeline.pause.seconds)], (1 - 0.4, 0.8),
                            facecolors="#1f77b4")
            top.text(timeline.pause.end, 1, f" {timeline.pause.seconds:.1f} s", va="center",
                     fontsize=8)
        for gap in timeline.client_gaps:
            top.broken_barh([(gap.start, gap.seconds)], (0 - 0.4, 0.8), facecolors="#9467bd")
        if timeline.client_gaps:
            longest = max(timeline.client_gaps, key=lambda g: g.seconds)
            top.text(longest.end, 0, f" {longest.seconds:.1f} s", va="center", fontsize=8)
        for t in timeline.throttled:
            top.axvline(t, color="black", ls=":", lw=1)
        top.set_yticks(range(len(rows)), rows)
        top.set_ylim(-0.6, 2.6)
        top.set_title(f"{timeline.migration_id}: {timeline.domain} -> {timeline.destination}"
                      f" ({timeline.outcome}, {timeline.end:.1f} s)", fontsize=10)
        drawn = []
        for name in STREAMS:
            segments = summed(timeline.streams.get(name, ()))
            if not segments:
                continue
            xs: list[float] = []
            ys: list[float] = []
            for s in segments:
                xs += [s.start, s.end]
                ys += [s.bytes_per_s / 1e6] * 2
            label = STREAM_LABELS.get(name, name)
            rates.plot(xs, ys, color=STREAM_COLOURS[name], lw=1.5, label=label)
            drawn.append(name)
        rates.set_ylabel("MB/s on the wire")
        rates.set_xlabel("seconds since the migration started")
        rates.set_xlim(0, max(timeline.end, 1e-3))
        rates.set_ylim(bottom=0)
        handles, labels = rates.get_legend_handles_labels()
        handles += [Patch(color=PHASE_COLOURS.get(p, "#bcbd22"), alpha=0.5)
                    for p in dict.fromkeys(ps.phase for ps in timeline.phases)]
        labels += list(dict.fromkeys(ps.phase for ps in timeline.phases))
        rates.legend(handles, labels, fontsize=7, ncol=4, loc="upper right")
        if not drawn:
            rates.text(0.5, 0.5, "no stream progress in this journal", ha="center",
                       transform=rates.transAxes)
        fig.tight_layout()
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, dpi=100)
    finally:
        plt.close(fig)
    return output
