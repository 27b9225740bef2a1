"""A minimal classic-libpcap writer for HIP packets (LINKTYPE_RAW), for the tshark tests.

Builds bytes only; the caller writes them.  Each record is an IPv4 or IPv6 datagram with
protocol 139 around a serialized HIP packet, so that tools such as tshark dissect it.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from hip.packet import HIP_PROTOCOL
from hip.params import EncodeError, IPAddress

__all__ = ["LINKTYPE_RAW", "PcapRecord", "ip_datagram", "pcap_bytes"]

LINKTYPE_RAW = 101  # raw IP; the version nibble tells IPv4 from IPv6
PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
SNAPLEN = 65535


@dataclass(frozen=True)
class PcapRecord:
    """One captured datagram and its capture time in seconds since the epoch."""

    data: bytes
    timestamp: float = 0.0


def _ipv4_header_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ip_datagram(
    payload: bytes, src: IPAddress, dst: IPAddress, *, protocol: int = HIP_PROTOCOL,
    ttl: int = 64,
) -> bytes:
    """``payload`` inside an IPv4 header (20 bytes, checksummed) or an IPv6 header."""
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        header = bytearray(
            struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, ttl,
                        protocol, 0, src.packed, dst.packed)
        )
        struct.pack_into("!H", header, 10, _ipv4_header_checksum(bytes(header)))
        return bytes(header) + payload
    if isinstance(src, ipaddress.IPv6Address) and isinstance(dst, ipaddress.IPv6Address):
        return struct.pack("!IHBB16s16s", 6 << 28, len(payload), protocol, ttl,
                           src.packed, dst.packed) + payload
    raise EncodeError(f"source {src!r} and destination {dst!r} must be of one IP version")


def pcap_bytes(records: Iterable[PcapRecord], *, linktype: int = LINKTYPE_RAW) -> bytes:
    """A whole pcap file: global header, then one record header and datagram per record."""
    out = [struct.pack("!IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, linktype)]
    for record in records:
        seconds = int(record.timestamp)
        micros = round((record.timestamp - seconds) * 1_000_000)
        length = len(record.data)
        out.append(struct.pack("!IIII", seconds, micros, min(length, SNAPLEN), length))
        out.append(record.data[:SNAPLEN])
    return b"".join(out)
