"""The records client's list of silences keeps the longest ones (a migration's own gap
came after 50 short ones in a bench run, and its timeline then showed no gap at all)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenwam.lab.records import note_gap

pytestmark = pytest.mark.unit


def test_the_long_gap_after_many_short_ones_is_kept() -> None:
    gaps: list[list[float]] = []
    for i in range(60):
        note_gap(gaps, 10.0 * i, 10.0 * i + 0.6, limit=50)
    note_gap(gaps, 700.0, 755.5, limit=50)
    assert len(gaps) == 50
    assert gaps[-1] == [700.0, 755.5]


@given(st.lists(st.tuples(st.floats(0.001, 1e4), st.floats(0.5, 100)), max_size=80),
       st.integers(1, 20))
def test_the_longest_are_kept_in_time_order(steps: list[tuple[float, float]],
                                             limit: int) -> None:
    """Silences follow one another (each starts after the last echo that ended the one
    before); whatever their lengths, the longest ``limit`` are kept, in time order."""
    gaps: list[list[float]] = []
    lengths = []
    at = 0.0
    for pause, length in steps:
        start, at = at + pause, at + pause + length
        note_gap(gaps, start, at, limit=limit)
        lengths.append(round(at, 3) - round(start, 3))
    assert len(gaps) == min(limit, len(steps))
    assert gaps == sorted(gaps)
    kept = sorted((b - a for a, b in gaps), reverse=True)
    assert kept == sorted(lengths, reverse=True)[:len(kept)]
