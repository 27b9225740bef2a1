"""hipd's rtnetlink code against a real kernel, in a throwaway namespace.

The parsers are unit tested on captured messages (tests/unit/test_hip_netlink.py); here
the two sockets meet the kernel: the address dump and route lookups on one socket kept
open, and the event socket hearing an address arrive.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xenwam.netns import NetnsSet

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, select, subprocess, sys, time
from ipaddress import ip_address
from hip.daemon.netlink import NetlinkEvents, RouteRequests

ifname = sys.argv[1]
requests = RouteRequests()
first = requests.locators(())
fd = requests._sock.fileno()
reads = [requests.locators(()) for _ in range(50)]
routes = {f"{s}->{d}": requests.has_route(ip_address(s), ip_address(d)) for s, d in
          (("10.1.0.2", "10.1.0.9"), ("10.1.0.2", "10.3.0.2"),
           ("fd01::2", "fd01::9"), ("fd01::2", "fd09::1"))}
events = NetlinkEvents()
before = events.drain()
subprocess.run(["ip", "addr", "add", "10.2.0.2/24", "dev", ifname], check=True)
added = time.monotonic()
ready, _, _ = select.select([events], [], [], 5.0)
heard = time.monotonic() - added
changed = events.drain()
after = requests.locators(())
print(json.dumps({
    "first": [str(a) for a in first], "same_socket": requests._sock.fileno() == fd,
    "reads_agree": all(r == first for r in reads), "routes": routes,
    "before": before, "readable": bool(ready), "changed": changed, "heard_ms": heard * 1000,
    "after": [str(a) for a in after], "ignored": [str(a) for a in requests.locators((ifname,))],
}))
"""


def test_locators_routes_and_events_from_the_kernel(netns: NetnsSet) -> None:
    a, b = netns.add("a"), netns.add("b")
    a_if, _ = netns.link(a, b)
    a.ip("addr", "add", "10.1.0.2/24", "dev", a_if)
    a.ip("addr", "add", "192.0.2.5", "peer", "192.0.2.6/32", "dev", a_if)
    a.ip("addr", "add", "fd01::2/64", "dev", a_if, "nodad")
    a.ip("addr", "add", "fd04::2/64", "dev", a_if, "nodad", "preferred_lft", "0")
    result = a.run([sys.executable, "-c", PROBE, a_if], timeout=60)
    report = json.loads(result.stdout)
    print(report)
    # Loopback, link-local and deprecated addresses are not locators; the point-to-point
    # address is ours (192.0.2.5), not the peer's.
    assert report["first"] == ["10.1.0.2", "192.0.2.5", "fd01::2"]
    assert report["same_socket"] and report["reads_agree"]
    assert report["routes"] == {"10.1.0.2->10.1.0.9": True, "10.1.0.2->10.3.0.2": False,
                                "fd01::2->fd01::9": True, "fd01::2->fd09::1": False}
    assert report["before"] is False
    assert report["readable"] and report["changed"]
    assert report["after"] == ["10.1.0.2", "10.2.0.2", "192.0.2.5", "fd01::2"]
    assert report["ignored"] == []
