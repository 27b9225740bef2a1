"""The HIP puzzle: Ltrunc(RHASH(I | HIT-I | HIT-R | J), K) == 0 (RFC 7401 4.1.2)."""

from __future__ import annotations

import hashlib

import pytest

from hip.errors import CryptoError
from hip.orchid import make_orchid
from hip.puzzle import generate_puzzle_random, solve_puzzle, verify_solution
from hip.random import SeededRandom

pytestmark = pytest.mark.unit

HIT_I = make_orchid(2, b"initiator", "sha384")
HIT_R = make_orchid(2, b"responder", "sha384")


def _low_bits_zero(name: str, i: bytes, j: bytes, k: int, hit_i=HIT_I, hit_r=HIT_R) -> bool:
    """Independent check: the lowest-order K bits of RHASH(I | HIT-I | HIT-R | J)."""
    data = i + hit_i + hit_r + j
    digest = hashlib.shake_128(data).digest(32) if name == "cshake128" else hashlib.new(
        name, data
    ).digest()
    return int.from_bytes(digest, "big") % (1 << k) == 0


@pytest.mark.parametrize("name", ["sha256", "sha384"])
@pytest.mark.parametrize("k", range(13))
def test_solve_and_verify(name: str, k: int) -> None:
    rng = SeededRandom(f"{name}-{k}".encode())
    random_i = generate_puzzle_random(name, rng)
    assert len(random_i) == hashlib.new(name).digest_size
    j = solve_puzzle(name, random_i, HIT_I, HIT_R, k, rng)
    assert len(j) == len(random_i)
    assert _low_bits_zero(name, random_i, j, k)
    assert verify_solution(name, random_i, HIT_I, HIT_R, k, j)
    if k:
        # the first candidate after j that is not a solution must be rejected
        value = int.from_bytes(j, "big")
        while True:
            value += 1
            wrong = value.to_bytes(len(j), "big")
            if not _low_bits_zero(name, random_i, wrong, k):
                break
        assert not verify_solution(name, random_i, HIT_I, HIT_R, k, wrong)


@pytest.mark.parametrize("k", [0, 4, 10])
def test_suite5_puzzle(k: int) -> None:
    random_i = bytes(range(32))
    j = solve_puzzle("cshake128", random_i, HIT_I, HIT_R, k, bytes(32))
    assert _low_bits_zero("cshake128", random_i, j, k)
    assert verify_solution("cshake128", random_i, HIT_I, HIT_R, k, j)


def test_seeded_solving_is_reproducible_and_hit_order_matters() -> None:
    i = bytes(48)
    j1 = solve_puzzle("sha384", i, HIT_I, HIT_R, 10, SeededRandom(b"s"))
    j2 = solve_puzzle("sha384", i, HIT_I, HIT_R, 10, SeededRandom(b"s"))
    assert j1 == j2
    swapped_ok = _low_bits_zero("sha384", i, j1, 10, hit_i=HIT_R, hit_r=HIT_I)
    assert verify_solution("sha384", i, HIT_R, HIT_I, 10, j1) is swapped_ok


def test_malformed_inputs() -> None:
    i = bytes(32)
    assert not verify_solution("sha256", i, HIT_I, HIT_R, 4, bytes(31))
    assert not verify_solution("sha256", bytes(31), HIT_I, HIT_R, 4, bytes(32))
    assert not verify_solution("sha256", i, HIT_I, HIT_R, 300, bytes(32))
    with pytest.raises(CryptoError, match="#I must be 32 bytes"):
        solve_puzzle("sha256", bytes(48), HIT_I, HIT_R, 1, bytes(48))
    with pytest.raises(CryptoError, match="difficulty"):
        solve_puzzle("sha256", i, HIT_I, HIT_R, 257, bytes(32))
    with pytest.raises(CryptoError, match="start value"):
        solve_puzzle("sha256", i, HIT_I, HIT_R, 1, bytes(8))
    with pytest.raises(CryptoError, match="within 3 attempts"):
        solve_puzzle("sha256", i, HIT_I, HIT_R, 64, bytes(32), max_attempts=3)
