"""The orchestrator reads the guest agent's answer while the agent may be writing it:
``wait_for_agent`` must never accept a half-written answer."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from xenwam.migrate import events as ev
from xenwam.migrate.orchestrator import AGENT_WAIT_SCRIPT, Migration, Options, Side
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
        script, base, seconds, generation, *keys = argv[2:]
        assert int(seconds) >= 1 and generation == ANSWER.generation
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


# --- the destination's side of the wait, run by a real shell against stand-ins for
# xenstore-read (a directory of files) and xenstore-watch (which counts its calls and
# returns when the watched key's file changes, as a watch fires)

XENSTORE_READ = """#!/bin/sh
cat "$STORE$1" 2>/dev/null || exit 1
"""
XENSTORE_WATCH = """#!/bin/sh
echo watch >> "$STORE/watch-calls"
[ "$1" = -n ] && shift 2
before=$(cat "$STORE$1" 2>/dev/null)
while [ "$(cat "$STORE$1" 2>/dev/null)" = "$before" ]; do sleep 0.05; done
"""


def _dom0(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bindir, store = tmp_path / "bin", tmp_path / "store"
    bindir.mkdir()
    for name, text in (("xenstore-read", XENSTORE_READ), ("xenstore-watch", XENSTORE_WATCH)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "STORE": str(store)}
    return env, store


def _agent_answers(store: Path, base: str, after: float) -> subprocess.Popen[bytes]:
    """The agent, ``after`` seconds from now: every key, the generation last."""
    writes = "; ".join(f"printf %s {shlex.quote(v)} > {store}{base}/{k}"
                       for k, v in sorted(ANSWER.to_values(), key=lambda kv:
                                          kv[0] == "generation"))
    return subprocess.Popen(["sh", "-c", f"sleep {after}; mkdir -p {store}{base}; {writes}"])


def test_the_wait_returns_when_the_agent_writes_its_answer(tmp_path: Path) -> None:
    env, store = _dom0(tmp_path)
    base = f"/local/domain/5/{layout.REPORT_DIR}"
    (store / base.lstrip("/")).mkdir(parents=True)
    (store / base.lstrip("/") / "generation").write_text("6")  # the last move's answer
    agent = _agent_answers(store, base, 1.0)
    keys = ["generation", *(k for k in layout.REPORT_KEYS if k != "generation")]
    t0 = time.monotonic()
    out = subprocess.run(["sh", "-c", AGENT_WAIT_SCRIPT, base, "20", "7", *keys], env=env,
                         capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    agent.wait(timeout=10)
    values = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert values.pop("recheck") == "7"
    assert AgentReport.parse(values) == ANSWER
    assert 0.9 < took < 10, took  # woken by the watch, not by the 20 s limit
    # It waited on watches (one, or two if the answer came between a read and a watch).
    calls = (store / "watch-calls").read_text().split()
    assert 1 <= len(calls) <= 3, calls


def test_the_wait_gives_up_after_its_limit_with_what_is_there(tmp_path: Path) -> None:
    env, _ = _dom0(tmp_path)
    base = f"/local/domain/5/{layout.REPORT_DIR}"
    out = subprocess.run(["sh", "-c", AGENT_WAIT_SCRIPT, base, "1", "7", "generation",
                          "status"], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["generation=", "status=", "recheck="]
