"""Run ``xenwam`` as a real process, confined to a scratch directory.

The process imports xenwam from this source tree (not from whatever copy is installed),
runs with its working directory, HOME, XDG directories and TMPDIR inside ``root``, and
with a PATH holding no external commands, so a command that tried to act (run drbdadm,
xl, qemu, ip) fails instead of touching the host.  A ``sitecustomize`` module installs a
Python audit hook that records every file opened for writing, every file-system change,
every process started and every socket connected or bound, and refuses each of them
(``PermissionError``): nothing a run does reaches outside ``root``.  The record is read
back as :attr:`CliRun.escapes`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]

_SITECUSTOMIZE = '''\
import atexit, json, os, sys

_root = os.environ["XENWAM_TEST_ROOT"]
_report = os.path.join(_root, "escapes", "%d.json" % os.getpid())
_escapes = []
_busy = []

_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.chmod", "os.chown",
                 "os.truncate", "os.symlink", "os.link", "os.utime", "shutil.rmtree",
                 "shutil.copyfile", "shutil.move"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path):
    if isinstance(path, int):
        return True  # an already open descriptor: its opening was recorded
    try:
        path = os.fsdecode(path)
    except TypeError:
        return True
    real = os.path.realpath(os.path.abspath(path))
    return real == _root or real.startswith(_root + os.sep) or real == os.devnull


def _escape(event, what):
    """Record the escape, and stop it: nothing happens outside the sandbox."""
    _escapes.append([event, what[:200]])
    raise PermissionError(f"sandboxed test run: {event} {what[:200]} refused")


def _hook(event, args):
    if _busy:
        return
    _busy.append(1)
    try:
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and flags & _WRITE_FLAGS)
            if writes and not _inside(path):
                _escape("open", repr(path))
        elif event in _WRITE_EVENTS:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
                    _escape(event, repr(path))
        elif event in ("subprocess.Popen", "os.exec", "os.spawn", "os.posix_spawn",
                       "os.system", "os.fork", "os.forkpty"):
            _escape(event, repr(args))
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            _escape(event, repr(args[1:]))
    finally:
        _busy.pop()


def _write_report():
    _busy.append(1)
    with open(_report, "w") as out:
        json.dump(_escapes, out)


sys.addaudithook(_hook)
atexit.register(_write_report)
'''


@dataclass(frozen=True)
class CliRun:
    """What one run of the command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    escapes: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        """The run, for an assertion message."""
        return (f"argv {list(self.argv)!r}\nexit {self.returncode}\n"
                f"stderr {self.stderr[-2000:]!r}\nescapes {list(self.escapes)!r}")


class Sandbox:
    """A scratch directory that ``xenwam`` runs are confined to."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        for sub in ("home", "tmp", "bin", "escapes", "site", "work", "cache", "config",
                    "state", "run"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "site" / "sitecustomize.py").write_text(_SITECUSTOMIZE)

    def env(self) -> dict[str, str]:
        """The environment of every run: nothing of the caller's but the locale."""
        r = self.root
        return {
            "PATH": str(r / "bin"),
            "HOME": str(r / "home"),
            "TMPDIR": str(r / "tmp"),
            "XDG_CACHE_HOME": str(r / "cache"),
            "XDG_CONFIG_HOME": str(r / "config"),
            "XDG_STATE_HOME": str(r / "state"),
            "XDG_RUNTIME_DIR": str(r / "run"),
            "XENWAM_LAB_RUN": str(r / "cache" / "lab-run"),
            "XENWAM_LAB_CACHE": str(r / "cache" / "lab"),
            "PYTHONPATH": f"{r / 'site'}{os.pathsep}{SOURCE_ROOT}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "XENWAM_TEST_ROOT": str(r),
            "LANG": "C.UTF-8",
            "COLUMNS": "100",
        }

    def start(self, argv: Sequence[str], stdin: bytes = b"", module: str = "xenwam.cli",
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``python3 -m MODULE ARGV...`` (with ``env`` added to the environment);
        finish it with :meth:`finish`."""
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *argv], cwd=self.root / "work",
            env={**self.env(), **(env or {})},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.args = (tuple(argv), stdin)
        return proc

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> CliRun:
        """Wait for a process from :meth:`start` and collect what it did."""
        argv, stdin = proc.args
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        report = self.root / "escapes" / f"{proc.pid}.json"
        escapes: list[list[str]] = []
        if report.exists():
            escapes = json.loads(report.read_text())
            report.unlink()
        else:
            escapes = [["report", "the process left no audit report"]]
        return CliRun(argv=argv, returncode=proc.returncode,
                      stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                      escapes=tuple((e[0], e[1]) for e in escapes))

    def run(self, argv: Sequence[str], stdin: bytes = b"", module: str = "xenwam.cli",
            timeout: float = 60.0, env: dict[str, str] | None = None) -> CliRun:
        """Run ``python3 -m MODULE ARGV...`` to the end."""
        return self.finish(self.start(argv, stdin, module, env), timeout)
