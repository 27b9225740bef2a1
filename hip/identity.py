"""HIP host identities: public HIs as carried in HOST_ID, private keys, HITs, signatures.

Where every number and layout comes from:

* HI algorithm values -- RFC 7401 section 5.2.9 (DSA 3, RSA 5, ECDSA 7,
  ECDSA_LOW 9) and RFC 9374 section 3.4.1 Table 4 (EdDSA 13).  The same values
  fill HIP_SIGNATURE's SIG alg field (RFC 7401 section 5.2.14).
* HIT Suite IDs -- RFC 7401 section 5.2.10 (1 RSA,DSA/SHA-256, 2 ECDSA/SHA-384,
  3 ECDSA_LOW/SHA-1) and RFC 9374 section 3.4.2 Table 6 (5 EdDSA/cSHAKE128).  The
  suite follows from the HI algorithm; its id is the HIT's OGA id (RFC 7343).
  In HIT_SUITE_LIST each id fills the high 4 bits of an 8-bit field
  (RFC 7401 section 5.2.10), see :func:`hit_suite_list_id`.
* ECDSA curve labels -- RFC 7401 section 5.2.9: NIST P-256 = 1, NIST P-384 = 2;
  ECDSA_LOW SECP160R1 = 1.  EdDSA curve labels -- RFC 9374 section 3.4.1.1
  Table 5: EdDSA25519 = 1, EdDSA25519ph = 2, EdDSA448 = 3, EdDSA448ph = 4.
* Host Identity field encodings (what :attr:`PublicHostIdentity.encoded` holds and
  what the HIT is computed over, RFC 7401 section 3.2):
  RSA -- RFC 3110 section 2: exponent length (1 byte, or 0 then 2 bytes when the
  exponent is longer than 255 bytes), exponent, modulus, big-endian;
  ECDSA -- 2-byte curve label, then the public key in the octet-string format
  RFC 7401 5.2.9 points to (RFC 6090 section 6): the uncompressed point
  0x04 || x || y at the field size.  Received HOST_IDs may also carry x || y
  without the 0x04 octet (what xenwam sent before); both decode, and the HIT is
  the ORCHID of the bytes as received;
  EdDSA -- 2-byte curve label, then the RFC 8032 public key octets (RFC 9374
  3.4.1.1).  RFC 9374's figure draws a 16-bit "NULL" beside the curve; we read
  it, as for ECDSA, as the key following the label directly (see docs/hip.md).
* Signatures: ECDSA over RHASH of suite 2 (SHA-384), r || s each at the curve's
  order size, not DER (RFC 7401 5.2.14 points to RFC 4754's format); RSA is
  RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt (suite 1 RHASH);
  EdDSA is pure Ed25519/Ed448 (RFC 8032), no pre-hash.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from hip.crypto import RHASH_OF_HIT_SUITE, ec_scalar_from_random
from hip.errors import IdentityError
from hip.orchid import make_orchid
from hip.random import RandomSource, default_random

__all__ = [
    "IDENTITY_KINDS",
    "EcdsaCurve",
    "EddsaCurve",
    "HIAlgorithm",
    "HitSuite",
    "HostIdentity",
    "PublicHostIdentity",
    "hit_suite_from_list_id",
    "hit_suite_list_id",
]


class HIAlgorithm(IntEnum):
    """HI algorithm values of HOST_ID and HIP_SIGNATURE."""

    DSA = 3
    RSA = 5
    ECDSA = 7
    ECDSA_LOW = 9
    EDDSA = 13


class HitSuite(IntEnum):
    """HIT Suite IDs (4 bits; the HIT's OGA id)."""

    RSA_DSA_SHA256 = 1
    ECDSA_SHA384 = 2
    ECDSA_LOW_SHA1 = 3
    EDDSA_CSHAKE128 = 5


class EcdsaCurve(IntEnum):
    """ECDSA curve labels of HOST_ID (RFC 7401 5.2.9)."""

    NIST_P256 = 1
    NIST_P384 = 2


class EddsaCurve(IntEnum):
    """EdDSA curve labels of HOST_ID (RFC 9374 3.4.1.1, Table 5)."""

    ED25519 = 1
    ED25519PH = 2
    ED448 = 3
    ED448PH = 4


_SUITE_OF_ALGORITHM = {
    HIAlgorithm.DSA: HitSuite.RSA_DSA_SHA256,
    HIAlgorithm.RSA: HitSuite.RSA_DSA_SHA256,
    HIAlgorithm.ECDSA: HitSuite.ECDSA_SHA384,
    HIAlgorithm.ECDSA_LOW: HitSuite.ECDSA_LOW_SHA1,
    HIAlgorithm.EDDSA: HitSuite.EDDSA_CSHAKE128,
}

@dataclass(frozen=True)
class _EcdsaCurve:
    """A HIP ECDSA curve label's curve and coordinate size in bytes."""

    curve: ec.EllipticCurve
    size: int


_ECDSA_CURVES: dict[EcdsaCurve, _EcdsaCurve] = {
    EcdsaCurve.NIST_P256: _EcdsaCurve(ec.SECP256R1(), 32),
    EcdsaCurve.NIST_P384: _EcdsaCurve(ec.SECP384R1(), 48),
}
_EDDSA_KEY_LEN = {EddsaCurve.ED25519: 32, EddsaCurve.ED448: 57}

#: What :meth:`HostIdentity.generate` accepts.
IDENTITY_KINDS = ("ecdsa-p256", "ecdsa-p384", "ed25519", "ed448", "rsa")

_RSA_MIN_BITS = 1024  # accepted from peers; we generate 3072 by default
_RSA_MAX_BITS = 16384  # bound the work a peer's HOST_ID can cause
_RSA_PSS_SALT = 32

_PublicKey = (
    ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
_PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


def hit_suite_list_id(suite: int) -> int:
    """The 8-bit HIT_SUITE_LIST entry for a 4-bit suite id (suite in the high nibble)."""
    if not 0 < suite <= 0xF:
        raise IdentityError(f"HIT suite id {suite!r} must be 1-15")
    return suite << 4


def hit_suite_from_list_id(value: int) -> int:
    """The 4-bit suite id of an 8-bit HIT_SUITE_LIST entry."""
    return (value >> 4) & 0xF


def _rsa_encode(key: rsa.RSAPublicKey) -> bytes:
    nums = key.public_numbers()
    e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
    n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
    prefix = bytes([len(e)]) if len(e) <= 255 else b"\x00" + len(e).to_bytes(2, "big")
    return prefix + e + n


def _rsa_decode(encoded: bytes) -> rsa.RSAPublicKey:
    if len(encoded) < 2:
        raise IdentityError(f"RSA host identity of {len(encoded)} bytes is too short")
    if encoded[0]:
        e_len, off = encoded[0], 1
    else:
        if len(encoded) < 3:
            raise IdentityError("RSA host identity truncated in its exponent length")
        e_len, off = int.from_bytes(encoded[1:3], "big"), 3
    if e_len == 0 or off + e_len >= len(encoded):
        raise IdentityError(
            f"RSA host identity exponent length {e_len} does not fit {len(encoded)} bytes"
        )
    e = int.from_bytes(encoded[off : off + e_len], "big")
    n = int.from_bytes(encoded[off + e_len :], "big")
    if not _RSA_MIN_BITS <= n.bit_length() <= _RSA_MAX_BITS:
        raise IdentityError(
            f"RSA modulus of {n.bit_length()} bits is outside {_RSA_MIN_BITS}-{_RSA_MAX_BITS}"
        )
    return rsa.RSAPublicNumbers(e, n).public_key()


_SEC1_UNCOMPRESSED = b"\x04"


def _ecdsa_encode(key: ec.EllipticCurvePublicKey) -> bytes:
    for label, known in _ECDSA_CURVES.items():
        size = known.size
        if key.curve.name == known.curve.name:
            nums = key.public_numbers()
            return (
                label.to_bytes(2, "big")
                + _SEC1_UNCOMPRESSED
                + nums.x.to_bytes(size, "big")
                + nums.y.to_bytes(size, "big")
            )
    raise IdentityError(f"ECDSA curve {key.curve.name} is not a HIP curve (P-256, P-384)")


def _ecdsa_decode(encoded: bytes) -> ec.EllipticCurvePublicKey:
    if len(encoded) < 2:
        raise IdentityError("ECDSA host identity lacks its curve label")
    label = int.from_bytes(encoded[:2], "big")
    try:
        known = _ECDSA_CURVES[EcdsaCurve(label)]
    except ValueError:
        raise IdentityError(
            f"ECDSA curve label {label} is not supported; expected 1 (P-256) or 2 (P-384)"
        ) from None
    curve, size = known.curve, known.size
    point = encoded[2:]
    if len(point) == 2 * size:
        # x || y without the 0x04 octet: what xenwam sent before it followed RFC 7401
        # 5.2.9; accepted so that old peers still interoperate.
        point = _SEC1_UNCOMPRESSED + point
    elif len(point) != 1 + 2 * size:
        raise IdentityError(
            f"ECDSA {curve.name} public key must be {1 + 2 * size} bytes (0x04 || x || y) "
            f"or {2 * size} (x || y), got {len(point)}"
        )
    elif point[:1] != _SEC1_UNCOMPRESSED:
        raise IdentityError(
            f"ECDSA {curve.name} public key starts with 0x{point[0]:02x}, not 0x04 "
            "(only the uncompressed point form is defined for HOST_ID)"
        )
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def _eddsa_encode(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> bytes:
    label = EddsaCurve.ED25519 if isinstance(key, ed25519.Ed25519PublicKey) else EddsaCurve.ED448
    # public_bytes_raw() needs cryptography 40; Debian 12 guests carry 38.
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return label.to_bytes(2, "big") + raw


def _eddsa_decode(encoded: bytes) -> ed25519.Ed25519PublicKey | ed448.Ed448PublicKey:
    if len(encoded) < 2:
        raise IdentityError("EdDSA host identity lacks its curve label")
    label = int.from_bytes(encoded[:2], "big")
    raw = encoded[2:]
    if label == EddsaCurve.ED25519 and len(raw) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if label == EddsaCurve.ED448 and len(raw) == 57:
        return ed448.Ed448PublicKey.from_public_bytes(raw)
    raise IdentityError(
        f"EdDSA host identity with curve label {label} and a {len(raw)}-byte key is not "
        "supported; expected 1 (Ed25519, 32 bytes) or 3 (Ed448, 57 bytes)"
    )


def _algorithm_of(key: _PublicKey) -> HIAlgorithm:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return HIAlgorithm.ECDSA
    if isinstance(key, rsa.RSAPublicKey):
        return HIAlgorithm.RSA
    return HIAlgorithm.EDDSA


def _encode_key(key: _PublicKey) -> bytes:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _ecdsa_encode(key)
    if isinstance(key, rsa.RSAPublicKey):
        return _rsa_encode(key)
    return _eddsa_encode(key)


@dataclass(frozen=True)
class PublicHostIdentity:
    """A peer's (or our own) public Host Identity as carried in HOST_ID.

    Equality and hashing use only ``algorithm`` and ``encoded``.  Build one with
    :meth:`decode` (from the wire) or :meth:`from_public_key`.
    """

    algorithm: HIAlgorithm
    encoded: bytes
    _key: _PublicKey = field(compare=False, repr=False)
    _hit: bytes = field(compare=False, repr=False)

    @classmethod
    def decode(cls, algorithm: int, encoded: bytes) -> PublicHostIdentity:
        """Parse HOST_ID's algorithm and Host Identity field; IdentityError if malformed."""
        encoded = bytes(encoded)
        try:
            alg = HIAlgorithm(algorithm)
        except ValueError:
            raise IdentityError(
                f"HI algorithm {algorithm!r} is unknown; supported: RSA (5), ECDSA (7), EdDSA (13)"
            ) from None
        try:
            key: _PublicKey
            if alg is HIAlgorithm.RSA:
                key = _rsa_decode(encoded)
            elif alg is HIAlgorithm.ECDSA:
                key = _ecdsa_decode(encoded)
            elif alg is HIAlgorithm.EDDSA:
                key = _eddsa_decode(encoded)
            else:
                raise IdentityError(
                    f"HI algorithm {alg.name} is not supported (DSA and ECDSA_LOW/SECP160R1 "
                    "are not available); use RSA, ECDSA or EdDSA"
                )
        except IdentityError:
            raise
        except (ValueError, TypeError, OverflowError, UnsupportedAlgorithm) as exc:
            raise IdentityError(
                f"malformed {alg.name} host identity {encoded[:24].hex()}...: {exc}"
            ) from exc
        return cls._build(alg, encoded, key)

    @classmethod
    def from_public_key(cls, key: _PublicKey) -> PublicHostIdentity:
        """The HI of a ``cryptography`` public key."""
        return cls._build(_algorithm_of(key), _encode_key(key), key)

    @classmethod
    def _build(cls, alg: HIAlgorithm, encoded: bytes, key: _PublicKey) -> PublicHostIdentity:
        suite = _SUITE_OF_ALGORITHM[alg]
        hit = make_orchid(int(suite), encoded, RHASH_OF_HIT_SUITE[int(suite)])
        return cls(alg, encoded, key, hit)

    @property
    def hit(self) -> bytes:
        """The 16-byte ORCHIDv2 HIT."""
        return self._hit

    @property
    def hit_suite(self) -> HitSuite:
        """The HIT suite implied by the algorithm (also the HIT's OGA id)."""
        return _SUITE_OF_ALGORITHM[self.algorithm]

    @property
    def rhash_name(self) -> str:
        """RHASH of this identity's HIT suite ("sha256", "sha384", "sha1", "cshake128")."""
        return RHASH_OF_HIT_SUITE[int(self.hit_suite)]

    @property
    def signature_algorithm(self) -> int:
        """The SIG alg value for HIP_SIGNATURE (the HI algorithm, RFC 7401 5.2.14)."""
        return int(self.algorithm)

    @property
    def public_key(self) -> _PublicKey:
        """The ``cryptography`` public key object."""
        return self._key

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if ``signature`` is ours over ``data``; never raises for bad input."""
        signature, data = bytes(signature), bytes(data)
        key = self._key
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                size = (key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA384()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, data, _pss(), hashes.SHA256())
            else:
                key.verify(signature, data)
        except (InvalidSignature, ValueError, TypeError, OverflowError):
            return False
        return True


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_RSA_PSS_SALT)


class HostIdentity:
    """Our private Host Identity: signs HIP packets, saves and loads PEM files."""

    def __init__(self, private_key: _PrivateKey) -> None:
        self._private = private_key
        self.public = PublicHostIdentity.from_public_key(private_key.public_key())

    def __repr__(self) -> str:
        return f"HostIdentity({self.kind}, hit={self.public.hit.hex()})"

    @classmethod
    def generate(
        cls, kind: str = "ecdsa-p256", rng: RandomSource | None = None, rsa_bits: int = 3072
    ) -> HostIdentity:
        """A new identity of ``kind`` (one of :data:`IDENTITY_KINDS`).

        EC and EdDSA keys come entirely from ``rng`` (deterministic with a seeded
        source).  RSA keys come from ``cryptography``'s own generator, which cannot
        take an injected source.
        """
        source = default_random(rng)
        if kind in ("ecdsa-p256", "ecdsa-p384"):
            curve: ec.EllipticCurve = ec.SECP256R1() if kind == "ecdsa-p256" else ec.SECP384R1()
            order = _ORDERS[curve.name]
            size = (curve.key_size + 7) // 8
            scalar = ec_scalar_from_random(source, order, size)
            return cls(ec.derive_private_key(scalar, curve))
        if kind == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.from_private_bytes(source.bytes(32)))
        if kind == "ed448":
            return cls(ed448.Ed448PrivateKey.from_private_bytes(source.bytes(57)))
        if kind == "rsa":
            if rsa_bits < 2048:
                raise IdentityError(f"RSA identities need at least 2048 bits, not {rsa_bits}")
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits))
        raise IdentityError(f"unknown identity kind {kind!r}; use one of {list(IDENTITY_KINDS)}")

    @property
    def kind(self) -> str:
        """One of :data:`IDENTITY_KINDS`."""
        key = self._private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return "ecdsa-p256" if key.curve.name == "secp256r1" else "ecdsa-p384"
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return "ed25519"
        if isinstance(key, ed448.Ed448PrivateKey):
            return "ed448"
        return "rsa"

    @property
    def hit(self) -> bytes:
        """Our HIT."""
        return self.public.hit

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` in the HIP_SIGNATURE format of our algorithm."""
        key = self._private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            der = key.sign(bytes(data), ec.ECDSA(hashes.SHA384()))
            r, s = decode_dss_signature(der)
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(bytes(data), _pss(), hashes.SHA256())
        return key.sign(bytes(data))

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save_pem(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the key to ``path`` with mode 0600, atomically.

        The key is written to a temporary file in the same directory (created 0600,
        so the secret is never readable by others), flushed, then linked into place;
        an existing file is refused unless ``overwrite=True``.
        """
        target = Path(path)
        if target.exists() and not overwrite:
            raise IdentityError(
                f"{str(target)!r} already exists; pass overwrite=True to replace the identity"
            )
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise IdentityError(f"cannot create {str(tmp)!r}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.to_pem())
                fh.flush()
                os.fsync(fh.fileno())
            if overwrite:
                os.replace(tmp, target)
            else:
                # link() fails if the target appeared meanwhile: no silent overwrite.
                os.link(tmp, target)
        except FileExistsError:
            raise IdentityError(
                f"{str(target)!r} already exists; pass overwrite=True to replace the identity"
            ) from None
        except OSError as exc:
            raise IdentityError(f"cannot write {str(target)!r}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @classmethod
    def load_pem(cls, path: str | os.PathLike[str]) -> HostIdentity:
        """Load a PEM private key, refusing files that group or others can access."""
        target = Path(path)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise IdentityError(f"cannot open identity {str(target)!r}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise IdentityError(f"identity {str(target)!r} is not a regular file")
            if mode & 0o077:
                raise IdentityError(
                    f"identity {str(target)!r} has mode {stat.S_IMODE(mode):04o}, readable or "
                    f"writable by group or others; run: chmod 600 {str(target)!r}"
                )
            data = fh.read()
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise IdentityError(
                f"{str(target)!r} is not an unencrypted PEM private key: {exc}"
            ) from exc
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _ORDERS:
            raise IdentityError(
                f"{str(target)!r} holds an EC key on {key.curve.name}; use P-256 or P-384"
            )
        if not isinstance(
            key,
            ec.EllipticCurvePrivateKey
            | rsa.RSAPrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey,
        ):
            raise IdentityError(
                f"{str(target)!r} holds a {type(key).__name__}; use ECDSA, EdDSA or RSA"
            )
        return cls(key)


_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77A"
        "ECEC196ACCC52973",
        16,
    ),
}
