"""The HIP puzzle (RFC 7401 sections 4.1.2, 5.2.4, 5.2.5, 6.3).

A solution J satisfies ``Ltrunc(RHASH(I | HIT-I | HIT-R | J), K) == 0``, where
Ltrunc(H, K) is the lowest-order K bits of H (RFC 7401 section 2.2, notation), K
is the difficulty in bits (PUZZLE's #K, 8 bits) and I and J are RHASH_len/8
bytes long (section 5.2.4).  RHASH is the Responder's HIT suite hash.
"""

from __future__ import annotations

from hip.crypto import rhash_hasher, rhash_len
from hip.errors import CryptoError
from hip.random import RandomSource

__all__ = ["MAX_K", "generate_puzzle_random", "solve_puzzle", "verify_solution"]

#: Largest #K that fits the PUZZLE parameter (8 bits).
MAX_K = 255


def generate_puzzle_random(rhash_name: str, rng: RandomSource) -> bytes:
    """A fresh random #I of RHASH_len/8 bytes for a PUZZLE parameter."""
    return rng.bytes(rhash_len(rhash_name))


def _check(rhash_name: str, random_i: bytes, k: int) -> int:
    size = rhash_len(rhash_name)
    if len(random_i) != size:
        raise CryptoError(f"puzzle #I must be {size} bytes for {rhash_name}, got {len(random_i)}")
    if not 0 <= k <= min(MAX_K, 8 * size):
        raise CryptoError(f"puzzle difficulty K={k} must be 0..{min(MAX_K, 8 * size)} bits")
    return size


def solve_puzzle(
    rhash_name: str,
    random_i: bytes,
    hit_i: bytes,
    hit_r: bytes,
    k: int,
    rng: RandomSource | bytes,
    max_attempts: int | None = None,
) -> bytes:
    """Find J for PUZZLE (I, K); ``rng`` gives the starting J (or pass the start bytes).

    Candidates are the start value and its successors (mod 2^(8*len)), so a seeded
    source gives a reproducible J.  CryptoError after ``max_attempts`` candidates.
    """
    size = _check(rhash_name, random_i, k)
    start = rng if isinstance(rng, bytes | bytearray) else rng.bytes(size)
    if len(start) != size:
        raise CryptoError(f"puzzle start value must be {size} bytes, got {len(start)}")
    digest = rhash_hasher(rhash_name, bytes(random_i) + bytes(hit_i) + bytes(hit_r))
    mask = (1 << k) - 1
    modulus = 1 << (8 * size)
    candidate = int.from_bytes(start, "big")
    attempts = 0
    while max_attempts is None or attempts < max_attempts:
        j = candidate.to_bytes(size, "big")
        if int.from_bytes(digest(j), "big") & mask == 0:
            return j
        candidate = (candidate + 1) % modulus
        attempts += 1
    raise CryptoError(f"no puzzle solution for K={k} within {max_attempts} attempts")


def verify_solution(
    rhash_name: str, random_i: bytes, hit_i: bytes, hit_r: bytes, k: int, j: bytes
) -> bool:
    """True if J solves PUZZLE (I, K) for these HITs; False for any malformed input."""
    try:
        size = _check(rhash_name, random_i, k)
    except CryptoError:
        return False
    if len(j) != size:
        return False
    digest = rhash_hasher(rhash_name, bytes(random_i) + bytes(hit_i) + bytes(hit_r))
    return int.from_bytes(digest(bytes(j)), "big") & ((1 << k) - 1) == 0
