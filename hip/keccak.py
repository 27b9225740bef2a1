"""Keccak-f[1600], cSHAKE128 and KMAC128 (NIST SP 800-185), in pure Python.

Why this exists: HIT Suite 5 (EdDSA/cSHAKE128, RFC 9374 section 3.4.2, Table 7)
uses cSHAKE128 as its hash and KMAC128 as its MAC, and neither ``cryptography``
nor ``hashlib`` offers cSHAKE or KMAC (``hashlib`` has only plain SHAKE, which is
cSHAKE with an empty function name and customization string).  Inputs in HIP are
small control packets, so a straightforward sponge is fast enough.

The permutation is checked in the tests against ``hashlib.shake_128`` and
``hashlib.sha3_256``; cSHAKE128/KMAC128 against the NIST SP 800-185 examples.
"""

from __future__ import annotations

__all__ = ["cshake128", "keccak_f1600", "kmac128", "shake128"]

_MASK = (1 << 64) - 1
_RATE_128 = 168  # bytes: 1600 - 2*128 bits of capacity (FIPS 202, SHAKE128)


def _round_constants() -> tuple[int, ...]:
    """Derive the 24 iota constants from the rc(t) LFSR of FIPS 202 section 3.2.5."""

    def rc(t: int) -> int:
        if t % 255 == 0:
            return 1
        r = 0x01
        for _ in range(t % 255):
            r <<= 1
            if r & 0x100:
                r ^= 0x171  # x^8 + x^6 + x^5 + x^4 + 1
        return r & 1

    constants = []
    for ir in range(24):
        value = 0
        for j in range(7):
            if rc(j + 7 * ir):
                value |= 1 << ((1 << j) - 1)
        constants.append(value)
    return tuple(constants)


def _rotation_offsets() -> tuple[int, ...]:
    """Derive the rho offsets of FIPS 202 section 3.2.2, indexed x + 5*y."""
    offsets = [0] * 25
    x, y = 1, 0
    for t in range(24):
        offsets[x + 5 * y] = ((t + 1) * (t + 2) // 2) % 64
        x, y = y, (2 * x + 3 * y) % 5
    return tuple(offsets)


_RC = _round_constants()
_ROT = _rotation_offsets()
# pi: lane (x, y) moves to (y, 2x + 3y); precompute source index per destination.
_PI_SRC = tuple(
    next(x + 5 * y for x in range(5) for y in range(5) if (y + 5 * ((2 * x + 3 * y) % 5)) == d)
    for d in range(25)
)


def _rotl(v: int, n: int) -> int:
    return ((v << n) | (v >> (64 - n))) & _MASK if n else v


def keccak_f1600(lanes: list[int]) -> None:
    """Apply the 24-round Keccak-f[1600] permutation to 25 64-bit lanes in place."""
    a = lanes
    for rc in _RC:
        c = [a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rotl(c[(x + 1) % 5], 1) for x in range(5)]
        b = [_rotl(a[i] ^ d[i % 5], _ROT[i]) for i in range(25)]
        b = [b[_PI_SRC[i]] for i in range(25)]
        for y in range(0, 25, 5):
            row = b[y : y + 5]
            for x in range(5):
                a[y + x] = row[x] ^ ((~row[(x + 1) % 5]) & row[(x + 2) % 5])
        a[0] ^= rc


def _sponge(data: bytes, out_len: int, suffix: int, rate: int = _RATE_128) -> bytes:
    """Keccak sponge with a domain-separation suffix byte and pad10*1."""
    lanes = [0] * 25
    padded = bytearray(data)
    padded.append(suffix)
    padded.extend(b"\x00" * ((-len(padded)) % rate))
    padded[-1] |= 0x80
    for off in range(0, len(padded), rate):
        block = padded[off : off + rate]
        for i in range(rate // 8):
            lanes[i] ^= int.from_bytes(block[8 * i : 8 * i + 8], "little")
        keccak_f1600(lanes)
    out = bytearray()
    while True:
        for i in range(rate // 8):
            out += lanes[i].to_bytes(8, "little")
        if len(out) >= out_len:
            return bytes(out[:out_len])
        keccak_f1600(lanes)


def _left_encode(x: int) -> bytes:
    n = max(1, (x.bit_length() + 7) // 8)
    return bytes([n]) + x.to_bytes(n, "big")


def _right_encode(x: int) -> bytes:
    n = max(1, (x.bit_length() + 7) // 8)
    return x.to_bytes(n, "big") + bytes([n])


def _encode_string(s: bytes) -> bytes:
    return _left_encode(8 * len(s)) + s


def _bytepad(x: bytes, w: int) -> bytes:
    z = _left_encode(w) + x
    return z + b"\x00" * ((-len(z)) % w)


def shake128(data: bytes, out_len: int) -> bytes:
    """SHAKE128 (FIPS 202): suffix bits 1111."""
    return _sponge(data, out_len, 0x1F)


def cshake128(data: bytes, out_len: int, function_name: bytes = b"", custom: bytes = b"") -> bytes:
    """cSHAKE128(X, L, N, S) of SP 800-185 section 3.3; ``out_len`` in bytes."""
    if not function_name and not custom:
        return shake128(data, out_len)
    prefix = _bytepad(_encode_string(function_name) + _encode_string(custom), _RATE_128)
    return _sponge(prefix + data, out_len, 0x04)


def kmac128(key: bytes, data: bytes, out_len: int, custom: bytes = b"") -> bytes:
    """KMAC128(K, X, L, S) of SP 800-185 section 4.3; ``out_len`` in bytes."""
    new_x = _bytepad(_encode_string(key), _RATE_128) + data + _right_encode(8 * out_len)
    return cshake128(new_x, out_len, b"KMAC", custom)
