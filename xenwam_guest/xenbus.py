"""A xenstore watch over ``/dev/xen/xenbus``: wake the agent the moment dom0 writes.

pyxs, which the agent uses to read and write, refuses watches over the xenbus device, so
this speaks the few messages a watch needs itself.  The xenstore wire format is a header
of four little-endian 32-bit words (type, request id, transaction id, payload length)
followed by the payload; a watch is ``XS_WATCH`` with ``PATH\\0TOKEN\\0``, answered
``OK\\0``, after which every change under PATH arrives as ``XS_WATCH_EVENT`` with the same
two strings.  Xenstore fires a watch once when it is set, and the guest kernel sets its
clients' watches again when the guest resumes after a migration, which fires them: so the
agent learns of the new network as soon as the resumed guest can run, instead of at its
next poll.  The poll stays as the safety net (a watch can be lost while xenstore is gone).

:class:`Decoder` and :func:`encode` are pure (bytes in, messages out); :class:`XenbusWatch`
is the small I/O shell around one open of the device.
"""

from __future__ import annotations

import os
import select
import struct
from collections.abc import Callable
from dataclasses import dataclass

#: Message types of the xenstore protocol (xen/include/public/io/xs_wire.h).
XS_WATCH = 4
XS_WATCH_EVENT = 15
XS_ERROR = 16
HEADER = struct.Struct("<IIII")
#: The protocol's limit on a payload (XENSTORE_PAYLOAD_MAX).
PAYLOAD_MAX = 4096
XENBUS_PATH = "/dev/xen/xenbus"


class XenbusError(Exception):
    """The device refused or garbled a message."""


@dataclass(frozen=True)
class Message:
    """One xenstore message."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes

    def strings(self) -> list[str]:
        """The payload's NUL-terminated strings."""
        parts = self.payload.split(b"\0")
        if parts and parts[-1] == b"":
            parts = parts[:-1]
        return [p.decode("utf-8", "replace") for p in parts]


def encode(msg_type: int, req_id: int, *strings: str, tx_id: int = 0) -> bytes:
    """A message whose payload is ``strings``, each NUL-terminated."""
    payload = b"".join(s.encode() + b"\0" for s in strings)
    if len(payload) > PAYLOAD_MAX:
        raise XenbusError(f"xenstore payload of {len(payload)} bytes is over {PAYLOAD_MAX}")
    return HEADER.pack(msg_type, req_id, tx_id, len(payload)) + payload


class Decoder:
    """Whole messages out of a byte stream that may split them anywhere."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return the messages now complete."""
        self._buffer += data
        out = []
        while len(self._buffer) >= HEADER.size:
            msg_type, req_id, tx_id, length = HEADER.unpack_from(self._buffer)
            if length > PAYLOAD_MAX:
                raise XenbusError(f"xenstore message of {length} bytes is over {PAYLOAD_MAX}")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            out.append(Message(msg_type, req_id, tx_id, self._buffer[HEADER.size:end]))
            self._buffer = self._buffer[end:]
        return out


class XenbusWatch:
    """One watch on one xenstore path through the guest's xenbus device."""

    def __init__(self, path: str, token: str, device: str = XENBUS_PATH,
                 opener: Callable[[str, int], int] = os.open, timeout: float = 10.0) -> None:
        self.path, self.token = path, token
        self._fd = opener(device, os.O_RDWR)
        self._decoder = Decoder()
        self._pending: list[Message] = []
        self._broken: OSError | XenbusError | None = None
        try:
            self._request(XS_WATCH, path, token, timeout=timeout)
        except BaseException:
            os.close(self._fd)
            raise

    def fileno(self) -> int:
        """The device's descriptor, for select()."""
        return self._fd

    def _read(self) -> list[Message]:
        data = os.read(self._fd, HEADER.size + PAYLOAD_MAX)
        if not data:
            raise XenbusError("the xenbus device was closed")
        return self._decoder.feed(data)

    def _request(self, msg_type: int, *strings: str, timeout: float) -> Message:
        req_id = 0x7877  # one request at a time on this descriptor
        os.write(self._fd, encode(msg_type, req_id, *strings))
        while True:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                raise XenbusError(f"no answer from xenstore to a watch on {strings[0]!r} "
                                  f"within {timeout:g} s")
            reply = None
            for msg in self._read():  # events may share a read with the answer
                if msg.type == XS_WATCH_EVENT:
                    self._pending.append(msg)
                elif msg.req_id == req_id:
                    reply = msg
            if reply is not None:
                if reply.type == XS_ERROR:
                    raise XenbusError(f"xenstore refused the watch on {strings[0]!r}: "
                                      f"{''.join(reply.strings())}")
                return reply

    @property
    def pending(self) -> bool:
        """Events already read (with the watch's answer) and not yet taken."""
        return bool(self._pending)

    def events(self) -> list[str]:
        """The paths of the watch events that have arrived (reads what is there)."""
        if self._broken is not None:
            raise self._broken
        found = [m for m in self._pending if m.type == XS_WATCH_EVENT]
        self._pending.clear()
        try:
            while select.select([self._fd], [], [], 0)[0]:
                found.extend(m for m in self._read() if m.type == XS_WATCH_EVENT)
        except (OSError, XenbusError) as exc:
            if not found:
                raise
            self._broken = exc  # the events read before it first; the error next time
        return [s[0] for m in found if (s := m.strings()) and s[1:2] == [self.token]]

    def close(self) -> None:
        """Close the device (the kernel removes the watch with it)."""
        os.close(self._fd)
