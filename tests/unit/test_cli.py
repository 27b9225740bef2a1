"""The command line: every subcommand documents itself, errors become exit statuses."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_process import Sandbox

from xenwam import __version__, cli
from xenwam.errors import ConfigError, XenwamError

pytestmark = pytest.mark.unit


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_core_subcommands_are_registered() -> None:
    assert {"doctor", "bench"} <= set(_subcommands())


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_has_help_with_verbosity_flags(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"xenwam {name}" in out
    assert "--verbose" in out and "--quiet" in out


def test_each_command_is_registered_by_the_module_named_for_it() -> None:
    # `xenwam NAME ...` imports COMMANDS[NAME] alone: the map must say which module
    # registers NAME, and the parser built from it alone must have NAME and nothing else.
    assert _subcommands() == sorted(cli.COMMANDS)
    for name in cli.COMMANDS:
        parser = cli.build_parser(only=name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert sorted(sub.choices) == [name]


def test_the_command_is_the_first_word_that_is_not_an_option() -> None:
    assert cli.command_named(["-v", "disk", "status", "--json"]) == "disk"
    assert cli.command_named(["--version"]) is None
    assert cli.command_named(["nonsense", "disk"]) is None
    assert cli.command_named([]) is None


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_xenwam_errors_become_one_line_and_their_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def bad_config(args: argparse.Namespace) -> int:
        raise ConfigError("resource 'r0': minor 300 out of range 0-255; pick another minor")

    def failure(args: argparse.Namespace) -> int:
        raise XenwamError("it broke")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda only=None: parser)
    for handler, status in ((bad_config, 2), (failure, 1)):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices["doctor"].set_defaults(handler=handler)
        assert cli.main(["doctor"]) == status
        err = capsys.readouterr().err
        assert err.startswith("xenwam: error: ")


def test_lab_benchmark_without_a_lab_says_how_to_start_one(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", "drbd", "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no lab is up" in err and "xenwam lab up" in err


def test_python_dash_m_xenwam_is_the_xenwam_command(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    version = box.run(["--version"], module="xenwam")
    assert (version.returncode, version.stdout.strip()) == (0, f"xenwam {__version__}")
    helped = box.run(["disk", "--help"], module="xenwam")
    assert helped.returncode == 0 and "usage: xenwam disk" in helped.stdout
    bad = box.run(["disk", "digest"], module="xenwam")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `xenwam disk status --json | head`: the reader is gone before xenwam writes.
    box = Sandbox(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "xenwam.cli", "disk", "status", "--json",
             "--config-dir", str(tmp_path / "none")],
            cwd=tmp_path / "work", env=box.env(), stdout=write_end, stderr=subprocess.PIPE,
            timeout=60)
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == 128 + signal.SIGPIPE


def test_the_command_log_records_each_command_whatever_the_verbosity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xenwam.log import command_log, configure
    from xenwam.runner import SubprocessRunner

    configure(0, True)  # -q: nothing below ERROR on stderr
    path = tmp_path / "commands.log"
    with command_log(path):
        SubprocessRunner().run(["true"])
        SubprocessRunner().run(["sh", "-c", "exit 3"], check=False)
    SubprocessRunner().run(["echo", "after"])  # not recorded: the log is closed
    lines = path.read_text().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith(" run: true")
    assert " exit 0 after " in lines[1] and lines[1].endswith(" s: true")
    assert " exit 3 after " in lines[3] and lines[3].endswith("sh -c 'exit 3'")
    assert capsys.readouterr().err == ""
