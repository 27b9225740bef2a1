"""The netns fixture makes real namespaces that really exchange packets, and cleans up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xenwam.netns import NetnsSet

pytestmark = pytest.mark.netns

_UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.0.2", 9999))
print("ready", flush=True)
data, peer = s.recvfrom(100)
s.sendto(data[::-1], peer)
"""

_UDP_SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"xenwam", ("10.77.0.2", 9999))
print(s.recvfrom(100)[0].decode())
"""


def test_two_namespaces_exchange_packets(netns: NetnsSet) -> None:
    a = netns.add("a")
    b = netns.add("b")
    a_if, b_if = netns.link(a, b)
    a.add_address(a_if, "10.77.0.1/24")
    b.add_address(b_if, "10.77.0.2/24")

    ping = a.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.77.0.2"], check=False)
    assert ping.ok, ping.stdout + ping.stderr
    assert " 0% packet loss" in ping.stdout

    server = subprocess.Popen(
        b.argv([sys.executable, "-c", _UDP_ECHO]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        reply = a.run([sys.executable, "-c", _UDP_SEND])
        assert reply.stdout.strip() == "mawnex"
        assert server.wait(timeout=5) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_namespaces_are_isolated(netns: NetnsSet) -> None:
    a = netns.add("a")
    b = netns.add("b")  # not linked to a
    a.add_address("lo", "10.78.0.1/32")
    assert a.run(["ping", "-c", "1", "-W", "1", "10.78.0.1"], check=False).ok
    probe = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n"
        "    s.sendto(b'x', ('10.78.0.1', 9))\n"
        "    print('sent')\n"
        "except OSError as exc:\n"
        "    print(exc.strerror)\n"
    )
    res = b.run([sys.executable, "-c", probe])
    assert res.stdout.strip() == "Network is unreachable"


def test_close_removes_everything_even_after_failure() -> None:
    nsset = NetnsSet(prefix="xwc")
    names: list[str] = []
    with pytest.raises(RuntimeError), nsset:
        a = nsset.add("a")
        b = nsset.add("b")
        nsset.link(a, b)
        names = [a.name, b.name]
        raise RuntimeError("test failure half-way")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in names:
        assert name not in listed
