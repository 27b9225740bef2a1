"""How the memory phase sees the guest suspend on the source (the start of its downtime):
a xenstore watch of ``control/shutdown`` (nothing to poll), else ``xl list`` polls.

The watch is a real process: a stand-in ``xenstore-watch`` on PATH that behaves like
the real one (one line when the watch is set, one per change, then it waits)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from xenwam.errors import CommandError
from xenwam.migrate.orchestrator import Side, _SuspendWatcher
from xenwam.runner import CommandResult

pytestmark = pytest.mark.unit

XL_RUNNING = """Name                                        ID   Mem VCPUs\tState\tTime(s)
Domain-0                                     0   512     1     r-----     100.0
g1                                           3   224     1     -b----       5.0
"""


class ListRunner:
    """Answers ``xl list`` from a script of outputs; counts the calls."""

    def __init__(self, outputs: Sequence[str]) -> None:
        self.outputs = list(outputs)
        self.calls = 0

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        assert list(argv[:2]) == ["xl", "list"], argv
        self.calls += 1
        out = self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]
        return CommandResult(tuple(argv), 0, out, "", 0.0)


class NoRunner:
    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        raise CommandError(f"nothing should run here: {argv}")


def _stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "xenstore-watch"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return script


def _wait_for(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)


def test_the_first_change_after_the_watch_is_set_is_the_suspend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marks = tmp_path / "argv"
    _stand_in(tmp_path, monkeypatch,
              f'echo "$@" > {marks}\necho "$1"\nsleep 0.3\necho "$1"\nexec sleep 600\n')
    side = Side("source", "localhost", NoRunner(), ("xenwam",))
    watcher = _SuspendWatcher(side, "g1", time.monotonic, domid=7)
    before = time.monotonic()
    watcher.start()
    _wait_for(lambda: watcher.suspended_at is not None)
    proc = watcher._proc
    watcher.stop()
    assert watcher.how == "xenstore watch"
    assert marks.read_text().split() == ["/local/domain/7/control/shutdown"]
    assert watcher.suspended_at is not None and watcher.suspended_at >= before + 0.25
    assert proc is not None and proc.poll() is not None  # stop() ended the watch


def test_stop_before_any_change_ends_the_watch_and_reports_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(tmp_path, monkeypatch, 'echo "$1"\nexec sleep 600\n')
    side = Side("source", "localhost", NoRunner(), ("xenwam",))
    watcher = _SuspendWatcher(side, "g1", time.monotonic, domid=7)
    watcher.start()
    time.sleep(0.2)
    proc = watcher._proc
    watcher.stop()
    assert watcher.suspended_at is None
    assert proc is not None and proc.poll() is not None


def test_a_watch_that_dies_falls_back_to_polling_xl_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(tmp_path, monkeypatch, 'echo "$1"\nexit 1\n')
    runner = ListRunner([XL_RUNNING, XL_RUNNING.replace("-b----", "---s--")])
    side = Side("source", "localhost", runner, ("xenwam",))
    watcher = _SuspendWatcher(side, "g1", time.monotonic, domid=3, interval=0.05)
    watcher.start()
    _wait_for(lambda: watcher.suspended_at is not None)
    watcher.stop()
    assert watcher.how == "xl list"
    assert watcher.suspended_at is not None and runner.calls >= 2


def test_a_remote_source_is_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(tmp_path, monkeypatch, 'echo "$1"\necho "$1"\nexec sleep 600\n')
    runner = ListRunner(["Name ID Mem VCPUs State Time(s)\n"])  # the guest is gone
    side = Side("source", "10.0.0.1", runner, ("xenwam",))
    watcher = _SuspendWatcher(side, "g1", time.monotonic, domid=3, interval=0.05)
    watcher.start()
    _wait_for(lambda: watcher.suspended_at is not None)
    watcher.stop()
    assert watcher._proc is None and watcher.how == "xl list" and runner.calls == 1
