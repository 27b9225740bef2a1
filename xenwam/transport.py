"""xenwam's transport for ``xl migrate -s``: ssh to the destination, zstd on the way there.

xl runs ``-s CMD`` as ``CMD HOST xl migrate-receive [flags]`` and then speaks its migration
protocol through the command's stdin and stdout, exactly as over ssh.  This program is
that command (``hooks/xenwam-transport``)::

    xl migrate -s xenwam-transport DOMAIN HOST            # anyone can use it without xenwam migrate
    xl migrate -s "xenwam-transport --stats /tmp/t.json" DOMAIN HOST

On the source it starts ``ssh HOST xenwam-transport --receive -- xl migrate-receive ...``
and compresses what xl sends (the memory stream) with zstd; on the destination the
``--receive`` side decompresses it into ``xl migrate-receive``.  The replies (xl's small
handshake messages) come back uncompressed.  ``--level 0`` sends the memory stream as it
is (both sides then copy; the receiver is told with ``--raw``): for a fast link where
the CPU, not the link, limits the copy, and to measure what zstd saves.  With ``--stats
FILE`` the byte counts are also rewritten every ``STATS_INTERVAL`` seconds while the
stream runs (``"final": false``), which is how ``xenwam migrate`` shows the memory
phase's progress.

xl's sender and receiver exchange handshake messages through the same pipe as the memory
stream and wait for each other's answers, so the compressor flushes a zstd block every
time its input goes idle (every read that returns what was there): without that, a
"ready" message sits in the compressor's buffer and the migration hangs.  Bytes are
counted in both directions and written as JSON to ``--stats FILE`` at the end.

When the far side goes away (ssh exits: a link cut longer than its keep-alive, the
destination crashed) the sender does what ssh would: it closes its stdout, so that an xl
waiting for an answer reads the end of the stream and fails the migration, and it stops
reading xl's stream and exits with ssh's status.  Before, an xl waiting for an answer and
a transport waiting for xl's next bytes waited for each other for ever (found by the
fault matrix: a cut during the memory phase).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import BinaryIO

import zstandard as zstd

from xenwam.runner import Background, start_piped
from xenwam.xen.remote import ensure_control_dir, ssh_argv

#: Largest read from xl at once; a read returns early with whatever is there.
CHUNK = 1024 * 1024
#: Level 1, as QEMU's multifd zstd: the sender's CPU, not the link, is often the limit.
DEFAULT_LEVEL = 1
#: How often a sender waiting for xl's next bytes looks whether the far side is gone.
ALIVE_POLL_SECONDS = 1.0
#: How often ``--stats FILE`` is rewritten while the stream runs.
STATS_INTERVAL = 2.0


@dataclass
class TransportStats:
    """Bytes through the transport, as the sending side saw them."""

    forward_raw_bytes: int = 0     # what xl sent (the memory stream)
    forward_wire_bytes: int = 0    # what went into ssh after compression
    backward_bytes: int = 0        # what the receiver's xl sent back
    seconds: float = 0.0
    level: int = DEFAULT_LEVEL
    exit_status: int | None = None

    @property
    def ratio(self) -> float | None:
        """Raw bytes per wire byte on the forward stream."""
        return (self.forward_raw_bytes / self.forward_wire_bytes
                if self.forward_wire_bytes else None)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read(src: int, alive: Callable[[], bool] | None) -> bytes:
    """The next bytes on fd ``src``: ``b""`` at its end, or once ``alive`` says the side
    they are for has gone while none were coming."""
    if alive is None:
        return os.read(src, CHUNK)
    while True:
        ready, _, _ = select.select([src], [], [], ALIVE_POLL_SECONDS)
        if ready:
            return os.read(src, CHUNK)
        if not alive():
            return b""


def _copy_fd(src: int, dst: int, alive: Callable[[], bool] | None = None) -> int:
    """Copy fd ``src`` to fd ``dst`` as it comes, until EOF; the bytes copied."""
    total = 0
    while data := _read(src, alive):
        total += len(data)
        _write_all(dst, data)
    return total


def compress_stream(src: int, dst: int, level: int, stats: TransportStats,
                    alive: Callable[[], bool] | None = None) -> None:
    """Copy fd ``src`` to fd ``dst`` as one zstd frame, flushing a block whenever a read
    returns (so nothing xl sent waits in the compressor while xl waits for an answer);
    level 0 copies it as it is.  Stops early when ``alive`` says ``dst``'s reader is gone."""
    if level == 0:
        copied = _copy_fd(src, dst, alive)
        stats.forward_raw_bytes += copied
        stats.forward_wire_bytes += copied
        return
    cobj = zstd.ZstdCompressor(level=level).compressobj()
    while True:
        data = _read(src, alive)
        if not data:
            break
        stats.forward_raw_bytes += len(data)
        out = cobj.compress(data) + cobj.flush(zstd.COMPRESSOBJ_FLUSH_BLOCK)
        stats.forward_wire_bytes += len(out)
        _write_all(dst, out)
    tail = cobj.flush()
    stats.forward_wire_bytes += len(tail)
    _write_all(dst, tail)


def decompress_stream(src: int, dst: int, *, raw: bool = False,
                      alive: Callable[[], bool] | None = None) -> int:
    """Copy the zstd frame on fd ``src`` to fd ``dst`` decompressed (``raw``: as it is);
    return bytes out.  Stops early when ``alive`` says ``dst``'s reader is gone."""
    if raw:
        return _copy_fd(src, dst, alive)
    dobj = zstd.ZstdDecompressor().decompressobj()
    total = 0
    while True:
        data = _read(src, alive)
        if not data:
            break
        out = dobj.decompress(data)
        if out:
            total += len(out)
            _write_all(dst, out)
    return total


def copy_stream(src: BinaryIO, dst: int, stats: TransportStats) -> None:
    """Copy ``src`` to fd ``dst`` as it arrives (the uncompressed reply direction), then
    close ``dst``: its reader (xl) must see the end of the replies when the far side has
    gone, as it would through ssh."""
    try:
        while True:
            data = src.read1(CHUNK) if hasattr(src, "read1") else src.read(CHUNK)
            if not data:
                break
            stats.backward_bytes += len(data)
            _write_all(dst, data)
    except BrokenPipeError:
        pass  # xl stopped reading; its own exit says why
    finally:
        with contextlib.suppress(OSError):
            os.close(dst)


def remote_argv(host: str, command: Sequence[str], *, local: bool = False,
                raw: bool = False) -> list[str]:
    """What the sending side starts: ssh to ``host`` running the receiving side, or (for
    tests and same-host use) the receiving side directly."""
    flags = ["--receive", *(["--raw"] if raw else []), "--"]
    receive = ["xenwam-transport", *flags, *command]
    if local:
        return [sys.executable, "-m", "xenwam.transport", *flags, *command]
    # Shares the orchestrator's ssh connection to the destination when there is one.
    ensure_control_dir()
    return ssh_argv(host, receive)


def write_stats(path: str, stats: TransportStats, *, final: bool) -> None:
    """``stats`` as JSON in ``path``, replaced whole (a reader never sees half a file)."""
    doc = {**asdict(stats), "ratio": stats.ratio, "final": final}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        out.write(json.dumps(doc) + "\n")
    os.replace(tmp, path)


class StatsWriter(Background):
    """Rewrites the stats file every ``interval`` seconds until stopped, then once more
    with ``final`` set."""

    def __init__(self, path: str, stats: TransportStats,
                 interval: float = STATS_INTERVAL) -> None:
        super().__init__()
        self.path = path
        self.stats = stats
        self.interval = interval

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            with contextlib.suppress(OSError):
                write_stats(self.path, self.stats, final=False)

    def __enter__(self) -> StatsWriter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        write_stats(self.path, self.stats, final=True)


def send(host: str, command: Sequence[str], *, level: int = DEFAULT_LEVEL,
         local: bool = False, stdin_fd: int = 0, stdout_fd: int = 1,
         remote: Sequence[str] | None = None,
         stats: TransportStats | None = None) -> TransportStats:
    """The sending side: run the receiver, compress stdin into it, copy its replies out.
    ``remote`` replaces the far side's command line (:func:`remote_argv`); ``stats`` is
    the object to count into (a caller that reports progress reads it meanwhile)."""
    stats = stats if stats is not None else TransportStats(level=level)
    start = time.monotonic()
    argv = list(remote) if remote is not None else \
        remote_argv(host, command, local=local, raw=level == 0)
    child = start_piped(argv, stdin=True, stdout=True)
    assert child.stdin is not None and child.stdout is not None
    back = threading.Thread(target=copy_stream, args=(child.stdout, stdout_fd, stats),
                            daemon=True)
    back.start()
    try:
        compress_stream(stdin_fd, child.stdin.fileno(), level, stats,
                        alive=lambda: child.poll() is None and back.is_alive())
    except BrokenPipeError:
        pass  # the receiver went away; its exit status says why
    finally:
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
    stats.exit_status = child.wait()
    back.join(timeout=30)
    stats.seconds = round(time.monotonic() - start, 3)
    return stats


def receive(command: Sequence[str], *, stdin_fd: int = 0, raw: bool = False) -> int:
    """The receiving side: decompress stdin into ``command``; its stdout is ours.  When
    ``command`` (xl migrate-receive) exits, so does this, at once: xl on the sending side
    may be waiting for an answer and sends nothing more, and only our exit ends the ssh
    session it waits on (found by the fault matrix: a receiver that failed left both
    sides waiting for ever)."""
    child = start_piped(list(command), stdin=True)
    assert child.stdin is not None
    try:
        decompress_stream(stdin_fd, child.stdin.fileno(), raw=raw,
                          alive=lambda: child.poll() is None)
    except (BrokenPipeError, zstd.ZstdError) as exc:
        print(f"xenwam-transport: receive stream broken: {exc}", file=sys.stderr)
    finally:
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
    return child.wait()


def build_parser() -> argparse.ArgumentParser:
    """The transport's own small command line (xl calls it, people rarely do)."""
    p = argparse.ArgumentParser(
        prog="xenwam-transport",
        description="xl migrate -s transport: ssh to HOST, zstd-compress the memory stream. "
                    "Use as `xl migrate -s xenwam-transport DOMAIN HOST`; the destination "
                    "needs xenwam installed.")
    p.add_argument("--receive", action="store_true",
                   help="(destination side) decompress stdin into COMMAND")
    p.add_argument("--raw", action="store_true",
                   help="(destination side) the stream is not compressed (sender's --level 0)")
    p.add_argument("--level", type=int, default=DEFAULT_LEVEL,
                   help="zstd level 1-19, or 0 to send the stream uncompressed")
    p.add_argument("--stats", help="write byte counts as JSON to this file at the end")
    p.add_argument("--local", action="store_true",
                   help="run the receiving side here instead of over ssh (tests)")
    p.add_argument("host", nargs="?", help="destination (as xl passes it)")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="what to run there (xl passes `xl migrate-receive ...`)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hooks/xenwam-transport``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.level <= 19:
        print(f"xenwam-transport: --level {args.level}: use 1-19, or 0 for none",
              file=sys.stderr)
        return 2
    if args.receive:
        command = ([args.host] if args.host and args.host != "--" else []) + [
            c for c in args.command if c != "--"]
        if not command:
            print("xenwam-transport: --receive needs a COMMAND", file=sys.stderr)
            return 2
        return receive(command, raw=args.raw)
    command = [c for c in args.command if c != "--"]
    if not args.host or not command:
        print("xenwam-transport: usage: xenwam-transport HOST COMMAND... "
              "(xl migrate -s xenwam-transport DOMAIN HOST)", file=sys.stderr)
        return 2
    stats = TransportStats(level=args.level)
    with StatsWriter(args.stats, stats) if args.stats else contextlib.nullcontext():
        send(args.host, command, level=args.level, local=args.local, stats=stats)
    return stats.exit_status or 0


if __name__ == "__main__":
    sys.exit(main())
