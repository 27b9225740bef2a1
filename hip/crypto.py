"""HIP cryptography: RHASH/HMAC, Diffie-Hellman, HIP_CIPHER, KEYMAT and ESP keys.

Pure functions over bytes with no I/O; randomness always comes from an injected
:class:`hip.random.RandomSource`.  Asymmetric and block-cipher work is done by
``cryptography``; hashes and HMAC by the standard library (no other crypto
package); KMAC128 for HIT Suite 5 by :mod:`hip.keccak`.

Where every number comes from (verified against the RFC text or the IANA
registries that mirror them; see docs/hip.md "Identities and crypto"):

* RHASH per HIT suite -- RFC 7401 section 5.2.10 (suite 1 SHA-256, suite 2
  SHA-384, suite 3 SHA-1) and RFC 9374 section 3.4.2 Table 7 (suite 5:
  cSHAKE128 hash, KMAC128 MAC).  RFC 9374 does not fix an RHASH output length
  for suite 5; we use 256 bits (our choice, written down here and in docs).
* The Responder's HIT suite selects RHASH for KEYMAT and puzzles -- RFC 7401
  sections 4.1.2 and 6.5.
* DH Group IDs -- RFC 7401 section 5.2.7: 3 = 1536-bit MODP, 4 = 3072-bit MODP,
  7 = NIST P-256, 8 = NIST P-384, 9 = NIST P-521, 10 = SECP160R1 (not supported),
  11 = 2048-bit MODP.  The MODP primes are those of RFC 3526 sections 2, 3 and 4
  (generator 2); the tests rebuild them from the RFC 3526 pi formula.
* 12 = Curve25519 and 13 = Curve448 are NOT assigned by IANA (the registry stops at
  11); the values follow draft-moskowitz-hip-new-crypto, which proposed these
  curves.  They are used only between xenwam peers that both offer them.
* ECDH public value = x || y, each padded to the field size, no 0x04 prefix, and
  the shared secret Kij = the x coordinate -- RFC 7401 section 5.2.7 referring to
  RFC 5903 section 7 (the real HIPv2 peer we interoperate with does the same).
  X25519/X448 values are the RFC 7748 u-coordinates.  MODP values are big-endian,
  left-padded to the prime's length.
* HIP Cipher IDs -- RFC 7401 section 5.2.8: 1 NULL-ENCRYPT, 2 AES-128-CBC,
  3 reserved, 4 AES-256-CBC.  ENCRYPTED carries IV || ciphertext (section
  5.2.18); AES-CBC uses a 16-byte IV and the plaintext is padded to the block
  size with PKCS#7 bytes (RFC 5652 section 6.3), as the interoperating peer does.
* KEYMAT -- RFC 7401 section 6.5: HKDF (RFC 5869) with RHASH, salt = I | J,
  IKM = Kij, info = sort(HIT-I | HIT-R) (smaller HIT first, compared as unsigned
  128-bit integers), L = the number of bytes needed.  For suite 5 the HMAC in
  HKDF is KMAC128 (RFC 9374 Table 7).
* Key order -- RFC 7401 section 6.5: HIP-gl encryption, HIP-gl integrity, HIP-lg
  encryption, HIP-lg integrity ("gl" = used by the host with the greater HIT for
  what it sends to the host with the lower HIT); then RFC 7402 section 7: SA-gl
  ESP encryption, SA-gl ESP authentication, SA-lg ESP encryption, SA-lg ESP
  authentication, each of its algorithm's natural key size.
* ESP transform suite IDs -- RFC 7402 section 5.1.2 and its IANA registry:
  1 AES-128-CBC/HMAC-SHA1, 2-6 deprecated, 7 NULL/HMAC-SHA-256, 8 AES-128-CBC/
  HMAC-SHA-256, 9 AES-256-CBC/HMAC-SHA-256, 10 AES-CCM-8, 11 AES-CCM-16,
  12 AES-GCM-8, 13 AES-GCM-16, 14 AES-CMAC-96, 15 AES-GMAC.  ICV lengths: 12
  bytes for HMAC-SHA1-96 (RFC 2404), 16 for HMAC-SHA-256-128 (RFC 4868).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, x448, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hip.errors import CryptoError
from hip.keccak import kmac128
from hip.orchid import ogaid_of
from hip.random import RandomSource

# Raw encodings spelled the pre-40 way: dom0s and guests run Debian 12's cryptography 38.
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw

__all__ = [
    "DEFAULT_CIPHER_PREFERENCE",
    "DEFAULT_DH_PREFERENCE",
    "DEFAULT_ESP_PREFERENCE",
    "ESP_SUITES",
    "RHASH_OF_HIT_SUITE",
    "DHGroup",
    "DHKeyPair",
    "EspKeys",
    "EspSuite",
    "EspTransform",
    "HipCipherId",
    "HostEspKeys",
    "HostKeys",
    "KeyMaterial",
    "Keymat",
    "cipher_key_len",
    "decrypt_encrypted_param",
    "derive_keymat",
    "dh_public_len",
    "draw_esp_keys",
    "draw_keys",
    "encrypt_encrypted_param",
    "generate_dh",
    "hmac_digest",
    "hmac_verify",
    "keymat_length",
    "rhash",
    "rhash_len",
    "rhash_of_hit",
    "sort_hits",
]

# ---------------------------------------------------------------------------
# RHASH and HMAC
# ---------------------------------------------------------------------------

_FIXED_HASHES: dict[str, Callable[..., hashlib._Hash]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
}
_CSHAKE_LEN = 32  # our chosen RHASH length for HIT Suite 5 (see module docstring)
_RHASH_LEN = {"sha1": 20, "sha256": 32, "sha384": 48, "cshake128": _CSHAKE_LEN}

#: HIT Suite ID -> RHASH name (RFC 7401 5.2.10, RFC 9374 3.4.2).
RHASH_OF_HIT_SUITE: dict[int, str] = {1: "sha256", 2: "sha384", 3: "sha1", 5: "cshake128"}


def _check_rhash(name: str) -> None:
    if name not in _RHASH_LEN:
        raise CryptoError(f"unknown RHASH {name!r}; use one of {sorted(_RHASH_LEN)}")


def rhash_len(rhash_name: str) -> int:
    """RHASH output length in bytes (also the natural HMAC key length)."""
    _check_rhash(rhash_name)
    return _RHASH_LEN[rhash_name]


def rhash(rhash_name: str, data: bytes) -> bytes:
    """RHASH(data) for the named suite hash."""
    _check_rhash(rhash_name)
    if rhash_name == "cshake128":
        # cSHAKE128 with empty N and S is SHAKE128 (SP 800-185 section 3.3).
        return hashlib.shake_128(data).digest(_CSHAKE_LEN)
    return _FIXED_HASHES[rhash_name](data).digest()


def rhash_hasher(rhash_name: str, prefix: bytes) -> Callable[[bytes], bytes]:
    """A fast ``suffix -> RHASH(prefix | suffix)`` for repeated hashing (puzzles)."""
    _check_rhash(rhash_name)
    if rhash_name == "cshake128":
        base_x = hashlib.shake_128(prefix)

        def xof_digest(suffix: bytes) -> bytes:
            h = base_x.copy()
            h.update(suffix)
            return h.digest(_CSHAKE_LEN)

        return xof_digest
    base = _FIXED_HASHES[rhash_name](prefix)

    def fixed_digest(suffix: bytes) -> bytes:
        h = base.copy()
        h.update(suffix)
        return h.digest()

    return fixed_digest


def hmac_digest(rhash_name: str, key: bytes, data: bytes) -> bytes:
    """The HIT suite's MAC: HMAC-RHASH, or KMAC128 (256-bit output) for suite 5."""
    _check_rhash(rhash_name)
    if rhash_name == "cshake128":
        return kmac128(key, data, _CSHAKE_LEN)
    return hmac.digest(key, data, rhash_name)


def hmac_verify(rhash_name: str, key: bytes, data: bytes, mac: bytes) -> bool:
    """Constant-time check of ``mac`` over ``data``; False on any mismatch."""
    return hmac.compare_digest(hmac_digest(rhash_name, key, data), bytes(mac))


def rhash_of_hit(hit: bytes) -> str:
    """RHASH name selected by a HIT's suite (its OGA id); CryptoError if unknown."""
    suite = ogaid_of(hit)
    try:
        return RHASH_OF_HIT_SUITE[suite]
    except KeyError:
        raise CryptoError(
            f"HIT {bytes(hit).hex()} has HIT suite {suite}, which has no known RHASH; "
            f"supported suites are {sorted(RHASH_OF_HIT_SUITE)}"
        ) from None


# ---------------------------------------------------------------------------
# Diffie-Hellman
# ---------------------------------------------------------------------------


class DHGroup(IntEnum):
    """DH Group IDs of the DIFFIE_HELLMAN / DH_GROUP_LIST parameters (RFC 7401 5.2.7)."""

    MODP_1536 = 3
    MODP_3072 = 4
    NIST_P256 = 7
    NIST_P384 = 8
    NIST_P521 = 9
    SECP160R1 = 10  # assigned, but not supported by ``cryptography``
    MODP_2048 = 11
    CURVE25519 = 12  # not IANA-assigned; draft-moskowitz-hip-new-crypto
    CURVE448 = 13  # not IANA-assigned; draft-moskowitz-hip-new-crypto


#: What we offer in DH_GROUP_LIST, best first (the real HIPv2 peer defaults to 7).
DEFAULT_DH_PREFERENCE: tuple[DHGroup, ...] = (
    DHGroup.NIST_P256,
    DHGroup.CURVE25519,
    DHGroup.NIST_P384,
)

# RFC 3526 sections 2 (1536), 3 (2048), 4 (3072); generator 2.
_MODP_PRIMES: dict[DHGroup, int] = {
    DHGroup.MODP_1536: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B2251"
        "4A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C"
        "42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007C"
        "B8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED52907"
        "7096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF",
        16,
    ),
    DHGroup.MODP_2048: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B2251"
        "4A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C"
        "42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007C"
        "B8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED52907"
        "7096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC"
        "07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AAC"
        "AA68FFFFFFFFFFFFFFFF",
        16,
    ),
    DHGroup.MODP_3072: int(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B2251"
        "4A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C"
        "42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007C"
        "B8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED52907"
        "7096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC"
        "07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AAA"
        "C42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4"
        "C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64"
        "521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B"
        "82D120A93AD2CAFFFFFFFFFFFFFFFF",
        16,
    ),
}
_MODP_GENERATOR = 2
# Private exponents of 512 bits: at least twice the strength of every MODP group here
# (RFC 3526 section 8 estimates at most 210 bits for 3072-bit MODP).
_MODP_EXPONENT_BYTES = 64

@dataclass(frozen=True)
class _NistCurve:
    """An ECDH group's curve, coordinate size in bytes and order n."""

    curve: ec.EllipticCurve
    size: int
    order: int


# Curve orders n (SEC 2 / FIPS 186-4 D.1.2), used to map random bytes to a scalar.
_NIST_CURVES: dict[DHGroup, _NistCurve] = {
    DHGroup.NIST_P256: _NistCurve(
        ec.SECP256R1(),
        32,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    DHGroup.NIST_P384: _NistCurve(
        ec.SECP384R1(),
        48,
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77A"
            "ECEC196ACCC52973",
            16,
        ),
    ),
    DHGroup.NIST_P521: _NistCurve(
        ec.SECP521R1(),
        66,
        int(
            "01" + "F" * 65
            + "A51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    ),
}

_MODP_PARAMS: dict[DHGroup, dh.DHParameterNumbers] = {
    group: dh.DHParameterNumbers(prime, _MODP_GENERATOR) for group, prime in _MODP_PRIMES.items()
}


def ec_scalar_from_random(rng: RandomSource, order: int, size: int) -> int:
    """A private scalar in [1, n-1] from ``size + 8`` random bytes (bias below 2^-64)."""
    raw = int.from_bytes(rng.bytes(size + 8), "big")
    return raw % (order - 1) + 1


def _group(group: int) -> DHGroup:
    try:
        g = DHGroup(group)
    except ValueError:
        raise CryptoError(
            f"unknown DH group id {group!r}; supported: {[int(x) for x in _SUPPORTED_GROUPS]}"
        ) from None
    if g not in _SUPPORTED_GROUPS:
        raise CryptoError(f"DH group {g.name} ({int(g)}) is not supported by this implementation")
    return g


_SUPPORTED_GROUPS = (
    DHGroup.MODP_1536,
    DHGroup.MODP_3072,
    DHGroup.NIST_P256,
    DHGroup.NIST_P384,
    DHGroup.NIST_P521,
    DHGroup.MODP_2048,
    DHGroup.CURVE25519,
    DHGroup.CURVE448,
)


def dh_public_len(group: int) -> int:
    """Length in bytes of a public value of ``group`` on the wire."""
    g = _group(group)
    if g in _NIST_CURVES:
        return 2 * _NIST_CURVES[g].size
    if g is DHGroup.CURVE25519:
        return 32
    if g is DHGroup.CURVE448:
        return 56
    return (_MODP_PRIMES[g].bit_length() + 7) // 8


class DHKeyPair:
    """One ephemeral Diffie-Hellman key pair of a HIP group.

    Build it with :func:`generate_dh`.  ``public_bytes()`` is the DIFFIE_HELLMAN
    public value on the wire; ``shared_secret(peer)`` is Kij, raising CryptoError
    for a malformed or invalid peer value (wrong length, point not on the curve,
    low-order point, 0/1/p-1).
    """

    def __init__(
        self,
        group: DHGroup,
        private: ec.EllipticCurvePrivateKey
        | x25519.X25519PrivateKey
        | x448.X448PrivateKey
        | dh.DHPrivateKey,
        public: bytes,
    ) -> None:
        self.group = group
        self._private = private
        self._public = public

    def __repr__(self) -> str:
        return f"DHKeyPair(group={self.group.name}, public={self._public[:8].hex()}...)"

    def public_bytes(self) -> bytes:
        """The public value as carried in DIFFIE_HELLMAN."""
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        """Kij with the peer's public value, fixed length for the group."""
        peer_public = bytes(peer_public)
        expected = dh_public_len(self.group)
        if len(peer_public) != expected:
            raise CryptoError(
                f"DH public value for {self.group.name} must be {expected} bytes, "
                f"got {len(peer_public)}: {peer_public[:16].hex()}..."
            )
        priv = self._private
        try:
            if isinstance(priv, ec.EllipticCurvePrivateKey):
                peer_ec = ec.EllipticCurvePublicKey.from_encoded_point(
                    priv.curve, b"\x04" + peer_public
                )
                return priv.exchange(ec.ECDH(), peer_ec)
            if isinstance(priv, x25519.X25519PrivateKey):
                return priv.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
            if isinstance(priv, x448.X448PrivateKey):
                return priv.exchange(x448.X448PublicKey.from_public_bytes(peer_public))
            prime = _MODP_PRIMES[self.group]
            y = int.from_bytes(peer_public, "big")
            # Reject the trivial subgroup {1, p-1} and out-of-range values.
            if not 2 <= y <= prime - 2:
                raise CryptoError(f"DH public value out of range for {self.group.name}")
            peer_dh = dh.DHPublicNumbers(y, _MODP_PARAMS[self.group]).public_key()
            secret = priv.exchange(peer_dh)
            return secret.rjust(expected, b"\x00")
        except CryptoError:
            raise
        except ValueError as exc:
            raise CryptoError(
                f"invalid {self.group.name} public value {peer_public[:16].hex()}...: {exc}"
            ) from exc


def generate_dh(group: int, rng: RandomSource) -> DHKeyPair:
    """A new key pair for ``group`` whose private part comes from ``rng``."""
    g = _group(group)
    if g in _NIST_CURVES:
        nist = _NIST_CURVES[g]
        size = nist.size
        priv_ec = ec.derive_private_key(ec_scalar_from_random(rng, nist.order, size),
                                        nist.curve)
        nums = priv_ec.public_key().public_numbers()
        public = nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")
        return DHKeyPair(g, priv_ec, public)
    if g is DHGroup.CURVE25519:
        priv_x = x25519.X25519PrivateKey.from_private_bytes(rng.bytes(32))
        return DHKeyPair(g, priv_x, priv_x.public_key().public_bytes(_RAW, _RAW_PUB))
    if g is DHGroup.CURVE448:
        priv_x4 = x448.X448PrivateKey.from_private_bytes(rng.bytes(56))
        return DHKeyPair(g, priv_x4, priv_x4.public_key().public_bytes(_RAW, _RAW_PUB))
    x = int.from_bytes(rng.bytes(_MODP_EXPONENT_BYTES), "big") | 1 << (8 * _MODP_EXPONENT_BYTES - 1)
    params = _MODP_PARAMS[g]
    # y = g^x mod p computed by OpenSSL (constant time, ~10x faster than Python's pow):
    # a key object with a placeholder public value exchanged with the generator itself
    # yields g^x; the real key pair is then built with that y.
    generator = dh.DHPublicNumbers(_MODP_GENERATOR, params).public_key()
    placeholder = dh.DHPrivateNumbers(x, dh.DHPublicNumbers(_MODP_GENERATOR, params)).private_key()
    public = placeholder.exchange(generator).rjust(dh_public_len(g), b"\x00")
    y = int.from_bytes(public, "big")
    priv_dh = dh.DHPrivateNumbers(x, dh.DHPublicNumbers(y, params)).private_key()
    return DHKeyPair(g, priv_dh, public)


# ---------------------------------------------------------------------------
# HIP_CIPHER and the ENCRYPTED parameter
# ---------------------------------------------------------------------------


class HipCipherId(IntEnum):
    """HIP Cipher IDs of HIP_CIPHER (RFC 7401 section 5.2.8)."""

    NULL_ENCRYPT = 1
    AES_128_CBC = 2
    AES_256_CBC = 4


#: Offered in HIP_CIPHER, best first.  NULL_ENCRYPT is never offered by default:
#: the association must opt in explicitly (issue 3).
DEFAULT_CIPHER_PREFERENCE: tuple[HipCipherId, ...] = (
    HipCipherId.AES_256_CBC,
    HipCipherId.AES_128_CBC,
)

_CIPHER_KEY_LEN = {
    HipCipherId.NULL_ENCRYPT: 0,
    HipCipherId.AES_128_CBC: 16,
    HipCipherId.AES_256_CBC: 32,
}
_AES_BLOCK = 16


def _cipher(cipher_id: int) -> HipCipherId:
    try:
        return HipCipherId(cipher_id)
    except ValueError:
        raise CryptoError(
            f"unknown HIP cipher id {cipher_id!r}; supported: {[int(c) for c in HipCipherId]}"
        ) from None


def cipher_key_len(cipher_id: int) -> int:
    """Key length in bytes for a HIP cipher (0 for NULL-ENCRYPT)."""
    return _CIPHER_KEY_LEN[_cipher(cipher_id)]


def _check_key(cid: HipCipherId, key: bytes) -> None:
    if len(key) != _CIPHER_KEY_LEN[cid]:
        raise CryptoError(f"{cid.name} needs a {_CIPHER_KEY_LEN[cid]}-byte key, got {len(key)}")


def encrypt_encrypted_param(
    cipher_id: int, key: bytes, plaintext: bytes, rng: RandomSource
) -> bytes:
    """IV || ciphertext for the ENCRYPTED parameter (RFC 7401 section 5.2.18).

    AES-CBC: a 16-byte IV from ``rng`` and PKCS#7 padding to the block size.
    NULL-ENCRYPT: the plaintext unchanged, with no IV.
    """
    cid = _cipher(cipher_id)
    _check_key(cid, key)
    if cid is HipCipherId.NULL_ENCRYPT:
        return bytes(plaintext)
    iv = rng.bytes(_AES_BLOCK)
    padder = sym_padding.PKCS7(8 * _AES_BLOCK).padder()
    padded = padder.update(bytes(plaintext)) + padder.finalize()
    enc = Cipher(algorithms.AES(bytes(key)), modes.CBC(iv)).encryptor()
    return iv + enc.update(padded) + enc.finalize()


def decrypt_encrypted_param(cipher_id: int, key: bytes, payload: bytes) -> bytes:
    """Inverse of :func:`encrypt_encrypted_param`; CryptoError on bad length or padding."""
    cid = _cipher(cipher_id)
    _check_key(cid, key)
    payload = bytes(payload)
    if cid is HipCipherId.NULL_ENCRYPT:
        return payload
    if len(payload) < 2 * _AES_BLOCK or len(payload) % _AES_BLOCK:
        raise CryptoError(
            f"ENCRYPTED payload of {len(payload)} bytes is not IV plus whole AES blocks"
        )
    iv, body = payload[:_AES_BLOCK], payload[_AES_BLOCK:]
    dec = Cipher(algorithms.AES(bytes(key)), modes.CBC(iv)).decryptor()
    padded = dec.update(body) + dec.finalize()
    unpadder = sym_padding.PKCS7(8 * _AES_BLOCK).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CryptoError(
            "ENCRYPTED payload has invalid padding (wrong key or corrupted)"
        ) from None


# ---------------------------------------------------------------------------
# ESP transforms (RFC 7402)
# ---------------------------------------------------------------------------


class EspTransform(IntEnum):
    """ESP Transform Suite IDs (RFC 7402 section 5.1.2; 2-6 are deprecated)."""

    AES_128_CBC_HMAC_SHA1 = 1
    NULL_HMAC_SHA256 = 7
    AES_128_CBC_HMAC_SHA256 = 8
    AES_256_CBC_HMAC_SHA256 = 9
    AES_CCM_8 = 10
    AES_CCM_16 = 11
    AES_GCM_8 = 12
    AES_GCM_16 = 13
    AES_CMAC_96 = 14
    AES_GMAC = 15


@dataclass(frozen=True)
class EspSuite:
    """What a data plane needs to know about one ESP transform.

    ``xfrm_enc``/``xfrm_auth`` are the Linux kernel algorithm names for ``ip xfrm``;
    ``icv_len`` is the truncated MAC length in bytes.
    """

    transform: EspTransform
    enc_algorithm: str
    enc_key_len: int
    iv_len: int
    block_len: int
    auth_algorithm: str
    auth_key_len: int
    icv_len: int
    xfrm_enc: str
    xfrm_auth: str


#: Transforms we implement (the CBC+HMAC family; combined modes are not keyed here).
ESP_SUITES: dict[EspTransform, EspSuite] = {
    EspTransform.AES_128_CBC_HMAC_SHA1: EspSuite(
        EspTransform.AES_128_CBC_HMAC_SHA1, "aes-cbc", 16, 16, 16, "hmac-sha1", 20, 12,
        "cbc(aes)", "hmac(sha1)",
    ),
    EspTransform.NULL_HMAC_SHA256: EspSuite(
        EspTransform.NULL_HMAC_SHA256, "null", 0, 0, 4, "hmac-sha256", 32, 16,
        "ecb(cipher_null)", "hmac(sha256)",
    ),
    EspTransform.AES_128_CBC_HMAC_SHA256: EspSuite(
        EspTransform.AES_128_CBC_HMAC_SHA256, "aes-cbc", 16, 16, 16, "hmac-sha256", 32, 16,
        "cbc(aes)", "hmac(sha256)",
    ),
    EspTransform.AES_256_CBC_HMAC_SHA256: EspSuite(
        EspTransform.AES_256_CBC_HMAC_SHA256, "aes-cbc", 32, 16, 16, "hmac-sha256", 32, 16,
        "cbc(aes)", "hmac(sha256)",
    ),
}

#: Offered in ESP_TRANSFORM, best first (the real HIPv2 peer defaults to 9).
DEFAULT_ESP_PREFERENCE: tuple[EspTransform, ...] = (
    EspTransform.AES_256_CBC_HMAC_SHA256,
    EspTransform.AES_128_CBC_HMAC_SHA256,
)


def _esp_suite(esp_transform: int) -> EspSuite:
    try:
        return ESP_SUITES[EspTransform(esp_transform)]
    except (ValueError, KeyError):
        raise CryptoError(
            f"ESP transform {esp_transform!r} is not supported; use one of "
            f"{[int(t) for t in ESP_SUITES]}"
        ) from None


# ---------------------------------------------------------------------------
# KEYMAT (RFC 7401 section 6.5) and key drawing
# ---------------------------------------------------------------------------


def sort_hits(hit_a: bytes, hit_b: bytes) -> bytes:
    """sort(HIT-A | HIT-B): the numerically smaller HIT first (RFC 7401 6.5)."""
    a, b = bytes(hit_a), bytes(hit_b)
    return a + b if a <= b else b + a  # equal-length big-endian: bytes order = integer order


class Keymat:
    """KEYMAT as an on-demand byte stream: HKDF-Expand blocks are made when first read.

    HKDF output for a longer L starts with the output for a shorter L, so a rekey
    that draws past the first derivation reads the same stream further (RFC 7402
    section 6.9 draws new ESP keys from the Keymat Index onward).
    """

    def __init__(
        self,
        rhash_name: str,
        kij: bytes,
        hit_i: bytes,
        hit_r: bytes,
        random_i: bytes,
        random_j: bytes,
    ) -> None:
        self.rhash_name = rhash_name
        self.hash_len = rhash_len(rhash_name)
        # HKDF-Extract: PRK = HMAC(salt = I | J, IKM = Kij).
        self._prk = hmac_digest(rhash_name, bytes(random_i) + bytes(random_j), bytes(kij))
        self._info = sort_hits(hit_i, hit_r)
        self._stream = b""
        self._last = b""
        self._blocks = 0

    @property
    def max_length(self) -> int:
        """HKDF can give at most 255 blocks (RFC 5869 section 2.3)."""
        return 255 * self.hash_len

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``offset .. offset+length`` of KEYMAT."""
        end = offset + length
        if offset < 0 or length < 0 or end > self.max_length:
            raise CryptoError(
                f"KEYMAT bytes {offset}..{end} are beyond the {self.max_length}-byte HKDF "
                f"limit for {self.rhash_name}; rekey with a new Diffie-Hellman exchange"
            )
        while len(self._stream) < end:
            self._blocks += 1
            self._last = hmac_digest(
                self.rhash_name, self._prk, self._last + self._info + bytes([self._blocks])
            )
            self._stream += self._last
        return self._stream[offset:end]


def derive_keymat(
    rhash_name: str,
    kij: bytes,
    hit_i: bytes,
    hit_r: bytes,
    random_i: bytes,
    random_j: bytes,
    length: int,
) -> bytes:
    """KEYMAT = HKDF(salt = I | J, IKM = Kij, info = sort(HIT-I | HIT-R), L = length)."""
    return Keymat(rhash_name, kij, hit_i, hit_r, random_i, random_j).read(0, length)


def keymat_length(cipher_id: int, esp_transform: int, rhash_name: str) -> int:
    """Bytes of KEYMAT consumed by the base exchange: HIP keys then one set of ESP keys."""
    suite = _esp_suite(esp_transform)
    hip = 2 * (cipher_key_len(cipher_id) + rhash_len(rhash_name))
    return hip + 2 * (suite.enc_key_len + suite.auth_key_len)


@dataclass(frozen=True)
class EspKeys:
    """One draw of ESP keys (RFC 7402 section 7), starting at ``keymat_index``."""

    transform: EspTransform
    gl_enc: bytes
    gl_auth: bytes
    lg_enc: bytes
    lg_auth: bytes
    keymat_index: int
    next_keymat_index: int

    def for_host(self, local_hit: bytes, peer_hit: bytes) -> HostEspKeys:
        """These keys oriented for the host owning ``local_hit``."""
        if _local_is_greater(local_hit, peer_hit):
            return HostEspKeys(self.gl_enc, self.gl_auth, self.lg_enc, self.lg_auth)
        return HostEspKeys(self.lg_enc, self.lg_auth, self.gl_enc, self.gl_auth)


def _local_is_greater(local_hit: bytes, peer_hit: bytes) -> bool:
    # The one place that decides key direction (RFC 7401 6.5, RFC 7402 7): "gl" keys
    # protect what the host with the greater HIT sends.
    if bytes(local_hit) == bytes(peer_hit):
        raise CryptoError("local and peer HIT are equal; keys cannot be oriented")
    return bytes(local_hit) > bytes(peer_hit)


@dataclass(frozen=True)
class HostEspKeys:
    """One draw of ESP keys oriented for one host: ``out_*`` protect what it sends."""

    out_enc: bytes
    out_auth: bytes
    in_enc: bytes
    in_auth: bytes


@dataclass(frozen=True)
class HostKeys:
    """The keys one host uses, oriented: ``out_*`` protect what it sends."""

    hip_out_enc: bytes
    hip_out_integ: bytes
    hip_in_enc: bytes
    hip_in_integ: bytes
    esp_out_enc: bytes
    esp_out_auth: bytes
    esp_in_enc: bytes
    esp_in_auth: bytes


@dataclass(frozen=True)
class KeyMaterial:
    """Keys drawn from KEYMAT in RFC order.

    ``gl`` keys protect traffic from the host with the greater HIT to the host with
    the lower HIT; ``lg`` keys the other way.  ``esp_keymat_index`` is the Keymat
    Index where the ESP keys begin (sent in ESP_INFO); ``next_keymat_index`` is the
    first unused byte, where a rekey without a new DH continues.
    """

    rhash_name: str
    cipher_id: HipCipherId
    esp_transform: EspTransform
    hip_gl_enc: bytes
    hip_gl_integ: bytes
    hip_lg_enc: bytes
    hip_lg_integ: bytes
    esp_gl_enc: bytes
    esp_gl_auth: bytes
    esp_lg_enc: bytes
    esp_lg_auth: bytes
    esp_keymat_index: int
    next_keymat_index: int

    def for_host(self, local_hit: bytes, peer_hit: bytes) -> HostKeys:
        """Orient the keys for the host owning ``local_hit``."""
        esp = EspKeys(self.esp_transform, self.esp_gl_enc, self.esp_gl_auth, self.esp_lg_enc,
                      self.esp_lg_auth, self.esp_keymat_index,
                      self.next_keymat_index).for_host(local_hit, peer_hit)
        if _local_is_greater(local_hit, peer_hit):
            hip = (self.hip_gl_enc, self.hip_gl_integ, self.hip_lg_enc, self.hip_lg_integ)
        else:
            hip = (self.hip_lg_enc, self.hip_lg_integ, self.hip_gl_enc, self.hip_gl_integ)
        return HostKeys(*hip, esp.out_enc, esp.out_auth, esp.in_enc, esp.in_auth)


def _read(keymat: bytes | Keymat, offset: int, length: int) -> bytes:
    if isinstance(keymat, Keymat):
        return keymat.read(offset, length)
    if offset + length > len(keymat):
        raise CryptoError(
            f"KEYMAT of {len(keymat)} bytes is too short: need bytes {offset}..{offset + length}"
        )
    return bytes(keymat[offset : offset + length])


def draw_esp_keys(keymat: bytes | Keymat, esp_transform: int, keymat_index: int) -> EspKeys:
    """Draw SA-gl enc, SA-gl auth, SA-lg enc, SA-lg auth from ``keymat_index`` on."""
    suite = _esp_suite(esp_transform)
    pos = keymat_index
    parts = []
    for size in (suite.enc_key_len, suite.auth_key_len, suite.enc_key_len, suite.auth_key_len):
        parts.append(_read(keymat, pos, size))
        pos += size
    return EspKeys(suite.transform, parts[0], parts[1], parts[2], parts[3], keymat_index, pos)


def draw_keys(
    keymat: bytes | Keymat,
    cipher_id: int,
    hit_i: bytes,
    hit_r: bytes,
    esp_transform: int,
) -> KeyMaterial:
    """Draw the base exchange's keys from KEYMAT in RFC 7401 6.5 / RFC 7402 7 order.

    The integrity key size is RHASH's length for the Responder's HIT suite (read
    from ``hit_r``); the encryption key size is the HIP cipher's.  Which key goes
    which way: ``hip_gl_*``/``esp_gl_*`` protect packets sent by the host with the
    greater HIT (``max(hit_i, hit_r)``); use :meth:`KeyMaterial.for_host`.
    """
    rhash_name = keymat.rhash_name if isinstance(keymat, Keymat) else rhash_of_hit(hit_r)
    if bytes(hit_i) == bytes(hit_r):
        raise CryptoError("Initiator and Responder HIT are equal")
    cid = _cipher(cipher_id)
    enc_len, integ_len = cipher_key_len(cid), rhash_len(rhash_name)
    pos = 0
    hip = []
    for size in (enc_len, integ_len, enc_len, integ_len):
        hip.append(_read(keymat, pos, size))
        pos += size
    esp = draw_esp_keys(keymat, esp_transform, pos)
    return KeyMaterial(
        rhash_name=rhash_name,
        cipher_id=cid,
        esp_transform=esp.transform,
        hip_gl_enc=hip[0],
        hip_gl_integ=hip[1],
        hip_lg_enc=hip[2],
        hip_lg_integ=hip[3],
        esp_gl_enc=esp.gl_enc,
        esp_gl_auth=esp.gl_auth,
        esp_lg_enc=esp.lg_enc,
        esp_lg_auth=esp.lg_auth,
        esp_keymat_index=esp.keymat_index,
        next_keymat_index=esp.next_keymat_index,
    )
