"""Real DRBD 8.4 between the two lab dom0s, driven by ``xenwam disk`` over the link.

Each test builds its own resource on loop devices over sparse files in dom0 and tears it
down afterwards, so tests do not depend on each other and leave the lab as they found it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from xenwam.drbd.info import parse_events2, parse_proc_drbd, parse_status, states_from_events
from xenwam.errors import CommandError
from xenwam.lab.drbdpair import (
    MIB,
    Pair,
    bring_up,
    create_images,
    define_pair,
    destroy_pair,
    sh,
    status_json,
    xw,
)

pytestmark = pytest.mark.lab


@pytest.fixture
def small_pair(lab: Any) -> Iterator[Pair]:
    # 24 MiB: enough for the 8 MiB payload at 5 MiB; each MiB of DRBD's full sync costs
    # seconds under TCG.
    create_images(lab, "xwt-sync", 24 * MIB)
    pair = define_pair(lab, "xwt-sync", 40, 24 * MIB, 7840)
    try:
        yield pair
    finally:
        destroy_pair(lab, pair)


def test_data_written_on_a_reads_back_identically_on_b(lab: Any, small_pair: Pair) -> None:
    pair = small_pair
    bring_up(lab, pair)
    st = status_json(lab, "a", pair.name)
    assert (st["connection"], st["disk"], st["peer_disk"]) == (
        "Connected", "Inconsistent", "Inconsistent")
    xw(lab, "a", "disk", "promote", "--force", pair.name)
    # Live output of every source the parsers read must parse.
    proc = parse_proc_drbd(sh(lab, "a", "cat /proc/drbd"))
    assert proc.version is not None and proc.version.startswith("8.4")
    assert proc.devices[pair.minor].role == "Primary"
    xw(lab, "a", "disk", "wait-sync", pair.name, "--timeout", "600", timeout=660)
    states = parse_status(sh(lab, "a", f"drbdsetup status {pair.name} --verbose --statistics"))
    assert [(s.resource, s.role, s.disk, s.peer_disk) for s in states] == [
        (pair.name, "Primary", "UpToDate", "UpToDate")]
    events = states_from_events(parse_events2(
        sh(lab, "a", f"drbdsetup events2 {pair.name} --now --statistics")))
    assert events[0].connection == "Connected" and events[0].peer_disk == "UpToDate"

    sh(lab, "a", f"dd if=/dev/urandom of=/tmp/payload bs=1M count=8 2>/dev/null; "
                 f"dd if=/tmp/payload of={pair.device} bs=1M seek=5 oflag=direct 2>/dev/null")
    want = sh(lab, "a", f"sha256sum < {pair.device}").split()[0]
    xw(lab, "a", "disk", "wait-sync", pair.name, "--timeout", "300", timeout=330)
    xw(lab, "a", "disk", "demote", pair.name)
    xw(lab, "b", "disk", "promote", pair.name)
    got = sh(lab, "b", f"sha256sum < {pair.device}").split()[0]
    assert got == want
    assert sh(lab, "b", f"dd if={pair.device} bs=1M skip=5 count=8 2>/dev/null | sha256sum") \
        == sh(lab, "a", "sha256sum < /tmp/payload")
    # Idempotent: a second promote runs nothing and succeeds.
    out = json.loads(xw(lab, "b", "disk", "promote", "--json", pair.name))
    assert out["changed"] is False

    # Live switch to protocol C with two primaries, run on b and forwarded by DRBD to a
    # (protocol version >= 100), then back to protocol A.
    assert status_json(lab, "a", pair.name)["protocol"] == "A"
    xw(lab, "b", "disk", "handover", pair.name)
    deadline = time.monotonic() + 30
    while status_json(lab, "a", pair.name)["protocol"] != "C" and time.monotonic() < deadline:
        time.sleep(1)
    assert status_json(lab, "a", pair.name)["protocol"] == "C"
    xw(lab, "a", "disk", "promote", pair.name)  # two primaries now allowed
    assert status_json(lab, "b", pair.name)["peer_role"] == "Primary"
    with pytest.raises(CommandError, match="demote one side"):
        xw(lab, "a", "disk", "bulk", pair.name)  # refused while both are Primary
    xw(lab, "b", "disk", "demote", pair.name)
    xw(lab, "a", "disk", "bulk", pair.name)
    assert status_json(lab, "a", pair.name)["protocol"] == "A"
    assert status_json(lab, "b", pair.name)["protocol"] == "A"
