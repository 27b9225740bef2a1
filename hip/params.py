"""HIP parameters (RFC 7401 section 5.2, RFC 7402 section 5.1, RFC 8046 section 4).

Every parameter is a frozen dataclass with ``encode_value()`` / ``decode_value()`` for its
*contents* (the part after the 4-byte Type/Length header, before the padding).
:func:`encode_param` adds the TLV header and the zero padding to a multiple of 8 bytes
(RFC 7401 5.2.1); :func:`decode_params` reads a whole parameter area.

Decoding rules (RFC 7401 5.2.1):

* the Length field must fit the data and the padding must be present (its *content* is not
  checked: "their values SHOULD NOT be checked by the receiver");
* types must not decrease from one parameter to the next (RFC 7401 5.2.1 states no
  exception; parameters of the same type must be consecutive, which this also enforces);
* reserved fields are ignored when received, sent as zero;
* a parameter of a type this module does not know is returned as :class:`UnknownParam`.
  If its critical bit (``type & 1``) is set, the packet must not be processed further and
  the RFC asks for a NOTIFY with UNSUPPORTED_CRITICAL_PARAMETER_TYPE:
  :func:`first_unknown_critical` finds it, and ``hip.packet.parse`` raises
  :class:`UnsupportedCriticalParam` carrying the decoded packet so the state machine can
  address that NOTIFY.

Anything malformed raises :class:`hip.errors.ParseError` (or a subclass); nothing else
escapes the decoders.  Encoding a value that does not fit its field is our own misuse
and raises :class:`EncodeError`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Self, TypeAlias

from hip.errors import ParseError, ProtocolError

__all__ = [
    "Ack",
    "Cert",
    "DHGroupList",
    "DiffieHellman",
    "EchoRequestSigned",
    "EchoRequestUnsigned",
    "EchoResponseSigned",
    "EchoResponseUnsigned",
    "EncodeError",
    "Encrypted",
    "EspInfo",
    "EspTransform",
    "HipCipher",
    "HipMac",
    "HipMac2",
    "HipSignature",
    "HipSignature2",
    "HitSuiteList",
    "HostId",
    "IPAddress",
    "Locator",
    "LocatorSet",
    "LocatorType",
    "Notification",
    "NotifyType",
    "OpaqueLocator",
    "Param",
    "ParamType",
    "Puzzle",
    "R1Counter",
    "Seq",
    "Solution",
    "Tlv",
    "TrafficType",
    "TransportFormat",
    "TransportFormatList",
    "UnknownParam",
    "UnsupportedCriticalParam",
    "check_order",
    "decode_one",
    "decode_params",
    "encode_param",
    "encode_params",
    "first_unknown_critical",
    "is_critical",
    "iter_tlvs",
    "padded_length",
]


class EncodeError(ProtocolError, ValueError):
    """A parameter or packet value does not fit its wire field (our own misuse)."""


class UnsupportedCriticalParam(ParseError):
    """A critical parameter of an unknown type was received (RFC 7401 5.2.1).

    The receiver must stop processing the packet and may answer with a NOTIFY carrying
    UNSUPPORTED_CRITICAL_PARAMETER_TYPE and the type in its data.  ``packet`` is the
    decoded ``hip.packet.HIPPacket`` (set by ``hip.packet.parse``) so the caller knows
    whom to notify; it is ``None`` when raised outside packet parsing.
    """

    def __init__(self, param_type: int, packet: object | None = None) -> None:
        super().__init__(
            f"unsupported critical HIP parameter type {param_type}: the packet must be "
            "dropped and the sender may be sent NOTIFY UNSUPPORTED_CRITICAL_PARAMETER_TYPE"
        )
        self.param_type = param_type
        self.packet = packet


class ParamType(IntEnum):
    """Parameter type numbers (IANA "HIP Parameter Types"; RFC 7401, 7402, 8046)."""

    ESP_INFO = 65  # RFC 7402 5.1.1
    R1_COUNTER = 129
    LOCATOR_SET = 193  # RFC 8046 4
    PUZZLE = 257
    SOLUTION = 321
    SEQ = 385
    ACK = 449
    DH_GROUP_LIST = 511
    DIFFIE_HELLMAN = 513
    HIP_CIPHER = 579
    ENCRYPTED = 641
    HOST_ID = 705
    HIT_SUITE_LIST = 715
    CERT = 768  # RFC 7401 5.2.9 / RFC 8002
    NOTIFICATION = 832
    ECHO_REQUEST_SIGNED = 897
    ECHO_RESPONSE_SIGNED = 961
    TRANSPORT_FORMAT_LIST = 2049
    ESP_TRANSFORM = 4095  # RFC 7402 5.1.2
    HIP_MAC = 61505
    HIP_MAC_2 = 61569
    HIP_SIGNATURE_2 = 61633
    HIP_SIGNATURE = 61697
    # The unsigned echo pair is numbered out of alphabetical order in the registry:
    # the response (63425) sorts before the request (63661).
    ECHO_RESPONSE_UNSIGNED = 63425
    ECHO_REQUEST_UNSIGNED = 63661


class NotifyType(IntEnum):
    """NOTIFICATION message types (RFC 7401 5.2.19, RFC 7402 5.1.3, RFC 8046 5.4)."""

    UNSUPPORTED_CRITICAL_PARAMETER_TYPE = 1
    INVALID_SYNTAX = 7
    NO_DH_PROPOSAL_CHOSEN = 14
    INVALID_DH_CHOSEN = 15
    NO_HIP_PROPOSAL_CHOSEN = 16
    INVALID_HIP_CIPHER_CHOSEN = 17
    NO_ESP_PROPOSAL_CHOSEN = 18  # RFC 7402
    INVALID_ESP_TRANSFORM_CHOSEN = 19  # RFC 7402
    UNSUPPORTED_HIT_SUITE = 20
    AUTHENTICATION_FAILED = 24
    CHECKSUM_FAILED = 26
    HIP_MAC_FAILED = 28
    ENCRYPTION_FAILED = 32
    INVALID_HIT = 40
    BLOCKED_BY_POLICY = 42
    RESPONDER_BUSY_PLEASE_RETRY = 44
    LOCATOR_TYPE_UNSUPPORTED = 46  # RFC 8046
    I2_ACKNOWLEDGEMENT = 16384


class TransportFormat(IntEnum):
    """TRANSPORT_FORMAT_LIST entries: the parameter type that carries the format's data."""

    ESP = 4095  # RFC 7402: ESP_TRANSFORM's type number


class LocatorType(IntEnum):
    """LOCATOR_SET locator types understood here (RFC 8046 4)."""

    IPV6 = 0  # an IPv6 address or an IPv4-mapped IPv6 address
    ESP_SPI_IPV6 = 1  # a 32-bit ESP SPI followed by such an address


class TrafficType(IntEnum):
    """LOCATOR_SET traffic types (RFC 8046 4)."""

    BOTH = 0
    HIP_SIGNALING = 1
    ESP = 2


def is_critical(param_type: int) -> bool:
    """True when ``param_type`` has the critical bit (its least significant bit) set."""
    return bool(param_type & 1)


def padded_length(value_length: int) -> int:
    """Total on-wire length of a TLV whose contents are ``value_length`` bytes."""
    return (4 + value_length + 7) // 8 * 8


# --- small helpers -----------------------------------------------------------------------


def _uint(value: int, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise EncodeError(f"{what} must be an integer in 0..{(1 << bits) - 1}, got {value!r}")
    return value


def _bytes(value: bytes, what: str, *, length: int | None = None, limit: int = 0xFFFF) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise EncodeError(f"{what} must be bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise EncodeError(f"{what} must be {length} bytes long, got {len(value)}")
    if len(value) > limit:
        raise EncodeError(f"{what} is {len(value)} bytes long; at most {limit} fit")
    return bytes(value)


def _need(data: bytes, minimum: int, what: str) -> None:
    if len(data) < minimum:
        raise ParseError(
            f"{what}: contents are {len(data)} bytes, at least {minimum} are needed "
            f"(data {data[:32].hex()})"
        )


def _exact(data: bytes, length: int, what: str) -> None:
    if len(data) != length:
        raise ParseError(
            f"{what}: contents are {len(data)} bytes, exactly {length} are required "
            f"(data {data[:32].hex()})"
        )


def _multiple(data: bytes, unit: int, what: str, *, skip: int = 0) -> None:
    if (len(data) - skip) % unit:
        raise ParseError(
            f"{what}: {len(data) - skip} bytes of list entries is not a multiple of {unit} "
            f"(data {data[:32].hex()})"
        )


# --- the parameters ----------------------------------------------------------------------


class ParamBase:
    """Behaviour shared by all parameter dataclasses."""

    TYPE: ClassVar[ParamType]

    @property
    def param_type(self) -> int:
        """The parameter's type number on the wire."""
        return int(self.TYPE)

    def encode_value(self) -> bytes:  # pragma: no cover - every subclass overrides
        """Encode the parameter's contents (no TLV header, no padding)."""
        raise NotImplementedError


@dataclass(frozen=True)
class R1Counter(ParamBase):
    """R1_COUNTER (RFC 7401 5.2.3): 4 reserved bytes, then a 64-bit R1 generation counter."""

    TYPE: ClassVar[ParamType] = ParamType.R1_COUNTER
    counter: int

    def encode_value(self) -> bytes:
        return struct.pack("!IQ", 0, _uint(self.counter, 64, "R1_COUNTER counter"))

    @classmethod
    def decode_value(cls, data: bytes) -> R1Counter:
        _exact(data, 12, "R1_COUNTER")
        return cls(counter=struct.unpack_from("!Q", data, 4)[0])


@dataclass(frozen=True)
class Puzzle(ParamBase):
    """PUZZLE (RFC 7401 5.2.4): #K, Lifetime, 2-byte Opaque, Random #I of RHASH length."""

    TYPE: ClassVar[ParamType] = ParamType.PUZZLE
    k: int
    lifetime: int
    opaque: bytes
    random_i: bytes

    def encode_value(self) -> bytes:
        return (
            struct.pack("!BB", _uint(self.k, 8, "PUZZLE #K"),
                        _uint(self.lifetime, 8, "PUZZLE lifetime"))
            + _bytes(self.opaque, "PUZZLE opaque", length=2)
            + _bytes(self.random_i, "PUZZLE random #I", limit=0xFFFF - 4)
        )

    @classmethod
    def decode_value(cls, data: bytes) -> Puzzle:
        _need(data, 5, "PUZZLE")
        return cls(k=data[0], lifetime=data[1], opaque=data[2:4], random_i=data[4:])

    def zeroed(self) -> Puzzle:
        """This puzzle with Opaque and Random #I zeroed, as HIP_SIGNATURE_2 covers it."""
        return Puzzle(self.k, self.lifetime, bytes(2), bytes(len(self.random_i)))


@dataclass(frozen=True)
class Solution(ParamBase):
    """SOLUTION (RFC 7401 5.2.5): #K, reserved byte, Opaque, Random #I, solution #J.

    #I and #J are both RHASH-length, so the contents after the first 4 bytes split evenly.
    """

    TYPE: ClassVar[ParamType] = ParamType.SOLUTION
    k: int
    opaque: bytes
    random_i: bytes
    solution_j: bytes

    def encode_value(self) -> bytes:
        if len(self.random_i) != len(self.solution_j):
            raise EncodeError(
                f"SOLUTION #I ({len(self.random_i)} bytes) and #J ({len(self.solution_j)} "
                "bytes) must both be RHASH-length"
            )
        return (
            struct.pack("!BB", _uint(self.k, 8, "SOLUTION #K"), 0)
            + _bytes(self.opaque, "SOLUTION opaque", length=2)
            + _bytes(self.random_i, "SOLUTION random #I", limit=0x7FF0)
            + _bytes(self.solution_j, "SOLUTION #J", limit=0x7FF0)
        )

    @classmethod
    def decode_value(cls, data: bytes) -> Solution:
        _need(data, 6, "SOLUTION")
        if (len(data) - 4) % 2:
            raise ParseError(
                f"SOLUTION: {len(data) - 4} bytes of #I and #J cannot split into two "
                f"equal RHASH-length fields (data {data[:32].hex()})"
            )
        n = (len(data) - 4) // 2
        return cls(k=data[0], opaque=data[2:4], random_i=data[4:4 + n], solution_j=data[4 + n:])


@dataclass(frozen=True)
class Seq(ParamBase):
    """SEQ (RFC 7401 5.2.16): a 32-bit Update ID."""

    TYPE: ClassVar[ParamType] = ParamType.SEQ
    update_id: int

    def encode_value(self) -> bytes:
        return struct.pack("!I", _uint(self.update_id, 32, "SEQ update id"))

    @classmethod
    def decode_value(cls, data: bytes) -> Seq:
        _exact(data, 4, "SEQ")
        return cls(update_id=struct.unpack("!I", data)[0])


def _pack_list(values: Sequence[int], bits: int, what: str) -> bytes:
    if not isinstance(values, tuple | list):
        raise EncodeError(f"{what} must be a tuple of integers, got {values!r}")
    fmt = {8: "B", 16: "H", 32: "I"}[bits]
    return struct.pack(f"!{len(values)}{fmt}", *(_uint(v, bits, what) for v in values))


def _unpack_list(data: bytes, bits: int, what: str) -> tuple[int, ...]:
    unit = bits // 8
    _multiple(data, unit, what)
    fmt = {8: "B", 16: "H", 32: "I"}[bits]
    return tuple(struct.unpack(f"!{len(data) // unit}{fmt}", data))


@dataclass(frozen=True)
class Ack(ParamBase):
    """ACK (RFC 7401 5.2.17): the peer Update IDs acknowledged, 32 bits each."""

    TYPE: ClassVar[ParamType] = ParamType.ACK
    update_ids: tuple[int, ...]

    def encode_value(self) -> bytes:
        if not self.update_ids:
            raise EncodeError("ACK must acknowledge at least one update id")
        return _pack_list(self.update_ids, 32, "ACK update id")

    @classmethod
    def decode_value(cls, data: bytes) -> Ack:
        _need(data, 4, "ACK")
        return cls(update_ids=_unpack_list(data, 32, "ACK"))


@dataclass(frozen=True)
class DHGroupList(ParamBase):
    """DH_GROUP_LIST (RFC 7401 5.2.6): 8-bit DH Group IDs in preference order."""

    TYPE: ClassVar[ParamType] = ParamType.DH_GROUP_LIST
    group_ids: tuple[int, ...]

    def encode_value(self) -> bytes:
        if not self.group_ids:
            raise EncodeError("DH_GROUP_LIST needs at least one group id")
        return _pack_list(self.group_ids, 8, "DH_GROUP_LIST group id")

    @classmethod
    def decode_value(cls, data: bytes) -> DHGroupList:
        _need(data, 1, "DH_GROUP_LIST")
        return cls(group_ids=_unpack_list(data, 8, "DH_GROUP_LIST"))


@dataclass(frozen=True)
class DiffieHellman(ParamBase):
    """DIFFIE_HELLMAN (RFC 7401 5.2.7): Group ID, 16-bit Public Value Length, Public Value."""

    TYPE: ClassVar[ParamType] = ParamType.DIFFIE_HELLMAN
    group_id: int
    public_value: bytes

    def encode_value(self) -> bytes:
        pub = _bytes(self.public_value, "DIFFIE_HELLMAN public value", limit=0xFFFF - 3)
        return struct.pack("!BH", _uint(self.group_id, 8, "DIFFIE_HELLMAN group id"),
                           len(pub)) + pub

    @classmethod
    def decode_value(cls, data: bytes) -> DiffieHellman:
        _need(data, 3, "DIFFIE_HELLMAN")
        group_id, pv_len = struct.unpack_from("!BH", data)
        # The parameter's Length must be exactly the public value plus its 3-byte header:
        # RFC 7401 5.2.7 carries one public value (HIPv1 allowed two).
        _exact(data, 3 + pv_len, "DIFFIE_HELLMAN (public value length field)")
        return cls(group_id=group_id, public_value=data[3:])


@dataclass(frozen=True)
class HipCipher(ParamBase):
    """HIP_CIPHER (RFC 7401 5.2.8): 16-bit Cipher IDs in preference order."""

    TYPE: ClassVar[ParamType] = ParamType.HIP_CIPHER
    cipher_ids: tuple[int, ...]

    def encode_value(self) -> bytes:
        if not self.cipher_ids:
            raise EncodeError("HIP_CIPHER needs at least one cipher id")
        return _pack_list(self.cipher_ids, 16, "HIP_CIPHER cipher id")

    @classmethod
    def decode_value(cls, data: bytes) -> HipCipher:
        _need(data, 2, "HIP_CIPHER")
        return cls(cipher_ids=_unpack_list(data, 16, "HIP_CIPHER"))


@dataclass(frozen=True)
class Encrypted(ParamBase):
    """ENCRYPTED (RFC 7401 5.2.18): 4 reserved bytes, then IV and ciphertext.

    The IV length depends on the negotiated HIP cipher, so the crypto layer splits
    ``payload`` into IV and ciphertext.
    """

    TYPE: ClassVar[ParamType] = ParamType.ENCRYPTED
    payload: bytes

    def encode_value(self) -> bytes:
        return bytes(4) + _bytes(self.payload, "ENCRYPTED payload", limit=0xFFFF - 4)

    @classmethod
    def decode_value(cls, data: bytes) -> Encrypted:
        _need(data, 4, "ENCRYPTED")
        return cls(payload=data[4:])


@dataclass(frozen=True)
class HostId(ParamBase):
    """HOST_ID (RFC 7401 5.2.9).

    Layout: HI Length (16), DI-Type (4 bits) and DI Length (12 bits), Algorithm (16),
    Host Identity (HI Length bytes, not counting Algorithm), Domain Identifier.
    """

    TYPE: ClassVar[ParamType] = ParamType.HOST_ID
    hi_algorithm: int
    host_identity: bytes
    di_type: int = 0
    domain_identifier: bytes = b""

    def encode_value(self) -> bytes:
        hi = _bytes(self.host_identity, "HOST_ID host identity", limit=0xFFFF - 6)
        di = _bytes(self.domain_identifier, "HOST_ID domain identifier", limit=0xFFF)
        if 6 + len(hi) + len(di) > 0xFFFF:
            raise EncodeError("HOST_ID host identity and domain identifier are too long")
        return struct.pack(
            "!HHH",
            len(hi),
            (_uint(self.di_type, 4, "HOST_ID DI-type") << 12) | len(di),
            _uint(self.hi_algorithm, 16, "HOST_ID algorithm"),
        ) + hi + di

    @classmethod
    def decode_value(cls, data: bytes) -> HostId:
        _need(data, 6, "HOST_ID")
        hi_len, di_word, algorithm = struct.unpack_from("!HHH", data)
        di_len = di_word & 0x0FFF
        _exact(data, 6 + hi_len + di_len, "HOST_ID (HI Length + DI Length fields)")
        return cls(
            hi_algorithm=algorithm,
            host_identity=data[6:6 + hi_len],
            di_type=di_word >> 12,
            domain_identifier=data[6 + hi_len:],
        )


@dataclass(frozen=True)
class HitSuiteList(ParamBase):
    """HIT_SUITE_LIST (RFC 7401 5.2.10): 8-bit IDs, as they are on the wire.

    The 4-bit HIT Suite ID (the one in the HIT's OGA field) sits in the high-order nibble
    of each 8-bit ID, the low nibble being zero: suite 1 travels as 0x10.  Use
    :meth:`of_suites` and :attr:`hit_suites` to convert; tshark decodes it this way too.
    """

    TYPE: ClassVar[ParamType] = ParamType.HIT_SUITE_LIST
    suite_ids: tuple[int, ...]

    @classmethod
    def of_suites(cls, *suites: int) -> HitSuiteList:
        """The list for 4-bit HIT Suite IDs ``suites``, in preference order."""
        return cls(tuple(_uint(s, 4, "HIT Suite ID") << 4 for s in suites))

    @property
    def hit_suites(self) -> tuple[int, ...]:
        """The 4-bit HIT Suite IDs (high nibbles), in the sender's preference order."""
        return tuple(i >> 4 for i in self.suite_ids)

    def encode_value(self) -> bytes:
        if not self.suite_ids:
            raise EncodeError("HIT_SUITE_LIST needs at least one suite id")
        return _pack_list(self.suite_ids, 8, "HIT_SUITE_LIST suite id")

    @classmethod
    def decode_value(cls, data: bytes) -> HitSuiteList:
        _need(data, 1, "HIT_SUITE_LIST")
        return cls(suite_ids=_unpack_list(data, 8, "HIT_SUITE_LIST"))


@dataclass(frozen=True)
class Cert(ParamBase):
    """CERT (RFC 7401 5.2.9 / RFC 8002 2): group, count, id, type, certificate."""

    TYPE: ClassVar[ParamType] = ParamType.CERT
    cert_group: int
    cert_count: int
    cert_id: int
    cert_type: int
    certificate: bytes

    def encode_value(self) -> bytes:
        return struct.pack(
            "!BBBB",
            _uint(self.cert_group, 8, "CERT group"),
            _uint(self.cert_count, 8, "CERT count"),
            _uint(self.cert_id, 8, "CERT id"),
            _uint(self.cert_type, 8, "CERT type"),
        ) + _bytes(self.certificate, "CERT certificate", limit=0xFFFF - 4)

    @classmethod
    def decode_value(cls, data: bytes) -> Cert:
        _need(data, 4, "CERT")
        return cls(data[0], data[1], data[2], data[3], data[4:])


@dataclass(frozen=True)
class Notification(ParamBase):
    """NOTIFICATION (RFC 7401 5.2.19): 2 reserved bytes, Notify Message Type, data."""

    TYPE: ClassVar[ParamType] = ParamType.NOTIFICATION
    notify_type: int
    data: bytes = b""

    def encode_value(self) -> bytes:
        return struct.pack("!HH", 0, _uint(self.notify_type, 16, "NOTIFICATION type")) + _bytes(
            self.data, "NOTIFICATION data", limit=0xFFFF - 4
        )

    @classmethod
    def decode_value(cls, data: bytes) -> Notification:
        _need(data, 4, "NOTIFICATION")
        return cls(notify_type=struct.unpack_from("!H", data, 2)[0], data=data[4:])


@dataclass(frozen=True)
class _OpaqueParam(ParamBase):
    """A parameter whose contents are one opaque byte string (echo requests/responses)."""

    opaque: bytes

    def encode_value(self) -> bytes:
        return _bytes(self.opaque, f"{self.TYPE.name} opaque data")

    @classmethod
    def decode_value(cls, data: bytes) -> Self:
        return cls(opaque=data)


@dataclass(frozen=True)
class EchoRequestSigned(_OpaqueParam):
    """ECHO_REQUEST_SIGNED (RFC 7401 5.2.20): opaque data, covered by the signature."""

    TYPE: ClassVar[ParamType] = ParamType.ECHO_REQUEST_SIGNED


@dataclass(frozen=True)
class EchoResponseSigned(_OpaqueParam):
    """ECHO_RESPONSE_SIGNED (RFC 7401 5.2.22): the echoed opaque data, signed."""

    TYPE: ClassVar[ParamType] = ParamType.ECHO_RESPONSE_SIGNED


@dataclass(frozen=True)
class EchoRequestUnsigned(_OpaqueParam):
    """ECHO_REQUEST_UNSIGNED (RFC 7401 5.2.21): opaque data after the signature."""

    TYPE: ClassVar[ParamType] = ParamType.ECHO_REQUEST_UNSIGNED


@dataclass(frozen=True)
class EchoResponseUnsigned(_OpaqueParam):
    """ECHO_RESPONSE_UNSIGNED (RFC 7401 5.2.23): the echoed opaque data, unsigned."""

    TYPE: ClassVar[ParamType] = ParamType.ECHO_RESPONSE_UNSIGNED


@dataclass(frozen=True)
class TransportFormatList(ParamBase):
    """TRANSPORT_FORMAT_LIST (RFC 7401 5.2.11): 16-bit format types in preference order."""

    TYPE: ClassVar[ParamType] = ParamType.TRANSPORT_FORMAT_LIST
    format_types: tuple[int, ...]

    def encode_value(self) -> bytes:
        if not self.format_types:
            raise EncodeError("TRANSPORT_FORMAT_LIST needs at least one format type")
        return _pack_list(self.format_types, 16, "TRANSPORT_FORMAT_LIST type")

    @classmethod
    def decode_value(cls, data: bytes) -> TransportFormatList:
        _need(data, 2, "TRANSPORT_FORMAT_LIST")
        return cls(format_types=_unpack_list(data, 16, "TRANSPORT_FORMAT_LIST"))


@dataclass(frozen=True)
class _MacParam(ParamBase):
    hmac: bytes

    def encode_value(self) -> bytes:
        if not self.hmac:
            raise EncodeError(f"{self.TYPE.name} needs a non-empty HMAC")
        return _bytes(self.hmac, f"{self.TYPE.name} HMAC")


@dataclass(frozen=True)
class HipMac(_MacParam):
    """HIP_MAC (RFC 7401 5.2.12): HMAC over the packet up to this parameter."""

    TYPE: ClassVar[ParamType] = ParamType.HIP_MAC

    @classmethod
    def decode_value(cls, data: bytes) -> HipMac:
        _need(data, 1, "HIP_MAC")
        return cls(hmac=data)


@dataclass(frozen=True)
class HipMac2(_MacParam):
    """HIP_MAC_2 (RFC 7401 5.2.13): HMAC as HIP_MAC, but also over the sender's HOST_ID."""

    TYPE: ClassVar[ParamType] = ParamType.HIP_MAC_2

    @classmethod
    def decode_value(cls, data: bytes) -> HipMac2:
        _need(data, 1, "HIP_MAC_2")
        return cls(hmac=data)


@dataclass(frozen=True)
class _SignatureParam(ParamBase):
    algorithm: int
    signature: bytes

    def encode_value(self) -> bytes:
        return struct.pack("!H", _uint(self.algorithm, 16, f"{self.TYPE.name} algorithm")) + (
            _bytes(self.signature, f"{self.TYPE.name} signature", limit=0xFFFF - 2)
        )


@dataclass(frozen=True)
class HipSignature(_SignatureParam):
    """HIP_SIGNATURE (RFC 7401 5.2.14): 16-bit SIG algorithm, then the signature."""

    TYPE: ClassVar[ParamType] = ParamType.HIP_SIGNATURE

    @classmethod
    def decode_value(cls, data: bytes) -> HipSignature:
        _need(data, 3, "HIP_SIGNATURE")
        return cls(algorithm=struct.unpack_from("!H", data)[0], signature=data[2:])


@dataclass(frozen=True)
class HipSignature2(_SignatureParam):
    """HIP_SIGNATURE_2 (RFC 7401 5.2.15): as HIP_SIGNATURE, used in R1."""

    TYPE: ClassVar[ParamType] = ParamType.HIP_SIGNATURE_2

    @classmethod
    def decode_value(cls, data: bytes) -> HipSignature2:
        _need(data, 3, "HIP_SIGNATURE_2")
        return cls(algorithm=struct.unpack_from("!H", data)[0], signature=data[2:])


IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address_bytes(address: IPAddress) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        return bytes(10) + b"\xff\xff" + address.packed  # IPv4-mapped IPv6 (RFC 4291 2.5.5.2)
    if isinstance(address, ipaddress.IPv6Address):
        return address.packed
    raise EncodeError(f"locator address must be an IPv4Address or IPv6Address, got {address!r}")


def _address_from(raw: bytes) -> IPAddress:
    v6 = ipaddress.IPv6Address(raw)
    return v6.ipv4_mapped or v6


@dataclass(frozen=True)
class Locator:
    """One locator of a LOCATOR_SET (RFC 8046 4), of type 0 (address) or 1 (SPI + address).

    An IPv4 address travels as an IPv4-mapped IPv6 address; such an address is kept here
    as :class:`ipaddress.IPv4Address` so that decoding gives back what was encoded.
    ``spi`` is set exactly when ``locator_type`` is 1.
    """

    traffic_type: int
    locator_type: int
    preferred: bool
    lifetime: int
    address: IPAddress
    spi: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.address, ipaddress.IPv6Address) and self.address.ipv4_mapped:
            object.__setattr__(self, "address", self.address.ipv4_mapped)

    def encode(self) -> bytes:
        """The locator's wire form: 8-byte header and the locator field."""
        if self.locator_type == LocatorType.IPV6:
            if self.spi is not None:
                raise EncodeError("a LOCATOR_SET locator of type 0 carries no SPI")
            body = _address_bytes(self.address)
        elif self.locator_type == LocatorType.ESP_SPI_IPV6:
            if self.spi is None:
                raise EncodeError("a LOCATOR_SET locator of type 1 needs an SPI")
            body = struct.pack("!I", _uint(self.spi, 32, "locator SPI")) + _address_bytes(
                self.address
            )
        else:
            raise EncodeError(
                f"locator type {self.locator_type!r} is not 0 or 1; use OpaqueLocator for others"
            )
        return struct.pack(
            "!BBBBI",
            _uint(self.traffic_type, 8, "locator traffic type"),
            self.locator_type,
            len(body) // 4,
            1 if self.preferred else 0,
            _uint(self.lifetime, 32, "locator lifetime"),
        ) + body


@dataclass(frozen=True)
class OpaqueLocator:
    """A LOCATOR_SET entry of a locator type this module does not interpret.

    RFC 8046 defines NOTIFY LOCATOR_TYPE_UNSUPPORTED for these; the entry is kept so the
    state machine can decide, and so that the parameter can be encoded again.
    """

    traffic_type: int
    locator_type: int
    preferred: bool
    lifetime: int
    data: bytes

    def encode(self) -> bytes:
        """The entry's wire form."""
        data = _bytes(self.data, "opaque locator data", limit=0xFF * 4)
        if len(data) % 4:
            raise EncodeError("opaque locator data must be a multiple of 4 bytes long")
        if self.locator_type in (LocatorType.IPV6, LocatorType.ESP_SPI_IPV6):
            raise EncodeError("locator types 0 and 1 are encoded with Locator, not OpaqueLocator")
        return struct.pack(
            "!BBBBI",
            _uint(self.traffic_type, 8, "locator traffic type"),
            _uint(self.locator_type, 8, "locator type"),
            len(data) // 4,
            1 if self.preferred else 0,
            _uint(self.lifetime, 32, "locator lifetime"),
        ) + data


_LOCATOR_LENGTHS = {LocatorType.IPV6: 4, LocatorType.ESP_SPI_IPV6: 5}


@dataclass(frozen=True)
class LocatorSet(ParamBase):
    """LOCATOR_SET (RFC 8046 4): one or more locators.

    Each locator: Traffic Type (8), Locator Type (8), Locator Length (8, in 4-byte units),
    7 reserved bits and the P (preferred) bit, Locator Lifetime (32), Locator.
    ``unsupported`` holds the entries of other locator types; they are encoded after
    ``locators``.
    """

    TYPE: ClassVar[ParamType] = ParamType.LOCATOR_SET
    locators: tuple[Locator, ...]
    unsupported: tuple[OpaqueLocator, ...] = field(default=())

    def encode_value(self) -> bytes:
        entries: list[Locator | OpaqueLocator] = [*self.locators, *self.unsupported]
        if not entries:
            raise EncodeError("LOCATOR_SET needs at least one locator")
        return b"".join(e.encode() for e in entries)

    @classmethod
    def decode_value(cls, data: bytes) -> LocatorSet:
        _need(data, 8, "LOCATOR_SET")
        known: list[Locator] = []
        other: list[OpaqueLocator] = []
        off = 0
        while off < len(data):
            _need(data[off:], 8, f"LOCATOR_SET locator at offset {off}")
            traffic, ltype, units, flags, lifetime = struct.unpack_from("!BBBBI", data, off)
            body = data[off + 8:off + 8 + units * 4]
            if len(body) != units * 4:
                raise ParseError(
                    f"LOCATOR_SET locator at offset {off} claims {units * 4} bytes, only "
                    f"{len(body)} remain (data {data[:32].hex()})"
                )
            preferred = bool(flags & 1)
            if ltype in _LOCATOR_LENGTHS:
                if units != _LOCATOR_LENGTHS[LocatorType(ltype)]:
                    raise ParseError(
                        f"LOCATOR_SET locator of type {ltype} has Locator Length {units}; "
                        f"RFC 8046 4 requires {_LOCATOR_LENGTHS[LocatorType(ltype)]}"
                    )
                if ltype == LocatorType.IPV6:
                    known.append(Locator(traffic, ltype, preferred, lifetime, _address_from(body)))
                else:
                    spi = struct.unpack_from("!I", body)[0]
                    known.append(
                        Locator(traffic, ltype, preferred, lifetime, _address_from(body[4:]), spi)
                    )
            else:
                other.append(OpaqueLocator(traffic, ltype, preferred, lifetime, body))
            off += 8 + units * 4
        return cls(locators=tuple(known), unsupported=tuple(other))


@dataclass(frozen=True)
class EspInfo(ParamBase):
    """ESP_INFO (RFC 7402 5.1.1): reserved, KEYMAT Index, OLD SPI, NEW SPI."""

    TYPE: ClassVar[ParamType] = ParamType.ESP_INFO
    keymat_index: int
    old_spi: int
    new_spi: int

    def encode_value(self) -> bytes:
        return struct.pack(
            "!HHII",
            0,
            _uint(self.keymat_index, 16, "ESP_INFO keymat index"),
            _uint(self.old_spi, 32, "ESP_INFO old SPI"),
            _uint(self.new_spi, 32, "ESP_INFO new SPI"),
        )

    @classmethod
    def decode_value(cls, data: bytes) -> EspInfo:
        _exact(data, 12, "ESP_INFO")
        _res, index, old, new = struct.unpack("!HHII", data)
        return cls(keymat_index=index, old_spi=old, new_spi=new)


@dataclass(frozen=True)
class EspTransform(ParamBase):
    """ESP_TRANSFORM (RFC 7402 5.1.2): 2 reserved bytes, 16-bit Suite IDs."""

    TYPE: ClassVar[ParamType] = ParamType.ESP_TRANSFORM
    suite_ids: tuple[int, ...]

    def encode_value(self) -> bytes:
        if not self.suite_ids:
            raise EncodeError("ESP_TRANSFORM needs at least one suite id")
        return bytes(2) + _pack_list(self.suite_ids, 16, "ESP_TRANSFORM suite id")

    @classmethod
    def decode_value(cls, data: bytes) -> EspTransform:
        _need(data, 4, "ESP_TRANSFORM")
        return cls(suite_ids=_unpack_list(data[2:], 16, "ESP_TRANSFORM"))


@dataclass(frozen=True)
class UnknownParam:
    """A parameter of a type not known here, kept as raw contents."""

    type: int
    value: bytes

    @property
    def param_type(self) -> int:
        """The parameter's type number on the wire."""
        return self.type

    @property
    def critical(self) -> bool:
        """True when the receiver must not process the packet any further."""
        return is_critical(self.type)

    def encode_value(self) -> bytes:
        """The raw contents."""
        _uint(self.type, 16, "parameter type")
        return _bytes(self.value, "unknown parameter value")


Param: TypeAlias = (
    R1Counter
    | Puzzle
    | Solution
    | Seq
    | Ack
    | DHGroupList
    | DiffieHellman
    | HipCipher
    | Encrypted
    | HostId
    | HitSuiteList
    | Cert
    | Notification
    | EchoRequestSigned
    | EchoResponseSigned
    | EchoRequestUnsigned
    | EchoResponseUnsigned
    | TransportFormatList
    | HipMac
    | HipMac2
    | HipSignature
    | HipSignature2
    | LocatorSet
    | EspInfo
    | EspTransform
    | UnknownParam
)

PARAM_CLASSES: dict[int, type[ParamBase]] = {
    int(cls.TYPE): cls
    for cls in (
        R1Counter, Puzzle, Solution, Seq, Ack, DHGroupList, DiffieHellman, HipCipher,
        Encrypted, HostId, HitSuiteList, Cert, Notification, EchoRequestSigned,
        EchoResponseSigned, EchoRequestUnsigned, EchoResponseUnsigned, TransportFormatList,
        HipMac, HipMac2, HipSignature, HipSignature2, LocatorSet, EspInfo, EspTransform,
    )
}


def encode_param(param: Param) -> bytes:
    """One parameter as TLV: Type, Length, contents, zero padding to 8 bytes (RFC 7401 5.2.1)."""
    value = param.encode_value()
    if len(value) > 0xFFFF:
        raise EncodeError(f"{type(param).__name__} contents are {len(value)} bytes; max 65535")
    header = struct.pack("!HH", param.param_type, len(value))
    return header + value + bytes(padded_length(len(value)) - 4 - len(value))


def check_order(params: Iterable[Param]) -> None:
    """Raise :class:`EncodeError` unless the parameter types never decrease (RFC 7401 5.2.1)."""
    previous = -1
    for p in params:
        if p.param_type < previous:
            raise EncodeError(
                f"parameter {type(p).__name__} (type {p.param_type}) follows type {previous}: "
                "HIP parameters must be in ascending type order"
            )
        previous = p.param_type


def encode_params(params: Iterable[Param]) -> bytes:
    """A parameter area: the TLVs in order, after checking the order."""
    params = list(params)
    check_order(params)
    return b"".join(encode_param(p) for p in params)


def decode_one(param_type: int, value: bytes) -> Param:
    """Decode one parameter's contents; an unknown type becomes :class:`UnknownParam`."""
    cls = PARAM_CLASSES.get(param_type)
    if cls is None:
        return UnknownParam(type=param_type, value=value)
    try:
        decoded: Param = cls.decode_value(value)  # type: ignore[attr-defined]
    except ParseError:
        raise
    except (struct.error, ValueError, IndexError) as exc:
        raise ParseError(
            f"{cls.__name__} (type {param_type}) is malformed: {exc} (contents {value[:32].hex()})"
        ) from exc
    return decoded


@dataclass(frozen=True)
class Tlv:
    """One parameter as found on the wire, before its contents are interpreted."""

    param_type: int
    #: The Length bytes of contents.
    contents: bytes
    #: The whole TLV: header, contents and padding.
    raw: bytes


def iter_tlvs(data: bytes) -> list[Tlv]:
    """Split a parameter area into its TLVs.

    Checks lengths, padding presence and type order; does not interpret the contents.
    """
    out: list[Tlv] = []
    off = 0
    previous = -1
    while off < len(data):
        if len(data) - off < 4:
            raise ParseError(
                f"{len(data) - off} stray bytes at offset {off} of the parameter area "
                f"({data[off:].hex()}): too short for a parameter header"
            )
        param_type, length = struct.unpack_from("!HH", data, off)
        total = padded_length(length)
        if off + total > len(data):
            raise ParseError(
                f"parameter type {param_type} at offset {off} has Length {length} "
                f"({total} bytes with padding) but only {len(data) - off} bytes remain"
            )
        if param_type < previous:
            raise ParseError(
                f"parameter type {param_type} at offset {off} follows type {previous}: "
                "RFC 7401 5.2.1 requires ascending type order"
            )
        previous = param_type
        out.append(Tlv(param_type, data[off + 4:off + 4 + length], data[off:off + total]))
        off += total
    return out


def decode_params(data: bytes) -> list[Param]:
    """Decode a parameter area (everything after the fixed header).

    Raises :class:`ParseError` for malformed data.  Unknown types come back as
    :class:`UnknownParam`; see :func:`first_unknown_critical`.
    """
    return [decode_one(tlv.param_type, tlv.contents) for tlv in iter_tlvs(bytes(data))]


def first_unknown_critical(params: Iterable[Param]) -> int | None:
    """The type of the first unknown critical parameter, or ``None`` if there is none."""
    for p in params:
        if isinstance(p, UnknownParam) and p.critical:
            return p.type
    return None
