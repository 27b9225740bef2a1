"""The migration transport: framing, flushing, byte counts (local receiver, no ssh)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zstandard as zstd

from xenwam.transport import TransportStats, compress_stream, decompress_stream

pytestmark = pytest.mark.unit

# A stand-in for xl's receiver: answers a handshake line, then counts and hashes the
# stream and reports both on stdout.  The sender waits for the answer before it sends
# the bulk, as xl does: if the transport buffered the first line in its compressor, the
# exchange would hang (the test's timeout turns that into a failure).
RECEIVER = r"""
import hashlib, sys
line = sys.stdin.buffer.readline()
sys.stdout.buffer.write(b"ready " + line); sys.stdout.buffer.flush()
h = hashlib.sha256(); n = 0
while True:
    b = sys.stdin.buffer.read(65536)
    if not b: break
    h.update(b); n += len(b)
sys.stdout.buffer.write(f"got {n} {h.hexdigest()}\n".encode()); sys.stdout.buffer.flush()
"""

SENDER = r"""
import hashlib, os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
p.stdin.write(b"hello\n")
assert p.stdout.readline() == b"ready hello\n"
payload = (b"page" * 1024 + os.urandom(64)) * 2048
p.stdin.write(payload); p.stdin.close()
print(p.stdout.readline().decode().strip(), len(payload), hashlib.sha256(payload).hexdigest())
sys.exit(p.wait())
"""


@pytest.mark.parametrize("level", [1, 0])
def test_handshake_and_stream_through_the_transport(tmp_path: Path, level: int) -> None:
    stats = tmp_path / "stats.json"
    receiver = tmp_path / "receiver.py"
    receiver.write_text(RECEIVER)
    transport = [sys.executable, "-m", "xenwam.transport", "--stats", str(stats), "--local",
                 "--level", str(level), "desthost", sys.executable, str(receiver)]
    out = subprocess.run([sys.executable, "-c", SENDER, *transport], capture_output=True,
                         timeout=60, check=True, text=True).stdout.split()
    assert out[0] == "got"
    assert out[1] == out[3] and out[2] == out[4]  # every byte arrived, unchanged
    doc = json.loads(stats.read_text())
    assert doc["forward_raw_bytes"] == int(out[3]) + len(b"hello\n")
    if level:
        assert doc["forward_wire_bytes"] < doc["forward_raw_bytes"] / 5  # it compressed
    else:
        assert doc["forward_wire_bytes"] == doc["forward_raw_bytes"]  # sent as it is
    assert doc["backward_bytes"] == len("ready hello\n") + len(" ".join(out[:3])) + 1
    assert doc["exit_status"] == 0
    assert doc["final"] is True


def test_compressor_flushes_each_read_so_a_peer_can_answer() -> None:
    # One small message must be decodable from what was written so far, before EOF.
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    os.write(w_in, b"ready\n")
    os.close(w_in)
    stats = TransportStats()
    compress_stream(r_in, w_out, 3, stats)
    os.close(w_out)
    wire = os.read(r_out, 1 << 16)
    # The first flushed block alone decodes to the message.
    dobj = zstd.ZstdDecompressor().decompressobj()
    assert dobj.decompress(wire).startswith(b"ready\n")
    assert stats.forward_raw_bytes == 6


def test_decompress_round_trip() -> None:
    data = os.urandom(1000) + b"\0" * 100000
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    os.write(w1, zstd.ZstdCompressor().compress(data))
    os.close(w1)
    pid = os.fork()
    if pid == 0:  # drain in a child so a full pipe cannot block the test
        os.close(w2)
        got = b""
        while chunk := os.read(r2, 65536):
            got += chunk
        os._exit(0 if got == data else 1)
    os.close(r2)
    assert decompress_stream(r1, w2) == len(data)
    os.close(w2)
    assert os.waitpid(pid, 0)[1] == 0


def test_bad_level_is_one_line_exit_2() -> None:
    res = subprocess.run([sys.executable, "-m", "xenwam.transport", "--level", "99", "h",
                          "xl"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


#: The far side as ssh behaves when its connection dies mid-migration: it answers the
#: handshake, then exits (255) without reading the rest.
DYING_FAR_SIDE = r"""
import os, sys
sys.stdin.buffer.raw.read(1)
os.write(1, b"ready\n")
os._exit(255)
"""


def test_when_the_far_side_dies_xl_reads_the_end_and_the_sender_exits() -> None:
    """Found by the fault matrix (cut@memory): xl waiting for an answer and the
    transport waiting for xl's next bytes waited for each other for ever once ssh had
    died.  Now xl reads the end of the replies, and the sender exits with ssh's status
    although xl never closes its side."""
    from xenwam import transport

    xl_out_r, xl_out_w = os.pipe()      # what "xl" sends to the transport
    replies_r, replies_w = os.pipe()    # what the transport hands back to "xl"
    result: list[transport.TransportStats] = []
    sender = threading.Thread(target=lambda: result.append(transport.send(
        "desthost", ["xl", "migrate-receive"], stdin_fd=xl_out_r, stdout_fd=replies_w,
        remote=[sys.executable, "-c", DYING_FAR_SIDE])), daemon=True)
    sender.start()
    try:
        os.write(xl_out_w, b"x")  # xl's first message; it then waits for the answer
        ready, _, _ = select.select([replies_r], [], [], 60)
        assert ready and os.read(replies_r, 100) == b"ready\n"
        ready, _, _ = select.select([replies_r], [], [], 60)
        assert ready, "xl would still be waiting for an answer"
        assert os.read(replies_r, 100) == b""  # the end of the stream, as through ssh
        sender.join(60)
        assert not sender.is_alive(), "the transport still waits for xl's next bytes"
        assert result[0].exit_status == 255
        assert result[0].backward_bytes == len(b"ready\n")
    finally:
        for fd in (xl_out_w, xl_out_r, replies_r):
            os.close(fd)


def test_the_stats_file_is_rewritten_while_the_stream_runs(tmp_path: Path) -> None:
    from xenwam.transport import StatsWriter

    path = tmp_path / "stats.json"
    stats = TransportStats(forward_raw_bytes=10, forward_wire_bytes=4)
    with StatsWriter(str(path), stats, interval=0.05):
        for _ in range(200):
            if path.exists():
                break
            threading.Event().wait(0.05)
        interim = json.loads(path.read_text())
        assert interim["final"] is False and interim["forward_wire_bytes"] == 4
        stats.forward_wire_bytes = 9
    final = json.loads(path.read_text())
    assert final["final"] is True and final["forward_wire_bytes"] == 9
    assert not (tmp_path / "stats.json.tmp").exists()


def test_when_the_receiving_xl_exits_the_receiving_side_exits_too(tmp_path: Path) -> None:
    """The destination's half of the fault-matrix hang: xl migrate-receive failed and
    exited, the receiving transport kept waiting for the sender's next bytes (the sender
    waited for an answer), and the ssh session between them never ended."""
    xl = tmp_path / "xl.py"
    xl.write_text("import sys\nsys.stdin.buffer.raw.read(1)\nsys.exit(3)\n")
    stream_r, stream_w = os.pipe()   # what the sender sends; it then goes silent
    proc = subprocess.Popen([sys.executable, "-m", "xenwam.transport", "--receive", "--raw",
                             "--", sys.executable, str(xl)], stdin=stream_r,
                            stdout=subprocess.PIPE)
    os.close(stream_r)
    try:
        os.write(stream_w, b"x")
        assert proc.wait(timeout=60) == 3  # xl's own status, without more input
        assert proc.stdout is not None and proc.stdout.read() == b""
    finally:
        os.close(stream_w)
        if proc.poll() is None:
            proc.kill()
