"""hipd's end of the control socket: one request line in, one answer line out.

The wire format is :mod:`hip.daemon.control` (shared with hipctl); this module owns the
listening Unix socket, checks who is calling, and hands each request to the daemon's
handler.  Errors of a request become its error answer, never an exception in hipd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from hip.daemon.control import MAX_MESSAGE, ControlRequest, encode_response
from hip.errors import HIPError

#: What the daemon does with one request: its JSON-ready result, or a HIPError.
ControlHandler = Callable[[ControlRequest], Awaitable[object]]


class ControlServer:
    """The listening control socket at ``path``, answering with ``handle``."""

    def __init__(self, path: str, handle: ControlHandler) -> None:
        self.path = path
        self.handle = handle
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Create the socket (mode 0600) and start answering."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 (not chmod'ed after bind): a client that finds the path finds it
        # closed to everyone but root already.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve_client, self.path)
        finally:
            os.umask(old)

    def close(self) -> None:
        """Stop answering and remove the socket."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve_client(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid not in (0, os.geteuid()):
                writer.write(encode_response(error="hipctl must run as root"))
                return
            line = await reader.readline()
            if len(line) > MAX_MESSAGE:
                writer.write(encode_response(error="request too long"))
                return
            try:
                request = ControlRequest.decode(line)
                result = await self.handle(request)
                writer.write(encode_response(result))
            except HIPError as exc:
                writer.write(encode_response(error=str(exc)))
            except (ValueError, KeyError, TypeError) as exc:
                writer.write(encode_response(error=f"bad arguments: {exc}"))
            await writer.drain()
        finally:
            writer.close()


__all__ = ["ControlHandler", "ControlServer"]
