"""The orchestrator reads the guest agent's answer while the agent may be writing it:
``wait_for_agent`` must never accept a half-written answer."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

import pytest

from xenwam.migrate import events as ev
from xenwam.migrate.orchestrator import Migration, Options, Side
from xenwam.runner import CommandResult
from xenwam_guest import layout
from xenwam_guest.layout import AgentReport, Status

pytestmark = pytest.mark.unit

ANSWER = AgentReport(generation="7", status=Status.APPLIED, address="10.2.0.10/24",
                     message="migration m1", took_ms=1151, at=1_800_000_000.0)


class RacingStore:
    """A destination dom0 whose guest agent writes its whole answer (in the agent's
    order, the generation last) between dom0's first and second xenstore read, as seen
    in the lab: dom0 read an empty ``status`` and then a matching ``generation``."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.pending = [(f"{layout.REPORT_DIR}/{k}", v) for k, v in ANSWER.to_values()]

    def run(self, argv: Sequence[str], **_: object) -> CommandResult:
        script, base, *keys = argv[2:]
        lines = []
        for i, key in enumerate([*keys, "recheck"]):
            if i == 1:
                self.values.update(self.pending)
                self.pending = []
            name = "generation" if key == "recheck" else key
            lines.append(f"{key}={self.values.get(f'{layout.REPORT_DIR}/{name}', '')}")
        assert re.search(r"xenstore-read", script) and base.endswith(layout.REPORT_DIR)
        return CommandResult(tuple(argv), 0, "\n".join(lines) + "\n", "", 0.0)


def test_a_half_written_answer_is_never_taken() -> None:
    store = RacingStore()
    dest = Side("destination", "b", store, ("xenwam",))  # type: ignore[arg-type]
    notes: list[ev.Event] = []
    bus = ev.EventBus(None, notes.append)
    now = [100.0]

    def sleep(s: float) -> None:
        now[0] += s

    mig = Migration(Options(domain="g1", destination="b"), bus=bus, journal=None,
                    source=dest, destination=dest, clock=lambda: now[0], sleep=sleep)
    mig.wait_for_agent("5", "7", unpaused=100.0)
    assert mig.report.agent_report == ANSWER.to_json()
    said = " ".join(shlex.join([str(getattr(e, "message", ""))]) for e in notes)
    assert "unreadable" not in said and "applied" in said
