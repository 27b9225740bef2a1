"""Userspace ESP (RFC 4303) with the BEET semantics HIP uses (RFC 7402).

Sans-I/O: :class:`OutboundSA` turns an inner IPv6 packet between two HITs into an ESP
payload (what follows the outer IP header, or the UDP header when encapsulated);
:class:`InboundSA` turns an ESP payload back into the inner packet, or drops it with a
counted reason.  Nothing here touches a socket or a clock; the IV source is injected.

Wire layout (RFC 4303 section 2)::

    SPI (4) | sequence number (4) | IV | ciphertext( payload | padding | pad length | next
    header ) | ICV

BEET (RFC 7402 section 3, and the BEET draft it builds on): the inner addresses are fixed
per security association, so only the inner *payload* travels; the receiver rebuilds the
inner IPv6 header from the HITs it holds for the SA.  Traffic class, flow label and hop
limit are not carried, exactly as with the kernel's BEET mode.
"""

from __future__ import annotations

import enum
import hmac
import os
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hip.crypto import ESP_SUITES, EspSuite
from hip.errors import CryptoError, DataPlaneError

#: ESP header: SPI and sequence number, both network order.
ESP_HEADER = struct.Struct("!II")
#: Fixed IPv6 header: version/class/flow, payload length, next header, hop limit, addresses.
IPV6_HEADER = struct.Struct("!IHBB16s16s")
#: Hop limit given to rebuilt inner packets (BEET does not carry the original).
INNER_HOP_LIMIT = 64
#: Default anti-replay window in packets (RFC 4303 section 3.4.3 recommends 64 as default).
DEFAULT_REPLAY_WINDOW = 64
#: Highest sequence number before the SA must be rekeyed (no ESN: 32-bit counter).
MAX_SEQUENCE = 0xFFFFFFFF


#: hashlib names of the HMAC hashes, by the ``auth_algorithm`` names of
#: :data:`hip.crypto.ESP_SUITES`.
_HMAC_HASHES: dict[str, str] = {"hmac-sha1": "sha1", "hmac-sha256": "sha256"}
#: Encryption algorithms this module implements, by the same table's ``enc_algorithm``.
_CIPHERS = frozenset({"null", "aes-cbc"})
#: The suites this userspace ESP implements: every one of :data:`hip.crypto.ESP_SUITES`
#: (the one table of transforms, shared with the kernel data plane and the negotiation)
#: whose algorithms are implemented here.  Combined-mode suites (AES-GCM, 13) are not in
#: that table, so they are neither negotiated nor implemented.
SUITES: dict[int, EspSuite] = {
    int(transform): suite
    for transform, suite in ESP_SUITES.items()
    if suite.enc_algorithm in _CIPHERS and suite.auth_algorithm in _HMAC_HASHES
}


def suite_by_id(suite_id: int) -> EspSuite:
    """Return the suite numbered ``suite_id`` or raise :class:`DataPlaneError`."""
    try:
        return SUITES[suite_id]
    except KeyError:
        raise DataPlaneError(
            f"ESP transform {suite_id!r} is not implemented by the userspace data plane; "
            f"negotiate one of {sorted(SUITES)}"
        ) from None


class DropReason(enum.Enum):
    """Why an inbound ESP packet was discarded.  Each is counted per SA."""

    TRUNCATED = "truncated"
    UNKNOWN_SPI = "unknown-spi"
    BAD_ICV = "bad-icv"
    REPLAY = "replay"
    BAD_PADDING = "bad-padding"
    BAD_INNER = "bad-inner-packet"


@dataclass
class ReplayWindow:
    """The anti-replay sliding window of RFC 4303 section 3.4.3 (no ESN).

    ``top`` is the highest authenticated sequence number; bit ``i`` of ``bitmap`` is set
    when ``top - i`` was received.  :meth:`check` runs before the ICV is verified (cheap
    rejection); :meth:`accept` runs only after, so forged packets cannot move the window.
    """

    size: int = DEFAULT_REPLAY_WINDOW
    top: int = 0
    bitmap: int = 0

    def check(self, seq: int) -> bool:
        """True if ``seq`` is new and inside or ahead of the window."""
        if seq == 0:
            return False  # the first packet of an SA carries 1; 0 is never sent
        if seq > self.top:
            return True
        offset = self.top - seq
        if offset >= self.size:
            return False
        return not (self.bitmap >> offset) & 1

    def accept(self, seq: int) -> None:
        """Record an authenticated ``seq``."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1)
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)


@dataclass
class SACounters:
    """Packets and bytes through one SA, and drops by reason."""

    packets: int = 0
    bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready copy."""
        return {"packets": self.packets, "bytes": self.bytes, "dropped": dict(self.dropped)}


@dataclass(frozen=True)
class InnerPacket:
    """An inner IPv6 packet between two HITs, as BEET sees it."""

    src: IPv6Address
    dst: IPv6Address
    next_header: int
    payload: bytes


@dataclass(frozen=True)
class EspPlain:
    """What an ESP payload decrypts to: the protocol number and its bytes."""

    next_header: int
    payload: bytes


def split_inner(packet: bytes) -> InnerPacket:
    """Split an inner IPv6 packet into (source, destination, next header, payload).

    Extension headers, if any, stay in the payload and ``next header`` names the first of
    them, so they survive the BEET round trip unchanged.
    """
    if len(packet) < IPV6_HEADER.size or packet[0] >> 4 != 6:
        raise DataPlaneError(
            f"inner packet is not IPv6 (first byte {packet[:1].hex() or 'none'}); "
            "only HIT-to-HIT IPv6 traffic goes through the HIP data plane"
        )
    _vtf, plen, nh, _hop, src, dst = IPV6_HEADER.unpack_from(packet)
    payload = packet[IPV6_HEADER.size : IPV6_HEADER.size + plen]
    if len(payload) != plen:
        raise DataPlaneError(
            f"inner IPv6 packet truncated: payload length {plen}, have {len(payload)}"
        )
    return InnerPacket(IPv6Address(src), IPv6Address(dst), nh, payload)


def build_inner(src: IPv6Address, dst: IPv6Address, next_header: int, payload: bytes) -> bytes:
    """Rebuild the inner IPv6 packet the BEET way (fixed addresses, default hop limit)."""
    header = IPV6_HEADER.pack(
        6 << 28, len(payload), next_header, INNER_HOP_LIMIT, src.packed, dst.packed
    )
    return header + payload


def _pad(body_length: int, block: int) -> bytes:
    """RFC 4303 section 2.4 padding: 1, 2, 3, ... so that body+pad+2 fills whole blocks."""
    pad_len = (-(body_length + 2)) % block
    return bytes(range(1, pad_len + 1))


@dataclass
class OutboundSA:
    """One outbound security association: encrypts inner packets into ESP payloads."""

    spi: int
    suite: EspSuite
    enc_key: bytes
    auth_key: bytes
    #: The HITs this SA carries (inner source = our HIT, inner destination = peer's).
    src_hit: IPv6Address
    dst_hit: IPv6Address
    random: Callable[[int], bytes] = os.urandom
    seq: int = 0
    counters: SACounters = field(default_factory=SACounters)

    def __post_init__(self) -> None:
        _check_keys(self.suite, self.enc_key, self.auth_key, self.spi)

    def encrypt(self, inner: bytes) -> bytes:
        """Encapsulate the inner IPv6 packet ``inner`` (from our HIT to the peer's HIT)."""
        packet = split_inner(inner)
        if packet.src != self.src_hit or packet.dst != self.dst_hit:
            raise DataPlaneError(
                f"packet {packet.src} -> {packet.dst} does not belong to SA {self.spi:#010x} "
                f"({self.src_hit} -> {self.dst_hit})"
            )
        return self.seal(packet.next_header, packet.payload)

    def seal(self, next_header: int, payload: bytes) -> bytes:
        """Build the ESP payload carrying ``payload`` whose protocol is ``next_header``."""
        if self.seq >= MAX_SEQUENCE:
            raise DataPlaneError(
                f"SA {self.spi:#010x} has used every sequence number; it must be rekeyed"
            )
        self.seq += 1
        header = ESP_HEADER.pack(self.spi, self.seq)
        plain = payload + _pad(len(payload), self.suite.block_len) + bytes(
            [(-(len(payload) + 2)) % self.suite.block_len, next_header]
        )
        iv = self.random(self.suite.iv_len)
        cipher_text = _cbc(self.suite, self.enc_key, iv, plain, encrypt=True)
        body = header + iv + cipher_text
        out = body + _icv(self.suite, self.auth_key, body)
        self.counters.packets += 1
        self.counters.bytes += len(payload)
        return out


@dataclass
class InboundSA:
    """One inbound security association: decrypts ESP payloads, drops bad ones."""

    spi: int
    suite: EspSuite
    enc_key: bytes
    auth_key: bytes
    #: The HITs of the inner packets rebuilt (source = peer's HIT, destination = ours).
    src_hit: IPv6Address
    dst_hit: IPv6Address
    window: ReplayWindow = field(default_factory=ReplayWindow)
    counters: SACounters = field(default_factory=SACounters)

    def __post_init__(self) -> None:
        _check_keys(self.suite, self.enc_key, self.auth_key, self.spi)

    def decrypt(self, data: bytes) -> bytes | None:
        """Return the inner IPv6 packet in ``data``, or ``None`` (drop counted)."""
        opened = self.open(data)
        if opened is None:
            return None
        return build_inner(self.src_hit, self.dst_hit, opened.next_header, opened.payload)

    def open(self, data: bytes) -> EspPlain | None:
        """Verify and decrypt ``data``; return its protocol and payload, or ``None``."""
        suite = self.suite
        minimum = ESP_HEADER.size + suite.iv_len + suite.icv_len + suite.block_len
        if len(data) < minimum:
            return self._drop(DropReason.TRUNCATED)
        spi, seq = ESP_HEADER.unpack_from(data)
        if spi != self.spi:
            return self._drop(DropReason.UNKNOWN_SPI)
        if not self.window.check(seq):
            return self._drop(DropReason.REPLAY)
        iv = data[ESP_HEADER.size : ESP_HEADER.size + suite.iv_len]
        body, icv = data[: -suite.icv_len], data[-suite.icv_len :]
        if not hmac.compare_digest(icv, _icv(suite, self.auth_key, body)):
            return self._drop(DropReason.BAD_ICV)
        cipher_text = body[ESP_HEADER.size + suite.iv_len :]
        if len(cipher_text) % suite.block_len:
            return self._drop(DropReason.TRUNCATED)
        plain = _cbc(suite, self.enc_key, iv, cipher_text, encrypt=False)
        if len(plain) < 2:
            return self._drop(DropReason.TRUNCATED)
        pad_len, nh = plain[-2], plain[-1]
        if pad_len + 2 > len(plain) or plain[-2 - pad_len : -2] != bytes(range(1, pad_len + 1)):
            return self._drop(DropReason.BAD_PADDING)
        # Only now, authenticated, may the packet move the replay window.
        self.window.accept(seq)
        payload = plain[: -2 - pad_len]
        self.counters.packets += 1
        self.counters.bytes += len(payload)
        return EspPlain(nh, payload)

    def _drop(self, reason: DropReason) -> EspPlain | None:
        self.counters.dropped[reason.value] += 1
        return None


def _check_keys(suite: EspSuite, enc_key: bytes, auth_key: bytes, spi: int) -> None:
    if not 256 <= spi <= 0xFFFFFFFF:
        # RFC 4303 section 2.1: SPIs 1-255 are reserved, 0 is local-only.
        raise DataPlaneError(f"SPI {spi!r} is reserved or out of range; use 256..2**32-1")
    if len(enc_key) != suite.enc_key_len or len(auth_key) != suite.auth_key_len:
        raise CryptoError(
            f"ESP transform {int(suite.transform)} ({suite.enc_algorithm} with "
            f"{suite.auth_algorithm}) needs a {suite.enc_key_len}-byte encryption key and a "
            f"{suite.auth_key_len}-byte integrity key, got {len(enc_key)} and {len(auth_key)}"
        )


def _cbc(suite: EspSuite, key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    if suite.enc_algorithm == "null":
        return data
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def _icv(suite: EspSuite, key: bytes, body: bytes) -> bytes:
    digest = hmac.new(key, body, _HMAC_HASHES[suite.auth_algorithm]).digest()
    # HMAC-SHA1-96 (RFC 2404) and HMAC-SHA-256-128 (RFC 4868) are truncations.
    return digest[: suite.icv_len]
