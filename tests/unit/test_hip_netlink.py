"""hipd's rtnetlink code on messages captured from a kernel (tests/data/hip/netlink/).

The files come from ``tests/data/hip/netlink/capture.py``; their headers say how the
namespace was set up.  The I/O classes meet a real kernel in tests/netns/test_hipd_netlink.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hip.daemon.netlink import (
    IFA_F_DEPRECATED,
    IFA_F_TENTATIVE,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    NetlinkEvents,
    NetlinkMessage,
    address_dump_request,
    carries_locator_event,
    delivers,
    error_of,
    locators_from,
    parse_address,
    parse_attributes,
    parse_messages,
    route_get_request,
)
from hip.errors import DaemonError, NetlinkError

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data" / "hip" / "netlink"
#: Interface indexes of the capture namespace, in the order capture.py created them
#: (veth pairs: the peer end is created first).
NAMES = {1: "lo", 2: "eth0p", 3: "eth0", 4: "hip0p", 5: "hip0", 6: "eth1p", 7: "eth1"}


def _datagrams(name: str) -> dict[str, bytes]:
    rows = [line.split() for line in (DATA / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return {label: bytes.fromhex(text) for label, text in rows}


def _dump() -> list[NetlinkMessage]:
    datagrams = _datagrams("linux-6.18-rtm-getaddr-dump.hex")
    return [m for d in datagrams.values() for m in parse_messages(d)]


def test_the_address_dump_parses_to_what_the_namespace_held() -> None:
    messages = _dump()
    assert [m.kind for m in messages] == [RTM_NEWADDR] * 13 + [NLMSG_DONE]
    assert {m.seq for m in messages} == {1}
    found = {str(a.address): a for m in messages if (a := parse_address(m)) is not None}
    # IFA_LOCAL, not the point-to-point peer's IFA_ADDRESS (192.0.2.6).
    assert "192.0.2.5" in found and "192.0.2.6" not in found
    assert found["10.1.0.2"].index == 3 and found["10.1.0.2"].prefix_length == 24
    assert found["fd04::2"].flags & IFA_F_DEPRECATED
    assert found["fd03::2"].flags & IFA_F_TENTATIVE and found["fd03::2"].index == 7
    assert not found["fd01::2"].flags & (IFA_F_TENTATIVE | IFA_F_DEPRECATED)


def test_locators_leave_out_loopback_link_local_hits_tentative_deprecated_and_ignored() -> None:
    addresses = [a for m in _dump() if (a := parse_address(m)) is not None]
    assert locators_from(addresses, NAMES.__getitem__, ("hip0",)) == (
        IPv4Address("10.1.0.2"), IPv4Address("10.5.0.2"), IPv4Address("192.0.2.5"),
        IPv6Address("fd01::2"))
    assert locators_from(addresses, NAMES.__getitem__, ("eth1", "eth0")) == ()
    # A HIT is never a locator, even on an interface that is not ignored.
    assert IPv6Address("2001:22::5") not in locators_from(addresses, lambda i: "x", ())


def test_route_lookup_replies() -> None:
    replies = {label: parse_messages(d) for label, d in
               _datagrams("linux-6.18-rtm-getroute-replies.hex").items()}
    for label, seq in (("v4-connected", 1), ("v6-connected", 3)):
        (reply,) = replies[label]
        assert (reply.kind, reply.seq, delivers(reply)) == (RTM_NEWROUTE, seq, True)
    for label, seq in (("v4-unreachable", 2), ("v6-unreachable", 4)):
        (reply,) = replies[label]
        assert (reply.kind, reply.seq, delivers(reply)) == (NLMSG_ERROR, seq, False)
        assert error_of(reply) == errno.ENETUNREACH


def test_requests_are_the_bytes_the_kernel_echoed() -> None:
    # An NLMSG_ERROR carries the request it answers, as the kernel received it.
    replies = _datagrams("linux-6.18-rtm-getroute-replies.hex")
    for label, seq, src, dst in (("v4-unreachable", 2, "10.1.0.2", "10.3.0.2"),
                                 ("v6-unreachable", 4, "fd01::2", "fd09::1")):
        (reply,) = parse_messages(replies[label])
        assert reply.payload[4:] == route_get_request(seq, ip_address(src), ip_address(dst))
    request = address_dump_request(7)
    (message,) = parse_messages(request)
    assert (message.kind, message.flags, message.seq) == (22, 0x301, 7)
    assert message.payload == bytes(8)  # struct ifaddrmsg, AF_UNSPEC: both families
    with pytest.raises(NetlinkError, match="families differ"):
        route_get_request(1, IPv4Address("10.1.0.2"), IPv6Address("fd01::9"))


def test_only_address_and_route_notifications_are_locator_events() -> None:
    datagrams = _datagrams("linux-6.18-rtnetlink-events-move.hex")
    events = [d for label, d in datagrams.items() if label.startswith("event-")]
    links = [d for label, d in datagrams.items() if label.startswith("link-")]
    assert events and links
    assert all(carries_locator_event(d) for d in events)
    assert not any(carries_locator_event(d) for d in links)
    # What cannot be read counts as a change: one look too many, never a move missed.
    assert carries_locator_event(NLMSGHDR.pack(400, 16, 0, 0, 0))
    assert not carries_locator_event(b"")


def test_parse_errors_are_netlink_errors_in_the_one_tree() -> None:
    with pytest.raises(NetlinkError, match="claims 8 bytes"):
        parse_messages(NLMSGHDR.pack(8, 20, 0, 0, 0))
    assert issubclass(NetlinkError, DaemonError)
    assert parse_attributes(b"\x08\x00\x01\x00\x0a\x01\x00\x02\xff\x00\x02\x00") == {
        1: b"\x0a\x01\x00\x02"}  # a truncated tail is left alone


@given(st.binary(max_size=300))
def test_fuzz_only_netlink_errors_escape(data: bytes) -> None:
    try:
        messages = parse_messages(data)
    except NetlinkError:
        return
    for message in messages:
        parse_address(message)
        delivers(message)
        parse_attributes(message.payload)
        if message.kind == NLMSG_ERROR:
            with contextlib.suppress(NetlinkError):
                error_of(message)


class _Overflowed(socket.socket):
    """A datagram socket whose first read reports lost notifications, as the kernel
    does once when a burst overflowed the receive buffer."""

    overflowed = False

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not self.overflowed:
            self.overflowed = True
            raise OSError(errno.ENOBUFS, "No buffer space available")
        return super().recv(bufsize, flags)


def test_event_socket_drains_and_counts_lost_notifications_as_a_change() -> None:
    datagrams = _datagrams("linux-6.18-rtnetlink-events-move.hex")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    events = NetlinkEvents(lambda groups: ours)
    try:
        assert events.drain() is False  # nothing queued
        theirs.send(datagrams["link-0"])
        theirs.send(datagrams["link-1"])
        assert events.drain() is False
        theirs.send(datagrams["link-2"])
        theirs.send(datagrams["event-0"])
        assert events.drain() is True
        assert events.drain() is False  # every queued datagram was read
    finally:
        events.close()
        theirs.close()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    overflowed = _Overflowed(fileno=a.detach())
    events = NetlinkEvents(lambda groups: overflowed)
    try:
        assert events.drain() is True
    finally:
        events.close()
        b.close()


def test_hipd_does_not_load_pyroute2() -> None:
    """pyroute2 is slow to import and to use in a small guest under an emulated CPU
    (issue 10, finding 2); hipd speaks rtnetlink itself."""
    code = "import sys, hip.daemon.hipd; print(hip.daemon.hipd.__file__, 'pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out[0].startswith(str(Path(__file__).resolve().parents[2])) and out[1] == "False"


class _FlakyKernel:
    """Route requests whose address dump fails ``failures`` times (as with EMFILE while
    something else held every descriptor), then sees ``found``."""

    def __init__(self, failures: int, found: tuple[IPv4Address, ...]) -> None:
        self.failures, self.found, self.dumps = failures, found, 0

    def locators(self, ignored: tuple[str, ...]) -> tuple[IPv4Address, ...]:
        self.dumps += 1
        if self.failures:
            self.failures -= 1
            raise NetlinkError("netlink address dump failed: [Errno 24] Too many open files")
        return self.found

    def routable(self, src: object, peers: object) -> bool:
        return True

    def close(self) -> None:
        return None


def test_a_failed_locator_check_is_retried_until_it_succeeds() -> None:
    # Issue 11, item 2: the check ran once, fire and forget; when it raised, the move
    # was never announced.
    from hip.daemon.hipd import DaemonOptions, Hipd
    from hip.hosts import HostsFile
    from hip.identity import HostIdentity
    from hip.random import SeededRandom

    async def scenario() -> tuple[object, int, int]:
        kernel = _FlakyKernel(2, (IPv4Address("10.2.0.2"),))
        identity = HostIdentity.generate("ed25519", SeededRandom(b"netlink retry"))
        hipd = Hipd(DaemonOptions(), identity, HostsFile(), route_requests=kernel)
        hipd._loop = asyncio.get_running_loop()
        hipd.locators = (IPv4Address("10.1.0.2"),)
        hipd._on_locator_event()
        for _ in range(300):
            if hipd.locators != (IPv4Address("10.1.0.2"),):
                break
            await asyncio.sleep(0.01)
        hipd.close()
        return hipd.locators, kernel.dumps, kernel.failures

    locators, dumps, failures = asyncio.run(scenario())
    assert locators == (IPv4Address("10.2.0.2"),)
    assert (dumps, failures) == (3, 0)
