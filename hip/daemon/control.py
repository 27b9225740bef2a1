"""The hipctl <-> hipd control protocol: one JSON object per line over a Unix socket.

A request is ``{"command": NAME, "args": {...}}``; the answer is ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error": MESSAGE}``.  The socket is created mode 0600
and hipd also checks the caller's uid with ``SO_PEERCRED``, so only root may use it.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from hip.errors import DaemonError

DEFAULT_SOCKET = "/run/hipd.sock"
#: Longest response line accepted; a ``show`` of many peers fits easily.
MAX_MESSAGE = 1 << 20
#: Longest request line hipd reads: every command fits in a few hundred bytes, and a
#: client must not make hipd hold much for it.
MAX_REQUEST = 1 << 16
COMMANDS = ("show", "update-locators", "close", "connect", "rekey", "reload-hosts", "events")


@dataclass(frozen=True)
class ControlRequest:
    """One command for hipd."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The request as one JSON line."""
        return json.dumps({"command": self.command, "args": self.args}).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> ControlRequest:
        """Parse a request line; :class:`DaemonError` quotes what was wrong."""
        try:
            doc = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DaemonError(f"control request is not JSON ({exc}): {line[:200]!r}") from None
        except RecursionError:
            raise DaemonError(f"control request is nested too deeply: {line[:200]!r}") from None
        if not isinstance(doc, dict) or doc.get("command") not in COMMANDS:
            raise DaemonError(
                f"control request {line[:200]!r} names no known command; use one of {COMMANDS}"
            )
        args = doc.get("args", {})
        if not isinstance(args, dict):
            raise DaemonError(f"control request arguments must be an object, got {args!r}")
        return cls(doc["command"], args)


def encode_response(result: object = None, error: str | None = None) -> bytes:
    """A response line: the result, or the error message."""
    if error is not None:
        return json.dumps({"ok": False, "error": error}).encode() + b"\n"
    return json.dumps({"ok": True, "result": result}, default=str).encode() + b"\n"


def connect_unix(sock: socket.socket, path: str, deadline: float) -> None:
    """Connect, waiting while hipd's backlog is full: a Unix socket refuses with EAGAIN
    at once instead of queueing the caller (hipd serves a bounded number of clients)."""
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def call(request: ControlRequest, socket_path: str = DEFAULT_SOCKET, timeout: float = 10.0) -> Any:
    """Send ``request`` to hipd and return its result; raise :class:`DaemonError` on failure."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        try:
            connect_unix(sock, socket_path, deadline)
        except FileNotFoundError:
            raise DaemonError(
                f"hipd is not running: no control socket at {socket_path!r}; start it with "
                "`hipd` (or pass --socket)"
            ) from None
        except PermissionError:
            raise DaemonError(f"permission denied on {socket_path!r}: hipctl needs root") from None
        except ConnectionRefusedError:
            raise DaemonError(
                f"hipd does not answer on {socket_path!r} (stale socket?); restart hipd"
            ) from None
        except BlockingIOError:
            raise DaemonError(
                f"hipd is busy: its control socket {socket_path!r} took no new connection "
                f"within {timeout:g} s; try again"
            ) from None
        sock.sendall(request.encode())
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if chunk.endswith(b"\n") or size > MAX_MESSAGE:
                break
    except TimeoutError:
        raise DaemonError(f"hipd did not answer {request.command!r} within {timeout:g} s") from None
    finally:
        sock.close()
    line = b"".join(chunks)
    try:
        doc = json.loads(line)
    except json.JSONDecodeError:
        raise DaemonError(f"hipd sent an unreadable answer: {line[:200]!r}") from None
    if not doc.get("ok"):
        raise DaemonError(str(doc.get("error", "hipd reported an unspecified error")))
    return doc.get("result")
