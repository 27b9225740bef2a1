"""A token bucket on the protocol's own clock: how the core bounds what peers can make
it send (NOTIFYs to unknown critical parameters, re-acknowledgements of replayed
UPDATEs), so that packets from the network cannot spend our CPU or their bandwidth
without limit.  No clock is read here: ``now`` is passed in, as everywhere in the core.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; driven by the ``now`` passed in."""

    rate: float
    burst: int
    tokens: float
    last: float

    def take(self, now: float) -> bool:
        """Spend one token if there is one (refilled for the time since the last call)."""
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = max(self.last, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
