"""The lab's state file and what `down` does with no lab (fake runner, no root)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from xenwam.errors import LabError
from xenwam.lab.config import Layout
from xenwam.lab.lab import GuestRecord, Lab, LabState
from xenwam.runner import CommandResult

pytestmark = pytest.mark.unit


@dataclass
class RecordingRunner:
    """Records argv lists and succeeds with empty output."""

    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None,
            cwd: str | None = None) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(tuple(argv), 0, "", "", 0.0)


def _state(run_dir: Path) -> LabState:
    return LabState(run_dir=str(run_dir), artifacts="/cache/k", layout="wan", rtt_ms=40.0,
                    rate_kbit=50000, loss_percent=0.0, ssh_port_base=2201, source_dir="/src",
                    status="up", guests=[GuestRecord("g1", "b", "10.2.0.10", 1)])


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    state = _state(tmp_path)
    again = LabState.from_json(json.dumps(asdict(state)))
    assert again == state
    config = again.config()
    assert config.layout is Layout.WAN
    assert config.shaping.netem_argv("wan")[-4:] == ["delay", "20ms", "rate", "50000kbit"]


def test_down_of_a_lab_never_started_does_nothing(tmp_path: Path) -> None:
    runner = RecordingRunner()
    assert Lab(tmp_path, runner=runner).down() == []
    # It only looked for its namespaces; it signalled and deleted nothing.
    assert runner.calls == [["ip", "netns", "list"]]


def test_down_marks_the_state_down_and_exec_then_refuses(tmp_path: Path) -> None:
    lab = Lab(tmp_path, runner=RecordingRunner())
    (tmp_path / "state.json").write_text(json.dumps(asdict(_state(tmp_path))))
    lab.down()
    state = lab.load_state()
    assert state is not None and state.status == "down"
    with pytest.raises(LabError, match="xenwam lab up"):
        lab.exec("a", ["true"])


def test_unreadable_state_says_how_to_recover(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(LabError, match="xenwam lab down"):
        Lab(tmp_path, runner=RecordingRunner()).load_state()
