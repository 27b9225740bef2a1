"""hipd end to end: a TCP stream to a HIT survives subnet changes of both ends, forged
UPDATEs are dropped, and a restarted hipd re-establishes its association.

Topology (all real namespaces, veth pairs, bridges and a forwarding router):

    subnet 1 10.1.0.0/24 --+                    M: ports on subnets 1 and 2 (starts on 1)
    subnet 2 10.2.0.0/24 --+-- router R         C: ports on subnets 3 and 1 (starts on 3)
    subnet 3 10.3.0.0/24 --+                    X (attacker): subnet 2

hipd runs in M and C with the userspace data plane (this kernel has no ESP), HIP over
raw IP protocol 139, ESP over raw protocol 50.  The record stream runs from C to M's
HIT; the sink checks every sequence number.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xenwam.netns import Netns, NetnsSet

from .procs import stop, wait_for

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@dataclass
class HipLab:
    """The namespaces, the hipd processes and their files."""

    nsset: NetnsSet
    work: Path
    r: Netns
    m: Netns
    c: Netns
    x: Netns
    hits: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    hipd: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: 4: subnets 10.N.0.0/24; 6: subnets fd0N::/64 (no IPv4 at all).
    family: int = 4

    def addr(self, subnet: int, host: int) -> str:
        """The address of ``host`` on ``subnet``, without prefix length."""
        return f"10.{subnet}.0.{host}" if self.family == 4 else f"fd0{subnet}::{host}"

    def cidr(self, subnet: int, host: int) -> list[str]:
        if self.family == 4:
            return [f"{self.addr(subnet, host)}/24"]
        # nodad: a tentative address is not yet a locator; the test should not wait on DAD.
        return [f"{self.addr(subnet, host)}/64", "nodad"]

    def port(self, host: Netns, role: str, subnet: int) -> None:
        _host_if, r_if = self.nsset.link(host, self.r, a_ifname=f"{role}{subnet}",
                                        b_ifname=f"{role}{subnet}r")
        self.r.ip("link", "set", r_if, "master", f"br{subnet}")

    def place(self, ns: Netns, role: str, host: int, subnet: int,
              old: int | None = None) -> float:
        """Move ``ns`` to address HOST of SUBNET: old address removed, new added, route changed."""
        family = f"-{self.family}"
        if old is not None:
            ns.ip(family, "addr", "del", self.cidr(old, host)[0], "dev", f"{role}{old}")
        moved_at = time.monotonic()
        ns.ip(family, "addr", "add", *self.cidr(subnet, host)[:1], "dev", f"{role}{subnet}",
              *self.cidr(subnet, host)[1:])
        ns.ip(family, "route", "replace", "default", "via", self.addr(subnet, 1))
        return moved_at

    def popen(self, ns: Netns, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.work / log).open("ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=REPO, env=ENV)
        self.procs.append(proc)
        return proc

    def start_hipd(self, ns: Netns, role: str, *extra: str, wrap: Sequence[str] = ()) -> None:
        """Start hipd ``role`` in ``ns`` (``wrap``: a command that runs it, e.g. prlimit)."""
        sock = self.work / f"{role}.sock"
        sock.unlink(missing_ok=True)
        self.hipd[role] = self.popen(
            ns, [*wrap, sys.executable, "-m", "hip.daemon", "--config-dir", str(self.work / role),
                 "--socket", str(sock), "--state-dir", str(self.work / f"{role}-state"),
                 "-v", *extra], f"hipd-{role}.log")
        wait_for(lambda: sock.exists(), 20, f"hipd in {role} ({self.log(role)})")

    def stop_hipd(self, role: str) -> None:
        stop(self.hipd.pop(role))

    def log(self, role: str) -> str:
        path = self.work / f"hipd-{role}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def show(self, ns: Netns, role: str) -> dict[str, object]:
        res = ns.run([sys.executable, "-m", "hip.ctl", "show", "--json",
                      "--socket", str(self.work / f"{role}.sock")])
        return dict(json.loads(res.stdout))

    def start_stream(self, port: int, count: int, interval: float) -> Path:
        out = self.work / f"stream{port}.json"
        self.popen(self.m, [sys.executable, "-m", "hipbench.hipd", "sink", "--port",
                            str(port), "--out", str(out), "--stop-after", str(count)],
                   f"sink{port}.log")
        wait_for(lambda: Path(str(out) + ".listening").exists(), 10, "the sink")
        self.popen(self.c, [sys.executable, "-m", "hipbench.hipd", "source", "--dst",
                            self.hits["m"], "--port", str(port), "--interval", str(interval),
                            "--count", str(count)], f"source{port}.log")
        return out


def stream_report(out: Path, count: int, timeout: float) -> dict[str, object]:
    def done() -> bool:
        return out.exists() and json.loads(out.read_text())["records"] >= count

    wait_for(done, timeout, f"{count} records in {out}")
    return dict(json.loads(out.read_text()))


@pytest.fixture
def hip_lab(netns: NetnsSet, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HipLab]:
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun: the userspace data plane needs the tun driver")
    lab = HipLab(netns, tmp_path, netns.add("r"), netns.add("m"), netns.add("c"),
                 netns.add("x"), family=getattr(request, "param", 4))
    lab.r.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    lab.r.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    for n in (1, 2, 3):
        lab.r.ip("link", "add", f"br{n}", "type", "bridge")
        lab.r.ip("addr", "add", *lab.cidr(n, 1)[:1], "dev", f"br{n}", *lab.cidr(n, 1)[1:])
        lab.r.ip("link", "set", f"br{n}", "up")
    for ns, role, subnets in ((lab.m, "m", (1, 2)), (lab.c, "c", (3, 1)), (lab.x, "x", (2,))):
        for n in subnets:
            lab.port(ns, role, n)
    lab.place(lab.m, "m", 2, 1)
    lab.place(lab.c, "c", 3, 3)
    lab.place(lab.x, "x", 66, 2)
    for role in ("m", "c"):
        res = subprocess.run([sys.executable, "-m", "hip.ctl", "keygen", "--json",
                              "--config-dir", str(tmp_path / role)],
                             check=True, capture_output=True, text=True, cwd=REPO, env=ENV)
        lab.hits[role] = json.loads(res.stdout)["hit"]
    for role, peer, name, loc in (("c", "m", "mobile", lab.addr(1, 2)),
                                  ("m", "c", "correspondent", lab.addr(3, 3))):
        subprocess.run([sys.executable, "-m", "hip.ctl", "peer", "add", name, lab.hits[peer],
                        loc, "--config-dir", str(tmp_path / role)],
                       check=True, capture_output=True, cwd=REPO, env=ENV)
    try:
        lab.start_hipd(lab.m, "m")
        lab.start_hipd(lab.c, "c")
        yield lab
    finally:
        for proc in reversed(lab.procs):
            stop(proc)
        for role in ("m", "c"):
            print(f"--- hipd {role} log tail ---\n{lab.log(role)}")


def _peer_locators(show: dict[str, object], hit: str) -> list[dict[str, object]]:
    for assoc in show["associations"]:  # type: ignore[attr-defined]
        if assoc["peer_hit"] == hit:
            return list(assoc["peer_locators"])
    raise AssertionError(f"no association with {hit} in {show}")


def test_stream_survives_both_ends_moving(hip_lab: HipLab) -> None:
    lab = hip_lab
    count, interval = 800, 0.01
    out = lab.start_stream(7000, count, interval)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 100, 20,
             "the stream to start")
    m_moved = lab.place(lab.m, "m", 2, 2, old=1)  # M: subnet 1 -> subnet 2
    wait_for(lambda: any(loc["address"] == "10.2.0.2" and loc["state"] == "ACTIVE"
                         for loc in _peer_locators(lab.show(lab.c, "c"), lab.hits["m"])),
             10, "C to verify M's new locator")
    time.sleep(1.0)
    c_moved = lab.place(lab.c, "c", 3, 1, old=3)  # C: subnet 3 -> subnet 1
    wait_for(lambda: any(loc["address"] == "10.1.0.3" and loc["state"] == "ACTIVE"
                         for loc in _peer_locators(lab.show(lab.m, "m"), lab.hits["c"])),
             10, "M to verify C's new locator")
    report = stream_report(out, count, 60)
    timeline = report["timeline"]
    assert isinstance(timeline, list)
    first_after_m = next(arr for _s, sent, arr in timeline if sent > m_moved) - m_moved
    first_after_c = next(arr for _s, sent, arr in timeline if sent > c_moved) - c_moved
    print(f"records {report['records']}, longest gap {report['longest_gap'] * 1000:.1f} ms "
          f"(after seq {report['longest_gap_after_seq']}); first record after M moved "
          f"{first_after_m * 1000:.1f} ms, after C moved {first_after_c * 1000:.1f} ms")
    assert report["records"] == count
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    seqs = [s for s, _sent, _arr in timeline]
    assert seqs == list(range(count))
    c_show = lab.show(lab.c, "c")
    print(f"ESP sent on credit to unverified locators: C {c_show['esp_sent_on_credit']}, "
          f"M {lab.show(lab.m, 'm')['esp_sent_on_credit']}")
    assoc = c_show["associations"][0]  # type: ignore[index]
    assert assoc["state"] == "ESTABLISHED"
    assert assoc["sa"]["peer_locator"] == "10.2.0.2"
    assert assoc["sa"]["own_locator"] == "10.1.0.3"
    assert c_show["locators"] == ["10.1.0.3"]


FORGE = r"""
import os, socket, sys
from ipaddress import IPv4Address, IPv6Address
from hip.packet import HIPPacket, PacketType, serialize
from hip.params import (EchoRequestSigned, HipMac, HipSignature, Locator, LocatorSet, Seq)
m_hit, c_hit, src, dst, n = sys.argv[1:6]
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 139)
for i in range(int(n)):
    packet = HIPPacket(PacketType.UPDATE, IPv6Address(m_hit).packed, IPv6Address(c_hit).packed, (
        LocatorSet((Locator(0, 0, True, 600, IPv4Address(src)),)),
        Seq(1000 + i), EchoRequestSigned(os.urandom(16)), HipMac(os.urandom(32)),
        HipSignature(7, os.urandom(64))))
    sock.sendto(serialize(packet, IPv4Address(src), IPv4Address(dst)), (dst, 0))
print("sent", n)
"""


def _update_drops(show: dict[str, object]) -> int:
    dropped = show["dropped"]
    assert isinstance(dropped, dict)
    return sum(n for reason, n in dropped.items() if reason.startswith("hip:UPDATE"))


def test_forged_update_is_dropped_and_stream_continues(hip_lab: HipLab) -> None:
    lab = hip_lab
    count = 400
    out = lab.start_stream(7100, count, 0.01)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 100, 20,
             "the stream to start")
    before = _update_drops(lab.show(lab.c, "c"))
    forged = 5
    lab.x.run([sys.executable, "-c", FORGE, lab.hits["m"], lab.hits["c"], "10.2.0.66",
               "10.3.0.3", str(forged)])
    report = stream_report(out, count, 30)
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    show = lab.show(lab.c, "c")
    after = _update_drops(show)
    print(f"UPDATE drops on C: {before} -> {after}; all drops: {show['dropped']}")
    assert after - before == forged
    addresses = [loc["address"] for loc in _peer_locators(show, lab.hits["m"])]
    assert "10.2.0.66" not in addresses
    assert show["associations"][0]["sa"]["peer_locator"] == "10.1.0.2"  # type: ignore[index]


def test_restarted_hipd_reestablishes(hip_lab: HipLab) -> None:
    lab = hip_lab
    first = lab.start_stream(7200, 50, 0.01)
    assert stream_report(first, 50, 30)["lost"] == 0
    lab.stop_hipd("m")
    lab.start_hipd(lab.m, "m")
    # C still holds the old association; M's fresh hipd knows nothing.  A new connection
    # from C must work again: C's ESP to M is unknown-SPI on M until a new base exchange
    # (M's I1 on the SYN-ACK, or C's retransmissions) replaces the association.
    second = lab.start_stream(7201, 50, 0.01)
    report = stream_report(second, 50, 60)
    assert (report["records"], report["lost"]) == (50, 0)
    show = lab.show(lab.m, "m")
    assert [a["state"] for a in show["associations"]] == ["ESTABLISHED"]  # type: ignore[attr-defined]


GARBAGE = r"""
import os, random, socket, struct, sys
from ipaddress import IPv4Address, IPv6Address
from hip.packet import HIPPacket, PacketType, serialize
from hip.params import DHGroupList
m_hit, src, dst, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = random.Random(7)
raw_hip = socket.socket(socket.AF_INET, socket.SOCK_RAW, 139)
raw_esp = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    blob = os.urandom(rng.randrange(0, 300))
    raw_hip.sendto(blob, (dst, 0))
    raw_esp.sendto(blob, (dst, 0))
    udp.sendto(blob, (dst, 10500))
    udp.sendto(b"\0\0\0\0" + blob, (dst, 10500))
    # A well-formed I1 from a fresh random HIT each time: an I1 flood.
    i1 = HIPPacket(PacketType.I1, IPv6Address("2001:22::").packed[:4] + os.urandom(12),
                   IPv6Address(m_hit).packed, (DHGroupList((7, 12)),))
    raw_hip.sendto(serialize(i1, IPv4Address(src), IPv4Address(dst)), (dst, 0))
print("sent", n)
"""


def test_hipd_survives_garbage_and_i1_flood(hip_lab: HipLab) -> None:
    lab = hip_lab
    count = 500
    out = lab.start_stream(7300, count, 0.01)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 50, 20,
             "the stream to start")
    n = 300
    lab.x.run([sys.executable, "-c", GARBAGE, lab.hits["m"], "10.2.0.66", "10.1.0.2", str(n)],
              timeout=120)
    report = stream_report(out, count, 60)
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert lab.hipd["m"].poll() is None, "hipd on M died"
    show = lab.show(lab.m, "m")
    dropped = show["dropped"]
    assert isinstance(dropped, dict)
    print(f"M dropped: {dropped}; transport: {show['transport']}; "
          f"responder: {show['responder']}")
    assert "hipd:core-exception" not in dropped
    # Every random blob was dropped somewhere and counted; the I1s were answered with
    # R1s without creating associations (stateless responder).
    assert sum(dropped.values()) >= n
    responder = show["responder"]
    assert isinstance(responder, dict)
    # The flood came from one address: a burst of its I1s was answered from pre-computed
    # R1s, the rest dropped unparsed (issue 11, item 1), and #K rose above the default 1.
    assert responder["r1_sent"] >= 20  # HIPConfig.i1_source_burst
    assert dropped["hip:I1 rate limit (per source)"] >= n // 4
    assert responder["puzzle_difficulty_peak"] > 1
    assert [a["peer_hit"] for a in show["associations"]] == [lab.hits["c"]]  # type: ignore[attr-defined]


def test_udp_encapsulation_stream_survives_move(hip_lab: HipLab) -> None:
    """HIP and ESP in UDP port 10500 (RFC 5770), for sites that drop protocols 139/50."""
    lab = hip_lab
    for role, ns in (("m", lab.m), ("c", lab.c)):
        lab.stop_hipd(role)
        lab.start_hipd(ns, role, "--udp")
    count = 400
    out = lab.start_stream(7400, count, 0.01)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 100, 20,
             "the stream to start over UDP")
    lab.place(lab.m, "m", 2, 2, old=1)
    report = stream_report(out, count, 60)
    print(f"UDP: longest gap {report['longest_gap'] * 1000:.1f} ms")
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    show = lab.show(lab.c, "c")
    sa = show["associations"][0]["sa"]  # type: ignore[index]
    assert sa["encapsulation"] == "udp" and sa["peer_locator"] == "10.2.0.2"
    transport = show["transport"]
    assert isinstance(transport, dict)
    # Nothing arrived over raw protocol 139: every HIP packet travelled in UDP.
    assert transport.get("received-udp", 0) > 0 and "received-raw" not in transport


@pytest.mark.parametrize("hip_lab", [6], indirect=True)
def test_ipv6_locators_stream_survives_move(hip_lab: HipLab) -> None:
    """The same move with IPv6 locators only (HIP over raw IPv6, IPV6_PKTINFO paths)."""
    lab = hip_lab
    count = 400
    out = lab.start_stream(7500, count, 0.01)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 100, 20,
             "the stream to start over IPv6 locators")
    lab.place(lab.m, "m", 2, 2, old=1)
    report = stream_report(out, count, 60)
    print(f"IPv6: longest gap {report['longest_gap'] * 1000:.1f} ms")
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    show = lab.show(lab.c, "c")
    assert show["locators"] == ["fd03::3"]
    sa = show["associations"][0]["sa"]  # type: ignore[index]
    assert (sa["own_locator"], sa["peer_locator"]) == ("fd03::3", "fd02::2")


def test_hipctl_connect_manual_locators_and_close(hip_lab: HipLab) -> None:
    lab = hip_lab
    sock = lab.work / "c.sock"
    assert sock.stat().st_mode & 0o777 == 0o600  # only root may steer hipd

    def ctl(ns: Netns, role: str, *args: str) -> dict[str, object]:
        res = ns.run([sys.executable, "-m", "hip.ctl", *args, "--json", "--config-dir",
                      str(lab.work / role), "--socket", str(lab.work / f"{role}.sock")])
        return dict(json.loads(res.stdout))

    def state_on(ns: Netns, role: str, hit: str) -> str | None:
        for assoc in lab.show(ns, role)["associations"]:  # type: ignore[attr-defined]
            if assoc["peer_hit"] == hit:
                return str(assoc["state"])
        return None

    ctl(lab.c, "c", "connect", "mobile")  # name from the hosts file, no traffic needed
    wait_for(lambda: state_on(lab.c, "c", lab.hits["m"]) == "ESTABLISHED", 10,
             "hipctl connect to establish")
    # Locators given by hand switch netlink following off: the second address that
    # appears next is not announced until hipctl says so.
    assert ctl(lab.m, "m", "update-locators", "10.1.0.2")["peers_updated"] == 0  # unchanged
    lab.m.ip("addr", "add", "10.2.0.2/24", "dev", "m2")
    time.sleep(0.5)
    assert lab.show(lab.m, "m")["locators"] == ["10.1.0.2"]
    result = ctl(lab.m, "m", "update-locators", "10.2.0.2", "10.1.0.2")
    assert result["locators"] == ["10.2.0.2", "10.1.0.2"]
    assert result["peers_updated"] == 1

    def preferred_on_c() -> str | None:
        for loc in _peer_locators(lab.show(lab.c, "c"), lab.hits["m"]):
            if loc["preferred"] and loc["state"] == "ACTIVE":
                return str(loc["address"])
        return None

    wait_for(lambda: preferred_on_c() == "10.2.0.2", 10, "C to adopt M's announced locator")
    ctl(lab.m, "m", "close", "correspondent")
    wait_for(lambda: state_on(lab.c, "c", lab.hits["m"]) in (None, "CLOSED"), 10,
             "C to see the CLOSE")
    wait_for(lambda: state_on(lab.m, "m", lab.hits["c"]) in (None, "CLOSED"), 10,
             "M to get CLOSE_ACK")


def test_first_packet_to_unassociated_hit_is_queued_not_lost(hip_lab: HipLab) -> None:
    lab = hip_lab
    # One echo request, nothing before it: it must wait for the base exchange and arrive.
    res = lab.c.run(["ping", "-c", "1", "-W", "5", lab.hits["m"]], check=False)
    assert res.ok and " 0% packet loss" in res.stdout, res.stdout + res.stderr
    show = lab.show(lab.c, "c")
    assert show["hipd"] == {"queued-sent": 1}
    assert show["associations"][0]["state"] == "ESTABLISHED"  # type: ignore[index]


def _kernel_beet_in(ns: Netns) -> str | None:
    """None if the kernel accepts BEET ESP states in ``ns``, else the reason it refused."""
    res = ns.run([sys.executable, "-c",
                  "from hip.dataplane.probe import probe_kernel; r = probe_kernel(); "
                  "print('ok' if r.kernel_beet else r.reason)"], check=False)
    out = res.stdout.strip()
    return None if out == "ok" else (out or res.stderr.strip())


def test_kernel_and_userspace_data_planes_interoperate(hip_lab: HipLab) -> None:
    """M runs ESP in the kernel (XFRM BEET), C in userspace; a stream survives M's move."""
    lab = hip_lab
    reason = _kernel_beet_in(lab.m)
    if reason is not None:
        pytest.skip(f"kernel data plane unavailable here: {reason}")
    lab.stop_hipd("m")
    lab.stop_hipd("c")
    lab.start_hipd(lab.m, "m", "--data-plane", "kernel")
    lab.start_hipd(lab.c, "c", "--data-plane", "userspace")
    assert lab.show(lab.m, "m")["data_plane"] == "kernel"
    # Associate first: in the kernel data plane the packet that triggers the ACQUIRE is
    # dropped by the kernel, and this test is about the data path, not about that.
    lab.c.run([sys.executable, "-m", "hip.ctl", "connect", "mobile", "--config-dir",
               str(lab.work / "c"), "--socket", str(lab.work / "c.sock")])
    wait_for(lambda: any(a["state"] == "ESTABLISHED"
                         for a in lab.show(lab.c, "c")["associations"]),  # type: ignore[attr-defined]
             10, "the base exchange")
    count = 300
    out = lab.start_stream(7600, count, 0.01)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 100, 20,
             "the stream to start")
    lab.place(lab.m, "m", 2, 2, old=1)
    report = stream_report(out, count, 60)
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    states = lab.m.run(["ip", "xfrm", "state"]).stdout
    assert "mode beet" in states and "10.2.0.2" in states


def test_rekey_during_stream_changes_spis_and_loses_nothing(hip_lab: HipLab) -> None:
    lab = hip_lab
    count = 400
    out = lab.start_stream(7700, count, 0.01)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 100, 20,
             "the stream to start")
    before = lab.show(lab.c, "c")["associations"][0]["sa"]  # type: ignore[index]
    lab.c.run([sys.executable, "-m", "hip.ctl", "rekey", "mobile", "--config-dir",
               str(lab.work / "c"), "--socket", str(lab.work / "c.sock")])

    def spis() -> tuple[str, str]:
        sa = lab.show(lab.c, "c")["associations"][0]["sa"]  # type: ignore[index]
        return sa["spi_in"], sa["spi_out"]

    wait_for(lambda: spis()[0] != before["spi_in"] and spis()[1] != before["spi_out"], 10,
             "new SPIs after the rekey")
    report = stream_report(out, count, 60)
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    m_sa = lab.show(lab.m, "m")["associations"][0]["sa"]  # type: ignore[index]
    assert (m_sa["spi_in"], m_sa["spi_out"]) == (spis()[1], spis()[0])


def _ctl(lab: HipLab, ns: Netns, role: str, *args: str, timeout: float = 30) -> str:
    res = ns.run([sys.executable, "-m", "hip.ctl", *args, "--config-dir",
                  str(lab.work / role), "--socket", str(lab.work / f"{role}.sock")],
                 timeout=timeout)
    return res.stdout


def _state_on(lab: HipLab, ns: Netns, role: str, hit: str) -> str | None:
    for assoc in lab.show(ns, role)["associations"]:  # type: ignore[attr-defined]
        if assoc["peer_hit"] == hit:
            return str(assoc["state"])
    return None


def test_rebound_event_after_a_move(hip_lab: HipLab) -> None:
    """hipd reports a move taken in by both ends: the mobile's UPDATE acknowledged and
    its new locator's return routability done; hipctl wait-rebound waits for it."""
    lab = hip_lab
    # M logs at debug level, which says how long the move took from the netlink event
    # to the UPDATE sent (issue 10, finding 2).
    lab.stop_hipd("m")
    lab.start_hipd(lab.m, "m", "-v")
    _ctl(lab, lab.c, "c", "connect", "mobile")
    wait_for(lambda: _state_on(lab, lab.c, "c", lab.hits["m"]) == "ESTABLISHED", 10,
             "hipctl connect to establish")
    wait_for(lambda: _state_on(lab, lab.m, "m", lab.hits["c"]) == "ESTABLISHED", 10,
             "M to reach ESTABLISHED")
    # No rebinding before any move.
    before = [json.loads(line) for line in
              _ctl(lab, lab.m, "m", "events", "--json").splitlines()]
    assert before and not [e for e in before if e["event"] == "Rebound"]
    assert all("key" not in name for e in before for name in e), "key material in events"
    last_m = max(e["id"] for e in before)
    # C waits for the rebinding from before the move (only events to come).
    waiter = subprocess.Popen(
        ["ip", "netns", "exec", lab.c.name, sys.executable, "-m", "hip.ctl", "wait-rebound",
         "--peer", "mobile", "--timeout", "20", "--json", "--config-dir",
         str(lab.work / "c"), "--socket", str(lab.work / "c.sock")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=ENV)
    lab.procs.append(waiter)  # type: ignore[arg-type]
    time.sleep(1.0)  # its first request is in hipd before the move
    assert waiter.poll() is None, "wait-rebound returned before any move"
    moved_wall = time.time()
    moved = lab.place(lab.m, "m", 2, 2, old=1)  # M: subnet 1 -> subnet 2
    mine = json.loads(_ctl(lab, lab.m, "m", "wait-rebound", "--peer", "correspondent",
                           "--after", str(last_m), "--timeout", "20", "--json"))
    m_done = time.monotonic() - moved
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    theirs = json.loads(out)
    print(f"Rebound on M {(mine['time'] - moved_wall) * 1000:.1f} ms after the move "
          f"(hipctl returned after {m_done * 1000:.1f} ms), on C "
          f"{(theirs['time'] - moved_wall) * 1000:.1f} ms")
    assert mine["event"] == "Rebound" and mine["mover"] == "we moved"
    assert (mine["local_locator"], mine["peer_locator"]) == ("10.2.0.2", "10.3.0.3")
    assert mine["peer_hit"] == lab.hits["c"] and mine["time"] >= moved_wall
    assert theirs["event"] == "Rebound" and theirs["mover"] == "the peer moved"
    assert (theirs["local_locator"], theirs["peer_locator"]) == ("10.3.0.3", "10.2.0.2")
    assert theirs["time"] >= mine["time"]  # C verifies after M answered its check
    m_log = (lab.work / "hipd-m.log").read_text(errors="replace")
    latency = [line for line in m_log.splitlines() if "after the netlink event" in line]
    print("\n".join(latency))
    assert latency and "UPDATE sent to 1 peer(s)" in latency[-1]
    # And C's locator for M is verified by then.
    assert any(loc["address"] == "10.2.0.2" and loc["state"] == "ACTIVE"
               for loc in _peer_locators(lab.show(lab.c, "c"), lab.hits["m"]))
    # Nothing more happens: a second wait times out, exit 1, one line.
    res = lab.m.run([sys.executable, "-m", "hip.ctl", "wait-rebound", "--timeout", "1",
                     "--socket", str(lab.work / "m.sock")], check=False)
    assert res.exit_status == 1 and "no rebinding reported within 1 s" in res.stderr


def test_restarted_hipd_finds_a_moved_peer_at_its_last_verified_locator(
        hip_lab: HipLab) -> None:
    """Issue 10 finding 7: after M moved, C's hosts file still says 10.1.0.2; a restarted
    C must look for M where it last verified it (10.2.0.2), kept in its state directory."""
    lab = hip_lab
    _ctl(lab, lab.c, "c", "connect", "mobile")
    wait_for(lambda: _state_on(lab, lab.c, "c", lab.hits["m"]) == "ESTABLISHED", 10,
             "hipctl connect to establish")
    lab.place(lab.m, "m", 2, 2, old=1)  # M: subnet 1 -> subnet 2
    wait_for(lambda: any(loc["address"] == "10.2.0.2" and loc["state"] == "ACTIVE"
                         for loc in _peer_locators(lab.show(lab.c, "c"), lab.hits["m"])),
             10, "C to verify M's new locator")
    memory = json.loads((lab.work / "c-state" / "peers.json").read_text())
    assert memory["peers"][lab.hits["m"]]["locator"] == "10.2.0.2"
    assert "10.1.0.2" in (lab.work / "c" / "hosts").read_text()  # the stale entry
    for role in ("c", "m"):
        lab.stop_hipd(role)
    lab.start_hipd(lab.m, "m")
    lab.start_hipd(lab.c, "c")
    restarted = time.monotonic()
    _ctl(lab, lab.c, "c", "connect", "mobile")  # no address: memory, then hosts file
    wait_for(lambda: _state_on(lab, lab.c, "c", lab.hits["m"]) == "ESTABLISHED", 10,
             "the restarted C to find M at 10.2.0.2")
    print(f"re-established {(time.monotonic() - restarted) * 1000:.0f} ms after the restart")
    sa = lab.show(lab.c, "c")["associations"][0]["sa"]  # type: ignore[index]
    assert sa["peer_locator"] == "10.2.0.2"
    assert "at its last verified locator 10.2.0.2" in lab.log("c")


def test_a_move_is_announced_while_hipd_is_short_of_descriptors(hip_lab: HipLab) -> None:
    """Issue 11, item 2: with idle control connections holding every descriptor hipd
    had, its locator check failed (EMFILE) and the move was never announced, and
    asyncio logged "accept() out of system resource" thousands of times."""
    lab = hip_lab
    lab.stop_hipd("m")
    lab.start_hipd(lab.m, "m", wrap=["prlimit", "--nofile=128:128", "--"])
    _ctl(lab, lab.c, "c", "connect", "mobile")
    wait_for(lambda: _state_on(lab, lab.c, "c", lab.hits["m"]) == "ESTABLISHED", 10,
             "hipctl connect to establish")
    lab.c.run(["ping", "-6", "-c", "1", "-W", "5", lab.hits["m"]])  # ESP: M leaves R2-SENT
    wait_for(lambda: _state_on(lab, lab.m, "m", lab.hits["c"]) == "ESTABLISHED", 10,
             "M to reach ESTABLISHED")
    idle: list[socket.socket] = []
    try:
        for _ in range(300):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(0.5)
            idle.append(client)
            with contextlib.suppress(OSError):  # a full backlog refuses: fine
                client.connect(str(lab.work / "m.sock"))
        moved = lab.place(lab.m, "m", 2, 2, old=1)  # M: subnet 1 -> subnet 2
        wait_for(lambda: any(loc["address"] == "10.2.0.2" and loc["state"] == "ACTIVE"
                             for loc in _peer_locators(lab.show(lab.c, "c"), lab.hits["m"])),
                 10, "C to verify M's new locator")
        print(f"M's move verified by C {(time.monotonic() - moved) * 1000:.0f} ms after it")
    finally:
        for client in idle:
            client.close()
    m_log = (lab.work / "hipd-m.log").read_text(errors="replace")
    assert "Traceback" not in m_log
    assert m_log.count("out of system resource") < 10


SPOOFED_I1_FLOOD = r"""
import os, random, socket, struct, sys, time
from ipaddress import IPv4Address, IPv6Address
from hip.packet import HIPPacket, PacketType, serialize
from hip.params import DHGroupList
c_hit, dst, subnet, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rng = random.Random(11)
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
datagrams = []
for i in range(256):
    # Sources on C's own subnet that nobody answers ARP for: C's R1s wait on them.
    src = IPv4Address(f"{subnet}.{100 + i % 150}")
    hit = IPv6Address("2001:22::").packed[:4] + rng.randbytes(12)
    i1 = serialize(HIPPacket(PacketType.I1, hit, IPv6Address(c_hit).packed,
                             (DHGroupList((7, 12)),)), src, IPv4Address(dst))
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(i1), i, 0, 64, 139, 0,
                         src.packed, IPv4Address(dst).packed)
    datagrams.append(header + i1)
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for d in datagrams:
        try:
            sock.sendto(d, (dst, 0))
            sent += 1
        except OSError:
            pass
print(sent)
"""


def test_a_move_completes_under_a_spoofed_i1_flood(hip_lab: HipLab) -> None:
    """Issue 11, item 1: I1s from spoofed sources on the correspondent's subnet made its
    R1s wait for neighbour resolution, fill the one HIP socket's send buffer and fail
    every HIP send (ENOBUFS), and starved the receive side: a peer's move took 14.7 s."""
    lab = hip_lab
    _ctl(lab, lab.c, "c", "connect", "mobile")
    wait_for(lambda: _state_on(lab, lab.c, "c", lab.hits["m"]) == "ESTABLISHED", 10,
             "hipctl connect to establish")
    lab.c.run(["ping", "-6", "-c", "1", "-W", "5", lab.hits["m"]])
    flood = lab.popen(lab.x, [sys.executable, "-c", SPOOFED_I1_FLOOD, lab.hits["c"],
                              "10.3.0.3", "10.3.0", "12"], "flood.log")
    time.sleep(3.0)  # the flood is on: C's buffers are full if they are shared
    moved = lab.place(lab.m, "m", 2, 2, old=1)  # M: subnet 1 -> subnet 2
    wait_for(lambda: any(loc["address"] == "10.2.0.2" and loc["state"] == "ACTIVE"
                         for loc in _peer_locators(lab.show(lab.c, "c"), lab.hits["m"])),
             10, "C to verify M's new locator under the flood")
    took = time.monotonic() - moved
    flood.wait(timeout=30)
    show = lab.show(lab.c, "c")
    sent = (lab.work / "flood.log").read_text().strip()
    print(f"move verified {took * 1000:.0f} ms after it, under {sent} I1s in 12 s; "
          f"C transport {show['transport']}, responder {show['responder']}")
    # Within the UPDATE's first two retransmissions (1 s, then 2 s), well inside its
    # retransmission budget; 0.27 s when written, 14.7 s before (issue 11).
    assert took < 3.0
    assert not [k for k in show["transport"] if k.startswith("send-raw-")  # type: ignore[union-attr]
                and "-r1-" not in k]
