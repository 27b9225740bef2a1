"""HIP packets: golden vectors, round trips per packet type, header checks, integrity bytes."""

from __future__ import annotations

import dataclasses
import struct
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hip_pcap import PcapRecord, ip_datagram, pcap_bytes
from hip_strategies import endpoints, packets
from hypothesis import given

from hip import params as P
from hip.errors import ParseError
from hip.packet import (
    HIPPacket,
    PacketType,
    checksum,
    integrity_bytes,
    parse,
    serialize,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data" / "hip"
HIT_A = bytes(IPv6Address("2001:20::1").packed)
HIT_B = bytes(IPv6Address("2001:20::2").packed)
V6_SRC, V6_DST = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
V4_SRC, V4_DST = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")


def load_hex(name: str) -> bytes:
    lines = (DATA / name).read_text().splitlines()
    return bytes.fromhex("".join(ln for ln in lines if not ln.startswith("#")).replace(" ", ""))


def test_golden_i1_over_ipv6() -> None:
    wire = load_hex("rfc7401-i1-ipv6-golden.hex")
    expected = HIPPacket(PacketType.I1, HIT_A, HIT_B, (P.DHGroupList((9, 8, 7)),))
    assert parse(wire, V6_SRC, V6_DST) == expected
    assert serialize(expected, V6_SRC, V6_DST) == wire


def test_golden_close_ack_over_ipv4() -> None:
    wire = load_hex("rfc7401-close-ack-ipv4-golden.hex")
    expected = HIPPacket(
        PacketType.CLOSE_ACK, HIT_A, HIT_B,
        (P.EchoResponseSigned(b"\x01\x02\x03\x04"), P.HipMac(b"\x11" * 32),
         P.HipSignature(7, b"\x22" * 64)),
    )
    assert parse(wire, V4_SRC, V4_DST) == expected
    assert serialize(expected, V4_SRC, V4_DST) == wire


def test_checksum_depends_on_the_pseudo_header() -> None:
    wire = load_hex("rfc7401-i1-ipv6-golden.hex")
    with pytest.raises(ParseError, match="checksum 0x155a is wrong"):
        parse(wire, V6_SRC, IPv6Address("2001:db8::3"))
    unchecked = parse(wire, V6_SRC, IPv6Address("2001:db8::3"), verify_checksum=False)
    assert unchecked.sender_hit == HIT_A
    # The same packet over IPv4 gets a different checksum.
    pkt = parse(wire, V6_SRC, V6_DST)
    assert serialize(pkt, V4_SRC, V4_DST)[4:6] != wire[4:6]
    assert checksum(serialize(pkt, V4_SRC, V4_DST), V4_SRC, V4_DST) == 0


def test_mixed_address_families_are_refused() -> None:
    pkt = HIPPacket(PacketType.I1, HIT_A, HIT_B, ())
    with pytest.raises(P.EncodeError, match="must both be"):
        serialize(pkt, V4_SRC, V6_DST)
    with pytest.raises(ParseError, match="must both be"):
        parse(serialize(pkt, V4_SRC, V4_DST), V4_SRC, V6_DST)


EXAMPLE_PARAMS: dict[PacketType, tuple[P.Param, ...]] = {
    PacketType.I1: (P.DHGroupList((7, 9)),),
    PacketType.R1: (
        P.R1Counter(3), P.Puzzle(10, 37, b"\x12\x34", b"\x55" * 32), P.DHGroupList((7, 9)),
        P.DiffieHellman(7, b"\x04" + b"\x66" * 64), P.HipCipher((4, 2)),
        P.HostId(7, b"\x00\x01" + b"\x04" + b"\x77" * 64), P.HitSuiteList((0x10, 0x20)),
        P.TransportFormatList((4095,)),
        P.HipSignature2(7, b"\x88" * 64), P.EchoRequestUnsigned(b"echo"),
    ),
    PacketType.I2: (
        P.EspInfo(0, 0, 0x1234), P.R1Counter(3),
        P.Solution(10, b"\x12\x34", b"\x55" * 32, b"\x99" * 32),
        P.DiffieHellman(7, b"\x04" + b"\x66" * 64), P.HipCipher((4,)),
        P.Encrypted(b"\xab" * 96), P.TransportFormatList((4095,)), P.EspTransform((9,)),
        P.HipMac(b"\xcc" * 32), P.HipSignature(7, b"\xdd" * 64),
    ),
    PacketType.R2: (P.EspInfo(0, 0, 0x5678), P.EspTransform((9,)), P.HipMac2(b"\xcc" * 32),
                    P.HipSignature(7, b"\xdd" * 64)),
    PacketType.UPDATE: (
        P.EspInfo(1, 0x1234, 0x2345),
        P.LocatorSet((P.Locator(0, 1, True, 600, IPv4Address("198.51.100.9"), 0x2345),)),
        P.Seq(1), P.Ack((7,)), P.EchoRequestSigned(b"\x01" * 8), P.HipMac(b"\xcc" * 32),
        P.HipSignature(7, b"\xdd" * 64),
    ),
    PacketType.NOTIFY: (P.Notification(P.NotifyType.I2_ACKNOWLEDGEMENT, b""),
                        P.HipSignature(7, b"\xdd" * 64)),
    PacketType.CLOSE: (P.EchoRequestSigned(b"\x02" * 8), P.HipMac(b"\xcc" * 32),
                       P.HipSignature(7, b"\xdd" * 64)),
    PacketType.CLOSE_ACK: (P.EchoResponseSigned(b"\x02" * 8), P.HipMac(b"\xcc" * 32),
                           P.HipSignature(7, b"\xdd" * 64)),
}


@pytest.mark.parametrize("packet_type", list(PacketType), ids=lambda t: t.name)
@pytest.mark.parametrize(("src", "dst"), [(V6_SRC, V6_DST), (V4_SRC, V4_DST)], ids=["v6", "v4"])
def test_every_packet_type_round_trips(
    packet_type: PacketType, src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address
) -> None:
    pkt = HIPPacket(packet_type, HIT_A, HIT_B, EXAMPLE_PARAMS[packet_type])
    wire = serialize(pkt, src, dst)
    assert len(wire) == (wire[1] + 1) * 8
    back = parse(wire, src, dst)
    assert back == pkt
    assert serialize(back, src, dst) == wire
    assert back.get(P.HipSignature) == pkt.get(P.HipSignature)


@given(pkt=packets(), ends=endpoints)
def test_arbitrary_packets_round_trip(
    pkt: HIPPacket, ends: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address]
) -> None:
    src, dst = ends
    wire = serialize(pkt, src, dst)
    assert parse(wire, src, dst) == pkt
    assert serialize(parse(wire, src, dst), src, dst) == wire


def test_get_and_get_all() -> None:
    pkt = HIPPacket(PacketType.UPDATE, HIT_A, HIT_B,
                    (P.Seq(1), P.EchoRequestSigned(b"a"), P.EchoRequestSigned(b"b")))
    assert pkt.get(P.Seq) == P.Seq(1)
    assert pkt.get(P.Ack) is None
    assert pkt.get_all(P.EchoRequestSigned) == (P.EchoRequestSigned(b"a"),
                                                P.EchoRequestSigned(b"b"))


def _reserialize(wire: bytes, **edits: int) -> bytes:
    """``wire`` with header bytes replaced by offset (``b<offset>=value``), checksum redone."""
    data = bytearray(wire)
    for key, value in edits.items():
        data[int(key[1:])] = value
    data[4:6] = b"\x00\x00"
    struct.pack_into("!H", data, 4, checksum(bytes(data), V6_SRC, V6_DST))
    return bytes(data)


I1 = HIPPacket(PacketType.I1, HIT_A, HIT_B, (P.DHGroupList((7,)),))


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"b2": 0x81}, "fixed bit before Packet Type"),
        ({"b3": 0x20}, "fixed last bit"),
        ({"b3": 0x11}, "version 1 is not supported"),
        ({"b2": 0x05}, "unknown HIP packet type 5"),
        ({"b1": 3}, "below the minimum of 4"),
        ({"b1": 9}, "means 80 bytes but the packet has 48"),
        ({"b1": 4}, "Next Header is 59"),
    ],
)
def test_header_errors(edits: dict[str, int], message: str) -> None:
    wire = _reserialize(serialize(I1, V6_SRC, V6_DST), **edits)
    with pytest.raises(ParseError, match=message):
        parse(wire, V6_SRC, V6_DST)


def test_short_packet_and_non_bytes() -> None:
    with pytest.raises(ParseError, match="shorter than"):
        parse(b"\x3b\x04\x01\x21", V6_SRC, V6_DST)
    with pytest.raises(ParseError, match="must be bytes"):
        parse("not bytes", V6_SRC, V6_DST)  # type: ignore[arg-type]


def test_trailing_data_is_ignored_for_another_next_header() -> None:
    # RFC 7401 5.1: "implementations MUST ignore trailing data if an unimplemented Next
    # Header value is received".
    pkt = dataclasses.replace(I1, next_header=6)
    wire = serialize(pkt, V6_SRC, V6_DST) + b"tcp segment here"
    assert parse(wire, V6_SRC, V6_DST) == pkt


def test_reserved_header_bits_are_ignored_but_kept_for_integrity() -> None:
    wire = _reserialize(serialize(I1, V6_SRC, V6_DST), b3=0x2F)  # RES bits set
    received = parse(wire, V6_SRC, V6_DST)
    assert received == I1
    assert serialize(received, V6_SRC, V6_DST) == wire
    assert integrity_bytes(received, P.ParamType.HIP_MAC)[3] == 0x2F
    assert serialize(I1, V6_SRC, V6_DST)[3] == 0x21  # we send them as zero


def test_unknown_critical_parameter_raises_with_the_packet() -> None:
    pkt = HIPPacket(PacketType.UPDATE, HIT_A, HIT_B,
                    (P.Seq(4), P.UnknownParam(1000, b"ok"), P.UnknownParam(1003, b"stop")))
    with pytest.raises(P.UnsupportedCriticalParam) as info:
        parse(serialize(pkt, V6_SRC, V6_DST), V6_SRC, V6_DST)
    assert info.value.param_type == 1003
    assert isinstance(info.value.packet, HIPPacket)
    assert info.value.packet.sender_hit == HIT_A
    assert info.value.packet.get(P.Seq) == P.Seq(4)
    assert isinstance(info.value, ParseError)


def test_unknown_non_critical_parameter_is_skipped_but_kept() -> None:
    pkt = HIPPacket(PacketType.UPDATE, HIT_A, HIT_B, (P.Seq(4), P.UnknownParam(1000, b"ok")))
    assert parse(serialize(pkt, V6_SRC, V6_DST), V6_SRC, V6_DST) == pkt


def test_encode_errors() -> None:
    with pytest.raises(P.EncodeError, match="sender HIT must be 16 bytes"):
        serialize(HIPPacket(PacketType.I1, b"short", HIT_B, ()), V6_SRC, V6_DST)
    with pytest.raises(P.EncodeError, match="at most 2048"):
        big = HIPPacket(PacketType.UPDATE, HIT_A, HIT_B, (P.EchoRequestSigned(bytes(2100)),))
        serialize(big, V6_SRC, V6_DST)
    with pytest.raises(P.EncodeError, match="ascending type order"):
        serialize(HIPPacket(PacketType.UPDATE, HIT_A, HIT_B, (P.Ack((1,)), P.Seq(1))),
                  V6_SRC, V6_DST)
    with pytest.raises(P.EncodeError, match="unknown HIP packet type 5"):
        serialize(HIPPacket(5, HIT_A, HIT_B, ()), V6_SRC, V6_DST)  # type: ignore[arg-type]


# --- integrity bytes (RFC 7401 5.2.12-5.2.15, 6.4) ---------------------------------------

UPDATE = HIPPacket(PacketType.UPDATE, HIT_A, HIT_B, EXAMPLE_PARAMS[PacketType.UPDATE])


def _header_fields(data: bytes) -> tuple[int, int, bytes]:
    return data[1], struct.unpack_from("!H", data, 4)[0], data[24:40]


def test_hip_mac_covers_parameters_before_it_with_checksum_zero() -> None:
    covered = integrity_bytes(UPDATE, P.ParamType.HIP_MAC)
    before_mac = tuple(p for p in UPDATE.params if p.param_type < P.ParamType.HIP_MAC)
    expected_body = P.encode_params(before_mac)
    assert covered[40:] == expected_body
    hdr_len, csum, receiver = _header_fields(covered)
    assert (hdr_len + 1) * 8 == 40 + len(expected_body)
    assert csum == 0
    assert receiver == HIT_B


def test_hip_signature_covers_the_mac_too() -> None:
    covered = integrity_bytes(UPDATE, P.ParamType.HIP_SIGNATURE)
    assert P.decode_params(covered[40:])[-1] == UPDATE.get(P.HipMac)


def test_hip_mac_2_covers_the_senders_host_id_in_type_order() -> None:
    r2 = HIPPacket(PacketType.R2, HIT_B, HIT_A, EXAMPLE_PARAMS[PacketType.R2])
    host_id = P.HostId(7, b"\x00\x01\x04" + b"\x77" * 64)
    covered = integrity_bytes(r2, P.ParamType.HIP_MAC_2, extra_params=(host_id,))
    assert P.decode_params(covered[40:]) == [P.EspInfo(0, 0, 0x5678), host_id,
                                             P.EspTransform((9,))]
    assert (covered[1] + 1) * 8 == len(covered)


def test_hip_signature_2_zeroes_receiver_hit_and_puzzle_opaque_and_i() -> None:
    r1 = HIPPacket(PacketType.R1, HIT_B, HIT_A, EXAMPLE_PARAMS[PacketType.R1])
    covered = integrity_bytes(r1, P.ParamType.HIP_SIGNATURE_2)
    assert covered[24:40] == bytes(16)
    params = P.decode_params(covered[40:])
    puzzle = next(p for p in params if isinstance(p, P.Puzzle))
    assert puzzle == P.Puzzle(10, 37, b"\x00\x00", bytes(32))  # K and lifetime stay
    assert not any(isinstance(p, P.HipSignature2 | P.EchoRequestUnsigned) for p in params)
    # An R1 precomputed for any initiator and any puzzle instance signs the same bytes.
    other = dataclasses.replace(
        r1, receiver_hit=bytes(range(16)),
        params=tuple(P.Puzzle(10, 37, b"\xff\xff", b"\x01" * 32) if isinstance(p, P.Puzzle)
                     else p for p in r1.params),
    )
    assert integrity_bytes(other, P.ParamType.HIP_SIGNATURE_2) == covered


def test_zero_receiver_hit_flag() -> None:
    covered = integrity_bytes(UPDATE, P.ParamType.HIP_MAC, zero_receiver_hit=True)
    assert covered[24:40] == bytes(16)
    assert covered[40:] == integrity_bytes(UPDATE, P.ParamType.HIP_MAC)[40:]


def test_received_bytes_are_covered_as_sent() -> None:
    """Non-zero padding and reserved bits from a peer stay in what the MAC covers."""
    wire = bytearray(serialize(UPDATE, V6_SRC, V6_DST))
    # ESP_INFO is the first parameter: its 2 reserved bytes sit at offset 44.
    wire[44:46] = b"\xde\xad"
    # HIP_MAC has 4 bytes of padding after its 32-byte HMAC.
    mac_offset = bytes(wire).index(bytes.fromhex("f0410020"))
    wire[mac_offset + 36:mac_offset + 40] = b"\x5a\x5a\x5a\x5a"
    wire[4:6] = b"\x00\x00"
    struct.pack_into("!H", wire, 4, checksum(bytes(wire), V6_SRC, V6_DST))
    received = parse(bytes(wire), V6_SRC, V6_DST)
    assert received == UPDATE  # the ignored fields do not change the decoded values
    assert serialize(received, V6_SRC, V6_DST) == bytes(wire)
    covered = integrity_bytes(received, P.ParamType.HIP_SIGNATURE)
    assert b"\xde\xad" in covered and b"\x5a\x5a\x5a\x5a" in covered
    # A parameter replaced after parsing is encoded afresh.
    changed = dataclasses.replace(
        received, params=(P.EspInfo(1, 0x1234, 0x2345), *received.params[1:])
    )
    assert b"\xde\xad" not in integrity_bytes(changed, P.ParamType.HIP_MAC)


def test_pcap_bytes_layout() -> None:
    wire = serialize(I1, V4_SRC, V4_DST)
    datagram = ip_datagram(wire, V4_SRC, V4_DST)
    assert datagram[9] == 139 and datagram[20:] == wire
    pcap = pcap_bytes([PcapRecord(datagram, 1.25)])
    magic, major, minor, _zone, _sig, snaplen, linktype = struct.unpack_from("!IHHiIII", pcap)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 101)
    sec, usec, incl, orig = struct.unpack_from("!IIII", pcap, 24)
    assert (sec, usec, incl, orig) == (1, 250000, len(datagram), len(datagram))
    assert pcap[40:] == datagram


def test_parse_keeps_each_parameter_with_its_wire_bytes() -> None:
    from hip.packet import WireParam

    src, dst = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
    pkt = HIPPacket(PacketType.I1, bytes(range(16)), bytes(range(16, 32)),
                    (P.DHGroupList((7, 12)),))
    parsed = parse(serialize(pkt, src, dst), src, dst)
    assert parsed.wire == (WireParam(parsed.params[0], P.encode_param(P.DHGroupList((7, 12)))),)
