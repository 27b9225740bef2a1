"""`xenwam lab` argument handling: bad input is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenwam.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("flag", "value"), [("--rtt", "fast"), ("--rate", "50mbps"),
                                             ("--loss", "100")])
def test_bad_shaping_is_refused_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    status = main(["lab", "up", "--run-dir", str(tmp_path), flag, value])
    assert status == 2
    assert repr(value)[1:-1] in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_status_of_a_lab_never_started(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "status", "--json", "--run-dir", str(tmp_path)]) == 0
    assert '"status": "absent"' in capsys.readouterr().out


def test_exec_without_command_says_how(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "exec", "--run-dir", str(tmp_path), "a"]) != 0
    assert "xenwam lab exec a -- xl list" in capsys.readouterr().err


def test_exec_on_a_lab_that_is_not_up_says_so(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "exec", "--run-dir", str(tmp_path), "a", "--", "xl", "list"]) == 1
    assert "xenwam lab up" in capsys.readouterr().err


def test_unknown_host_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "exec", "c", "--", "true"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
