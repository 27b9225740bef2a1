"""The runner: argv only, timeouts, result records, errors that quote the command."""

from __future__ import annotations

import sys

import pytest

from xenwam.errors import CommandError
from xenwam.runner import SubprocessRunner

pytestmark = pytest.mark.unit


def test_result_records_argv_status_output_and_duration() -> None:
    res = SubprocessRunner().run(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]
    )
    assert res.argv[0] == sys.executable
    assert res.exit_status == 0 and res.ok
    assert res.stdout == "out\n"
    assert res.stderr == "err\n"
    assert res.duration > 0


def test_failure_quotes_command_and_stderr() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('disk on fire'); sys.exit(3)"]
    with pytest.raises(CommandError) as info:
        SubprocessRunner().run(argv)
    assert "exit status 3" in str(info.value)
    assert "disk on fire" in str(info.value)
    assert "sys.exit(3)" in str(info.value)


def test_a_long_error_keeps_its_first_line_and_its_end() -> None:
    # Ruby (vagrant) prints the exception's message, then hundreds of backtrace lines.
    script = ("import sys; sys.stderr.write('Error: the box is missing\\n' + "
              "'  from frame\\n' * 500 + 'last frame'); sys.exit(1)")
    with pytest.raises(CommandError) as info:
        SubprocessRunner().run([sys.executable, "-c", script])
    message = str(info.value)
    assert "Error: the box is missing" in message and message.endswith("last frame")
    assert "characters ..." in message and len(message) < 2600


def test_unchecked_failure_returns_status() -> None:
    res = SubprocessRunner().run([sys.executable, "-c", "raise SystemExit(4)"], check=False)
    assert res.exit_status == 4 and not res.ok


def test_timeout_kills_and_raises() -> None:
    with pytest.raises(CommandError, match=r"did not finish within 0\.2 s"):
        SubprocessRunner().run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.2)


def test_missing_program_says_so() -> None:
    with pytest.raises(CommandError, match="not found"):
        SubprocessRunner().run(["/nonexistent/xenwam-no-such-tool"])


def test_shell_strings_are_refused() -> None:
    with pytest.raises(TypeError, match="argv list"):
        SubprocessRunner().run("echo hi")  # type: ignore[arg-type]


def test_input_is_passed_on_stdin() -> None:
    res = SubprocessRunner().run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], input="abc"
    )
    assert res.stdout.strip() == "ABC"


def test_only_the_runner_calls_subprocess() -> None:
    # Rule 4 of STYLE.md: one module per package starts processes.
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "xenwam"
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "runner.py" and "import subprocess" in p.read_text()
    ]
    assert offenders == []
