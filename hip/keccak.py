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
# rho then pi as one step: lane i (= x + 5y) is rotated by _ROT[i] and lands at
# (y, 2x + 3y); theta's D is indexed by the column x = i % 5.
_RHO_PI = tuple(
    (i, ((i // 5) + 5 * ((2 * (i % 5) + 3 * (i // 5)) % 5)), _ROT[i], i % 5) for i in range(25)
)


def keccak_f1600(lanes: list[int]) -> None:
    """Apply the 24-round Keccak-f[1600] permutation to 25 64-bit lanes in place."""
    a = lanes
    mask = _MASK
    b = [0] * 25
    for rc in _RC:
        c0 = a[0] ^ a[5] ^ a[10] ^ a[15] ^ a[20]
        c1 = a[1] ^ a[6] ^ a[11] ^ a[16] ^ a[21]
        c2 = a[2] ^ a[7] ^ a[12] ^ a[17] ^ a[22]
        c3 = a[3] ^ a[8] ^ a[13] ^ a[18] ^ a[23]
        c4 = a[4] ^ a[9] ^ a[14] ^ a[19] ^ a[24]
        d = (
            c4 ^ (((c1 << 1) | (c1 >> 63)) & mask),
            c0 ^ (((c2 << 1) | (c2 >> 63)) & mask),
            c1 ^ (((c3 << 1) | (c3 >> 63)) & mask),
            c2 ^ (((c4 << 1) | (c4 >> 63)) & mask),
            c3 ^ (((c0 << 1) | (c0 >> 63)) & mask),
        )
        for src, dst, rot, col in _RHO_PI:
            v = a[src] ^ d[col]
            # v < 2**64, so v >> 64 == 0 and a zero rotation needs no special case
            b[dst] = ((v << rot) | (v >> (64 - rot))) & mask
        for y in (0, 5, 10, 15, 20):
            b0, b1, b2, b3, b4 = b[y], b[y + 1], b[y + 2], b[y + 3], b[y + 4]
            a[y] = b0 ^ (~b1 & b2)
            a[y + 1] = b1 ^ (~b2 & b3)
            a[y + 2] = b2 ^ (~b3 & b4)
            a[y + 3] = b3 ^ (~b4 & b0)
            a[y + 4] = b4 ^ (~b0 & b1)
        a[0] ^= rc


def _absorb(lanes: list[int], blocks: bytes, rate: int) -> None:
    """XOR whole ``rate``-byte blocks into the state, permuting after each."""
    words = rate // 8
    for off in range(0, len(blocks), rate):
        for i in range(words):
            lanes[i] ^= int.from_bytes(blocks[off + 8 * i : off + 8 * i + 8], "little")
        keccak_f1600(lanes)


def _finish(lanes: list[int], tail: bytes, out_len: int, suffix: int, rate: int) -> bytes:
    """Absorb the last partial input with its suffix and pad10*1, then squeeze."""
    padded = bytearray(tail)
    padded.append(suffix)
    padded.extend(b"\x00" * ((-len(padded)) % rate))
    padded[-1] |= 0x80
    _absorb(lanes, bytes(padded), rate)
    out = bytearray()
    while True:
        for i in range(rate // 8):
            out += lanes[i].to_bytes(8, "little")
        if len(out) >= out_len:
            return bytes(out[:out_len])
        keccak_f1600(lanes)


def _sponge(data: bytes, out_len: int, suffix: int, rate: int = _RATE_128) -> bytes:
    """Keccak sponge with a domain-separation suffix byte and pad10*1."""
    lanes = [0] * 25
    whole = len(data) - len(data) % rate
    _absorb(lanes, data[:whole], rate)
    return _finish(lanes, data[whole:], out_len, suffix, rate)


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
    """KMAC128(K, X, L, S) of SP 800-185 section 4.3; ``out_len`` in bytes.

    The cSHAKE prefix and the padded key are whole blocks, so the state after
    absorbing them depends on (K, S) only; it is cached for the few keys of live
    associations, which saves two permutations per MAC.
    """
    state = _KMAC_STATES.get((key, custom))
    if state is None:
        state = [0] * 25
        prefix = _bytepad(_encode_string(b"KMAC") + _encode_string(custom), _RATE_128)
        _absorb(state, prefix + _bytepad(_encode_string(key), _RATE_128), _RATE_128)
        if len(_KMAC_STATES) >= _KMAC_CACHE_SIZE:
            _KMAC_STATES.pop(next(iter(_KMAC_STATES)))
        _KMAC_STATES[(key, custom)] = state
    lanes = list(state)
    message = data + _right_encode(8 * out_len)
    whole = len(message) - len(message) % _RATE_128
    _absorb(lanes, message[:whole], _RATE_128)
    return _finish(lanes, message[whole:], out_len, 0x04, _RATE_128)


_KMAC_CACHE_SIZE = 256
_KMAC_STATES: dict[tuple[bytes, bytes], list[int]] = {}
