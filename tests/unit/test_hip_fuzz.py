"""Fuzzing the HIP decoders: nothing but hip.errors.ParseError may escape, and whatever is
accepted serializes back to the bytes it came from."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hip_strategies import PARAM_STRATEGIES, endpoints, packets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hip import params as P
from hip.errors import ParseError
from hip.packet import HIPPacket, checksum, integrity_bytes, parse, serialize

pytestmark = pytest.mark.unit

Endpoints = tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_parse_error(data: bytes, src: object, dst: object, verify: bool) -> HIPPacket | None:
    try:
        return parse(data, src, dst, verify_checksum=verify)  # type: ignore[arg-type]
    except ParseError:
        return None


def _check_exact_inverse(data: bytes, pkt: HIPPacket, src: object, dst: object) -> None:
    """Accepted input serializes back byte for byte (the checksum is recomputed)."""
    total = (data[1] + 1) * 8
    again = serialize(pkt, src, dst)  # type: ignore[arg-type]
    assert again[:4] == data[:4]
    assert again[6:] == data[6:total]
    # What a MAC or signature would cover is computable for anything accepted.
    for upto in (P.ParamType.HIP_MAC, P.ParamType.HIP_MAC_2, P.ParamType.HIP_SIGNATURE_2,
                 P.ParamType.HIP_SIGNATURE):
        covered = integrity_bytes(pkt, upto)
        assert (covered[1] + 1) * 8 == len(covered) <= total


@FUZZ
@given(data=st.binary(max_size=600), ends=endpoints, verify=st.booleans())
def test_parse_arbitrary_bytes(data: bytes, ends: Endpoints, verify: bool) -> None:
    src, dst = ends
    pkt = _parse_or_parse_error(data, src, dst, verify)
    if pkt is not None:
        _check_exact_inverse(data, pkt, src, dst)


@FUZZ
@given(data=st.binary(max_size=600))
def test_decode_params_arbitrary_bytes(data: bytes) -> None:
    try:
        decoded = P.decode_params(data)
    except ParseError:
        return
    # Whatever decodes re-encodes to the same TLVs (headers and contents byte for byte;
    # only padding, which carries nothing, is normalised to zeros) and decodes again
    # to the same parameters.
    again = P.encode_params(decoded)
    assert P.decode_params(again) == decoded
    original, reencoded = P.iter_tlvs(data), P.iter_tlvs(again)
    assert [(t.param_type, t.contents) for t in reencoded] == [
        (t.param_type, t.contents) for t in original]


# Parameter areas built from plausible TLV headers with arbitrary contents: this reaches
# every contents decoder, which raw random bytes almost never do.
known_types = st.sampled_from([int(t) for t in P.ParamType])


@st.composite
def tlv_areas(draw: st.DrawFn) -> bytes:
    types = sorted(draw(st.lists(st.one_of(known_types, st.integers(0, 0xFFFF)),
                                 min_size=1, max_size=5)))
    out = b""
    for t in types:
        value = draw(st.binary(max_size=80))
        length = draw(st.one_of(st.just(len(value)), st.integers(0, 0xFFFF)))
        pad = draw(st.one_of(st.just(bytes(P.padded_length(len(value)) - 4 - len(value))),
                             st.binary(max_size=8)))
        out += struct.pack("!HH", t, length) + value + pad
    return out


@FUZZ
@given(area=tlv_areas())
def test_decode_params_plausible_tlvs(area: bytes) -> None:
    try:
        decoded = P.decode_params(area)
    except ParseError:
        return
    # Whatever decodes also encodes (values decoded from the wire always fit their fields).
    for p in decoded:
        assert P.decode_params(P.encode_param(p)) == [p]


PARAM_CLASS_LIST = sorted(P.PARAM_CLASSES.values(), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", PARAM_CLASS_LIST, ids=[c.__name__ for c in PARAM_CLASS_LIST])
@settings(max_examples=150, deadline=None)
@given(value=st.binary(max_size=120))
def test_every_contents_decoder_on_arbitrary_bytes(cls: type, value: bytes) -> None:
    try:
        decoded = cls.decode_value(value)  # type: ignore[attr-defined]
    except ParseError:
        return
    assert cls.decode_value(decoded.encode_value()) == decoded  # type: ignore[attr-defined]


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            buf[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[at:at + draw(st.integers(1, 8))]
    return bytes(buf)


@st.composite
def mutated_packets(draw: st.DrawFn) -> tuple[bytes, IPv4Address | IPv6Address,
                                               IPv4Address | IPv6Address]:
    src, dst = draw(endpoints)
    wire = _mutate(serialize(draw(packets()), src, dst), draw)
    if draw(st.booleans()) and len(wire) >= 6:
        # Fix the checksum so the mutation reaches the parameter decoders.
        fixed = bytearray(wire)
        fixed[4:6] = b"\x00\x00"
        struct.pack_into("!H", fixed, 4, checksum(bytes(fixed), src, dst))
        wire = bytes(fixed)
    return wire, src, dst


@FUZZ
@given(case=mutated_packets(), verify=st.booleans())
def test_parse_mutated_valid_packets(
    case: tuple[bytes, IPv4Address | IPv6Address, IPv4Address | IPv6Address], verify: bool
) -> None:
    wire, src, dst = case
    pkt = _parse_or_parse_error(wire, src, dst, verify)
    if pkt is not None:
        _check_exact_inverse(wire, pkt, src, dst)


@FUZZ
@given(pkt=packets(), ends=endpoints)
def test_valid_packets_survive_their_own_checksum(pkt: HIPPacket, ends: Endpoints) -> None:
    src, dst = ends
    assert parse(serialize(pkt, src, dst), src, dst) == pkt


def test_strategies_cover_every_parameter_class() -> None:
    assert set(PARAM_STRATEGIES) == {*P.PARAM_CLASSES.values(), P.UnknownParam}
