"""hipd's view of this host's addresses and routes: rtnetlink, spoken directly.

Our locators are the host's usable addresses.  hipd reads them at start, after every
address or route event, and on ``hipctl update-locators``; a new address is announced
only once the peers are routable from it.

Why not pyroute2 (issue 10, finding 2): in a Xen guest under an emulated CPU hipd took
seconds to notice a new address, against ~25 ms in network namespaces.  Every locator
check opened a new ``IPRoute`` (twice: addresses, then routes) in a worker thread, and
pyroute2 parsed every message of every dump, and every event, into its full object
tree.  hipd needs three small things: the address dump, one route lookup per peer,
and the news that something changed.  Here one request socket is opened once and kept,
the event socket is read without blocking on hipd's own event loop (no thread), events
are recognised by their 16-byte header alone, and replies are parsed with ``struct``
for the few fields hipd uses.  The parsers and request builders are pure functions,
tested on messages captured from a kernel (``tests/data/hip/netlink/``).

Layouts are those of linux/netlink.h, linux/rtnetlink.h and linux/if_addr.h.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from hip.dataplane import Locator
from hip.errors import NetlinkError
from hip.orchid import ORCHID_PREFIX

log = logging.getLogger("hipd")

#: ``struct nlmsghdr``: length, type, flags, sequence number, port id.
NLMSGHDR = struct.Struct("=IHHII")
#: ``struct ifaddrmsg``: family, prefix length, flags, scope, interface index.
IFADDRMSG = struct.Struct("=BBBBI")
#: ``struct rtmsg``: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
RTMSG = struct.Struct("=BBBBBBBBI")
#: ``struct rtattr`` (and ``struct nlattr``): length, type.
RTATTR = struct.Struct("=HH")
#: ``struct nlmsgerr`` starts with the (negative) errno; 0 is an acknowledgement.
NLMSGERR = struct.Struct("=i")

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP = 0x1, 0x2, 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_SRC = 1, 2
#: Attribute type bits that are flags, not type (NLA_F_NESTED, NLA_F_NET_BYTEORDER).
NLA_TYPE_MASK = 0x3FFF
#: Address flags (linux/if_addr.h): DAD still running, or preferred lifetime over.
IFA_F_TENTATIVE, IFA_F_DEPRECATED = 0x40, 0x20
#: Route types through which nothing is delivered (linux/rtnetlink.h).
RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT, RTN_THROW = 6, 7, 8, 9
#: Multicast groups of address and route changes, both families.
RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
LOCATOR_GROUPS = RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
#: Message types after which hipd looks at its addresses again.
LOCATOR_EVENTS = frozenset({RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE})
#: Room for one datagram: the kernel fills dump datagrams up to 32 KiB.
RECEIVE_SIZE = 1 << 16
#: Longest wait for the kernel's answer (it answers within the request's own syscall;
#: this only bounds a socket that went wrong).
REQUEST_TIMEOUT = 1.0


@dataclass(frozen=True)
class NetlinkMessage:
    """One netlink message: its header fields and what follows the header."""

    kind: int
    flags: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class InterfaceAddress:
    """One address of this host, as an ``RTM_NEWADDR`` message describes it."""

    address: Locator
    prefix_length: int
    flags: int
    index: int


def parse_messages(datagram: bytes) -> list[NetlinkMessage]:
    """The messages in one netlink datagram; :class:`NetlinkError` if a length lies."""
    messages = []
    offset = 0
    while offset + NLMSGHDR.size <= len(datagram):
        length, kind, flags, seq, _port = NLMSGHDR.unpack_from(datagram, offset)
        if length < NLMSGHDR.size or offset + length > len(datagram):
            raise NetlinkError(f"netlink message at byte {offset} claims {length} bytes; "
                               f"the datagram has {len(datagram) - offset} left")
        messages.append(NetlinkMessage(kind, flags, seq,
                                       datagram[offset + NLMSGHDR.size:offset + length]))
        offset += (length + 3) & ~3
    return messages


def parse_attributes(data: bytes) -> dict[int, bytes]:
    """Attribute type -> value, first of each type; a truncated tail is ignored."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > len(data):
            break
        found.setdefault(kind & NLA_TYPE_MASK, data[offset + RTATTR.size:offset + length])
        offset += (length + 3) & ~3
    return found


def parse_address(message: NetlinkMessage) -> InterfaceAddress | None:
    """The address an ``RTM_NEWADDR`` carries, or None for another family or message.

    ``IFA_LOCAL`` is the local address when present: on a point-to-point link
    ``IFA_ADDRESS`` is the *peer's*.  ``IFA_FLAGS`` (32 bits) supersedes the 8-bit flags.
    """
    if message.kind != RTM_NEWADDR or len(message.payload) < IFADDRMSG.size:
        return None
    family, prefix_length, flags, _scope, index = IFADDRMSG.unpack_from(message.payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = parse_attributes(message.payload[IFADDRMSG.size:])
    raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    if raw is None or len(raw) != (4 if family == socket.AF_INET else 16):
        return None
    address: Locator = IPv4Address(raw) if family == socket.AF_INET else IPv6Address(raw)
    if len(attrs.get(IFA_FLAGS, b"")) == 4:
        flags = struct.unpack("=I", attrs[IFA_FLAGS])[0]
    return InterfaceAddress(address, prefix_length, flags, index)


def error_of(message: NetlinkMessage) -> int:
    """The errno an ``NLMSG_ERROR`` reports (0: an acknowledgement)."""
    if len(message.payload) < NLMSGERR.size:
        raise NetlinkError(f"truncated netlink error message: {message.payload.hex()}")
    return -NLMSGERR.unpack_from(message.payload)[0]


def delivers(message: NetlinkMessage) -> bool:
    """True if a route lookup's answer is a route that delivers packets."""
    if message.kind != RTM_NEWROUTE or len(message.payload) < RTMSG.size:
        return False
    route_type = RTMSG.unpack_from(message.payload)[7]
    return route_type not in (RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT, RTN_THROW)


def carries_locator_event(datagram: bytes) -> bool:
    """True if a datagram from the event socket holds an address or route change.

    Only the headers are read.  An unreadable datagram counts as a change: looking at
    the addresses once too often is cheap, missing a move is not.
    """
    try:
        return any(m.kind in LOCATOR_EVENTS for m in parse_messages(datagram))
    except NetlinkError:
        return True


def _attribute(kind: int, value: bytes) -> bytes:
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, kind) + value + bytes(-length % 4)


def _message(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def address_dump_request(seq: int) -> bytes:
    """``RTM_GETADDR`` for every address of both families."""
    return _message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq,
                    IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))


def route_get_request(seq: int, src: Locator, dst: Locator) -> bytes:
    """``RTM_GETROUTE`` for the route from ``src`` to ``dst`` (``ip route get DST from SRC``)."""
    if type(src) is not type(dst):
        raise NetlinkError(f"route lookup from {src} to {dst}: the families differ")
    family = socket.AF_INET if isinstance(dst, IPv4Address) else socket.AF_INET6
    bits = dst.max_prefixlen
    return _message(RTM_GETROUTE, NLM_F_REQUEST, seq,
                    RTMSG.pack(family, bits, bits, 0, 0, 0, 0, 0, 0)
                    + _attribute(RTA_DST, dst.packed) + _attribute(RTA_SRC, src.packed))


def usable_locator(address: Locator, label: str, ignored: tuple[str, ...]) -> bool:
    """True for addresses that can be locators: global unicast, not a HIT, not ours."""
    if label in ignored:
        return False
    if address.is_loopback or address.is_link_local or address.is_multicast:
        return False
    return not (isinstance(address, IPv6Address) and address in ORCHID_PREFIX)


def locators_from(addresses: Iterable[InterfaceAddress], name_of: Callable[[int], str],
                  ignored: tuple[str, ...]) -> tuple[Locator, ...]:
    """The usable locators among ``addresses`` (IPv4 first, then IPv6, each in order).

    Tentative (DAD running) and deprecated addresses cannot be used yet or any more;
    ``name_of`` gives an interface's name from its index, for ``ignored``.
    """
    found = {a.address for a in addresses
             if not a.flags & (IFA_F_TENTATIVE | IFA_F_DEPRECATED)
             and usable_locator(a.address, name_of(a.index), ignored)}
    return tuple(sorted(found, key=lambda a: (a.version, a.packed)))


def interface_name(index: int) -> str:
    """The name of interface ``index``, or "" when it is gone already."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""


def _netlink_socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)
    try:
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


class RouteRequests:
    """hipd's requests to the kernel (address dump, route lookups) on one socket.

    The socket is opened at the first request and kept; one that failed is closed and
    the next request opens a new one.  Blocking calls, each answered by the kernel
    within the request itself: hipd makes them on its event loop.
    """

    def __init__(self, *, timeout: float = REQUEST_TIMEOUT,
                 open_socket: Callable[[], socket.socket] = _netlink_socket) -> None:
        self.timeout = timeout
        self._open_socket = open_socket
        self._sock: socket.socket | None = None
        self._seq = 0

    def addresses(self) -> list[InterfaceAddress]:
        """Every address of this host, both families."""
        found = []
        for message in self._exchange(address_dump_request, "address dump"):
            if message.kind == NLMSG_ERROR and error_of(message):
                raise NetlinkError(f"address dump refused: {_strerror(error_of(message))}")
            address = parse_address(message)
            if address is not None:
                found.append(address)
        return found

    def locators(self, ignored: tuple[str, ...]) -> tuple[Locator, ...]:
        """Every usable locator of this host (see :func:`locators_from`)."""
        return locators_from(self.addresses(), interface_name, ignored)

    def has_route(self, src: Locator, dst: Locator) -> bool:
        """True if the kernel has a route that delivers from ``src`` to ``dst``."""
        replies = self._exchange(lambda seq: route_get_request(seq, src, dst), "route lookup")
        return any(delivers(m) for m in replies)

    def routable(self, src: Locator, peers: Iterable[Locator]) -> bool:
        """True if every one of ``peers`` is routable from ``src``."""
        return all(self.has_route(src, peer) for peer in peers)

    def close(self) -> None:
        """Close the socket (a later request opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _exchange(self, build: Callable[[int], bytes], what: str) -> list[NetlinkMessage]:
        """Send one request; its answer, up to ``NLMSG_DONE`` for a dump."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        try:
            if self._sock is None:
                self._sock = self._open_socket()
                self._sock.settimeout(self.timeout)
            self._sock.send(build(seq))
            answer: list[NetlinkMessage] = []
            while True:
                for message in parse_messages(self._sock.recv(RECEIVE_SIZE)):
                    if message.seq != seq:
                        continue  # a late answer to a request that timed out
                    if message.kind == NLMSG_DONE:
                        return answer
                    answer.append(message)
                    if message.kind == NLMSG_ERROR or not message.flags & NLM_F_MULTI:
                        return answer
        except (OSError, NetlinkError) as exc:
            self.close()
            raise NetlinkError(f"netlink {what} failed: {exc}") from None


class NetlinkEvents:
    """Address and route change notifications on a non-blocking socket.

    hipd reads it from its event loop when it becomes readable; :meth:`drain` says
    whether anything happened that may change our locators.
    """

    def __init__(self, open_socket: Callable[[int], socket.socket] = _netlink_socket) -> None:
        self._sock = open_socket(LOCATOR_GROUPS)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        """The socket's descriptor, for ``loop.add_reader``."""
        return self._sock.fileno()

    def drain(self) -> bool:
        """Read every queued notification; True if one may change our locators.

        ENOBUFS means the kernel dropped notifications when the socket's buffer was
        full (a burst): some change may be among them, so it counts as one.  Any other
        error is raised (:class:`OSError`); the caller opens a new socket.
        """
        changed = False
        while True:
            try:
                datagram = self._sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                changed = True
                continue
            changed = changed or carries_locator_event(datagram)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def _strerror(code: int) -> str:
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


__all__ = [
    "InterfaceAddress",
    "NetlinkError",
    "NetlinkEvents",
    "NetlinkMessage",
    "RouteRequests",
    "carries_locator_event",
    "locators_from",
    "parse_address",
    "parse_messages",
    "usable_locator",
]
