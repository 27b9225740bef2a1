"""Injected randomness for the HIP core.

The protocol core never calls ``os.urandom`` itself: every function that needs
random bytes takes a :class:`RandomSource`.  Production code passes
:class:`SystemRandom`; tests pass :class:`SeededRandom`, which yields the same
stream for the same seed so that keys, nonces, puzzles and IVs are reproducible.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol, runtime_checkable

from hip.errors import HIPError

__all__ = [
    "RandomSource",
    "RandomSourceError",
    "SeedTypeError",
    "SeededRandom",
    "SystemRandom",
    "default_random",
]


class RandomSourceError(HIPError, ValueError):
    """A random source was asked for something impossible (our own misuse).

    Also a ``ValueError``, which is what such a request raised before.
    """


class SeedTypeError(RandomSourceError, TypeError):
    """A :class:`SeededRandom` seed that is not bytes (also a ``TypeError``)."""


@runtime_checkable
class RandomSource(Protocol):
    """Anything that hands out ``n`` random bytes."""

    def bytes(self, n: int) -> bytes:
        """Return exactly ``n`` random bytes."""
        ...


class SystemRandom:
    """The operating system's CSPRNG (``os.urandom``); the default everywhere."""

    def bytes(self, n: int) -> bytes:
        """Return ``n`` bytes from ``os.urandom``."""
        if n < 0:
            raise RandomSourceError(
                f"cannot draw a negative number of random bytes ({n}); ask for 0 or more")
        return os.urandom(n)


class SeededRandom:
    """A deterministic stream: SHA-256(seed || 64-bit block counter), concatenated.

    For tests and reproducible benchmarks only; never for real keys.  The same
    seed always yields the same byte stream, however the reads are split.
    """

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray):
            raise SeedTypeError(
                f"seed must be bytes, not {type(seed).__name__} ({seed!r}); e.g. b\"test\"")
        self._seed = bytes(seed)
        self._counter = 0
        self._buffer = b""

    def bytes(self, n: int) -> bytes:
        """Return the next ``n`` bytes of the stream."""
        if n < 0:
            raise RandomSourceError(
                f"cannot draw a negative number of random bytes ({n}); ask for 0 or more")
        chunks = [self._buffer]
        have = len(self._buffer)
        while have < n:
            block = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            chunks.append(block)
            have += len(block)
        stream = b"".join(chunks)
        self._buffer = stream[n:]
        return stream[:n]


_SYSTEM = SystemRandom()


def default_random(rng: RandomSource | None) -> RandomSource:
    """Return ``rng``, or the shared :class:`SystemRandom` when it is ``None``."""
    return _SYSTEM if rng is None else rng
