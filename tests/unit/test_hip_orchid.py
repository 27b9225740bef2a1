"""ORCHIDv2 HITs (RFC 7343; HIPv2 use in RFC 7401 3.2 and RFC 9374 3.5.2.1)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from pathlib import Path

import pytest

from hip.errors import IdentityError, ParseError
from hip.orchid import (
    HIP_CONTEXT_ID,
    ORCHID_PREFIX,
    hit_from_str,
    hit_to_str,
    is_orchid,
    make_orchid,
    ogaid_of,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "hip-crypto"


def _middle_96(digest: bytes) -> bytes:
    """Independent Encode_96: drop (len*8-96)/2 bits at each end, by byte slicing."""
    start = (len(digest) - 12) // 2  # every fixed hash here has an even byte surplus
    return digest[start : start + 12]


def test_constants_are_the_rfc_values() -> None:
    assert HIP_CONTEXT_ID.hex().upper() == "F0EFF02FBFF43D0FE7930C3C6E6174EA"
    assert ipaddress.IPv6Network("2001:20::/28") == ORCHID_PREFIX


@pytest.mark.parametrize(
    ("ogaid", "hash_name", "hasher"),
    [(1, "sha256", hashlib.sha256), (2, "sha384", hashlib.sha384), (3, "sha1", hashlib.sha1)],
)
def test_fixed_hash_orchid_matches_independent_construction(ogaid, hash_name, hasher) -> None:
    hi = bytes(range(70))
    hit = make_orchid(ogaid, hi, hash_name)
    expected = bytes([0x20, 0x01, 0x00, 0x20 | ogaid]) + _middle_96(
        hasher(HIP_CONTEXT_ID + hi).digest()
    )
    assert hit == expected
    assert is_orchid(hit)
    assert ogaid_of(hit) == ogaid
    assert ipaddress.IPv6Address(hit) in ORCHID_PREFIX


def test_xof_orchid_takes_96_bits_directly() -> None:
    hi = b"\x00\x01" + bytes(32)
    hit = make_orchid(5, hi, "cshake128")
    assert hit[4:] == hashlib.shake_128(HIP_CONTEXT_ID + hi).digest(12)
    assert ogaid_of(hit) == 5


def test_regression_vectors() -> None:
    vectors = json.loads((DATA / "orchid-hip-regression.json").read_text())
    assert vectors["cases"], "vector file must not be empty"
    for case in vectors["cases"]:
        hit = make_orchid(case["ogaid"], bytes.fromhex(case["input_hex"]), case["hash"])
        assert hit_to_str(hit) == case["hit"], case


def test_text_round_trip_and_refusals() -> None:
    hit = make_orchid(2, b"abc", "sha384")
    text = hit_to_str(hit)
    assert text.startswith("2001:22:")
    assert hit_from_str(text) == hit
    with pytest.raises(IdentityError, match="not a HIT"):
        hit_from_str("2001:db8::1")
    with pytest.raises(IdentityError, match="not an IPv6 address"):
        hit_from_str("hello")
    assert not is_orchid(bytes(16))
    assert not is_orchid(hit[:15])
    with pytest.raises(ParseError):
        ogaid_of(bytes(16))
    with pytest.raises(ParseError):
        hit_to_str(b"short")


def test_bad_ogaid_and_hash_refused() -> None:
    with pytest.raises(IdentityError, match="4 bits"):
        make_orchid(16, b"x", "sha256")
    with pytest.raises(IdentityError, match="unknown ORCHID hash"):
        make_orchid(1, b"x", "md5")
