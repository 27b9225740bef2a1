"""A TCP stream of numbered records, echoed back: what the lab uses to show that a client's
open connection survives a migration.

``serve`` runs in the guest and echoes every byte back; ``client`` runs in the
correspondent, connects (to the guest's HIT), sends a numbered record every
``1/--rate`` s and checks each echo: the echo stream must come back complete and in order,
which proves both directions (a record lost, duplicated or reordered either way breaks
it).  On SIGTERM the client stops sending, waits for what is still in flight, and writes a
JSON summary: records sent and echoed, lost, out of order, the longest silence between two
echoes and when it was.

Standard library only: the lab copies this file into guests as ``/opt/xenwam/xwrecords.py``.

    python3 xwrecords.py serve --port 7001
    python3 -m xenwam.lab.records client --to HIT --port 7001 --summary out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

RECORD = struct.Struct("!QQ")  # sequence number, sender's clock in ns
DEFAULT_PORT = 7001
#: Silences between two echoes longer than this are listed in the summary (one per move).
GAP_LISTED_S = 0.5
#: At most this many of them: the longest, in time order (a busy emulated host gives
#: dozens of short ones before a move; keeping the first ones lost the move's own gap).
GAPS_LISTED = 50


def note_gap(gaps: list[list[float]], start: float, end: float,
             limit: int = GAPS_LISTED) -> None:
    """Add the silence [start, end] to ``gaps`` (kept in time order); past ``limit``
    entries the shortest one goes."""
    gaps.append([round(start, 3), round(end, 3)])
    if len(gaps) > limit:
        shortest = min(range(len(gaps)), key=lambda i: gaps[i][1] - gaps[i][0])
        del gaps[shortest]


@dataclass
class Summary:
    """What the client saw."""

    sent: int = 0
    echoed: int = 0
    out_of_order: int = 0
    lost: int = 0
    longest_gap_seconds: float = 0.0
    gap_started_at: float | None = None  # wall clock
    gap_ended_at: float | None = None
    first_echo_after_gap_seq: int | None = None
    #: The silences over GAP_LISTED_S, the GAPS_LISTED longest: [last echo before,
    #: first echo after] (wall clock), in time order.
    gaps: list[list[float]] = field(default_factory=list)
    error: str | None = None
    connected_at: float | None = None
    ended_at: float | None = None


def serve(port: int) -> None:
    """Echo every connection's bytes back, forever (one thread per connection)."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", port))
    listener.listen(8)
    print(f"xwrecords: echoing on port {port}", flush=True)

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    while True:
        conn, peer = listener.accept()
        print(f"xwrecords: connection from {peer[0]}", flush=True)
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def client(to: str, port: int, rate: float, summary_path: str, timeout: float) -> int:
    """Send, check the echoes, write the summary when told to stop; 0 if all came back
    in order."""
    summary = Summary()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sock = socket.create_connection((to, port), timeout=timeout)
    except OSError as exc:
        summary.error = f"cannot connect to [{to}]:{port}: {exc}"
        _write(summary_path, summary)
        return 1
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    summary.connected_at = time.time()
    sent_lock = threading.Lock()

    def sender() -> None:
        interval = 1.0 / rate
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                with sent_lock:
                    sock.sendall(RECORD.pack(summary.sent, time.monotonic_ns()))
                    summary.sent += 1
                next_at += interval
                stop.wait(max(0.0, next_at - time.monotonic()))
        except OSError as exc:
            summary.error = f"send: {exc}"
            stop.set()

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    buf = b""
    expected = 0
    last_echo = time.time()
    drain_deadline: float | None = None
    # Blocking sends (the sender thread may wait out a migration with a full send
    # buffer); the receive side looks every 0.5 s whether it should stop.
    sock.setblocking(True)
    while True:
        if stop.is_set() and drain_deadline is None:
            drain_deadline = time.monotonic() + timeout
        if drain_deadline is not None:
            with sent_lock:
                done = expected >= summary.sent
            if done or time.monotonic() > drain_deadline:
                break
        try:
            readable, _, _ = select.select([sock], [], [], 0.5)
            if not readable:
                continue
            data = sock.recv(65536)
        except OSError as exc:
            summary.error = f"receive: {exc}"
            break
        if not data:
            summary.error = "the guest closed the connection"
            break
        now = time.time()
        buf += data
        while len(buf) >= RECORD.size:
            seq, _ = RECORD.unpack_from(buf)
            buf = buf[RECORD.size:]
            if seq != expected:
                summary.out_of_order += 1
            expected = max(expected, seq + 1)
            summary.echoed += 1
            gap = now - last_echo
            if gap > GAP_LISTED_S:
                note_gap(summary.gaps, last_echo, now)
            if gap > summary.longest_gap_seconds:
                summary.longest_gap_seconds = round(gap, 3)
                summary.gap_started_at, summary.gap_ended_at = last_echo, now
                summary.first_echo_after_gap_seq = seq
            last_echo = now
    stop.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a sender blocked on a full buffer
    thread.join(timeout=5)
    sock.close()
    summary.lost = summary.sent - summary.echoed
    summary.ended_at = time.time()
    _write(summary_path, summary)
    ok = summary.error is None and summary.lost == 0 and summary.out_of_order == 0
    return 0 if ok else 1


def _write(path: str, summary: Summary) -> None:
    with open(path, "w") as f:
        json.dump(asdict(summary), f)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    """``serve`` or ``client``."""
    parser = argparse.ArgumentParser(prog="xwrecords", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="echo every connection (in the guest)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    c = sub.add_parser("client", help="send numbered records and check the echoes")
    c.add_argument("--to", required=True, help="the guest's address or HIT")
    c.add_argument("--port", type=int, default=DEFAULT_PORT)
    c.add_argument("--rate", type=float, default=50.0, help="records per second")
    c.add_argument("--summary", required=True, help="where the JSON summary goes")
    c.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to connect, and to wait for the echoes at the end")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port)
        return 0
    return client(args.to, args.port, args.rate, args.summary, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
