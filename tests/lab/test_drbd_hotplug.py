"""hooks/block-xenwam run as libxl runs it, against real xenstore and real DRBD in dom0.

A backend directory for a domain id that does not exist stands in for the one libxl
makes, so the hook's xenstore contract is checked without starting a guest (the
migration test covers libxl running it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from xenwam.lab import drbdpair as lp

pytestmark = pytest.mark.lab

RESOURCE = "xwt-hook"
BACKEND = "backend/vbd/999/51712"
HOOK = "/etc/xen/scripts/block-xenwam"


@pytest.fixture(scope="module")
def pair(lab: Any) -> Iterator[lp.Pair]:
    """One connected, UpToDate pair for the module (both tests leave it Secondary on a):
    the two new images are zeros on both sides, so DRBD is told they are in sync instead
    of copying them (a full sync cost about two minutes per test under TCG)."""
    lp.create_images(lab, RESOURCE, 32 * lp.MIB)
    made = lp.define_pair(lab, RESOURCE, 45, 32 * lp.MIB, 7845)
    try:
        lp.bring_up(lab, made)
        lp.xw(lab, "a", "disk", "skip-initial-sync", RESOURCE)
        st = lp.status_json(lab, "a", RESOURCE)
        assert (st["disk"], st["peer_disk"]) == ("UpToDate", "UpToDate"), st
        lp.sh(lab, "a", f"ln -sf /opt/xenwam/hooks/block-xenwam {HOOK}; "
                        f"rm -f /run/xenwam/hotplug.log; xenstore-rm {BACKEND} 2>/dev/null || true")
        yield made
    finally:
        lp.sh(lab, "a", "xenstore-rm backend/vbd/999 2>/dev/null || true", check=False)
        lp.destroy_pair(lab, made)


def hook(lab: Any, action: str) -> tuple[int, float]:
    """Run the hook in dom0 as libxl does; its exit status and its wall time in dom0."""
    script = (f'start=$(date +%s%N); XENBUS_PATH={BACKEND} {HOOK} {action}; rc=$?; '
              'echo "$rc $(( $(date +%s%N) - start ))"')
    out = lab.exec("a", ["sh", "-c", script], check=False, timeout=120).stdout
    rc, nanoseconds = out.split()[-2:]
    return int(rc), int(nanoseconds) / 1e9


def read(lab: Any, key: str) -> str:
    return lp.sh(lab, "a", f"xenstore-read {BACKEND}/{key} 2>/dev/null || true").strip()


def journal(lab: Any) -> list[dict[str, Any]]:
    text = lp.sh(lab, "a", "cat /run/xenwam/hotplug.log 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines()]


def test_hook_contract_in_dom0(lab: Any, pair: lp.Pair) -> None:
    lp.sh(lab, "a", f"xenstore-write {BACKEND}/params {RESOURCE}")
    status, first = hook(lab, "add")
    assert status == 0, read(lab, "hotplug-error")
    majmin = lp.sh(lab, "a", f"stat -L -c '%t:%T' {pair.device}").strip()
    assert read(lab, "physical-device") == majmin
    assert read(lab, "physical-device-path") == pair.device
    assert read(lab, "hotplug-status") == "connected"
    assert lp.status_json(lab, "a", RESOURCE)["role"] == "Primary"

    status, again = hook(lab, "add")  # idempotent, and the downtime-window fast path
    assert status == 0 and read(lab, "hotplug-status") == "connected"
    status, _ = hook(lab, "remove")
    assert status == 0
    assert lp.status_json(lab, "a", RESOURCE)["role"] == "Secondary"
    status, _ = hook(lab, "remove")
    assert status == 0
    calls = journal(lab)
    assert [(c["action"], c["outcome"]) for c in calls] == [
        ("add", "promoted"), ("add", "already primary"),
        ("remove", "demoted"), ("remove", "already secondary")]
    print("hotplug-bench " + json.dumps({
        "add_promote_wall_s": round(first, 2), "add_noop_wall_s": round(again, 2),
        "add_promote_python_s": calls[0]["seconds"], "add_noop_python_s": calls[1]["seconds"]}))


def test_hook_reports_errors_through_xenstore(lab: Any, pair: lp.Pair) -> None:
    lp.sh(lab, "a", f"rm -f /run/xenwam/hotplug.log; xenstore-rm {BACKEND} 2>/dev/null || true; "
                    f"xenstore-write {BACKEND}/params no-such-resource")
    status, _ = hook(lab, "add")
    assert status == 1
    assert read(lab, "hotplug-status") == "error"
    assert "'no-such-resource'" in read(lab, "hotplug-error")

    # Single-primary mode with the peer Primary: DRBD refuses, the hook says what to do.
    lp.xw(lab, "b", "disk", "promote", RESOURCE)
    lp.sh(lab, "a", f"xenstore-write {BACKEND}/params {RESOURCE} {BACKEND}/hotplug-status ''")
    status, _ = hook(lab, "add")
    assert status == 1
    assert read(lab, "hotplug-status") == "error"
    assert f"xenwam disk handover {RESOURCE}" in read(lab, "hotplug-error")
    assert lp.status_json(lab, "a", RESOURCE)["role"] == "Secondary"
