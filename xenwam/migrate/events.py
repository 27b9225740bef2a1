"""The migration's one event model, its journal, and the two ways events are shown.

Events are frozen dataclasses.  Every event goes to the journal
(``/var/lib/xenwam/migrations/ID/journal``, one JSON line each, fsynced before the
orchestrator takes its next action) and to one display: a rich progress view for a person
on a terminal, NDJSON on stdout with ``--json``, or plain lines on stderr otherwise.
Progress is never lost because output is JSON: the same events carry it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from xenwam.errors import MigrationError

#: Where each migration keeps its journal, plan, logs and timeline.
STATE_DIR = Path(os.environ.get("XENWAM_STATE_DIR", "/var/lib/xenwam")) / "migrations"


@dataclass(frozen=True)
class Event:
    """Base of every event: when it happened (wall clock, seconds)."""

    at: float

    @property
    def kind(self) -> str:
        """The event's name in JSON (``phase-started``, ...)."""
        name = type(self).__name__
        return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")

    def to_json(self) -> dict[str, Any]:
        """The event as one JSON object with its kind."""
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class MigrationStarted(Event):
    """A migration got an id and a journal."""

    id: str
    domain: str
    source: str
    destination: str
    pid: int


@dataclass(frozen=True)
class PhaseStarted(Event):
    """A phase began."""

    phase: str
    what: str


@dataclass(frozen=True)
class PhaseFinished(Event):
    """A phase ended well."""

    phase: str
    seconds: float


@dataclass(frozen=True)
class Progress(Event):
    """How far long work (seed, resync, verify) has come."""

    phase: str
    resource: str
    percent: float | None
    done_bytes: int | None
    rate_bytes_s: float | None
    eta_seconds: float | None


@dataclass(frozen=True)
class Note(Event):
    """Something an operator should know (a decision, a measurement)."""

    phase: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Throttled(Event):
    """The guest's writes were slowed to the link's pace so the disk could converge."""

    resource: str
    reason: str


@dataclass(frozen=True)
class Failed(Event):
    """A phase failed; the migration aborts (or rolls forward) from here."""

    phase: str
    error: str


@dataclass(frozen=True)
class Finished(Event):
    """The migration ended: ``done`` or ``aborted``, with the report."""

    outcome: str
    report: dict[str, Any]


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls for cls in (MigrationStarted, PhaseStarted, PhaseFinished, Progress,
                                  Note, Throttled, Failed, Finished)}


def event_from_json(doc: dict[str, Any]) -> Event:
    """Rebuild an event from its journal line."""
    kind = doc.get("event", "")
    name = "".join(part.capitalize() for part in str(kind).split("-"))
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise MigrationError(f"unknown event {kind!r} in a journal")
    fields = {k: v for k, v in doc.items() if k != "event"}
    return cls(**fields)


class Journal:
    """The append-only, fsynced record of one migration."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "journal"

    @classmethod
    def create(cls, migration_id: str, base: Path | None = None) -> Journal:
        """A new journal directory for ``migration_id``."""
        directory = (base or STATE_DIR) / migration_id
        directory.mkdir(parents=True, exist_ok=False, mode=0o700)
        return cls(directory)

    @classmethod
    def open(cls, migration_id: str, base: Path | None = None) -> Journal:
        """An existing migration's journal; :class:`MigrationError` if there is none."""
        directory = (base or STATE_DIR) / migration_id
        if not (directory / "journal").is_file():
            raise MigrationError(f"no migration {migration_id!r} in {base or STATE_DIR}; "
                                 "`xenwam migrate --status` lists them")
        return cls(directory)

    def append(self, event: Event) -> None:
        """Write one event and make it durable before returning."""
        line = json.dumps(event.to_json(), sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def events(self) -> Iterator[Event]:
        """Every event written so far (a torn last line after a crash is skipped)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        for line in text.splitlines():
            try:
                doc = json.loads(line)
                if isinstance(doc, dict):
                    yield event_from_json(doc)
            except (ValueError, TypeError, MigrationError):
                continue

    def write_json(self, name: str, doc: Any) -> Path:
        """Write a JSON document (plan, report) next to the journal, atomically."""
        path = self.directory / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    def read_json(self, name: str) -> Any:
        """A JSON document written by :meth:`write_json`."""
        return json.loads((self.directory / name).read_text())


@dataclass(frozen=True)
class Summary:
    """What a journal says about its migration (``--status``)."""

    id: str
    domain: str
    destination: str
    phase: str
    outcome: str | None
    started: float
    pid: int


def summarize(journal: Journal) -> Summary:
    """Replay a journal: the last phase started and how it ended."""
    started: MigrationStarted | None = None
    phase, outcome = "plan", None
    for ev in journal.events():
        if isinstance(ev, MigrationStarted):
            started = ev
        elif isinstance(ev, PhaseStarted):
            phase = ev.phase
        elif isinstance(ev, Finished):
            outcome = ev.outcome
    if started is None:
        raise MigrationError(f"{journal.path} has no start record")
    return Summary(id=started.id, domain=started.domain, destination=started.destination,
                   phase=phase, outcome=outcome, started=started.at, pid=started.pid)


# ------------------------------------------------------------------ displays


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def describe(ev: Event) -> str | None:
    """One human line for an event (None for events a person need not see as a line)."""
    if isinstance(ev, MigrationStarted):
        return f"migration {ev.id}: {ev.domain} {ev.source} -> {ev.destination}"
    if isinstance(ev, PhaseStarted):
        return f"[{ev.phase}] {ev.what}"
    if isinstance(ev, PhaseFinished):
        return f"[{ev.phase}] ended after {ev.seconds:.1f} s"
    if isinstance(ev, Progress):
        pct = f"{ev.percent:5.1f}%" if ev.percent is not None else "     "
        rate = f"{_fmt_bytes(ev.rate_bytes_s)}/s" if ev.rate_bytes_s is not None else ""
        eta = f"ETA {ev.eta_seconds:.0f} s" if ev.eta_seconds is not None else ""
        return f"[{ev.phase}] {ev.resource} {pct} {_fmt_bytes(ev.done_bytes)} {rate} {eta}"
    if isinstance(ev, Note):
        return f"[{ev.phase}] {ev.message}"
    if isinstance(ev, Throttled):
        return f"[catch-up] {ev.resource}: guest writes slowed to the link's pace ({ev.reason})"
    if isinstance(ev, Failed):
        return f"[{ev.phase}] FAILED: {ev.error}"
    if isinstance(ev, Finished):
        return f"migration {ev.outcome}"
    return None


class Display:
    """Shows events: NDJSON on stdout, a rich live view on a terminal, else plain lines."""

    def __init__(self, json_output: bool = False, stream: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.json_output = json_output
        self.quiet = quiet
        self.stream = stream or (sys.stdout if json_output else sys.stderr)
        self._console: Any = None
        self._status: Any = None
        if not json_output and not quiet and self.stream.isatty():
            from rich.console import Console

            self._console = Console(file=self.stream)
            self._status = self._console.status("starting")
            self._status.start()

    def __call__(self, ev: Event) -> None:
        if self.json_output:
            self.stream.write(json.dumps(ev.to_json(), sort_keys=True) + "\n")
            self.stream.flush()
            return
        if self.quiet:
            return
        line = describe(ev)
        if line is None:
            return
        if self._console is not None:
            if isinstance(ev, Progress):
                self._status.update(line)
            else:
                self._console.print(line)
            return
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Stop the live view."""
        if self._status is not None:
            self._status.stop()


class EventBus:
    """Every event to the journal first (fsynced), then to the display."""

    def __init__(self, journal: Journal | None, display: Callable[[Event], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.display = display
        self.clock = clock
        self.timeline: list[Event] = []

    def emit(self, ev: Event) -> None:
        """Record and show ``ev``."""
        if self.journal is not None:
            self.journal.append(ev)
        self.timeline.append(ev)
        self.display(ev)
