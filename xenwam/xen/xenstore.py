"""The xenstore client: pyxs when it is installed and xenstored answers, the tools otherwise.

A key that does not exist reads as ``None`` and lists as ``[]``: that is an answer.
Anything else that goes wrong (xenstored gone, permission denied, a tool missing) raises
:class:`~xenwam.errors.XenError`, never a silent ``None``: callers that decide from
xenstore (the hotplug hook, the migration's handover) must not mistake a failure for
"nothing there".
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from xenwam.errors import CommandError, XenError
from xenwam.runner import Runner, default_runner

log = logging.getLogger(__name__)

#: Relative xenstore paths (as libxl passes XENBUS_PATH) are relative to dom0's home.
DOM0_HOME = "/local/domain/0"
#: What ``xenstore-read``/``-list``/``-rm`` print for a path that does not exist
#: (xenstore_client.c).  Not "No such file": ``xs_open`` says that when there is no
#: xenstored at all, which is a failure, not an answer.
_MISSING_MARKERS = ("couldn't read path", "could not read path", "could not list path")


class Xenstore(Protocol):
    """The xenstore operations xenwam needs."""

    def read(self, path: str) -> str | None:
        """The value at ``path``, or None if there is none."""

    def write(self, path: str, value: str) -> None:
        """Set ``path`` to ``value``."""

    def write_all(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Set each path to its value, in order (the last write is the one libxl waits on)."""

    def list(self, path: str) -> list[str]:
        """Children of ``path`` (empty if it does not exist)."""

    def remove(self, path: str) -> None:
        """Delete ``path`` and everything below it (nothing if it does not exist)."""


def absolute(path: str) -> str:
    """``path`` made absolute the way xenstored resolves a dom0 client's relative paths."""
    return path if path.startswith("/") else f"{DOM0_HOME}/{path}"


def _is_enoent(exc: BaseException) -> bool:
    code = getattr(exc, "errno", None)
    if code is None and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]
    return code == errno.ENOENT


class PyxsXenstore:
    """Xenstore through pyxs (a Python client of xenstored's socket)."""

    def __init__(self) -> None:
        from pyxs import Client  # imported here: dom0 may not have pyxs

        self._client: Any = Client()
        self._client.connect()

    def read(self, path: str) -> str | None:
        """The value at ``path``, or None."""
        try:
            value = self._client.read(absolute(path).encode(), None)
        except Exception as exc:  # pyxs's own error types carry the errno
            raise XenError(f"cannot read xenstore {path!r}: {exc}") from exc
        return None if value is None else bytes(value).decode()

    def write(self, path: str, value: str) -> None:
        """Set ``path``."""
        try:
            self._client.write(absolute(path).encode(), value.encode())
        except Exception as exc:
            raise XenError(f"cannot write xenstore {path!r}: {exc}") from exc

    def write_all(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Set each path, in order."""
        for path, value in pairs:
            self.write(path, value)

    def list(self, path: str) -> list[str]:
        """Children of ``path``."""
        try:
            return [bytes(c).decode() for c in self._client.list(absolute(path).encode())]
        except Exception as exc:
            if _is_enoent(exc):
                return []
            raise XenError(f"cannot list xenstore {path!r}: {exc}") from exc

    def remove(self, path: str) -> None:
        """Delete ``path``."""
        try:
            self._client.rm(absolute(path).encode())
        except Exception as exc:
            if not _is_enoent(exc):
                raise XenError(f"cannot remove xenstore {path!r}: {exc}") from exc

    def close(self) -> None:
        """Close the connection to xenstored."""
        self._client.close()


@dataclass
class CliXenstore:
    """Xenstore through ``xenstore-read``/``-write``/``-list``/``-rm`` (xenstore-utils)."""

    runner: Runner = default_runner

    def _run(self, argv: list[str], what: str, *, missing_ok: bool) -> str | None:
        try:
            result = self.runner.run(argv, check=False, timeout=10)
        except CommandError as exc:
            raise XenError(f"cannot {what}: {exc}") from exc
        if result.ok:
            return result.stdout
        said = (result.stderr + result.stdout).strip()
        if missing_ok and any(m in said for m in _MISSING_MARKERS):
            return None
        raise XenError(f"cannot {what}: {said[-300:]!r}; is xenstored running?")

    def read(self, path: str) -> str | None:
        """The value at ``path``, or None."""
        out = self._run(["xenstore-read", absolute(path)], f"read xenstore {path!r}",
                        missing_ok=True)
        return None if out is None else out.rstrip("\n")

    def write(self, path: str, value: str) -> None:
        """Set ``path``."""
        self._run(["xenstore-write", absolute(path), value], f"write xenstore {path!r}",
                  missing_ok=False)

    def write_all(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Set each path, in order, with one ``xenstore-write`` (one process, not N: this
        runs inside the migration downtime)."""
        argv = ["xenstore-write"]
        for path, value in pairs:
            argv += [absolute(path), value]
        self._run(argv, f"write xenstore {[p for p, _ in pairs]!r}", missing_ok=False)

    def list(self, path: str) -> list[str]:
        """Children of ``path``."""
        out = self._run(["xenstore-list", absolute(path)], f"list xenstore {path!r}",
                        missing_ok=True)
        return [] if out is None else out.split()

    def remove(self, path: str) -> None:
        """Delete ``path``."""
        self._run(["xenstore-rm", absolute(path)], f"remove xenstore {path!r}",
                  missing_ok=True)


def default_xenstore(runner: Runner = default_runner) -> Xenstore:
    """pyxs if it is installed and can reach xenstored, else the xenstore command-line tools.

    Debian 12 packages no pyxs, so the lab's dom0s use the command-line client; any
    failure to set pyxs up falls back to it rather than failing the caller.
    """
    try:
        return PyxsXenstore()
    except Exception as exc:  # ImportError, or pyxs's own ConnectionError (not an OSError)
        log.debug("pyxs unavailable (%s); using the xenstore-* tools", exc)
        return CliXenstore(runner)
