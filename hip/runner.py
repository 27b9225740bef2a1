"""The one place in the ``hip`` package that starts external commands.

``hip`` runs on guests that carry no ``xenwam``, so it has its own small runner rather
than importing :mod:`xenwam.runner`.  Commands are argv lists, never shell strings; every
run has a timeout and returns a :class:`CommandResult`; a failure raises
:class:`CommandError` quoting the command and its stderr.  Code that runs commands (the
kernel XFRM data plane, the probe) takes a :class:`Runner` parameter defaulting to
:data:`default_runner`, so tests of pure logic can pass a recording fake.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

# CommandError lives in the package's one error tree; it stays importable from here
# because callers written before the move import it from hip.runner.
from hip.errors import CommandError

log = logging.getLogger(__name__)

#: Default timeout of one command, in seconds.  ``ip xfrm`` answers in milliseconds.
DEFAULT_TIMEOUT = 20.0


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
    """Anything that runs an argv list the way :class:`SubprocessRunner` does."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        input: str | None = None,
    ) -> CommandResult: ...


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


class SubprocessRunner:
    """Runs commands with :mod:`subprocess`: the real runner."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        input: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` and wait for it.

        Raises :class:`CommandError` if the program cannot be started, runs longer than
        ``timeout`` seconds (it is killed), or, when ``check`` is true, exits non-zero.
        """
        if isinstance(argv, str):
            raise TypeError("Runner.run takes an argv list, not a shell string")
        args = tuple(str(a) for a in argv)
        if not args:
            raise ValueError("Runner.run needs a non-empty argv")
        log.debug("run: %s", shlex.join(args))
        start = time.monotonic()
        try:
            proc = subprocess.run(
                args, input=input, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError as exc:
            raise CommandError(
                f"cannot run {shlex.join(args)!r}: {args[0]!r} not found; install the package "
                "that provides it (iproute2 for `ip`)"
            ) from exc
        except PermissionError as exc:
            raise CommandError(
                f"cannot run {shlex.join(args)!r}: permission denied; run as root"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(
                f"{shlex.join(args)!r} did not finish within {timeout:g} s and was killed; "
                f"stderr so far: {_text(exc.stderr).strip()[-2000:]!r}"
            ) from exc
        result = CommandResult(
            argv=args,
            exit_status=proc.returncode,
            stdout=proc.stdout or "",
            stderr=proc.stderr or "",
            duration=time.monotonic() - start,
        )
        if check and not result.ok:
            raise CommandError(
                f"{result.command_line!r} failed with exit status {result.exit_status}: "
                f"{result.stderr.strip()[-2000:] or result.stdout.strip()[-2000:] or '(no output)'}"
            )
        return result


#: The runner used when a caller does not inject one.
default_runner: Runner = SubprocessRunner()


class BackgroundProcess:
    """A long-running child (a daemon, a traffic source) that its starter must stop."""

    def __init__(self, argv: Sequence[str], log_path: str) -> None:
        args = [str(a) for a in argv]
        try:
            with open(log_path, "ab") as out:
                self._proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
        except FileNotFoundError as exc:
            raise CommandError(f"cannot start {shlex.join(args)!r}: {args[0]!r} not found") from exc
        self.argv = tuple(args)
        self.pid = self._proc.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit status."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                return self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self._proc.wait()


class LineStream:
    """A long-running command whose stdout is read line by line on an asyncio loop
    (``ip xfrm monitor acquire``).  Stop it with :meth:`stop`."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = tuple(str(a) for a in argv)
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the command; raise :class:`CommandError` if it cannot be started."""
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise CommandError(
                f"cannot start {shlex.join(self.argv)!r}: {self.argv[0]!r} not found"
            ) from exc

    async def lines(self) -> AsyncIterator[str]:
        """Every line the command prints, until it exits."""
        assert self._proc is not None and self._proc.stdout is not None, "start() first"
        while line := await self._proc.stdout.readline():
            yield line.decode("utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate the command (it is reaped by the event loop)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
