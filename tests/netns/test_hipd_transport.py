"""hipd's HIP sockets with their filters, in the kernel (issue 11, item 1).

In a throwaway namespace: I1s reach only the responder sockets and every other HIP
packet only the main ones, over IPv4 and IPv6; R1s leave through the responder socket.
"""

from __future__ import annotations

import json
import sys

import pytest

from xenwam.netns import NetnsSet

pytestmark = pytest.mark.netns

PROBE = r"""
import json, socket, time
from ipaddress import ip_address
from hip.daemon.transport import Carrier, HipTransport
from hip.packet import HIPPacket, PacketType, serialize
from hip.params import DHGroupList, Seq

a, b = ip_address("2001:2a::a").packed, ip_address("2001:2a::b").packed
transport = HipTransport(on_hip=lambda *args: None, udp_port=0)
transport.open()
sender4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, 139)
sender6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 139)
for host, sender in (("127.0.0.1", sender4), ("::1", sender6)):
    addr = ip_address(host)
    for kind, params in ((PacketType.I1, (DHGroupList((7,)),)), (PacketType.UPDATE, (Seq(1),)),
                         (PacketType.CLOSE, (Seq(2),))):
        sender.sendto(serialize(HIPPacket(kind, a, b, params), addr, addr), (host, 0))
# An R1 goes out through the responder socket: its counter, not the main one's.
r1 = serialize(HIPPacket(PacketType.R1, b, a, (DHGroupList((7,)),)),
               ip_address("127.0.0.1"), ip_address("127.0.0.1"))
sent = transport.send_hip(r1, ip_address("127.0.0.1"), ip_address("127.0.0.1"), Carrier.RAW)
time.sleep(0.2)
seen = {}
for sock, _carrier, family, responder in transport.sockets:
    sock.setblocking(False)
    kinds = []
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            break
        if family == socket.AF_INET:
            data = data[(data[0] & 0x0F) * 4:]
        kinds.append(PacketType(data[2] & 0x7F).name)
    name = ("v4" if family == socket.AF_INET else "v6") + ("-responder" if responder else "-main")
    seen[name] = kinds
print(json.dumps({"seen": seen, "sent": sent}))
"""


def test_i1s_and_the_rest_arrive_apart(netns: NetnsSet) -> None:
    ns = netns.add("t")
    report = json.loads(ns.run([sys.executable, "-c", PROBE], timeout=60).stdout)
    print(report)
    seen = report["seen"]
    assert report["sent"] is True
    # The R1 we sent to ourselves is no I1: it arrives on the main IPv4 socket.
    assert seen == {"v4-main": ["UPDATE", "CLOSE", "R1"], "v4-responder": ["I1"],
                    "v6-main": ["UPDATE", "CLOSE"], "v6-responder": ["I1"]}
