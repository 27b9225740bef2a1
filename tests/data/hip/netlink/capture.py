"""Capture the rtnetlink datagrams of this directory from the running kernel.

Run as root from the source tree: ``python3 tests/data/hip/netlink/capture.py``.  It
creates the namespace ``xwnlcap``, sets up the addresses the files' headers describe,
writes ``linux-<version>-*.hex`` here and deletes the namespace.  hipd's netlink parsers
(hip/daemon/netlink.py) are tested on these files (tests/unit/test_hip_netlink.py).
The requests here are built by hand, not by the code under test.
"""

from __future__ import annotations

import ipaddress
import platform
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

NS = "xwnlcap"
HERE = Path(__file__).resolve().parent
NLMSGHDR = struct.Struct("=IHHII")
KERNEL = platform.release().split("-")[0]
VERSION = ".".join(KERNEL.split(".")[:2])
SETUP = """\
ip link set lo up
ip link add eth0 type veth peer name eth0p
ip link set eth0 up
ip link set eth0p up
ip link add hip0 type veth peer name hip0p
ip link set hip0 up
ip link set hip0p up
ip link add eth1 type veth peer name eth1p
ip link set eth1 up
ip addr add 10.1.0.2/24 dev eth0
ip addr add 192.0.2.5 peer 192.0.2.6/32 dev eth0
ip addr add fd01::2/64 dev eth0 nodad
ip addr add fd04::2/64 dev eth0 nodad preferred_lft 0 valid_lft forever
ip addr add fd03::2/64 dev eth1
ip addr add 10.5.0.2/24 dev eth1
ip addr add 2001:22::5/128 dev hip0 nodad
"""
MOVE = """\
ip addr add 10.2.0.2/24 dev eth0
ip route add default via 10.2.0.1
ip addr del 10.1.0.2/24 dev eth0
ip link set eth1p up
"""
HEADER = [
    f"Captured from Linux {KERNEL} by capture.py (beside this file) in a namespace with:",
    "lo; eth0 with 10.1.0.2/24, 192.0.2.5 peer 192.0.2.6, fd01::2/64 and fd04::2/64",
    "(deprecated); hip0 with the HIT 2001:22::5/128; eth1, without carrier, with",
    "10.5.0.2/24 and fd03::2/64 (tentative). Link-local addresses as the kernel made them.",
]


def run_in_namespace(script: str) -> None:
    for line in script.splitlines():
        subprocess.run(["ip", "netns", "exec", NS, *line.split()], check=True)


def netlink_socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.bind((0, groups))
    sock.settimeout(1.0)
    return sock


def exchange(sock: socket.socket, request: bytes) -> list[bytes]:
    """Every datagram of the answer to ``request``, up to NLMSG_DONE or a single reply."""
    sock.send(request)
    datagrams = []
    while True:
        datagram = sock.recv(1 << 17)
        datagrams.append(datagram)
        offset, last = 0, False
        while offset < len(datagram):
            length, kind, flags, _seq, _port = NLMSGHDR.unpack_from(datagram, offset)
            last = last or kind in (2, 3) or not flags & 2  # ERROR, DONE, or not multipart
            offset += (length + 3) & ~3
        if last:
            return datagrams


def attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def route_get(seq: int, src: str, dst: str) -> bytes:
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = socket.AF_INET if source.version == 4 else socket.AF_INET6
    bits = source.max_prefixlen
    payload = struct.pack("=BBBBBBBBI", family, bits, bits, 0, 0, 0, 0, 0, 0)
    payload += attribute(1, destination.packed) + attribute(2, source.packed)
    return NLMSGHDR.pack(16 + len(payload), 26, 1, seq, 0) + payload


def write(name: str, lines: list[str], rows: list[tuple[str, bytes]]) -> None:
    text = "".join(f"# {line}\n" for line in [*HEADER, *lines, "One datagram a line: LABEL HEX."])
    text += "".join(f"{label:<22}{data.hex()}\n" for label, data in rows)
    (HERE / f"linux-{VERSION}-{name}.hex").write_text(text)


def capture() -> None:
    """Inside the namespace: the address dump, four route lookups, a move's events."""
    sock = netlink_socket()
    dump = NLMSGHDR.pack(24, 22, 0x301, 1, 0) + struct.pack("=BBBBI", 0, 0, 0, 0, 0)
    write("rtm-getaddr-dump", ["RTM_GETADDR dump of both families, sequence number 1."],
          [(f"dump-{i}", d) for i, d in enumerate(exchange(sock, dump))])
    lookups = [("v4-connected", "10.1.0.2", "10.1.0.9"), ("v4-unreachable", "10.1.0.2", "10.3.0.2"),
               ("v6-connected", "fd01::2", "fd01::9"), ("v6-unreachable", "fd01::2", "fd09::1")]
    rows = [(label, exchange(sock, route_get(seq, src, dst))[0])
            for seq, (label, src, dst) in enumerate(lookups, start=1)]
    write("rtm-getroute-replies", [
        "RTM_GETROUTE from SRC to DST, sequence numbers 1-4 in this order (no default route):",
        *(f"  {label}: {src} -> {dst}" for label, src, dst in lookups)], rows)
    events = netlink_socket(0x10 | 0x40 | 0x100 | 0x400)  # addresses and routes, v4 and v6
    links = netlink_socket(0x1)  # RTMGRP_LINK: nothing hipd looks at
    run_in_namespace(MOVE)
    time.sleep(0.5)
    rows = []
    for name, sub in (("event", events), ("link", links)):
        sub.setblocking(False)
        count = 0
        while True:
            try:
                rows.append((f"{name}-{count}", sub.recv(1 << 17)))
            except BlockingIOError:
                break
            count += 1
    write("rtnetlink-events-move", [
        "Notifications while the host moves: " + "; ".join(MOVE.splitlines()) + ".",
        "event-N: a socket bound to the address and route groups of both families;",
        "link-N: a socket bound to RTMGRP_LINK only."], rows)


def main() -> None:
    if sys.argv[1:] == ["--inside"]:
        capture()
        return
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        run_in_namespace(SETUP)
        time.sleep(2.5)  # DAD of the link-local addresses ends; eth1 has no carrier
        subprocess.run(["ip", "netns", "exec", NS, sys.executable, __file__, "--inside"],
                       check=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=True)


if __name__ == "__main__":
    main()
