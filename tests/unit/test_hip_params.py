"""HIP parameters: golden vectors, round trips, order, padding, critical bit, bad input."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hip_strategies import PARAM_STRATEGIES
from hypothesis import given
from hypothesis import strategies as st

from hip import params as P
from hip.errors import ParseError

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data" / "hip"


def load_hex_vectors(name: str) -> dict[str, bytes]:
    """Read ``NAME HEX...`` lines; ``#`` starts a comment line."""
    vectors: dict[str, bytes] = {}
    for line in (DATA / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, hexpart = line.strip().partition(" ")
        vectors[key] = bytes.fromhex(hexpart.replace(" ", ""))
    return vectors


GOLDEN: dict[str, P.Param] = {
    "R1_COUNTER": P.R1Counter(0x0102030405060708),
    "PUZZLE": P.Puzzle(k=10, lifetime=37, opaque=b"\xbe\xef", random_i=b"\xaa" * 32),
    "SOLUTION": P.Solution(k=10, opaque=b"\xbe\xef", random_i=b"\xaa" * 32,
                           solution_j=b"\xbb" * 32),
    "SEQ": P.Seq(0x01020304),
    "ACK": P.Ack((1, 2)),
    "DH_GROUP_LIST": P.DHGroupList((9, 8, 7)),
    "DIFFIE_HELLMAN": P.DiffieHellman(7, bytes.fromhex("0102030405")),
    "HIP_CIPHER": P.HipCipher((4, 2)),
    "ENCRYPTED": P.Encrypted(bytes.fromhex("00112233")),
    "HOST_ID": P.HostId(hi_algorithm=7, host_identity=bytes.fromhex("0001aabbccdd"),
                        di_type=1, domain_identifier=b"a.b"),
    "HIT_SUITE_LIST": P.HitSuiteList((0x10, 0x20)),
    "CERT": P.Cert(1, 1, 1, 1, b"\x30\x82"),
    "NOTIFICATION": P.Notification(P.NotifyType.UNSUPPORTED_CRITICAL_PARAMETER_TYPE,
                                   b"\x02\x01"),
    "ECHO_REQUEST_SIGNED": P.EchoRequestSigned(b"\xca\xfe"),
    "ECHO_RESPONSE_SIGNED": P.EchoResponseSigned(b"\xca\xfe"),
    "TRANSPORT_FORMAT_LIST": P.TransportFormatList((P.TransportFormat.ESP,)),
    "ESP_TRANSFORM": P.EspTransform((9, 8)),
    "HIP_MAC": P.HipMac(b"\xcc" * 32),
    "HIP_MAC_2": P.HipMac2(b"\xcc" * 32),
    "HIP_SIGNATURE_2": P.HipSignature2(7, b"\xdd" * 4),
    "HIP_SIGNATURE": P.HipSignature(7, b"\xdd" * 4),
    "ECHO_RESPONSE_UNSIGNED": P.EchoResponseUnsigned(b"\xca\xfe"),
    "ECHO_REQUEST_UNSIGNED": P.EchoRequestUnsigned(b"\xca\xfe"),
    "LOCATOR_SET": P.LocatorSet((
        P.Locator(0, 1, True, 600, ipaddress.IPv6Address("2001:db8::1"), 0x11223344),
        P.Locator(0, 0, False, 600, ipaddress.IPv4Address("192.0.2.1")),
    )),
    "ESP_INFO": P.EspInfo(keymat_index=3, old_spi=0x100, new_spi=0x200),
}


def test_golden_file_covers_every_parameter_type() -> None:
    vectors = load_hex_vectors("rfc7401-params-golden.hex")
    assert set(vectors) == set(GOLDEN) == {t.name for t in P.ParamType}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vector_decodes_and_encodes(name: str) -> None:
    wire = load_hex_vectors("rfc7401-params-golden.hex")[name]
    expected = GOLDEN[name]
    assert P.decode_params(wire) == [expected]
    assert P.encode_param(expected) == wire
    assert expected.param_type == P.ParamType[name]


def test_parameter_type_numbers_match_the_iana_registry() -> None:
    # IANA "HIP Parameter Types" (RFC 7401 section 7, RFC 7402 section 7, RFC 8046 section 8).
    registry = {
        "ESP_INFO": 65, "R1_COUNTER": 129, "LOCATOR_SET": 193, "PUZZLE": 257,
        "SOLUTION": 321, "SEQ": 385, "ACK": 449, "DH_GROUP_LIST": 511, "DIFFIE_HELLMAN": 513,
        "HIP_CIPHER": 579, "ENCRYPTED": 641, "HOST_ID": 705, "HIT_SUITE_LIST": 715,
        "CERT": 768, "NOTIFICATION": 832, "ECHO_REQUEST_SIGNED": 897,
        "ECHO_RESPONSE_SIGNED": 961, "TRANSPORT_FORMAT_LIST": 2049, "ESP_TRANSFORM": 4095,
        "HIP_MAC": 61505, "HIP_MAC_2": 61569, "HIP_SIGNATURE_2": 61633, "HIP_SIGNATURE": 61697,
        "ECHO_REQUEST_UNSIGNED": 63661, "ECHO_RESPONSE_UNSIGNED": 63425,
    }
    assert {t.name: int(t) for t in P.ParamType} == registry


def test_notify_types_match_the_iana_registry() -> None:
    assert {t.name: int(t) for t in P.NotifyType} == {
        "UNSUPPORTED_CRITICAL_PARAMETER_TYPE": 1, "INVALID_SYNTAX": 7,
        "NO_DH_PROPOSAL_CHOSEN": 14, "INVALID_DH_CHOSEN": 15, "NO_HIP_PROPOSAL_CHOSEN": 16,
        "INVALID_HIP_CIPHER_CHOSEN": 17, "NO_ESP_PROPOSAL_CHOSEN": 18,
        "INVALID_ESP_TRANSFORM_CHOSEN": 19, "UNSUPPORTED_HIT_SUITE": 20,
        "AUTHENTICATION_FAILED": 24, "CHECKSUM_FAILED": 26, "HIP_MAC_FAILED": 28,
        "ENCRYPTION_FAILED": 32, "INVALID_HIT": 40, "BLOCKED_BY_POLICY": 42,
        "RESPONDER_BUSY_PLEASE_RETRY": 44, "LOCATOR_TYPE_UNSUPPORTED": 46,
        "I2_ACKNOWLEDGEMENT": 16384,
    }


@pytest.mark.parametrize("cls", list(PARAM_STRATEGIES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_parameter_round_trips(cls: type, data: st.DataObject) -> None:
    param = data.draw(PARAM_STRATEGIES[cls])
    value = param.encode_value()
    wire = P.encode_param(param)
    assert len(wire) % 8 == 0
    assert len(wire) == P.padded_length(len(value))
    assert wire[4 + len(value):] == bytes(len(wire) - 4 - len(value))  # zero padding
    assert P.decode_params(wire) == [param]
    if not isinstance(param, P.UnknownParam):
        assert type(param).decode_value(value) == param


def test_critical_bit_is_the_lowest_type_bit() -> None:
    assert P.is_critical(P.ParamType.ESP_INFO)
    assert P.is_critical(P.ParamType.HIP_SIGNATURE_2)
    assert not P.is_critical(P.ParamType.NOTIFICATION)
    assert not P.is_critical(P.ParamType.CERT)
    assert not P.is_critical(P.ParamType.ESP_TRANSFORM + 1)


def test_unknown_parameters_are_kept_and_critical_ones_found() -> None:
    wire = (P.encode_param(P.Seq(1))
            + P.encode_param(P.UnknownParam(1000, b"skip me"))
            + P.encode_param(P.UnknownParam(1001, b"must stop")))
    decoded = P.decode_params(wire)
    assert decoded == [P.Seq(1), P.UnknownParam(1000, b"skip me"),
                       P.UnknownParam(1001, b"must stop")]
    assert P.first_unknown_critical(decoded) == 1001
    assert P.first_unknown_critical(decoded[:2]) is None


def test_order_descending_is_rejected_and_repeats_allowed() -> None:
    seq, ack = P.encode_param(P.Seq(1)), P.encode_param(P.Ack((1,)))
    assert len(P.decode_params(seq + ack)) == 2
    echo = P.encode_param(P.EchoRequestSigned(b"a"))
    assert len(P.decode_params(echo + echo)) == 2  # same type: consecutive is fine
    with pytest.raises(ParseError, match="ascending type order"):
        P.decode_params(ack + seq)
    with pytest.raises(P.EncodeError, match="ascending type order"):
        P.encode_params([P.Ack((1,)), P.Seq(1)])


def test_padding_must_be_present_but_its_content_is_not_checked() -> None:
    wire = bytearray(P.encode_param(P.DHGroupList((9,))))  # 5 bytes + 3 padding
    with pytest.raises(ParseError, match="only 7 bytes remain"):
        P.decode_params(bytes(wire[:-1]))
    # RFC 7401 5.2.1: padding bytes "SHOULD NOT be checked by the receiver".
    wire[-1] = 0x55
    assert P.decode_params(bytes(wire)) == [P.DHGroupList((9,))]


def test_stray_bytes_after_the_last_parameter_are_rejected() -> None:
    with pytest.raises(ParseError, match="stray bytes"):
        P.decode_params(P.encode_param(P.Seq(1)) + b"\x00\x01")


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("0081000b 00000000 01020304050607 00", "R1_COUNTER"),  # 11 bytes, not 12
        ("01010004 0a25beef", "PUZZLE"),  # no #I at all
        ("01410007 0a00beef aabbcc 0000000000", "SOLUTION"),  # 3 bytes cannot split into I and J
        ("02010008 07 0009 0102030405 00000000", "public value length"),
        ("02c1000f 0009 1003 0007 0001aabbccdd 612e62 0000000000", "HI Length"),
        ("00c10014 00000400 00000258 000000000000000000000000", "only 12 remain"),
        ("00c10014 00000300 00000258 000000000000000000000000", "RFC 8046 4 requires 4"),
        ("0041000b 0000 0003 00000100 000002 00", "ESP_INFO"),
        ("01c10005 0000000100 00000000000000", "multiple of 4"),
        ("0fff0003 000009 00", "ESP_TRANSFORM"),
        ("f0410000 00000000", "HIP_MAC"),
    ],
)
def test_malformed_contents_raise_parse_error(hexdata: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        P.decode_params(bytes.fromhex(hexdata.replace(" ", "")))


def test_locator_keeps_unknown_locator_types_aside() -> None:
    raw = bytes.fromhex(
        "00c10028"
        "02020200 0000003c 11223344 55667788"  # type 2 (RFC 5770 transport), 2 units
        "00000400 00000258 20010db8000000000000000000000002"
        "00000000"  # padding
    )
    (ls,) = P.decode_params(raw)
    assert isinstance(ls, P.LocatorSet)
    assert ls.locators == (P.Locator(0, 0, False, 600, ipaddress.IPv6Address("2001:db8::2")),)
    assert ls.unsupported == (P.OpaqueLocator(2, 2, False, 60, bytes.fromhex("1122334455667788")),)


def test_ipv4_mapped_locator_address_is_canonical_ipv4() -> None:
    mapped = P.Locator(0, 0, False, 1, ipaddress.IPv6Address("::ffff:198.51.100.7"))
    assert mapped.address == ipaddress.IPv4Address("198.51.100.7")


@pytest.mark.parametrize(
    "bad",
    [
        P.Seq(2**32),
        P.R1Counter(-1),
        P.Puzzle(1, 1, b"\x00", b"\x00" * 32),  # opaque must be 2 bytes
        P.Solution(1, b"\x00\x00", b"\x00" * 32, b"\x00" * 20),
        P.Locator(0, 0, False, 1, ipaddress.IPv6Address("::1"), spi=5),
        P.Locator(0, 1, False, 1, ipaddress.IPv6Address("::1")),
        P.DHGroupList(()),
        P.HipCipher((70000,)),
        P.UnknownParam(70000, b""),
    ],
    ids=repr,
)
def test_values_that_do_not_fit_raise_encode_error(bad: object) -> None:
    with pytest.raises(P.EncodeError):
        if isinstance(bad, P.Locator):
            P.encode_param(P.LocatorSet((bad,)))
        else:
            P.encode_param(bad)  # type: ignore[arg-type]


def test_hit_suite_ids_sit_in_the_high_nibble() -> None:
    # RFC 7401 5.2.10: 8-bit ID field, the 4-bit HIT Suite ID in its high-order bits.
    suites = P.HitSuiteList.of_suites(2, 1)
    assert suites.suite_ids == (0x20, 0x10)
    assert suites.hit_suites == (2, 1)
    assert P.encode_param(suites) == bytes.fromhex("02cb0002 2010 0000".replace(" ", ""))
    with pytest.raises(P.EncodeError):
        P.HitSuiteList.of_suites(16)


def test_iter_tlvs_gives_records_with_contents_and_raw_bytes() -> None:
    area = P.encode_params([P.R1Counter(7), P.DHGroupList((7, 12, 8))])
    first, second = P.iter_tlvs(area)
    assert isinstance(first, P.Tlv) and first.param_type == int(P.ParamType.R1_COUNTER)
    assert first.contents == P.R1Counter(7).encode_value()
    assert first.raw == P.encode_param(P.R1Counter(7))
    assert second.contents == bytes([7, 12, 8]) and len(second.raw) == 8  # padded
    assert first.raw + second.raw == area
    with pytest.raises(AttributeError):
        first.raw = b""  # type: ignore[misc]  # frozen
