"""The memory phase's progress: the transport's stats file, rewritten while xl's stream
runs, read into ``memory`` progress events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xenwam.migrate import events as ev
from xenwam.migrate.orchestrator import MemoryProgress

pytestmark = pytest.mark.unit


def test_each_change_of_the_stats_file_is_one_event_with_its_rate(tmp_path: Path) -> None:
    path = tmp_path / "transport.json"
    now = [100.0]
    progress = MemoryProgress(path, "g1", lambda e: None, lambda: now[0])
    assert progress.poll() is None  # not written yet
    path.write_text(json.dumps({"forward_wire_bytes": 3_000_000, "backward_bytes": 1000,
                                "final": False}))
    first = progress.poll()
    assert first == ev.Progress(100.0, "memory", "g1", None, 3_001_000, None, None)
    now[0] = 102.0
    assert progress.poll() is None  # nothing moved
    path.write_text(json.dumps({"forward_wire_bytes": 7_000_000, "backward_bytes": 1000}))
    now[0] = 104.0
    second = progress.poll()
    assert second is not None and second.done_bytes == 7_001_000
    assert second.rate_bytes_s == pytest.approx(4_000_000 / 4)


@pytest.mark.parametrize("text", ["", "{", "[]", '{"forward_wire_bytes": "lots"}'])
def test_a_half_written_or_foreign_file_is_no_event(tmp_path: Path, text: str) -> None:
    path = tmp_path / "transport.json"
    path.write_text(text)
    assert MemoryProgress(path, "g1", lambda e: None, lambda: 1.0).poll() is None
