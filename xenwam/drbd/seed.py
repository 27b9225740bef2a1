"""Seed a fresh peer's disk out of band, sending only the blocks that hold data.

DRBD's initial full sync sends every block of the device, zeros included.  For a mostly
empty disk over a WAN that is almost all waste.  The documented way round it: copy the
data to the peer some other way, then tell DRBD the two disks are the same
(``new-current-uuid --clear-bitmap`` on a freshly created, connected pair) so that it
replicates only what is written from then on.

This module is that other way: a zstd-compressed stream of ``(offset, block)`` records for
every block that is not all zeros, read from the source disk (holes of a sparse file are
skipped without reading them), and written at the same offsets on the peer.  The stream
ends with a digest of the source; the receiver reads its disk back, computes the same
digest and refuses to report success unless they match, so the copy is proven
bit-identical before DRBD is told to trust it.

The digest covers the device size and every non-zero block with its offset, so it is
equal for two devices exactly when their contents are equal, however their zeros are
stored.

Stream layout (all integers big-endian), compressed as one zstd stream::

    header   MAGIC(8) size(u64) block_size(u32)
    record   offset(u64) length(u32) data(length)      for each non-zero block
    trailer  END_OFFSET(u64) digest_length(u32) digest
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from xenwam.errors import DrbdError

if TYPE_CHECKING:
    import hashlib

# zstandard and hashlib are imported where a stream is made or read: every `xenwam disk`
# command imports this module for its constants, and a remote one runs in a dom0 where
# each import costs (a tenth of a second each in the TCG lab).

MAGIC = b"XWSEED1\n"
HEADER = struct.Struct(">8sQI")
RECORD = struct.Struct(">QI")
END_OFFSET = 2**64 - 1
DEFAULT_BLOCK_SIZE = 64 * 1024
#: Largest block a stream may announce: bounds the receiver's memory.
MAX_BLOCK_SIZE = 16 * 1024 * 1024
DIGEST_SIZE = 32


class SeedError(DrbdError):
    """Seeding failed: a malformed stream, a size mismatch, or a digest mismatch."""


@dataclass(frozen=True)
class SeedStats:
    """What one side of a seeding did."""

    size: int
    block_size: int
    blocks_sent: int
    data_bytes: int
    stream_bytes: int
    digest: str
    seconds: float

    def to_json(self) -> dict[str, object]:
        """Plain data for ``--json`` output and benchmarks."""
        return {
            "size": self.size, "block_size": self.block_size,
            "blocks_sent": self.blocks_sent, "data_bytes": self.data_bytes,
            "stream_bytes": self.stream_bytes, "digest": self.digest,
            "seconds": round(self.seconds, 3),
        }


class _CountingWriter:
    """A write-only file that counts the bytes passing into ``inner``."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.count = 0

    def write(self, data: bytes) -> int:
        self.inner.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


def _new_digest(size: int, block_size: int) -> hashlib.blake2b:
    import hashlib

    h = hashlib.blake2b(digest_size=DIGEST_SIZE, person=b"xenwam-seed")
    h.update(struct.pack(">QI", size, block_size))
    return h


def device_size(f: BinaryIO) -> int:
    """Size in bytes of an open file or block device."""
    return os.lseek(f.fileno(), 0, os.SEEK_END)


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` ranges that may hold data; holes of a sparse file are left out.

    Block devices and filesystems without SEEK_DATA yield the whole range.
    """
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # nothing but a hole up to the end
            yield pos, size
            return
        if start >= size:
            return
        try:
            end = min(size, os.lseek(fd, start, os.SEEK_HOLE))
        except OSError:
            end = size
        yield start, end
        pos = end


def _blocks(fd: int, size: int, block_size: int) -> Iterator[tuple[int, bytes]]:
    """Non-zero, block-aligned blocks of the device, in order of offset."""
    zeros = bytes(block_size)
    last_done = -1
    for start, end in data_extents(fd, size):
        offset = (start // block_size) * block_size
        offset = max(offset, last_done)
        while offset < end:
            length = min(block_size, size - offset)
            block = os.pread(fd, length, offset)
            if len(block) != length:
                raise SeedError(f"short read at offset {offset} of the source "
                                f"({len(block)} of {length} bytes); is the device shrinking?")
            if block != zeros[:length]:
                yield offset, block
            offset += length
        last_done = offset


def block_size_problem(block_size: int) -> str | None:
    """Why ``block_size`` cannot be a seeding block size, or None."""
    if not 4096 <= block_size <= MAX_BLOCK_SIZE or block_size % 4096:
        return f"use a multiple of 4096 up to {MAX_BLOCK_SIZE}"
    return None


def check_block_size(block_size: int) -> None:
    """Raise :class:`SeedError` unless ``block_size`` is a usable block size."""
    if (problem := block_size_problem(block_size)) is not None:
        raise SeedError(f"invalid block size {block_size}: {problem}")


def sparse_digest(f: BinaryIO, block_size: int = DEFAULT_BLOCK_SIZE,
                  size: int | None = None) -> str:
    """The seeding digest of the first ``size`` bytes of a device (default: all of it):
    the size plus every non-zero block with its offset."""
    check_block_size(block_size)
    return _digest_prefix(f.fileno(), device_size(f) if size is None else size, block_size)


def send(
    source: BinaryIO,
    out: BinaryIO,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    level: int = 3,
    clock: Callable[[], float] = time.monotonic,
) -> SeedStats:
    """Write the seeding stream of ``source`` to ``out``; return what was sent.

    ``source`` must not change while it is read (the guest is not running on it yet).
    """
    check_block_size(block_size)
    start = clock()
    fd = source.fileno()
    size = device_size(source)
    import zstandard

    counter = _CountingWriter(out)
    compressor = zstandard.ZstdCompressor(level=level)
    h = _new_digest(size, block_size)
    blocks = data_bytes = 0
    with compressor.stream_writer(counter, closefd=False) as z:  # type: ignore[arg-type]
        z.write(HEADER.pack(MAGIC, size, block_size))
        for offset, block in _blocks(fd, size, block_size):
            record = RECORD.pack(offset, len(block))
            z.write(record)
            z.write(block)
            h.update(record)
            h.update(block)
            blocks += 1
            data_bytes += len(block)
        digest = h.digest()
        z.write(RECORD.pack(END_OFFSET, len(digest)))
        z.write(digest)
    out.flush()
    return SeedStats(size=size, block_size=block_size, blocks_sent=blocks,
                     data_bytes=data_bytes, stream_bytes=counter.count,
                     digest=digest.hex(), seconds=clock() - start)


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    chunks = []
    left = n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise SeedError(f"seeding stream ended early, in the middle of {what} "
                            "(the sender stopped or the connection broke); seed again")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _zero_range(fd: int, start: int, end: int, block_size: int) -> None:
    """Make ``[start, end)`` of the target all zeros, writing only where it is not."""
    zeros = bytes(block_size)
    pos = start
    while pos < end:
        length = min(block_size, end - pos)
        if os.pread(fd, length, pos) != zeros[:length]:
            os.pwrite(fd, zeros[:length], pos)
        pos += length


def receive(
    stream: BinaryIO,
    target: BinaryIO,
    *,
    target_is_zeroed: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> SeedStats:
    """Apply a seeding stream to ``target`` (open read-write) and verify the result.

    Unless ``target_is_zeroed`` (a brand-new sparse file or volume), the gaps between
    records are checked and zeroed where needed, so old data on a reused disk cannot
    survive.  Raises :class:`SeedError` if the stream is malformed or the digest of the
    target after writing differs from the source's.
    """
    import zstandard

    start = clock()
    counter = _CountingReader(stream)
    reader = zstandard.ZstdDecompressor().stream_reader(counter)  # type: ignore[arg-type]
    try:
        magic, size, block_size = HEADER.unpack(_read_exact(reader, HEADER.size, "the header"))
    except zstandard.ZstdError as exc:
        raise SeedError(f"seeding stream is not zstd-compressed data ({exc})") from exc
    if magic != MAGIC:
        raise SeedError(f"not a xenwam seeding stream (magic {magic!r}, expected {MAGIC!r})")
    if not 0 < block_size <= MAX_BLOCK_SIZE:
        raise SeedError(f"seeding stream announces block size {block_size}, over "
                        f"{MAX_BLOCK_SIZE}; refusing it")
    fd = target.fileno()
    target_size = device_size(target)
    if target_size < size:
        raise SeedError(f"target holds {target_size} bytes but the source has {size}; "
                        "give the peer a disk at least as large")
    h = _new_digest(size, block_size)
    blocks = data_bytes = 0
    written_to = 0
    try:
        while True:
            offset, length = RECORD.unpack(_read_exact(reader, RECORD.size, "a record header"))
            if offset == END_OFFSET:
                sent_digest = _read_exact(reader, length, "the digest")
                break
            if length > block_size or offset < written_to or offset + length > size:
                raise SeedError(f"malformed seeding record (offset {offset}, length {length}, "
                                f"size {size}, previous end {written_to})")
            block = _read_exact(reader, length, f"the block at offset {offset}")
            if not target_is_zeroed:
                _zero_range(fd, written_to, offset, block_size)
            os.pwrite(fd, block, offset)
            h.update(RECORD.pack(offset, length))
            h.update(block)
            blocks += 1
            data_bytes += length
            written_to = offset + length
    except zstandard.ZstdError as exc:
        raise SeedError(f"seeding stream is corrupt ({exc}); seed again") from exc
    if not target_is_zeroed:
        _zero_range(fd, written_to, size, block_size)
    os.fsync(fd)
    if h.digest() != sent_digest:
        raise SeedError("seeding stream's records do not match its own digest: the stream "
                        "was damaged in transit; seed again")
    # Prove what is on the disk now, not what we meant to write.
    on_disk = _digest_prefix(fd, size, block_size)
    if on_disk != sent_digest.hex():
        raise SeedError(f"target digest {on_disk} differs from the source's "
                        f"{sent_digest.hex()} after writing; the target disk is not a copy, "
                        "do not clear DRBD's bitmap; seed again")
    return SeedStats(size=size, block_size=block_size, blocks_sent=blocks,
                     data_bytes=data_bytes, stream_bytes=counter.count,
                     digest=on_disk, seconds=clock() - start)


def _digest_prefix(fd: int, size: int, block_size: int) -> str:
    h = _new_digest(size, block_size)
    for offset, block in _blocks(fd, size, block_size):
        h.update(RECORD.pack(offset, len(block)))
        h.update(block)
    return h.hexdigest()


class _CountingReader:
    """A read-only file that counts the bytes read from ``inner``."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        return data
