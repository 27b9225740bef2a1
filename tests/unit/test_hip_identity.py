"""Host identities: encodings, HITs, signatures, PEM files, hostile HOST_ID input."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from hip.errors import HIPError, IdentityError
from hip.identity import (
    HIAlgorithm,
    HitSuite,
    HostIdentity,
    PublicHostIdentity,
    hit_suite_from_list_id,
    hit_suite_list_id,
)
from hip.orchid import is_orchid, ogaid_of
from hip.random import SeededRandom

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "hip-crypto"
SEEDED_KINDS = ["ecdsa-p256", "ecdsa-p384", "ed25519", "ed448"]
EXPECTED = {
    "ecdsa-p256": (HIAlgorithm.ECDSA, HitSuite.ECDSA_SHA384, "sha384", 67, 64),
    "ecdsa-p384": (HIAlgorithm.ECDSA, HitSuite.ECDSA_SHA384, "sha384", 99, 96),
    "ed25519": (HIAlgorithm.EDDSA, HitSuite.EDDSA_CSHAKE128, "cshake128", 34, 64),
    "ed448": (HIAlgorithm.EDDSA, HitSuite.EDDSA_CSHAKE128, "cshake128", 59, 114),
    "rsa": (HIAlgorithm.RSA, HitSuite.RSA_DSA_SHA256, "sha256", 260, 256),
}


@pytest.fixture(scope="module")
def identities() -> dict[str, HostIdentity]:
    ids = {k: HostIdentity.generate(k, SeededRandom(b"id-" + k.encode())) for k in SEEDED_KINDS}
    ids["rsa"] = HostIdentity.generate("rsa", rsa_bits=2048)
    return ids


def test_rfc_numbers() -> None:
    assert [int(a) for a in HIAlgorithm] == [3, 5, 7, 9, 13]
    assert [int(s) for s in HitSuite] == [1, 2, 3, 5]
    assert hit_suite_list_id(HitSuite.ECDSA_SHA384) == 0x20
    assert hit_suite_from_list_id(0x50) == 5
    with pytest.raises(IdentityError):
        hit_suite_list_id(16)


@pytest.mark.parametrize("kind", [*SEEDED_KINDS, "rsa"])
def test_hit_is_orchid_with_suite_ogaid(identities, kind: str) -> None:
    ident = identities[kind]
    alg, suite, rhash_name, enc_len, sig_len = EXPECTED[kind]
    pub = ident.public
    assert ident.kind == kind
    assert pub.algorithm is alg
    assert pub.signature_algorithm == int(alg)
    assert pub.hit_suite is suite
    assert pub.rhash_name == rhash_name
    assert len(pub.encoded) == enc_len
    assert is_orchid(ident.hit)
    assert ogaid_of(ident.hit) == int(suite)
    decoded = PublicHostIdentity.decode(int(alg), pub.encoded)
    assert decoded == pub and decoded.hit == pub.hit
    assert len(ident.sign(b"x")) == sig_len


@pytest.mark.parametrize("kind", [*SEEDED_KINDS, "rsa"])
def test_sign_verify_and_tamper_detection(identities, kind: str) -> None:
    ident, other = identities[kind], identities["ed25519" if kind != "ed25519" else "ed448"]
    data = b"HIP packet bytes up to HIP_SIGNATURE" * 3
    sig = ident.sign(data)
    assert ident.public.verify(sig, data)
    assert not ident.public.verify(sig, data + b"!")
    assert not ident.public.verify(sig[:-1] + bytes([sig[-1] ^ 1]), data)
    assert not ident.public.verify(sig[:-1], data)
    assert not ident.public.verify(b"", data)
    assert not other.public.verify(sig, data)


def test_seeded_generation_is_deterministic_and_pinned() -> None:
    doc = json.loads((DATA / "identity-seeded-hip-regression.json").read_text())
    assert doc["cases"]
    for case in doc["cases"]:
        ident = HostIdentity.generate(case["kind"], SeededRandom(case["seed"].encode()))
        assert ident.public.encoded.hex() == case["host_identity"]
        assert str(ipaddress.IPv6Address(ident.hit)) == case["hit"]
    a = HostIdentity.generate("ed25519", SeededRandom(b"one"))
    b = HostIdentity.generate("ed25519", SeededRandom(b"two"))
    assert a.hit != b.hit


def test_encodings_match_rfc_layouts(identities) -> None:
    p256 = identities["ecdsa-p256"].public
    nums = p256.public_key.public_numbers()  # type: ignore[union-attr]
    # RFC 7401 5.2.9: curve label, then the point in RFC 6090's octet-string format,
    # the uncompressed form 0x04 || x || y at the field size.
    assert p256.encoded == (
        b"\x00\x01\x04" + nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
    )
    assert identities["ecdsa-p384"].public.encoded[:3] == b"\x00\x02\x04"
    ed = identities["ed25519"].public
    raw = ed.public_key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert ed.encoded == b"\x00\x01" + raw
    assert identities["ed448"].public.encoded[:2] == b"\x00\x03"
    rsa_pub = identities["rsa"].public
    n = rsa_pub.public_key.public_numbers().n  # type: ignore[union-attr]
    # RFC 3110 section 2: e_len=3, e=65537, then the modulus
    assert rsa_pub.encoded == b"\x03\x01\x00\x01" + n.to_bytes(256, "big")


def test_ecdsa_signature_is_raw_r_s_over_sha384(identities) -> None:
    ident = identities["ecdsa-p256"]
    sig = ident.sign(b"data")
    assert len(sig) == 64  # r | s, 32 bytes each (RFC 7401 5.2.11: no DER)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    # cryptography's verify raises InvalidSignature unless r, s sign SHA-384 of the data.
    ident.public.public_key.verify(der, b"data", ec.ECDSA(hashes.SHA384()))  # type: ignore
    with pytest.raises(InvalidSignature):
        ident.public.public_key.verify(der, b"data", ec.ECDSA(hashes.SHA256()))  # type: ignore


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384"])
def test_ecdsa_host_id_both_forms_accepted_hit_over_bytes_as_received(identities, kind) -> None:
    pub = identities[kind].public
    with_octet = pub.encoded
    legacy = with_octet[:2] + with_octet[3:]  # curve label, x, y: what xenwam sent before
    for encoded in (with_octet, legacy):
        got = PublicHostIdentity.decode(int(HIAlgorithm.ECDSA), encoded)
        assert got.encoded == encoded
        assert got.public_key.public_numbers() == pub.public_key.public_numbers()  # type: ignore
        assert got.verify(identities[kind].sign(b"m"), b"m")
    # The HIT is the ORCHID of the Host Identity field as received, so the two forms
    # of one key are two HITs; a peer's HIT must match what it puts in HOST_ID.
    old = PublicHostIdentity.decode(int(HIAlgorithm.ECDSA), legacy)
    assert old.hit != pub.hit
    assert PublicHostIdentity.decode(int(HIAlgorithm.ECDSA), with_octet).hit == pub.hit


def test_long_rsa_exponent_form_decodes() -> None:
    # RFC 3110 section 2: a zero first byte announces a 2-byte exponent length.
    n = (1 << 2047) | 1
    encoded = b"\x00\x00\x03\x01\x00\x01" + n.to_bytes(256, "big")
    pub = PublicHostIdentity.decode(5, encoded)
    assert pub.public_key.public_numbers().e == 65537  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("algorithm", "encoded", "message"),
    [
        (42, b"", "unknown"),
        (3, b"\x00" * 40, "not supported"),
        (9, b"\x00\x01" + b"\x00" * 40, "not supported"),
        (7, b"\x00", "curve label"),
        (7, b"\x00\x09" + bytes(64), "not supported"),
        (7, b"\x00\x01" + bytes(63), "65 bytes"),
        (7, b"\x00\x01\x02" + bytes(32), "65 bytes"),  # SEC1 compressed form: refused
        (7, b"\x00\x01\x05" + b"\x01" * 64, "0x04"),
        (7, b"\x00\x01" + b"\x01" * 64, "malformed"),
        (13, b"\x00\x01" + bytes(31), "not supported"),
        (13, b"\x00\x02" + bytes(32), "not supported"),
        (5, b"\x03\x01\x00\x01", "does not fit"),
        (5, b"\x01\x03" + bytes(16), "outside"),
        (5, b"\x00\x00", "truncated"),
    ],
)
def test_malformed_host_ids_refused(algorithm: int, encoded: bytes, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        PublicHostIdentity.decode(algorithm, encoded)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, 3, 5, 7, 9, 13, 255, 65535]), st.binary(max_size=300))
def test_decode_fuzz_raises_only_hip_errors(algorithm: int, encoded: bytes) -> None:
    try:
        pub = PublicHostIdentity.decode(algorithm, encoded)
    except HIPError:
        return
    # An all-zero signature over arbitrary data must be refused (ECDSA needs r, s > 0;
    # RSA padding cannot check out), and verify must say so rather than raise.
    assert pub.verify(b"\x00" * 64, b"data") is False
    assert is_orchid(pub.hit)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SEEDED_KINDS), st.integers(0, 200), st.integers(0, 255), st.booleans())
def test_mutated_valid_host_ids_raise_only_hip_errors(kind, pos, value, truncate) -> None:
    pub = HostIdentity.generate(kind, SeededRandom(b"fuzz-" + kind.encode())).public
    raw = bytearray(pub.encoded)
    pos %= len(raw)
    if truncate:
        del raw[pos:]
    else:
        raw[pos] = value
    try:
        decoded = PublicHostIdentity.decode(int(pub.algorithm), bytes(raw))
    except HIPError:
        return
    assert decoded.verify(b"sig", b"data") is False


def test_pem_round_trip_mode_and_refusals(identities, tmp_path: Path) -> None:
    for kind, ident in identities.items():
        path = tmp_path / f"{kind}.pem"
        ident.save_pem(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        loaded = HostIdentity.load_pem(path)
        assert loaded.hit == ident.hit and loaded.kind == kind
        assert loaded.public.verify(loaded.sign(b"m"), b"m")
        with pytest.raises(IdentityError, match="overwrite=True"):
            ident.save_pem(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left"

    path = tmp_path / "ecdsa-p256.pem"
    other = identities["ed25519"]
    other.save_pem(path, overwrite=True)
    assert HostIdentity.load_pem(path).hit == other.hit

    for mode in (0o644, 0o640, 0o602):
        os.chmod(path, mode)
        with pytest.raises(IdentityError, match=f"{mode:04o}.*chmod 600"):
            HostIdentity.load_pem(path)
    os.chmod(path, 0o600)

    link = tmp_path / "link.pem"
    link.symlink_to(path)
    with pytest.raises(IdentityError, match="cannot open"):
        HostIdentity.load_pem(link)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    os.chmod(garbage, 0o600)
    with pytest.raises(IdentityError, match="not an unencrypted PEM"):
        HostIdentity.load_pem(garbage)
    with pytest.raises(IdentityError, match="cannot open"):
        HostIdentity.load_pem(tmp_path / "missing.pem")


def test_unknown_kind_and_weak_rsa_refused() -> None:
    with pytest.raises(IdentityError, match="unknown identity kind 'dsa'"):
        HostIdentity.generate("dsa")
    with pytest.raises(IdentityError, match="2048"):
        HostIdentity.generate("rsa", rsa_bits=1024)


def test_from_public_key_matches_decode() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    pub = PublicHostIdentity.from_public_key(key)
    assert PublicHostIdentity.decode(13, pub.encoded) == pub
