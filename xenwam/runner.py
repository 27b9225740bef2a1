"""The one place in xenwam that starts external commands.

Commands are argv lists, never shell strings.  Every run has a timeout and returns a
:class:`CommandResult`; a failure raises :class:`~xenwam.errors.CommandError` quoting the
command and its stderr.  Code that runs commands takes a :class:`Runner` parameter
(defaulting to :data:`default_runner`), so tests of pure logic can pass a fake.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from xenwam.errors import CommandError

log = logging.getLogger(__name__)

#: Default timeout for a command, in seconds.  Long operations pass their own.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class CommandResult:
    """What one finished command did."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_status == 0

    @property
    def command_line(self) -> str:
        """The argv quoted for a shell, for messages and logs."""
        return shlex.join(self.argv)


class Runner(Protocol):
    """Anything that can run an argv list the way :class:`SubprocessRunner` does."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult: ...


def _tail(line: str, keep: int = 300) -> str:
    """The end of a long command line (over ssh, the remote command is at the end)."""
    return line if len(line) <= keep else "..." + line[-keep:]


def _excerpt(text: str, keep: int = 2000) -> str:
    """The head and the tail of a long error output: the cause is often the first line
    (a Ruby or Python exception's message above its backtrace) and the last lines say
    where it ended."""
    text = text.strip()
    if len(text) <= keep:
        return text
    half = keep // 2
    return f"{text[:half]} [... {len(text) - 2 * half} characters ...] {text[-half:]}"


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


@dataclass(frozen=True)
class SubprocessRunner:
    """Runs commands with :mod:`subprocess`; the real runner."""

    #: Extra environment merged over ``os.environ`` for every command.
    base_env: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` and wait for it.

        Raises :class:`CommandError` if the program cannot be started, if it runs longer
        than ``timeout`` seconds (it is killed), or, when ``check`` is true, if it exits
        with a non-zero status.
        """
        if isinstance(argv, str):
            raise TypeError("Runner.run takes an argv list, not a shell string")
        args = tuple(str(a) for a in argv)
        if not args:
            raise ValueError("Runner.run needs a non-empty argv")
        full_env = None
        if env is not None or self.base_env:
            full_env = {**os.environ, **self.base_env, **(env or {})}
        stdin = input.encode() if isinstance(input, str) else input
        log.debug("run: %s", shlex.join(args))
        start = time.monotonic()
        try:
            proc = subprocess.run(
                args,
                input=stdin,
                capture_output=True,
                timeout=timeout,
                env=full_env,
                cwd=cwd,
                check=False,
            )
        except FileNotFoundError as exc:
            raise CommandError(
                f"cannot run {shlex.join(args)!r}: {args[0]} not found; "
                "install it or run `xenwam doctor` to see which package provides it"
            ) from exc
        except PermissionError as exc:
            raise CommandError(f"cannot run {shlex.join(args)!r}: permission denied") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(
                f"{shlex.join(args)!r} did not finish within {timeout:g} s and was killed; "
                f"stderr so far: {_excerpt(_text(exc.stderr))!r}"
            ) from exc
        result = CommandResult(
            argv=args,
            exit_status=proc.returncode,
            stdout=_text(proc.stdout),
            stderr=_text(proc.stderr),
            duration=time.monotonic() - start,
        )
        log.debug("exit %d after %.3f s: %s", result.exit_status, result.duration,
                  _tail(result.command_line))
        if check and not result.ok:
            raise CommandError(
                f"{result.command_line!r} failed with exit status {result.exit_status}: "
                f"{_excerpt(result.stderr) or _excerpt(result.stdout) or '(no output)'}"
            )
        return result


#: The runner used when a caller does not inject one.
default_runner: Runner = SubprocessRunner()

#: A started process the caller owns (:func:`start_background`, :func:`start_piped`).
Process = subprocess.Popen[bytes]


class Background:
    """A daemon thread running :meth:`_run` from :meth:`start` until :meth:`stop` (a
    poller beside a long command: its ``_run`` waits on :attr:`_done` between rounds)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)


def start_background(
    argv: Sequence[str],
    *,
    stdout_path: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    new_session: bool = True,
) -> Process:
    """Start a long-running process (a daemon, QEMU, a listener) and return its handle.

    Output goes to ``stdout_path`` (stderr joined to it) or is discarded.  The caller owns
    the process and must end it by pid.
    """
    args = [str(a) for a in argv]
    full_env = {**os.environ, **env} if env is not None else None
    out = open(stdout_path, "ab") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        log.debug("start: %s", shlex.join(args))
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=new_session,
        )
    except FileNotFoundError as exc:
        raise CommandError(f"cannot start {shlex.join(args)!r}: {args[0]} not found") from exc
    finally:
        if stdout_path:
            out.close()  # type: ignore[union-attr]


def start_piped(
    argv: Sequence[str],
    *,
    stdin: bool = False,
    stdout: bool = False,
    stderr_path: str | None = None,
    stdin_fd: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Process:
    """Start a process whose stdin and/or stdout the caller streams through (a seeding
    pipeline, a migration transport).  stderr goes to ``stderr_path`` or is inherited.
    The caller owns the process: it must close the pipes and wait for it."""
    args = [str(a) for a in argv]
    full_env = {**os.environ, **env} if env is not None else None
    err = open(stderr_path, "ab") if stderr_path else None  # noqa: SIM115
    try:
        log.debug("start piped: %s", shlex.join(args))
        return subprocess.Popen(
            args,
            stdin=(stdin_fd if stdin_fd is not None
                   else subprocess.PIPE if stdin else subprocess.DEVNULL),
            stdout=subprocess.PIPE if stdout else None,
            stderr=err,
            env=full_env,
            bufsize=0,
        )
    except FileNotFoundError as exc:
        raise CommandError(f"cannot start {shlex.join(args)!r}: {args[0]} not found") from exc
    finally:
        if err is not None:
            err.close()
