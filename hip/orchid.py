"""ORCHIDv2 Host Identity Tags (RFC 7343, as used by HIPv2 RFC 7401 and RFC 9374).

Where every constant comes from:

* ``ORCHID_PREFIX`` 2001:20::/28 -- RFC 7343 section 6 (IANA allocation); RFC 9374
  section 3.5.2.1 repeats it for HIPv2.
* ``HIP_CONTEXT_ID`` 0xF0EF F02F BFF4 3D0F E793 0C3C 6E61 74EA -- the ORCHID
  Context ID allocated to HIP, RFC 7401 section 3.2 (repeated in RFC 9374 section
  3.5.2.1).
* The construction ``ORCHID := Prefix | OGA ID | Encode_96(Hash(Context ID | Input))``
  with a 4-bit OGA ID and ``Encode_96`` = the middle 96 bits of the hash -- RFC 7343
  section 2.  In HIP the OGA ID is the HIT Suite ID (RFC 7401 section 5.2.10).
* Variable-output hashes (cSHAKE128 of HIT Suite 5) are not truncated: their
  output is asked for at exactly 96 bits -- RFC 9374 section 3.5.2.1.  The literal
  formula there, ``Hash[L](Context ID | Input)``, puts the Context ID in the
  input, and cSHAKE128 with empty N and S is SHAKE128 (SP 800-185 section 3.3).
"""

from __future__ import annotations

import hashlib
import ipaddress

from hip.errors import IdentityError, ParseError

__all__ = [
    "HIP_CONTEXT_ID",
    "HIT_LENGTH",
    "ORCHID_PREFIX",
    "hit_from_str",
    "hit_to_str",
    "is_orchid",
    "make_orchid",
    "ogaid_of",
]

HIP_CONTEXT_ID = bytes.fromhex("F0EFF02FBFF43D0FE7930C3C6E6174EA")
ORCHID_PREFIX = ipaddress.IPv6Network("2001:20::/28")
HIT_LENGTH = 16

_PREFIX_INT = int(ORCHID_PREFIX.network_address)
_PREFIX_MASK = int(ORCHID_PREFIX.netmask)
_HASH_BITS = 96

# Hashes with a fixed output are truncated to the middle 96 bits (Encode_96);
# extendable-output functions are asked for 96 bits directly.
_FIXED_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384}
_XOF_HASHES = ("cshake128", "shake128")


def _encode_96(digest: bytes) -> bytes:
    """The middle 96 bits of ``digest`` (RFC 7343 section 2, Encode_96)."""
    total = len(digest) * 8
    # With an odd difference the extra bit goes before the window (RFC 9374 3.5.2).
    shift = (total - _HASH_BITS) // 2
    value = int.from_bytes(digest, "big") >> shift
    return (value & ((1 << _HASH_BITS) - 1)).to_bytes(_HASH_BITS // 8, "big")


def make_orchid(ogaid: int, encoded_hi: bytes, hash_name: str) -> bytes:
    """Build the 16-byte ORCHIDv2 for a Host Identity.

    ``encoded_hi`` is the Host Identity field of HOST_ID (RFC 7401 section 3.2: the
    input is the HI as it is encoded in HOST_ID, without the algorithm field);
    ``hash_name`` is the HIT suite's hash ("sha256", "sha384", "sha1", "cshake128").
    """
    if not 0 <= ogaid <= 0xF:
        raise IdentityError(f"OGA id {ogaid!r} does not fit in 4 bits; use a HIT suite id 1-15")
    material = HIP_CONTEXT_ID + bytes(encoded_hi)
    if hash_name in _FIXED_HASHES:
        hashed = _encode_96(_FIXED_HASHES[hash_name](material).digest())
    elif hash_name in _XOF_HASHES:
        hashed = hashlib.shake_128(material).digest(_HASH_BITS // 8)
    else:
        raise IdentityError(
            f"unknown ORCHID hash {hash_name!r}; use one of "
            f"{sorted([*_FIXED_HASHES, *_XOF_HASHES])}"
        )
    value = _PREFIX_INT | (ogaid << _HASH_BITS) | int.from_bytes(hashed, "big")
    return value.to_bytes(HIT_LENGTH, "big")


def is_orchid(hit: bytes) -> bool:
    """True if ``hit`` is 16 bytes inside 2001:20::/28."""
    if len(hit) != HIT_LENGTH:
        return False
    return (int.from_bytes(hit, "big") & _PREFIX_MASK) == _PREFIX_INT


def ogaid_of(hit: bytes) -> int:
    """The 4-bit OGA id (HIT Suite ID) of an ORCHID; ParseError if not an ORCHID."""
    if not is_orchid(hit):
        raise ParseError(f"{bytes(hit).hex()!r} is not an ORCHIDv2 HIT in {ORCHID_PREFIX}")
    return hit[3] & 0x0F


def hit_to_str(hit: bytes) -> str:
    """The HIT in IPv6 text form, e.g. ``2001:2f:...``."""
    if len(hit) != HIT_LENGTH:
        raise ParseError(f"a HIT is 16 bytes, got {len(hit)}: {bytes(hit).hex()!r}")
    return str(ipaddress.IPv6Address(bytes(hit)))


def hit_from_str(text: str) -> bytes:
    """Parse a HIT written as an IPv6 address; IdentityError if it is not an ORCHID."""
    try:
        packed = ipaddress.IPv6Address(text.strip()).packed
    except ValueError as exc:
        raise IdentityError(
            f"{text!r} is not an IPv6 address; write a HIT like 2001:2f::1"
        ) from exc
    if not is_orchid(packed):
        raise IdentityError(f"{text!r} is not a HIT: HITs lie in {ORCHID_PREFIX}")
    return packed
