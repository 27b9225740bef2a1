"""Data generation identifiers: parsing ``drbdadm get-gi`` and telling a lagging copy
from a split brain, the way DRBD's own handshake does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenwam.drbd.info import (
    DIVERGED,
    LOCAL_AHEAD,
    PEER_AHEAD,
    SAME,
    UNRELATED,
    UUID_JUST_CREATED,
    Generations,
    parse_gi,
    relation,
)
from xenwam.errors import DrbdError

pytestmark = pytest.mark.unit

X, Y, Z, W = 0x14F4E53CBE25B5FA, 0x2A9B00C4D1E2F300, 0x7C00FFEE12345670, 0x0BADC0DE0000AB10


def gi(current: int, bitmap: int = 0, h1: int = 0, h2: int = 0) -> Generations:
    return Generations(current, bitmap, (h1, h2))


def test_parse_the_lab_output() -> None:
    # An adopted disk, forced UpToDate alone (drbdadm get-gi in the lab, DRBD 8.4.11).
    g = parse_gi("14F4E53CBE25B5FB:0000000000000004:0000000000000000:0000000000000000:"
                 "1:1:1:0:0:0:0\n")
    assert g == Generations(0x14F4E53CBE25B5FB, UUID_JUST_CREATED, (0, 0))
    assert Generations.from_json(g.to_json()) == g


def test_captured_pair_apart_running_side_is_ahead() -> None:
    # The lab: the guest wrote 8 MiB on b while the link to a was cut.
    data = Path(__file__).resolve().parents[1] / "data" / "drbd"
    running = parse_gi((data / "drbdadm-8.4.11-get-gi-apart-running.txt").read_text())
    stale = parse_gi((data / "drbdadm-8.4.11-get-gi-apart-stale.txt").read_text())
    assert relation(running, stale) == LOCAL_AHEAD
    assert relation(stale, running) == PEER_AHEAD


@pytest.mark.parametrize("text", ["", "no such resource", "14F4E53CBE25B5FB:0004:0:0",
                                  "ZZZZE53CBE25B5FB:0000000000000004:0000000000000000:"
                                  "0000000000000000:1:1"])
def test_parse_refuses_what_is_not_get_gi(text: str) -> None:
    with pytest.raises(DrbdError):
        parse_gi(text)


def test_from_json_refuses_malformed() -> None:
    for doc in ({}, {"current": "x", "bitmap": "0", "history": ["0", "0"]},
                {"current": "1", "bitmap": "0", "history": ["0"]}):
        with pytest.raises(DrbdError):
            Generations.from_json(doc)  # type: ignore[arg-type]


def test_one_generation_is_the_same_data_whatever_the_primary_flag() -> None:
    assert relation(gi(X), gi(X)) == SAME
    assert relation(gi(X | 1), gi(X)) == SAME


def test_the_side_that_wrote_while_apart_is_ahead() -> None:
    # The primary lost its peer: its old current became its bitmap's base.
    primary, secondary = gi(Y, X), gi(X)
    assert relation(primary, secondary) == LOCAL_AHEAD
    assert relation(secondary, primary) == PEER_AHEAD


def test_both_wrote_while_apart_is_a_split_brain() -> None:
    a, b = gi(Y, X), gi(Z, X)
    assert relation(a, b) == DIVERGED
    assert relation(b, a) == DIVERGED


def test_older_by_more_than_one_generation() -> None:
    assert relation(gi(Z, Y, X), gi(X)) == LOCAL_AHEAD
    assert relation(gi(X), gi(Z, Y, X)) == PEER_AHEAD


def test_diverged_further_back() -> None:
    assert relation(gi(Z, 0, X), gi(W, 0, X)) == DIVERGED


def test_no_shared_generation_is_unrelated() -> None:
    assert relation(gi(X, UUID_JUST_CREATED), gi(Y, UUID_JUST_CREATED)) == UNRELATED
    assert relation(gi(X), gi(Y)) == UNRELATED


uuids = st.integers(min_value=8, max_value=2**64 - 1).map(lambda u: u & ~1)


@given(uuids, uuids, uuids, uuids)
def test_relation_is_symmetric(a: int, b: int, c: int, d: int) -> None:
    mirror = {SAME: SAME, LOCAL_AHEAD: PEER_AHEAD, PEER_AHEAD: LOCAL_AHEAD,
              DIVERGED: DIVERGED, UNRELATED: UNRELATED}
    left, right = gi(a, b), gi(c, d)
    assert relation(right, left) == mirror[relation(left, right)]
