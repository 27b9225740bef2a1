"""The HIP packet: fixed header, checksum, parameters (RFC 7401 section 5.1).

::

    Next Header (8) | Header Length (8) | 0 | Packet Type (7) | Version (4) | RES (3) | 1
    Checksum (16)   | Controls (16)
    Sender's HIT (128)
    Receiver's HIT (128)
    HIP Parameters

Header Length counts the header and the parameters in 8-byte units, not counting the
first 8 bytes.  The checksum is the Internet checksum over an IPv4 or IPv6 pseudo-header
(protocol 139) followed by the HIP packet (RFC 7401 5.1.1).

:func:`parse` raises :class:`hip.errors.ParseError` (or a subclass) for every malformed
input and nothing else.  A parsed packet remembers the exact bytes of each parameter, so
that :func:`serialize` and :func:`integrity_bytes` reproduce what the peer sent even
where the RFC tells receivers to ignore a field (reserved bits, padding): the peer's MAC
and signature cover those bytes as they were sent.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

from hip.errors import ParseError
from hip.params import (
    EncodeError,
    IPAddress,
    Param,
    ParamType,
    Puzzle,
    UnsupportedCriticalParam,
    check_order,
    decode_one,
    encode_param,
    first_unknown_critical,
    iter_tlvs,
)

__all__ = [
    "HEADER_LENGTH",
    "HIP_PROTOCOL",
    "HIP_VERSION",
    "IPPROTO_NONE",
    "MAX_PACKET_LENGTH",
    "HIPPacket",
    "PacketType",
    "WireParam",
    "checksum",
    "integrity_bytes",
    "parse",
    "peek_packet_type",
    "serialize",
]

HIP_PROTOCOL = 139  # IP protocol number of HIP
IPPROTO_NONE = 59  # "no next header": the only Next Header RFC 7401 defines processing for
HIP_VERSION = 2
HEADER_LENGTH = 40
MAX_PACKET_LENGTH = (0xFF + 1) * 8  # Header Length is 8 bits of 8-byte units, plus 8 bytes
CONTROL_ANONYMOUS = 0x0001  # RFC 7401 5.1.2: the only control bit defined


class PacketType(IntEnum):
    """HIP packet types (RFC 7401 5.3)."""

    I1 = 1
    R1 = 2
    I2 = 3
    R2 = 4
    UPDATE = 16
    NOTIFY = 17
    CLOSE = 18
    CLOSE_ACK = 19


P = TypeVar("P")


@dataclass(frozen=True)
class WireParam:
    """A parsed parameter with the exact bytes it had on the wire (padding included)."""

    param: Param
    raw: bytes


@dataclass(frozen=True)
class HIPPacket:
    """A HIP packet; HITs are the raw 16 bytes.

    ``wire`` is filled by :func:`parse` with each parameter and its exact bytes on the
    wire, ``reserved`` with the header's 3 RES bits (sent as zero, ignored on receipt, but
    covered by the peer's MAC and signature); neither takes part in equality.  A parameter
    that is no longer the very object that was parsed (for instance after
    ``dataclasses.replace``) is encoded afresh.
    """

    packet_type: PacketType
    sender_hit: bytes
    receiver_hit: bytes
    params: tuple[Param, ...]
    controls: int = 0
    version: int = HIP_VERSION
    next_header: int = IPPROTO_NONE
    wire: tuple[WireParam, ...] = field(default=(), compare=False, repr=False)
    reserved: int = field(default=0, compare=False, repr=False)

    def get(self, cls: type[P]) -> P | None:
        """The first parameter of class ``cls``, or ``None``."""
        for p in self.params:
            if isinstance(p, cls):
                return p
        return None

    def get_all(self, cls: type[P]) -> tuple[P, ...]:
        """All parameters of class ``cls``, in packet order."""
        return tuple(p for p in self.params if isinstance(p, cls))

    @property
    def anonymous(self) -> bool:
        """The A control bit: the sender's HI is anonymous (RFC 7401 5.1.2)."""
        return bool(self.controls & CONTROL_ANONYMOUS)


# --- checksum ----------------------------------------------------------------------------


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        # RFC 793-style: source, destination, zero, protocol, 16-bit length.
        return src.packed + dst.packed + struct.pack("!BBH", 0, HIP_PROTOCOL, length)
    if isinstance(src, ipaddress.IPv6Address) and isinstance(dst, ipaddress.IPv6Address):
        # RFC 8200 8.1: source, destination, 32-bit length, 3 zero bytes, next header.
        return src.packed + dst.packed + struct.pack("!I3xB", length, HIP_PROTOCOL)
    raise EncodeError(
        f"source {src!r} and destination {dst!r} must both be IPv4Address or both IPv6Address"
    )


def checksum(hip_bytes: bytes, src: IPAddress, dst: IPAddress) -> int:
    """The Internet checksum of ``hip_bytes`` (with its checksum field as given) and the
    pseudo-header.  Zero the checksum field to compute; a valid packet sums to 0."""
    total = _ones_complement_sum(_pseudo_header(src, dst, len(hip_bytes)) + hip_bytes)
    return (~total) & 0xFFFF


# --- serialize ---------------------------------------------------------------------------


def _wire_of(packet: HIPPacket, param: Param) -> bytes:
    for seen in packet.wire:
        if seen.param is param:
            return seen.raw
    return encode_param(param)


def _header(packet: HIPPacket, body_length: int, receiver_hit: bytes) -> bytes:
    for name, hit in (("sender", packet.sender_hit), ("receiver", receiver_hit)):
        if not isinstance(hit, bytes | bytearray) or len(hit) != 16:
            raise EncodeError(f"{name} HIT must be 16 bytes, got {hit!r}")
    total = HEADER_LENGTH + body_length
    if total > MAX_PACKET_LENGTH:
        raise EncodeError(
            f"HIP packet would be {total} bytes; the Header Length field allows at most "
            f"{MAX_PACKET_LENGTH}"
        )
    if not 0 <= packet.version <= 15:
        raise EncodeError(f"HIP version must fit 4 bits, got {packet.version}")
    if not 0 <= packet.next_header <= 0xFF or not 0 <= packet.controls <= 0xFFFF:
        raise EncodeError(
            f"next header {packet.next_header} or controls {packet.controls} out of range"
        )
    try:
        packet_type = PacketType(packet.packet_type)
    except ValueError:
        raise EncodeError(f"unknown HIP packet type {packet.packet_type!r}") from None
    return struct.pack(
        "!BBBBHH",
        packet.next_header,
        total // 8 - 1,
        int(packet_type) & 0x7F,  # top bit: fixed 0
        (packet.version << 4) | ((packet.reserved & 0x07) << 1) | 0x01,  # last bit fixed 1
        0,
        packet.controls,
    ) + bytes(packet.sender_hit) + bytes(receiver_hit)


def serialize(packet: HIPPacket, src: IPAddress, dst: IPAddress) -> bytes:
    """The packet on the wire, with its checksum for the locators ``src`` → ``dst``.

    Raises :class:`hip.params.EncodeError` if a field does not fit or the parameters are
    not in ascending type order.
    """
    check_order(packet.params)
    body = b"".join(_wire_of(packet, p) for p in packet.params)
    data = bytearray(_header(packet, len(body), packet.receiver_hit) + body)
    struct.pack_into("!H", data, 4, checksum(bytes(data), src, dst))
    return bytes(data)


def integrity_bytes(
    packet: HIPPacket,
    upto: ParamType,
    *,
    extra_params: Iterable[Param] = (),
    zero_receiver_hit: bool = False,
) -> bytes:
    """The bytes a HIP_MAC, HIP_MAC_2, HIP_SIGNATURE or HIP_SIGNATURE_2 covers.

    RFC 7401 5.2.12-5.2.15 and 6.4: the packet with its checksum zeroed, holding only the
    parameters whose type is below ``upto`` (those before the MAC or signature) plus
    ``extra_params`` merged in type order (HIP_MAC_2 covers the sender's HOST_ID, which R2
    does not carry), and a Header Length counting exactly those parameters.

    For ``upto=ParamType.HIP_SIGNATURE_2`` (R1) the RFC 7401 5.2.15 zeroing is applied
    whatever the flags say: the Receiver's HIT and the PUZZLE's Opaque and Random #I are
    zero, so that R1s can be signed in advance.  ``zero_receiver_hit`` zeroes the
    Receiver's HIT for any ``upto``.
    """
    signature_2 = upto == ParamType.HIP_SIGNATURE_2
    chosen: list[tuple[int, bytes]] = []
    for p in packet.params:
        if p.param_type >= upto:
            continue
        if signature_2 and isinstance(p, Puzzle):
            chosen.append((p.param_type, encode_param(p.zeroed())))
        else:
            chosen.append((p.param_type, _wire_of(packet, p)))
    chosen.extend((p.param_type, encode_param(p)) for p in extra_params)
    chosen.sort(key=lambda item: item[0])  # stable: packet parameters first on a tie
    body = b"".join(raw for _type, raw in chosen)
    receiver = bytes(16) if (zero_receiver_hit or signature_2) else packet.receiver_hit
    return _header(packet, len(body), receiver) + body


# --- parse -------------------------------------------------------------------------------


def peek_packet_type(data: bytes) -> int | None:
    """The Packet Type of a would-be HIP packet, read without parsing or checking it.

    None when ``data`` is shorter than the fixed header.  It lets a receiver throttle
    I1s before paying for a parse and a checksum, and a sender tell R1s from the rest;
    the value is only a hint until :func:`parse` has checked the packet.
    """
    if len(data) < HEADER_LENGTH:
        return None
    return data[2] & 0x7F


def parse(
    data: bytes, src: IPAddress, dst: IPAddress, *, verify_checksum: bool = True
) -> HIPPacket:
    """Decode a HIP packet received from ``src`` for ``dst``.

    Raises :class:`hip.errors.ParseError` for a short packet, a Header Length that does not
    match the data, wrong fixed bits, a version other than 2, an unknown packet type, a bad
    checksum or a malformed parameter; :class:`hip.params.UnsupportedCriticalParam` (a
    ParseError) carries the decoded packet when an unknown critical parameter is present.
    """
    try:
        data = bytes(data)
    except (TypeError, ValueError) as exc:
        raise ParseError(f"HIP packet must be bytes, got {type(data).__name__}") from exc
    if len(data) < HEADER_LENGTH:
        raise ParseError(
            f"HIP packet is {len(data)} bytes, shorter than the {HEADER_LENGTH}-byte fixed "
            f"header (data {data.hex()})"
        )
    next_header, hdr_len, type_byte, version_byte = data[0], data[1], data[2], data[3]
    total = (hdr_len + 1) * 8
    if total < HEADER_LENGTH:
        raise ParseError(
            f"HIP Header Length {hdr_len} is below the minimum of 4 (two HITs) "
            f"(header {data[:8].hex()})"
        )
    if total > len(data):
        raise ParseError(
            f"HIP Header Length {hdr_len} means {total} bytes but the packet has {len(data)} "
            f"(header {data[:8].hex()})"
        )
    if total < len(data) and next_header == IPPROTO_NONE:
        # RFC 7401 5.1: trailing data is ignored only for an unimplemented Next Header;
        # with "no next header" it means the length field is wrong.
        raise ParseError(
            f"HIP Header Length {hdr_len} means {total} bytes but {len(data)} were received "
            f"and Next Header is {IPPROTO_NONE} (header {data[:8].hex()})"
        )
    if type_byte & 0x80:
        raise ParseError(f"HIP header fixed bit before Packet Type is 1 (header {data[:8].hex()})")
    if not version_byte & 0x01:
        raise ParseError(f"HIP header fixed last bit is 0 (header {data[:8].hex()})")
    version = version_byte >> 4
    if version != HIP_VERSION:
        raise ParseError(f"HIP version {version} is not supported, only {HIP_VERSION}")
    try:
        packet_type = PacketType(type_byte & 0x7F)
    except ValueError:
        raise ParseError(f"unknown HIP packet type {type_byte & 0x7F}") from None
    hip_bytes = data[:total]
    if verify_checksum:
        try:
            if checksum(hip_bytes, src, dst) != 0:
                got = struct.unpack_from("!H", hip_bytes, 4)[0]
                zeroed = hip_bytes[:4] + b"\x00\x00" + hip_bytes[6:]
                raise ParseError(
                    f"HIP checksum 0x{got:04x} is wrong for {src} -> {dst} "
                    f"(expected 0x{checksum(zeroed, src, dst):04x})"
                )
        except EncodeError as exc:
            raise ParseError(str(exc)) from exc
    controls = struct.unpack_from("!H", data, 6)[0]
    wire = [WireParam(decode_one(tlv.param_type, tlv.contents), tlv.raw)
            for tlv in iter_tlvs(hip_bytes[HEADER_LENGTH:])]
    packet = HIPPacket(
        packet_type=packet_type,
        sender_hit=data[8:24],
        receiver_hit=data[24:40],
        params=tuple(w.param for w in wire),
        controls=controls,
        version=version,
        next_header=next_header,
        wire=tuple(wire),
        reserved=(version_byte >> 1) & 0x07,
    )
    unknown = first_unknown_critical(packet.params)
    if unknown is not None:
        raise UnsupportedCriticalParam(unknown, packet)
    return packet
