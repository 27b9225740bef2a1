"""hipd benchmarks, and the stream tools the hipd network tests use.

``python -m hipbench.hipd`` builds three subnets joined by a router namespace, runs
hipd on a mobile host M and a correspondent C, and measures:

* base exchange latency: a TCP connect to a HIT with no association (I1, R1, I2, R2,
  queued SYN) against one to a HIT already associated;
* handover: M's address moves to another subnet while C streams sequence-numbered
  records to M's HIT; the time from the address change to the first record sent after
  it being delivered, in milliseconds and in RTTs, and the longest gap;
* userspace ESP throughput as a ratio of plain TCP between the same namespaces.

Subcommands ``sink`` and ``source`` are the two ends of the record stream (run inside
namespaces with ``ip netns exec``); ``bulk-sink``/``bulk-source`` move bulk bytes.
Needs root; creates and deletes its own namespaces (names start with ``hipb``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hip.runner import BackgroundProcess, CommandResult, SubprocessRunner

#: One stream record: sequence number, send time (CLOCK_MONOTONIC, ns; the clock is
#: shared by every namespace on the host, so sender and receiver times compare).
RECORD = struct.Struct("!QQ")


@dataclass
class StreamReport:
    """What the sink saw: every record in order, or where it went wrong."""

    records: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    longest_gap: float = 0.0
    longest_gap_after_seq: int = -1
    #: (seq, sent, arrived) of every record, monotonic seconds.
    timeline: list[tuple[int, float, float]] = field(default_factory=list)


def run_sink(port: int, out: Path, stop_after: int) -> StreamReport:
    """Accept one connection, read records until EOF or ``stop_after``, write a report."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", port))
    listener.listen(1)
    Path(str(out) + ".listening").touch()
    conn, _ = listener.accept()
    report = StreamReport()
    expected = 0
    last_arrival: float | None = None
    buffer = b""
    try:
        while report.records < stop_after:
            chunk = conn.recv(65536)
            if not chunk:
                break
            now = time.monotonic()
            buffer += chunk
            while len(buffer) >= RECORD.size:
                seq, sent_ns = RECORD.unpack_from(buffer)
                buffer = buffer[RECORD.size :]
                report.records += 1
                if seq < expected:
                    report.duplicated += 1
                elif seq > expected:
                    report.lost += seq - expected
                    report.out_of_order += 1
                expected = max(expected, seq + 1)
                if last_arrival is not None and now - last_arrival > report.longest_gap:
                    report.longest_gap = now - last_arrival
                    report.longest_gap_after_seq = seq
                last_arrival = now
                report.timeline.append((seq, sent_ns / 1e9, now))
            if report.records % 100 == 0:
                _write_json(out, asdict(report))
    finally:
        conn.close()
        listener.close()
        _write_json(out, asdict(report))
    return report


def run_source(dst: str, port: int, interval: float, count: int, connect_timeout: float) -> int:
    """Connect to ``dst`` and send ``count`` records, one every ``interval`` seconds."""
    start = time.monotonic()
    sock = socket.create_connection((dst, port), timeout=connect_timeout)
    print(f"connected in {time.monotonic() - start:.6f} s", flush=True)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    next_send = time.monotonic()
    for seq in range(count):
        sock.sendall(RECORD.pack(seq, time.monotonic_ns()))
        next_send += interval
        delay = next_send - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait for the sink to close: every record has arrived
    sock.close()
    return 0


def run_bulk_sink(port: int) -> int:
    """Accept connections forever; print bytes and seconds for each."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", port))
    listener.listen(4)
    while True:
        conn, _ = listener.accept()
        total = 0
        while chunk := conn.recv(1 << 16):
            total += len(chunk)
        conn.sendall(b"k")
        conn.close()


def run_bulk_source(dst: str, port: int, nbytes: int) -> float:
    """Send ``nbytes`` to ``dst``; return the seconds until the sink acknowledged all."""
    sock = socket.create_connection((dst, port), timeout=30)
    block = os.urandom(1 << 16)
    start = time.monotonic()
    sent = 0
    while sent < nbytes:
        sock.sendall(block)
        sent += len(block)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    elapsed = time.monotonic() - start
    sock.close()
    print(json.dumps({"bytes": sent, "seconds": elapsed}), flush=True)
    return elapsed


def _write_json(path: Path, doc: object) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


# -- the benchmark scenario ------------------------------------------------------------
@dataclass
class Lab:
    """Namespaces M, C and router R; subnets 10.{1,2,3}.0.0/24 on bridges inside R."""

    prefix: str = field(default_factory=lambda: f"hipb{os.getpid() % 10000}")
    runner: SubprocessRunner = field(default_factory=SubprocessRunner)
    created: list[str] = field(default_factory=list)
    procs: list[BackgroundProcess] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hipbench")))

    def ns(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def sh(self, *argv: str, check: bool = True) -> CommandResult:
        return self.runner.run(list(argv), check=check, timeout=60)

    def in_ns(self, role: str, *argv: str, check: bool = True) -> CommandResult:
        return self.sh("ip", "netns", "exec", self.ns(role), *argv, check=check)

    def build(self) -> None:
        for role in ("r", "m", "c"):
            self.sh("ip", "netns", "add", self.ns(role))
            self.created.append(self.ns(role))
            self.in_ns(role, "ip", "link", "set", "lo", "up")
        self.in_ns("r", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for n in (1, 2, 3):
            self.in_ns("r", "ip", "link", "add", f"br{n}", "type", "bridge")
            self.in_ns("r", "ip", "addr", "add", f"10.{n}.0.1/24", "dev", f"br{n}")
            self.in_ns("r", "ip", "link", "set", f"br{n}", "up")
        # M has a port on subnets 1 and 2; C on 3 and 1.
        for role, subnets in (("m", (1, 2)), ("c", (3, 1))):
            for n in subnets:
                self.port(role, n)

    def port(self, role: str, subnet: int) -> None:
        host_if, r_if = f"{role}{subnet}", f"{role}{subnet}r"
        tmp_a, tmp_b = f"{self.prefix}{role}{subnet}a"[-15:], f"{self.prefix}{role}{subnet}b"[-15:]
        self.sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        self.sh("ip", "link", "set", tmp_a, "netns", self.ns(role), "name", host_if)
        self.sh("ip", "link", "set", tmp_b, "netns", self.ns("r"), "name", r_if)
        self.in_ns(role, "ip", "link", "set", host_if, "up")
        self.in_ns("r", "ip", "link", "set", r_if, "master", f"br{subnet}", "up")

    def place(self, role: str, subnet: int, old_subnet: int | None = None) -> float:
        """Give ``role`` address 10.SUBNET.0.2 (M) / .3 (C); remove the old one; route."""
        host = "2" if role == "m" else "3"
        if old_subnet is not None:
            self.in_ns(role, "ip", "addr", "del", f"10.{old_subnet}.0.{host}/24",
                       "dev", f"{role}{old_subnet}")
        moved_at = time.monotonic()
        self.in_ns(role, "ip", "addr", "add", f"10.{subnet}.0.{host}/24", "dev", f"{role}{subnet}")
        self.in_ns(role, "ip", "route", "replace", "default", "via", f"10.{subnet}.0.1")
        return moved_at

    def start(self, role: str, argv: list[str], log: str) -> BackgroundProcess:
        proc = BackgroundProcess(["ip", "netns", "exec", self.ns(role), *argv],
                                 str(self.workdir / log))
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        for name in reversed(self.created):
            self.sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def _hit(lab: Lab, role: str) -> str:
    res = lab.sh(*_py("hip.ctl", "keygen", "--config-dir", str(lab.workdir / role), "--json"))
    return str(json.loads(res.stdout)["hit"])


def _rtt_ms(lab: Lab, role: str, dst: str) -> float:
    res = lab.in_ns(role, "ping", "-c", "10", "-i", "0.05", "-q", dst)
    # "rtt min/avg/max/mdev = a/b/c/d ms"
    return float(res.stdout.rsplit("=", 1)[1].split("/")[1])


def benchmark(repeats: int) -> dict[str, object]:
    """Run every measurement ``repeats`` times; return the figures."""
    lab = Lab()
    results: dict[str, object] = {}
    try:
        lab.build()
        lab.place("m", 1)
        lab.place("c", 3)
        hits = {role: _hit(lab, role) for role in ("m", "c")}
        lab.sh(*_py("hip.ctl", "peer", "add", "m", hits["m"], "10.1.0.2",
                    "--config-dir", str(lab.workdir / "c")))
        for role in ("m", "c"):
            lab.start(role, _py("hip.daemon", "--config-dir", str(lab.workdir / role),
                                "--socket", str(lab.workdir / f"{role}.sock")), f"hipd-{role}.log")
        for role in ("m", "c"):
            _wait_for(lambda r=role: (lab.workdir / f"{r}.sock").exists(), 20, f"hipd {role}")
        rtt = _rtt_ms(lab, "c", "10.1.0.2")
        results["rtt_ms"] = round(rtt, 3)

        # Base exchange: first connect (no association) vs second (associated).
        lab.start("m", _py("hipbench.hipd", "bulk-sink", "--port", "5001"), "bulk-m.log")
        lab.start("m", _py("hipbench.hipd", "bulk-sink", "--port", "5002"), "bulk-m2.log")
        time.sleep(0.5)
        first = _connect_time(lab, hits["m"], 5001)
        again = statistics.median(_connect_time(lab, hits["m"], 5001) for _ in range(5))
        results["base_exchange_ms"] = round((first - again) * 1000, 1)
        results["first_connect_ms"] = round(first * 1000, 1)
        results["associated_connect_ms"] = round(again * 1000, 2)
        rtt_hit = _rtt_ms(lab, "c", hits["m"])
        results["rtt_hit_ms"] = round(rtt_hit, 3)

        # Throughput: userspace ESP over the HIT vs plain TCP to the locator.
        nbytes = 32 << 20
        esp = [_bulk(lab, hits["m"], 5001, nbytes) for _ in range(repeats)]
        plain = [_bulk(lab, "10.1.0.2", 5002, nbytes) for _ in range(repeats)]
        esp_mbps = nbytes * 8 / statistics.median(esp) / 1e6
        plain_mbps = nbytes * 8 / statistics.median(plain) / 1e6
        results["esp_mbit_s"] = round(esp_mbps, 1)
        results["plain_mbit_s"] = round(plain_mbps, 1)
        results["esp_to_plain_ratio"] = round(esp_mbps / plain_mbps, 4)

        # Handover: M moves 1 -> 2 -> 1 ..., C streams records to M's HIT.
        handovers = []
        subnet = 1
        for i in range(repeats):
            port = 6000 + i
            out = lab.workdir / f"stream{i}.json"
            lab.start("m", _py("hipbench.hipd", "sink", "--port", str(port), "--out",
                               str(out), "--stop-after", "400"), f"sink{i}.log")
            _wait_for(lambda o=out: Path(str(o) + ".listening").exists(), 10, "sink")
            lab.start("c", _py("hipbench.hipd", "source", "--dst", hits["m"], "--port",
                               str(port), "--interval", "0.005", "--count", "400"),
                      f"source{i}.log")
            time.sleep(0.6)
            new = 2 if subnet == 1 else 1
            moved_at = lab.place("m", new, subnet)
            subnet = new
            _wait_for(lambda o=out: o.exists() and json.loads(o.read_text())["records"] >= 400,
                      30, "stream end")
            report = json.loads(out.read_text())
            after = [(seq, sent, arr) for seq, sent, arr in report["timeline"] if sent > moved_at]
            first_after = after[0][2] - moved_at if after else float("nan")
            handovers.append({
                "first_record_after_move_ms": round(first_after * 1000, 1),
                "longest_gap_ms": round(report["longest_gap"] * 1000, 1),
                "lost": report["lost"], "duplicated": report["duplicated"],
                "out_of_order": report["out_of_order"],
            })
        results["handover"] = handovers
        med = statistics.median(h["first_record_after_move_ms"] for h in handovers)
        results["handover_median_ms"] = med
        results["handover_median_rtts"] = round(med / rtt, 1)
        results["handover_median_rtts_over_hit"] = round(med / rtt_hit, 1)
    finally:
        lab.close()
    return results


def _connect_time(lab: Lab, dst: str, port: int) -> float:
    res = lab.in_ns("c", sys.executable, "-c",
                    "import socket,time;t=time.monotonic();"
                    f"s=socket.create_connection(({dst!r},{port}),timeout=20);"
                    "print(time.monotonic()-t);s.close()")
    return float(res.stdout.strip())


def _bulk(lab: Lab, dst: str, port: int, nbytes: int) -> float:
    res = lab.in_ns("c", *_py("hipbench.hipd", "bulk-source", "--dst", dst, "--port",
                              str(port), "--bytes", str(nbytes)))
    return float(json.loads(res.stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    """``python -m hipbench.hipd [run|sink|source|bulk-sink|bulk-source]``."""
    parser = argparse.ArgumentParser(prog="python -m hipbench.hipd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the benchmark (the default)")
    run.add_argument("--repeats", type=int, default=3)
    sink = sub.add_parser("sink")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--out", type=Path, required=True)
    sink.add_argument("--stop-after", type=int, default=1 << 62)
    source = sub.add_parser("source")
    source.add_argument("--dst", required=True)
    source.add_argument("--port", type=int, required=True)
    source.add_argument("--interval", type=float, default=0.01)
    source.add_argument("--count", type=int, default=1000)
    source.add_argument("--connect-timeout", type=float, default=30.0)
    bsink = sub.add_parser("bulk-sink")
    bsink.add_argument("--port", type=int, required=True)
    bsource = sub.add_parser("bulk-source")
    bsource.add_argument("--dst", required=True)
    bsource.add_argument("--port", type=int, required=True)
    bsource.add_argument("--bytes", type=int, default=32 << 20)
    args = parser.parse_args(argv)
    if args.command == "sink":
        run_sink(args.port, args.out, args.stop_after)
        return 0
    if args.command == "source":
        return run_source(args.dst, args.port, args.interval, args.count, args.connect_timeout)
    if args.command == "bulk-sink":
        return run_bulk_sink(args.port)
    if args.command == "bulk-source":
        run_bulk_source(args.dst, args.port, args.bytes)
        return 0
    if os.geteuid() != 0:
        print("python -m hipbench.hipd needs root (it creates network namespaces)",
              file=sys.stderr)
        return 2
    print(json.dumps(benchmark(getattr(args, "repeats", 3)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
