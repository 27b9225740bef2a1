"""hipd's end of the control socket: one request line in, one answer line out.

The wire format is :mod:`hip.daemon.control` (shared with hipctl); this module owns the
listening Unix socket, checks who is calling, and hands each request to the daemon's
handler.  Whatever a client does -- a line too long, JSON too deep, silence, hanging
up early, a thousand idle connections -- costs hipd one answer line at most, never a
traceback, and never the descriptors the rest of hipd needs (issue 11, items 2 and 5):
at most :data:`MAX_CLIENTS` connections are accepted at a time (the rest wait in the
kernel's backlog, holding no descriptor of hipd's), each must send its request within
:data:`REQUEST_TIMEOUT`, and running out of descriptors pauses accepting for a second
with one log line, where asyncio's own accept loop logged a traceback per attempt.

The socket path is claimed before hipd sets anything else up (:meth:`ControlServer.claim`):
another hipd that answers there makes this one refuse to start, a stale socket (nobody
listening) is removed, and anything that is not a socket is left alone (issue 11, item 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hip.daemon.control import MAX_REQUEST, ControlRequest, encode_response
from hip.errors import DaemonError, HIPError

log = logging.getLogger("hipd")

#: What the daemon does with one request: its JSON-ready result, or a HIPError.
ControlHandler = Callable[[ControlRequest], Awaitable[object]]
#: Connections served at once; more wait in the listening socket's backlog.
MAX_CLIENTS = 32
#: Connections the kernel queues for us while MAX_CLIENTS are served.
BACKLOG = 16
#: After accept() failed for want of descriptors or memory, wait this long.
ACCEPT_PAUSE = 1.0
#: At most one log line about such failures in this many seconds.
ACCEPT_LOG_INTERVAL = 30.0
#: Seconds a client has to send its request line, and hipd to write its answer.
REQUEST_TIMEOUT = 5.0
#: How long :meth:`ControlServer.claim` waits for a hipd already at the path to accept.
PROBE_TIMEOUT = 1.0


def path_owner(path: str, timeout: float = PROBE_TIMEOUT) -> str:
    """What is at ``path``: "nothing", "stale" (a socket nobody listens on), "live" (a
    socket that accepts connections) or "other" (not a socket: never ours to remove)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "nothing"
    if not stat.S_ISSOCK(mode):
        return "other"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return "stale"
    except OSError as exc:
        # A full backlog (EAGAIN) or a timeout: someone listens but is slow.
        if exc.errno in (errno.EAGAIN, None):
            return "live"
        raise DaemonError(f"cannot tell whether a hipd answers on {path!r}: {exc}") from None
    finally:
        probe.close()
    return "live"


class ControlServer:
    """The listening control socket at ``path``, answering with ``handle``."""

    def __init__(self, path: str, handle: ControlHandler, *, max_clients: int = MAX_CLIENTS,
                 request_timeout: float = REQUEST_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.handle = handle
        self.max_clients = max_clients
        self.request_timeout = request_timeout
        self.clock = clock
        self.clients = 0
        #: accept() failures for want of descriptors or memory, by errno name.
        self.accept_failures: dict[str, int] = {}
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._resume: asyncio.TimerHandle | None = None
        self._last_accept_log = -ACCEPT_LOG_INTERVAL
        self._tasks: set[asyncio.Task[None]] = set()
        #: (device, inode) of the socket we bound: only that one is removed at close.
        self._bound: tuple[int, int] | None = None

    def claim(self) -> None:
        """Make sure the path is ours to bind, before hipd sets anything else up.

        Refuses (:class:`DaemonError`) when another hipd answers there or when the path
        is not a socket; removes a stale socket.
        """
        owner = path_owner(self.path)
        if owner == "live":
            raise DaemonError(f"another hipd answers on {self.path!r}; stop it first, or "
                              "give this one another --socket")
        if owner == "other":
            raise DaemonError(f"{self.path!r} exists and is not a socket; hipd will not "
                              "remove it: move it away or give another --socket")
        if owner == "stale":
            log.info("removing the stale control socket %s (nobody listens on it)", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def start(self) -> None:
        """Create the socket (mode 0600) and start answering."""
        self.claim()  # again: the path may have changed while hipd was starting
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.setblocking(False)
        # Created 0600 (not chmod'ed after bind): a client that finds the path finds it
        # closed to everyone but root already.
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
            listener.listen(BACKLOG)
        except OSError as exc:
            listener.close()
            raise DaemonError(f"cannot listen on {self.path!r}: {exc.strerror}") from None
        finally:
            os.umask(old)
        st = os.lstat(self.path)
        self._bound = (st.st_dev, st.st_ino)
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._resume_accepting()

    def close(self) -> None:
        """Stop answering and remove the socket, if it still is the one we bound."""
        if self._listener is None:
            return
        self._pause_accepting()
        if self._resume is not None:
            self._resume.cancel()
        self._listener.close()
        self._listener = None
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._bound:
                os.unlink(self.path)

    def _resume_accepting(self) -> None:
        self._resume = None
        if (self._listener is None or self._loop is None or self._accepting
                or self.clients >= self.max_clients):
            return
        self._loop.add_reader(self._listener.fileno(), self._accept)
        self._accepting = True

    def _pause_accepting(self) -> None:
        if self._accepting and self._loop is not None and self._listener is not None:
            self._loop.remove_reader(self._listener.fileno())
        self._accepting = False

    def _accept(self) -> None:
        """Accept while there is room; at the cap, leave the rest to the backlog."""
        assert self._listener is not None and self._loop is not None
        while self.clients < self.max_clients:
            try:
                conn, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            self.clients += 1
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._pause_accepting()

    def _accept_failed(self, exc: OSError) -> None:
        # EMFILE, ENFILE, ENOBUFS, ENOMEM: hipd is short of descriptors or memory.  Wait
        # for some to be released instead of spinning on a listener that stays readable.
        name = errno.errorcode.get(exc.errno or 0, "E?")
        self.accept_failures[name] = self.accept_failures.get(name, 0) + 1
        now = self.clock()
        if now - self._last_accept_log >= ACCEPT_LOG_INTERVAL:
            self._last_accept_log = now
            log.warning("control socket: cannot accept a connection (%s); pausing %g s "
                        "(%s so far)", exc.strerror, ACCEPT_PAUSE, self.accept_failures)
        self._pause_accepting()
        assert self._loop is not None
        self._resume = self._loop.call_later(ACCEPT_PAUSE, self._resume_accepting)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_REQUEST)
        except OSError as exc:
            conn.close()
            self._client_done()
            log.debug("control client lost before it was served: %s", exc)
            return
        try:
            answer = await self._answer_for(reader, writer)
            if answer is not None:
                await self._answer(writer, answer)
        finally:
            writer.close()
            self._client_done()

    def _client_done(self) -> None:
        self.clients -= 1
        self._resume_accepting()

    async def _answer_for(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> bytes | None:
        """The answer line to this client's request (None: it left, answer nobody)."""
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (0, os.geteuid()):
            return encode_response(error="hipctl must run as root")
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self.request_timeout)
        except asyncio.LimitOverrunError:
            return encode_response(error=f"request too long: over {MAX_REQUEST} bytes")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.debug("control client hung up in the middle of a request")
            return None
        except TimeoutError:
            return encode_response(error=f"no request within {self.request_timeout:g} s")
        except ConnectionError:
            return None
        try:
            request = ControlRequest.decode(line)
            return encode_response(await self.handle(request))
        except HIPError as exc:
            return encode_response(error=str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return encode_response(error=f"bad arguments: {exc}")

    async def _answer(self, writer: asyncio.StreamWriter, answer: bytes) -> None:
        """Write one answer line; a client that has gone or does not read is dropped."""
        try:
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), self.request_timeout)
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.debug("control client left before its answer: %s", exc)


__all__ = ["MAX_CLIENTS", "REQUEST_TIMEOUT", "ControlHandler", "ControlServer", "path_owner"]
