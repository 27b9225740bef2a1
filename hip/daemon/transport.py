"""Sockets that carry HIP control packets: raw IP protocol 139 and UDP port 10500.

Raw protocol 139 is the default (RFC 7401 section 5).  Sites that drop it get the
UDP encapsulation of RFC 5770: HIP control packets travel in UDP to port 10500 behind a
32-bit zero "non-ESP marker", and UDP-encapsulated ESP shares the port (an SPI is never
zero, so the first four bytes tell the two apart).

The HIP checksum covers a pseudo-header with both addresses, so every packet must leave
from exactly the source locator the protocol core chose: sends carry ``IP_PKTINFO`` /
``IPV6_PKTINFO`` control messages, and receives ask for the destination address the same
way.  Sans-I/O helpers (:func:`frame_udp`, :func:`classify_udp`) hold the framing rules.

Raw protocol 139 has two sockets per family (issue 11, item 1).  A classic BPF filter
(:func:`type_filter`) gives I1s to a *responder* socket and everything else to the main
one: an I1 flood then fills only the responder socket's receive buffer, never the one
peers' UPDATEs, I2s and CLOSEs arrive in, and hipd reads a bounded batch of I1s per turn
of its event loop.  R1s leave through the responder socket too, so R1s waiting for the
neighbour resolution of spoofed sources fill only its send buffer, and a full buffer
drops an R1 (counted) rather than blocking or failing any other send.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import errno
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from hip.dataplane import HIP_UDP_PORT, Locator
from hip.errors import DaemonError

log = logging.getLogger(__name__)

IPPROTO_HIP = 139
#: RFC 5770 section 5.4: UDP-encapsulated HIP control packets start with 32 zero bits.
NON_ESP_MARKER = b"\0\0\0\0"
#: ``struct in_pktinfo`` (ifindex, spec_dst, addr) and ``struct in6_pktinfo`` (addr, ifindex).
IN_PKTINFO = struct.Struct("@i4s4s")
IN6_PKTINFO = struct.Struct("@16si")
#: Receive buffer asked for on every socket (the kernel caps it at net.core.rmem_max).
RECEIVE_BUFFER = 4 << 20
#: Socket option and value from linux/udp.h that hand ESP-in-UDP to XFRM.
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
#: Packets read from one socket per turn of the event loop: main socket, responder.
READ_BATCH = 64
RESPONDER_READ_BATCH = 16
#: ``SO_ATTACH_FILTER`` from asm-generic/socket.h.
SO_ATTACH_FILTER = 26
#: Packet Type of I1 and R1 (RFC 7401 5.3), read by the filter from the header's third byte.
I1_TYPE, R1_TYPE = 1, 2
#: ``IP_PKTINFO`` from linux/in.h; typeshed does not declare it for every platform.
IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
_CMSG_SPACE = socket.CMSG_SPACE(IN6_PKTINFO.size) + socket.CMSG_SPACE(IN_PKTINFO.size)


class Carrier(enum.Enum):
    """How a HIP control packet travelled."""

    RAW = "raw"
    UDP = "udp"


class UdpKind(enum.Enum):
    """What a datagram on the shared UDP port carries."""

    HIP = "hip"
    ESP = "esp"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class UdpPayload:
    """A datagram from port 10500 split by the marker rule."""

    kind: UdpKind
    data: bytes


def frame_udp(hip_packet: bytes) -> bytes:
    """Prefix a HIP control packet with the non-ESP marker for UDP encapsulation."""
    return NON_ESP_MARKER + hip_packet


def classify_udp(datagram: bytes) -> UdpPayload:
    """Tell a UDP-encapsulated HIP packet from ESP (RFC 5770 section 5.4)."""
    if len(datagram) < 8:
        return UdpPayload(UdpKind.MALFORMED, datagram)
    if datagram[:4] == NON_ESP_MARKER:
        return UdpPayload(UdpKind.HIP, datagram[4:])
    return UdpPayload(UdpKind.ESP, datagram)


#: One classic BPF instruction: (code, jump if true, jump if false, constant).
BpfInstruction = tuple[int, int, int, int]
_BPF_LDX_MSH = 0xB1  # X = 4 * (packet[k] & 0x0f): the IPv4 header length
_BPF_LD_B_ABS = 0x30  # A = packet[k]
_BPF_LD_B_IND = 0x50  # A = packet[X + k]
_BPF_AND_K = 0x54  # A &= k
_BPF_JEQ_K = 0x15  # jump by jt if A == k, else by jf
_BPF_RET_K = 0x06  # accept k bytes (0: drop)
_ACCEPT = 0x40000


def type_filter(ip_header: bool, i1: bool) -> list[BpfInstruction]:
    """A socket filter that accepts only I1s (``i1``) or everything but I1s.

    ``ip_header``: the socket sees the IPv4 header before the HIP header (raw IPv4
    sockets do; raw IPv6 sockets see the payload only).  A packet too short to hold a
    Packet Type is dropped by the kernel (a load beyond the end ends the filter with 0).
    """
    if ip_header:
        load = [(_BPF_LDX_MSH, 0, 0, 0), (_BPF_LD_B_IND, 0, 0, 2)]
    else:
        load = [(_BPF_LD_B_ABS, 0, 0, 2)]
    accept_i1, accept_other = (_ACCEPT, 0) if i1 else (0, _ACCEPT)
    return [*load, (_BPF_AND_K, 0, 0, 0x7F), (_BPF_JEQ_K, 0, 1, I1_TYPE),
            (_BPF_RET_K, 0, 0, accept_i1), (_BPF_RET_K, 0, 0, accept_other)]


def run_filter(program: list[BpfInstruction], packet: bytes) -> int:
    """What the kernel's filter would return for ``packet`` (the instructions above only).

    For tests and for the reader: the filter is kernel code written as data.
    """
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == _BPF_LDX_MSH:
            if k >= len(packet):
                return 0
            x = 4 * (packet[k] & 0x0F)
        elif code in (_BPF_LD_B_ABS, _BPF_LD_B_IND):
            offset = k + (x if code == _BPF_LD_B_IND else 0)
            if offset >= len(packet):
                return 0
            a = packet[offset]
        elif code == _BPF_AND_K:
            a &= k
        elif code == _BPF_JEQ_K:
            pc += jt if a == k else jf
        elif code == _BPF_RET_K:
            return k
        else:
            raise ValueError(f"instruction {code:#x} is not one type_filter emits")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach_filter(sock: socket.socket, program: list[BpfInstruction]) -> None:
    """Attach ``program`` to ``sock`` (``SO_ATTACH_FILTER``; struct sock_fprog)."""
    instructions = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    fprog = _SockFprog(len(program), ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def _pktinfo_cmsg(src: Locator) -> list[tuple[int, int, bytes]]:
    if isinstance(src, IPv4Address):
        return [(socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO.pack(0, src.packed, bytes(4)))]
    return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, IN6_PKTINFO.pack(src.packed, 0))]


def _destination(ancdata: list[tuple[int, int, bytes]]) -> Locator | None:
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return IPv4Address(IN_PKTINFO.unpack_from(data)[2])
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            return IPv6Address(IN6_PKTINFO.unpack_from(data)[0])
    return None


#: Callback for a received HIP control packet: (packet, source, destination, carrier).
HipHandler = Callable[[bytes, Locator, Locator, Carrier], None]
#: Callback for UDP-encapsulated ESP: (ESP payload, source).
EspHandler = Callable[[bytes, Locator], None]


@dataclass
class HipTransport:
    """The HIP control sockets of one host, read on an asyncio loop.

    ``udp_port`` 0 disables UDP encapsulation; ``raw`` False disables protocol 139
    (behind a firewall that drops it).
    """

    on_hip: HipHandler
    on_esp: EspHandler | None = None
    raw: bool = True
    udp_port: int = HIP_UDP_PORT
    #: With the kernel data plane, the kernel must take ESP out of our UDP socket itself
    #: (UDP_ENCAP_ESPINUDP); zero-marker HIP packets still reach us.
    kernel_esp_in_udp: bool = False
    counters: Counter[str] = field(default_factory=Counter)
    #: (socket, carrier, family, responder): the responder sockets take I1s, send R1s.
    sockets: list[tuple[socket.socket, Carrier, int, bool]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        """Open every socket; raise :class:`DaemonError` saying which one failed."""
        try:
            if self.raw:
                for family in (socket.AF_INET, socket.AF_INET6):
                    for responder in (False, True):
                        self._add(family, socket.SOCK_RAW, IPPROTO_HIP, Carrier.RAW,
                                  responder=responder)
            if self.udp_port:
                self._add(socket.AF_INET, socket.SOCK_DGRAM, 0, Carrier.UDP)
                self._add(socket.AF_INET6, socket.SOCK_DGRAM, 0, Carrier.UDP)
        except OSError as exc:
            self.close()
            raise DaemonError(
                f"cannot open the HIP sockets ({exc.strerror}); hipd needs root (raw IP "
                f"protocol {IPPROTO_HIP}) and a free UDP port {self.udp_port}"
            ) from exc

    def _add(self, family: int, kind: int, proto: int, carrier: Carrier, *,
             responder: bool = False) -> None:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if kind == socket.SOCK_RAW:
                attach_filter(sock, type_filter(family == socket.AF_INET, responder))
            # Room for bursts (an I1 flood, a window of UDP-encapsulated ESP).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            if family == socket.AF_INET6:
                if kind == socket.SOCK_DGRAM:
                    # Keep IPv4 on its own socket (raw IPv6 sockets never see IPv4).
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            if kind == socket.SOCK_DGRAM:
                if self.kernel_esp_in_udp:
                    sock.setsockopt(socket.IPPROTO_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", self.udp_port))
        except OSError:
            sock.close()
            raise
        self.sockets.append((sock, carrier, family, responder))

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading every socket on ``loop``."""
        self._loop = loop
        for sock, carrier, family, responder in self.sockets:
            batch = RESPONDER_READ_BATCH if responder else READ_BATCH
            loop.add_reader(sock.fileno(), self._on_readable, sock, carrier, family, batch)

    def close(self) -> None:
        """Close every socket."""
        for sock, _carrier, _family, _responder in self.sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()
        self._loop = None

    def send_hip(self, packet: bytes, src: Locator, dst: Locator, carrier: Carrier) -> bool:
        """Send a HIP control packet from ``src`` to ``dst``; False (counted) on failure.

        An R1 (raw) leaves through the responder socket, every other packet through the
        main one: R1s stuck behind unresolved neighbours fill only their own buffer.
        """
        if carrier is Carrier.UDP:
            return self._send(frame_udp(packet), src, dst, Carrier.UDP)
        responder = len(packet) > 2 and packet[2] & 0x7F == R1_TYPE
        return self._send(packet, src, dst, Carrier.RAW, responder=responder)

    def send_esp(self, payload: bytes, src: Locator, dst: Locator) -> None:
        """Send a UDP-encapsulated ESP payload (the userspace data plane calls this)."""
        self._send(payload, src, dst, Carrier.UDP)

    def _send(self, data: bytes, src: Locator, dst: Locator, carrier: Carrier, *,
              responder: bool = False) -> bool:
        family = socket.AF_INET if isinstance(dst, IPv4Address) else socket.AF_INET6
        for sock, c, f, r in self.sockets:
            if c is carrier and f == family and r is responder:
                port = self.udp_port if carrier is Carrier.UDP else 0
                try:
                    sock.sendmsg([data], _pktinfo_cmsg(src), 0, (str(dst), port))
                except OSError as exc:
                    # The source locator may have just been removed (we are moving):
                    # retransmission from the new locator will follow.
                    name = errno.errorcode.get(exc.errno or 0, "E?")
                    kind = f"{carrier.value}-r1" if responder else carrier.value
                    self.counters[f"send-{kind}-{name}"] += 1
                    log.debug("send %s -> %s failed: %s", src, dst, exc)
                    return False
                self.counters[f"sent-{carrier.value}"] += 1
                return True
        self.counters[f"no-{carrier.value}-socket"] += 1
        return False

    def _on_readable(self, sock: socket.socket, carrier: Carrier, family: int,
                     batch: int = READ_BATCH) -> None:
        # A bounded batch per turn of the loop, so that no socket (an I1 flood's) keeps
        # the others waiting.
        for _ in range(batch):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(65535, _CMSG_SPACE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.counters[f"recv-{errno.errorcode.get(exc.errno or 0, 'E?')}"] += 1
                return
            try:
                src: Locator = ip_address(addr[0].split("%")[0])
            except ValueError:
                self.counters["bad-source"] += 1
                continue
            dst = _destination(ancdata)
            if carrier is Carrier.RAW and family == socket.AF_INET:
                # IPv4 raw sockets deliver the IP header; skip it by its IHL.
                if len(data) < 20:
                    self.counters["truncated"] += 1
                    continue
                dst = IPv4Address(data[16:20])
                data = data[(data[0] & 0x0F) * 4 :]
            if dst is None:
                self.counters["no-destination"] += 1
                continue
            if carrier is Carrier.UDP:
                payload = classify_udp(data)
                if payload.kind is UdpKind.MALFORMED:
                    self.counters["udp-malformed"] += 1
                    continue
                if payload.kind is UdpKind.ESP:
                    if self.on_esp is not None:
                        self.on_esp(payload.data, src)
                    else:
                        self.counters["udp-esp-without-data-plane"] += 1
                    continue
                data = payload.data
            self.counters[f"received-{carrier.value}"] += 1
            self.on_hip(data, src, dst, carrier)
