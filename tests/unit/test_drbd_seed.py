"""Seeding on plain sparse files: zeros are not sent, the copy is bit-identical."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from xenwam.drbd import seed
from xenwam.drbd.seed import SeedError

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


def sparse(path: Path, size: int, writes: dict[int, bytes]) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    return path


def transfer(src: Path, dst: Path, **kw: bool) -> tuple[seed.SeedStats, seed.SeedStats, bytes]:
    stream = io.BytesIO()
    with open(src, "rb") as f:
        sent = seed.send(f, stream)
    data = stream.getvalue()
    with open(dst, "r+b") as t:
        got = seed.receive(io.BytesIO(data), t, **kw)
    return sent, got, data


def test_mostly_empty_disk_sends_little_and_copies_exactly(tmp_path: Path) -> None:
    rnd = os.urandom(300_000)
    src = sparse(tmp_path / "src", 256 * MIB, {3 * MIB + 17: rnd, 200 * MIB: b"journal" * 999})
    dst = sparse(tmp_path / "dst", 256 * MIB, {})
    sent, got, data = transfer(src, dst, target_is_zeroed=True)
    assert src.read_bytes() == dst.read_bytes()
    assert sent.digest == got.digest
    assert sent.stream_bytes == len(data) == got.stream_bytes
    # 300 kB of random data dominates; the 256 MiB of zeros cost nothing.
    assert sent.stream_bytes < 400_000
    # 300 kB from offset 3 MiB + 17 touches 64 KiB blocks 48-52; the journal one more.
    assert sent.blocks_sent == 6


def test_old_data_on_reused_target_is_zeroed(tmp_path: Path) -> None:
    src = sparse(tmp_path / "src", 8 * MIB, {MIB: b"new" * 100})
    dst = sparse(tmp_path / "dst", 8 * MIB, {0: b"stale" * 10, 5 * MIB: b"old" * 5000,
                                              8 * MIB - 3: b"end"})
    transfer(src, dst)
    assert src.read_bytes() == dst.read_bytes()


def test_assuming_zeroed_on_dirty_target_is_caught_by_the_digest(tmp_path: Path) -> None:
    src = sparse(tmp_path / "src", 4 * MIB, {0: b"a" * 10})
    dst = sparse(tmp_path / "dst", 4 * MIB, {2 * MIB: b"garbage"})
    with pytest.raises(SeedError, match="differs from the source"):
        transfer(src, dst, target_is_zeroed=True)


def test_target_larger_than_source_keeps_digest_of_prefix(tmp_path: Path) -> None:
    src = sparse(tmp_path / "src", 4 * MIB, {MIB: b"x" * 4096})
    dst = sparse(tmp_path / "dst", 6 * MIB, {})
    sent, _got, _ = transfer(src, dst)
    with open(dst, "rb") as f:
        assert seed.sparse_digest(f, size=4 * MIB) == sent.digest


def test_smaller_target_refused(tmp_path: Path) -> None:
    src = sparse(tmp_path / "src", 4 * MIB, {})
    dst = sparse(tmp_path / "dst", 2 * MIB, {})
    with pytest.raises(SeedError, match="at least as large"):
        transfer(src, dst)


def test_digest_tells_contents_apart_not_storage(tmp_path: Path) -> None:
    a = sparse(tmp_path / "a", 2 * MIB, {})
    b = tmp_path / "b"
    b.write_bytes(bytes(2 * MIB))  # the same zeros, fully allocated
    c = sparse(tmp_path / "c", 2 * MIB, {MIB: b"\x01"})
    digests = []
    for p in (a, b, c):
        with open(p, "rb") as f:
            digests.append(seed.sparse_digest(f))
    assert digests[0] == digests[1] != digests[2]


def test_truncated_stream_fails_cleanly(tmp_path: Path) -> None:
    src = sparse(tmp_path / "src", 2 * MIB, {0: os.urandom(100_000)})
    dst = sparse(tmp_path / "dst", 2 * MIB, {})
    stream = io.BytesIO()
    with open(src, "rb") as f:
        seed.send(f, stream)
    cut = stream.getvalue()[: len(stream.getvalue()) // 2]
    with open(dst, "r+b") as t, pytest.raises(SeedError):
        seed.receive(io.BytesIO(cut), t)


def test_foreign_stream_refused(tmp_path: Path) -> None:
    dst = sparse(tmp_path / "dst", MIB, {})
    foreign = zstandard.ZstdCompressor().compress(b"NOTSEED!" + bytes(100))
    with open(dst, "r+b") as t, pytest.raises(SeedError, match="not a xenwam seeding stream"):
        seed.receive(io.BytesIO(foreign), t)


def test_bad_block_size_refused(tmp_path: Path) -> None:
    src = sparse(tmp_path / "src", MIB, {})
    with open(src, "rb") as f, pytest.raises(SeedError, match="block size"):
        seed.send(f, io.BytesIO(), block_size=1000)


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(max_size=300))
def test_fuzz_receive_raises_only_seed_error(tmp_path_factory: pytest.TempPathFactory,
                                             junk: bytes) -> None:
    dst = sparse(tmp_path_factory.mktemp("fuzz") / "dst", 64 * 1024, {})
    for data in (junk, zstandard.ZstdCompressor().compress(junk)):
        with open(dst, "r+b") as t, pytest.raises(SeedError):
            seed.receive(io.BytesIO(data), t)


def test_data_extents_skip_holes(tmp_path: Path) -> None:
    path = sparse(tmp_path / "s", 64 * MIB, {10 * MIB: b"x" * 4096})
    with open(path, "rb") as f:
        extents = list(seed.data_extents(f.fileno(), 64 * MIB))
    covered = sum(end - start for start, end in extents)
    # Whether this filesystem reports holes at all, asked independently of the code.
    with open(path, "rb") as f:
        try:
            first_data = os.lseek(f.fileno(), 0, os.SEEK_DATA)
        except OSError:
            first_data = 0
    if first_data == 0:
        pytest.skip(f"the filesystem under {tmp_path} does not report holes (SEEK_DATA)")
    assert 4096 <= covered < MIB
