"""The userspace ESP data plane alone, manually keyed: ping a HIT across two namespaces.

Real TUN devices, real raw ESP (protocol 50) and UDP port 10500 sockets, real ping.
This isolates the data plane from the HIP control plane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xenwam.netns import NetnsSet

from .procs import stop

pytestmark = pytest.mark.netns

HIT_A = "2001:2a::a"
HIT_B = "2001:2a::b"
REPO = Path(__file__).resolve().parents[2]


def _start(ns: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "hip.dataplane.userspace", *args],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


def _wait_ready(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if "ready:" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            pytest.fail(f"data plane exited early: {log.read_text(errors='replace')}")
        time.sleep(0.1)
    pytest.fail(f"data plane not ready: {log.read_text(errors='replace')}")


def _counters(log: Path) -> dict[str, object]:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("counters: "):
            return dict(json.loads(line[len("counters: "):]))
    raise AssertionError(f"no counters in {log}: {log.read_text(errors='replace')}")


@pytest.mark.parametrize("encapsulation", ["raw", "udp"])
def test_ping_hit_over_static_userspace_esp(
    netns: NetnsSet, tmp_path: Path, encapsulation: str
) -> None:
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun: the userspace data plane needs the tun driver")
    a, b = netns.add("a"), netns.add("b")
    a_if, b_if = netns.link(a, b)
    a.add_address(a_if, "10.77.0.1/24")
    b.add_address(b_if, "10.77.0.2/24")
    extra = ["--udp"] if encapsulation == "udp" else []
    common = ["--secret", "static-test"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [
        _start(a.name, ["--own-hit", HIT_A, "--peer-hit", HIT_B, "--own-locator", "10.77.0.1",
                        "--peer-locator", "10.77.0.2", *common, *extra], logs[0]),
    ]
    try:
        procs.append(
            _start(b.name, ["--own-hit", HIT_B, "--peer-hit", HIT_A, "--own-locator",
                            "10.77.0.2", "--peer-locator", "10.77.0.1", *common, *extra], logs[1])
        )
        for proc, log in zip(procs, logs, strict=True):
            _wait_ready(log, proc)
        res = a.run(["ping", "-c", "5", "-i", "0.2", "-W", "2", HIT_B], check=False, timeout=30)
        print(res.stdout)
        assert res.ok, res.stdout + res.stderr
        assert " 0% packet loss" in res.stdout
    finally:
        for proc in procs:
            stop(proc)
    sent_a = _counters(logs[0])["peers"][HIT_B]["sent"]  # type: ignore[index]
    recv_b = _counters(logs[1])["peers"][HIT_A]["received"][0]  # type: ignore[index]
    assert sent_a["packets"] >= 5
    assert recv_b["packets"] >= 5
    assert recv_b["dropped"] == {}


ACQUIRE_PROBE = r"""
import asyncio, json, socket, sys
from ipaddress import IPv6Address
from hip.dataplane.kernel import KernelDataPlane, acquire_monitor_argv, parse_acquires
from hip.runner import LineStream

own, peers = IPv6Address(sys.argv[1]), sys.argv[2:]
plane = KernelDataPlane(own)
plane.setup()

def poke(peer):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect((peer, 443))
    except OSError:
        pass
    return s

async def main():
    stream = LineStream(acquire_monitor_argv())
    await stream.start()
    await asyncio.sleep(0.3)
    keep = [poke(p) for p in peers]
    found, text = [], ""
    async def read():
        nonlocal text
        async for line in stream.lines():
            text += line
            found[:] = parse_acquires(text)
            if len(found) >= len(peers):
                return
    try:
        await asyncio.wait_for(read(), 10)
    finally:
        stream.stop()
    print(json.dumps([str(h) for h in found]))

try:
    asyncio.run(main())
finally:
    plane.close()
"""


def test_kernel_acquire_for_unknown_hit_is_reported(netns: NetnsSet) -> None:
    """The kernel data plane's catch-all policy turns traffic to a HIT without SA into
    an XFRM ACQUIRE that hipd reads: real policy, real kernel, real `ip xfrm monitor`."""
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun (needed where the dummy driver is missing)")
    ns = netns.add("acq")
    own, peers = "2001:22::1", ["2001:2f:aaaa::7", "2001:22:1234:5678::9"]
    res = ns.run([sys.executable, "-c", ACQUIRE_PROBE, own, *peers], check=False, timeout=30)
    assert res.ok, res.stdout + res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == peers
    # close() removed the catch-all policy and the device again.
    assert "2001:20::/28" not in ns.run(["ip", "xfrm", "policy"]).stdout


def test_hipd_refuses_bad_start_before_changing_anything(netns: NetnsSet, tmp_path: Path) -> None:
    ns = netns.add("bad")
    cfg = tmp_path / "hip"
    hipd = [sys.executable, "-m", "hip.daemon", "--config-dir", str(cfg),
            "--socket", str(tmp_path / "hipd.sock")]
    res = ns.run(hipd, check=False, timeout=30)
    assert res.exit_status == 1
    assert "no host identity" in res.stderr and "hipctl keygen" in res.stderr
    subprocess.run([sys.executable, "-m", "hip.ctl", "keygen", "--config-dir", str(cfg)],
                   check=True, capture_output=True, cwd=REPO, env={**os.environ,
                                                                     "PYTHONPATH": str(REPO)})
    (cfg / "hosts").write_text("peer 10.0.0.1\n")  # a locator where the HIT should be
    res = ns.run(hipd, check=False, timeout=30)
    assert res.exit_status == 1
    assert "'10.0.0.1' is not an IPv6 address; write a HIT" in res.stderr
    assert "hosts:1" in res.stderr
    (cfg / "hosts").unlink()
    probe = ns.run([sys.executable, "-c", "from hip.dataplane.probe import probe_kernel; "
                    "print(probe_kernel().kernel_beet)"])
    if probe.stdout.strip() == "False":
        res = ns.run([*hipd, "--data-plane", "kernel", "--locator", "10.9.9.9"], check=False,
                     timeout=30)
        assert res.exit_status == 1
        assert "--data-plane userspace" in res.stderr
    links = ns.ip("link", "show").stdout
    assert "hip0" not in links  # nothing was set up by the refused starts
    assert not (tmp_path / "hipd.sock").exists()
