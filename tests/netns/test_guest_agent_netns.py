"""The guest agent's real side effects without Xen: netlink address and route changes,
the gratuitous ARP, and the link events that wake it, in network namespaces.

The agent's xenstore side needs a Xen guest (the lab test covers it); here the agent's
``LinuxNetwork`` runs inside a "guest" namespace joined by veth to a "site" namespace
that plays the new site's router.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from xenwam.netns import NetnsSet

pytestmark = pytest.mark.netns

#: Runs in the guest namespace: apply the new site's network, announce it, report.
_APPLY = """
import ipaddress, json, select, sys
from xenwam_guest.agent import LinuxNetwork
from xenwam_guest.layout import NetworkAssignment
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE
iface = sys.argv[1]
watch = IPRoute()  # what hipd would see, in order
watch.bind(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)
net = LinuxNetwork()
before = [str(a) for a in net.addresses(iface)]
a = NetworkAssignment.parse({"address": "10.2.0.10/24", "gateway": "10.2.0.1",
                             "subnet": "10.2.0.0/24", "migration": "m1", "generation": "7"})
changed = net.apply(iface, a)
net.announce(iface, a.address)
again = net.apply(iface, a)
seen = []
while select.select([watch.fileno()], [], [], 0.5)[0]:
    for msg in watch.get():
        what = msg["event"]
        if what == "RTM_NEWADDR":
            seen.append("new address " + msg.get_attr("IFA_ADDRESS"))
        elif what == "RTM_NEWROUTE" and msg["dst_len"] == 0:
            seen.append("default via " + str(msg.get_attr("RTA_GATEWAY")))
print(json.dumps({"before": before, "changed": changed, "again": again, "seen": seen,
                  "after": [str(x) for x in net.addresses(iface)]}))
"""

#: Runs in the guest namespace: report whether a link event woke ``wait``.
_WAIT = """
import sys
from xenwam_guest.agent import LinuxNetwork
net = LinuxNetwork()
net.open_events()
print("quiet" if not net.wait(0.3) else "spurious", flush=True)
print("woken" if net.wait(20) else "timeout", flush=True)
"""


def test_apply_moves_address_and_route_and_announces_it(netns: NetnsSet) -> None:
    guest, site = netns.add("g"), netns.add("s")
    g_if, s_if = netns.link(guest, site)
    guest.add_address(g_if, "10.1.0.10/24")  # its old site's address
    guest.ip("route", "add", "default", "via", "10.1.0.1", "dev", g_if, "onlink")
    site.add_address(s_if, "10.2.0.1/24")
    sniff = subprocess.Popen(site.argv(["tcpdump", "-l", "-n", "-c", "1", "-i", s_if,
                                        "arp", "and", "host", "10.2.0.10"]),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)  # tcpdump attached
        out = guest.run([sys.executable, "-c", _APPLY, g_if])
        doc = json.loads(out.stdout)
        assert doc["before"] == ["10.1.0.10/24"]
        assert doc["changed"] is True and doc["again"] is False
        assert doc["after"] == ["10.2.0.10/24"]
        # hipd announces the address the moment it appears: the route through the new
        # site's gateway must already be there.
        assert doc["seen"][:2] == ["default via 10.2.0.1", "new address 10.2.0.10"], doc
        route = guest.ip("-4", "route", "show", "default").stdout
        # On-link: in place before the new address (and its subnet route) existed.
        assert "via 10.2.0.1" in route and g_if in route and "onlink" in route, route
        arp, _ = sniff.communicate(timeout=10)
        # RFC 5227's announcement: the new address as both sender and target.
        assert "Request who-has 10.2.0.10 tell 10.2.0.10" in arp, arp
        # The site reaches the guest at its new address.
        assert site.run(["ping", "-c", "1", "-W", "2", "10.2.0.10"], check=False).ok
    finally:
        if sniff.poll() is None:
            sniff.kill()
            sniff.wait()


def test_a_link_change_wakes_the_agent(netns: NetnsSet) -> None:
    guest, site = netns.add("g"), netns.add("s")
    g_if, _ = netns.link(guest, site)
    proc = subprocess.Popen(guest.argv([sys.executable, "-c", _WAIT]),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "quiet"
        guest.ip("link", "set", g_if, "down")  # as netfront does around a resume
        assert proc.stdout.readline().strip() == "woken"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
