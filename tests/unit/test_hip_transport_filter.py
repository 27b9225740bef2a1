"""The socket filters that keep I1s apart from the rest of HIP (issue 11, item 1).

The filter is kernel code written as data; :func:`run_filter` executes the instructions
it uses, so each program is checked here on real packets (our serializer's I1, R1 and
UPDATE inside IPv4 headers with and without options, and as raw IPv6 payloads).  The
kernel runs them in tests/netns/test_hipd_control.py::test_i1s_and_the_rest_arrive_apart.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from hip.daemon.transport import run_filter, type_filter
from hip.packet import HIPPacket, PacketType, serialize
from hip.params import DHGroupList, Seq

pytestmark = pytest.mark.unit

SRC4, DST4 = IPv4Address("10.1.0.2"), IPv4Address("10.3.0.3")
SRC6, DST6 = IPv6Address("fd01::2"), IPv6Address("fd03::3")
HIT_A, HIT_B = IPv6Address("2001:2a::a").packed, IPv6Address("2001:2a::b").packed


def _hip(kind: PacketType, src: object, dst: object) -> bytes:
    params = (DHGroupList((7,)),) if kind is PacketType.I1 else (Seq(1),)
    return serialize(HIPPacket(kind, HIT_A, HIT_B, params), src, dst)  # type: ignore[arg-type]


def _ipv4(payload: bytes, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), 0, 0, 64,
                         139, 0, SRC4.packed, DST4.packed)
    return header + options + payload


@pytest.mark.parametrize("options", [b"", b"\x01\x01\x01\x00", bytes(8)])
def test_ipv4_filters_split_i1s_from_the_rest(options: bytes) -> None:
    responder, main = type_filter(True, True), type_filter(True, False)
    for kind in PacketType:
        datagram = _ipv4(_hip(kind, SRC4, DST4) if kind in (PacketType.I1, PacketType.R1,
                                                          PacketType.UPDATE)
                         else bytes([59, 4, kind, 0x21]) + bytes(36), options)
        is_i1 = kind is PacketType.I1
        assert (run_filter(responder, datagram) > 0) is is_i1, kind
        assert (run_filter(main, datagram) > 0) is not is_i1, kind


def test_ipv6_filters_read_the_payload() -> None:
    responder, main = type_filter(False, True), type_filter(False, False)
    i1, update = _hip(PacketType.I1, SRC6, DST6), _hip(PacketType.UPDATE, SRC6, DST6)
    assert run_filter(responder, i1) and not run_filter(main, i1)
    assert run_filter(main, update) and not run_filter(responder, update)


def test_packets_too_short_for_a_type_are_dropped_by_both() -> None:
    for ip_header in (True, False):
        for i1 in (True, False):
            assert run_filter(type_filter(ip_header, i1), b"\x45\x00") == 0
            assert run_filter(type_filter(ip_header, i1), b"") == 0
