"""TCP resumes right after a move, not at its next backed-off retransmission (issue 10,
finding 6).

A migrating guest is paused for 15-20 s; its correspondent's TCP keeps retransmitting
into the void and backs its timer off.  Here M (the "guest") is cut off for
``CUT_SECONDS`` while C streams records to M's HIT, then M moves to another subnet and
announces it.  C's hipd (userspace ESP) sends again at once the segments M missed;
without it (``--no-resend-after-move``) C's TCP waits for its next retransmission.

Timings are printed, not asserted (speed is for benchmarks); the test asserts that the
re-sending happened, or not, and that every record arrived.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from . import test_hipd_mobility as mobility
from .procs import wait_for
from .test_hipd_mobility import HipLab, stream_report

pytestmark = pytest.mark.netns

#: The hipd lab of the mobility tests (three subnets, a router, M and C with hipd).
hip_lab = mobility.hip_lab

#: How long M is cut off: C's retransmissions come at about 0.2, 0.6, 1.4, 3.0, 6.2 and
#: 12.6 s (RTO 200 ms, doubling), so after 8 s the next one is some 4.6 s away.
CUT_SECONDS = 8.0


def _events(lab: HipLab, role: str) -> list[dict[str, object]]:
    ns = lab.m if role == "m" else lab.c
    res = ns.run([sys.executable, "-m", "hip.ctl", "events", "--json", "--socket",
                  str(lab.work / f"{role}.sock")])
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _rebound_at(lab: HipLab, role: str, wall_to_monotonic: float) -> float:
    """When ``role`` last reported Rebound, on this process's monotonic clock."""
    rebounds = [e for e in _events(lab, role) if e["event"] == "Rebound"]
    assert rebounds, f"no Rebound on {role}: {_events(lab, role)}"
    return float(rebounds[-1]["time"]) - wall_to_monotonic  # type: ignore[arg-type]


@pytest.mark.parametrize("resend", [True, False], ids=["resend", "no-resend"])
def test_tcp_resumes_right_after_a_move(hip_lab: HipLab, resend: bool) -> None:
    lab = hip_lab
    if not resend:
        lab.stop_hipd("c")
        lab.start_hipd(lab.c, "c", "--no-resend-after-move")
    wall_to_monotonic = time.time() - time.monotonic()  # hipd's events carry wall time
    count, interval = 1000, 0.02  # 20 s of records, sent whatever TCP does meanwhile
    out = lab.start_stream(7800, count, interval)
    wait_for(lambda: out.exists() and json.loads(out.read_text())["records"] >= 50, 20,
             "the stream to start")
    # M's port leaves subnet 1's bridge: nothing reaches M and nothing from M gets
    # anywhere, and M sees no change of its own (like a paused guest).
    lab.r.ip("link", "set", "m1r", "nomaster")
    cut = time.monotonic()
    time.sleep(CUT_SECONDS)
    moved = lab.place(lab.m, "m", 2, 2, old=1)  # M resumes on subnet 2 and says so
    report = stream_report(out, count, 90)
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    timeline = report["timeline"]
    assert isinstance(timeline, list)
    first = min(arrived for _seq, _sent, arrived in timeline if arrived > moved)
    m_rebound = _rebound_at(lab, "m", wall_to_monotonic)  # M's UPDATE acknowledged
    c_rebound = _rebound_at(lab, "c", wall_to_monotonic)  # C's SAs moved to M's new address
    show = lab.show(lab.c, "c")
    resent = show["esp_resent_after_move"]
    c_log = Path(lab.work / "hipd-c.log").read_text(errors="replace")
    print(f"{'with' if resend else 'without'} re-sending after the move: cut "
          f"{moved - cut:.1f} s; after the address change: M's UPDATE acknowledged "
          f"{(m_rebound - moved) * 1000:.0f} ms, C rebound {(c_rebound - moved) * 1000:.0f} "
          f"ms, first record delivered {(first - moved) * 1000:.0f} ms; first record "
          f"{(first - m_rebound) * 1000:.0f} ms after M's UPDATE was acknowledged; "
          f"C re-sent {resent}")
    if resend:
        assert isinstance(resent, dict) and resent.get(lab.hits["m"], 0) > 0
        assert "TCP segment(s) to " + lab.hits["m"] + " after the move" in c_log
    else:
        assert resent == {}
        assert "after the move" not in c_log
