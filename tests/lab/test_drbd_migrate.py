"""A PVH guest on a DRBD disk (``script=block-xenwam``) moved by stock ``xl migrate``.

The guest keeps a write journal on its disk: record N goes to sector N, is flushed, and
only then acknowledged on the guest's console.  After the migration every acknowledged
record, from before and during the move, must be on the destination's copy of the disk,
byte for byte, and the hotplug script must have run on both sides (destination promoted,
source demoted).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from xenwam.lab import drbdpair as lp

pytestmark = pytest.mark.lab

NAME = "xwt-mig"
RESOURCE = "xwt-guest"
MINOR = 44
GUEST_DIR = "/var/lib/xenwam-lab"
CONSOLE = "/var/log/xen/console"
RECORD_RE = re.compile(r"xwj-ack (xwj \d{8} \d+)")

# Runs in the guest's busybox shell (typed on its console): one 512-byte record per
# sector, flushed before it is acknowledged; stops when /tmp/stop appears.
WRITER = (
    "(n=0; while [ ! -e /tmp/stop ]; do n=$((n+1)); "
    "r=$(printf 'xwj %08d %s' $n $(date +%s)); "
    "printf '%-511s\\n' \"$r\" | dd of=/dev/xvda bs=512 seek=$n conv=notrunc 2>/dev/null "
    "&& sync && echo \"xwj-ack $r\"; sleep 0.2; done; echo xwj-stopped) "
    "> /dev/hvc0 2>&1 &"
)


def xl_config() -> str:
    return "\n".join([
        f'name = "{NAME}"',
        'type = "pvh"',
        f'kernel = "{GUEST_DIR}/vmlinuz"',
        f'ramdisk = "{GUEST_DIR}/guest-initrd.gz"',
        'cmdline = "console=hvc0 quiet"',
        "memory = 128",
        "vcpus = 1",
        f'disk = ["vdev=xvda, access=rw, script=block-xenwam, target={RESOURCE}"]',
        'on_crash = "preserve"',
        "",
    ])


def type_into_console(lab: Any, host: str, command: str) -> None:
    script = ('tty=$(xenstore-read "/local/domain/$(xl domid "$1")/console/tty") && '
              'printf "%s\\n" "$2" > "$tty"')
    lab.exec(host, ["sh", "-c", script, "sh", NAME, command])


def acked(lab: Any, host: str) -> list[str]:
    text = lp.sh(lab, host, f"cat {CONSOLE}/guest-{NAME}*.log 2>/dev/null || true")
    return RECORD_RE.findall(text)


def wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def test_guest_on_drbd_migrates_with_hotplug_on_both_sides(lab: Any) -> None:
    lp.create_images(lab, RESOURCE, 64 * lp.MIB)
    pair = lp.define_pair(lab, RESOURCE, MINOR, 64 * lp.MIB, 7844)
    try:
        for h in lp.HOSTS:
            lp.sh(lab, h, "ln -sf /opt/xenwam/hooks/block-xenwam /etc/xen/scripts/block-xenwam; "
                          f"rm -f {CONSOLE}/guest-{NAME}*.log")
        lp.bring_up(lab, pair)
        lp.xw(lab, "a", "disk", "promote", "--force", RESOURCE)
        lp.xw(lab, "a", "disk", "wait-sync", RESOURCE, "--timeout", "600", timeout=660)
        # The hook's add promotes by itself: start from Secondary on a.
        lp.xw(lab, "a", "disk", "demote", RESOURCE)

        lab.exec("a", ["tee", f"/etc/xen/{NAME}.cfg"], input=xl_config())
        lab.exec("a", ["xl", "create", f"/etc/xen/{NAME}.cfg"], timeout=240)
        assert lp.status_json(lab, "a", RESOURCE)["role"] == "Primary"  # hook add on a
        wait_for("the guest's console", lambda: "xw-tick" in lp.sh(
            lab, "a", f"cat {CONSOLE}/guest-{NAME}.log 2>/dev/null || true"), 120)
        type_into_console(lab, "a", WRITER)
        wait_for("journal records", lambda: len(acked(lab, "a")) >= 5, 60)

        lp.xw(lab, "a", "disk", "handover", RESOURCE)
        wait_for("protocol C on b",
                 lambda: lp.status_json(lab, "b", RESOURCE)["protocol"] == "C", 30)
        before = len(acked(lab, "a"))
        lab.exec("a", ["xl", "migrate", NAME, lp.LINK["b"]], timeout=900)

        assert NAME in lp.sh(lab, "b", "xl list")
        assert NAME not in lp.sh(lab, "a", "xl list")
        on_b, on_a = lp.status_json(lab, "b", RESOURCE), lp.status_json(lab, "a", RESOURCE)
        assert on_b["role"] == "Primary"      # block-xenwam add ran on the destination
        assert on_a["role"] == "Secondary"    # block-xenwam remove ran on the source
        lp.xw(lab, "b", "disk", "bulk", RESOURCE)
        assert lp.status_json(lab, "b", RESOURCE)["protocol"] == "A"

        # The guest keeps journaling on b; then stop it and check the disk.
        wait_for("journal records on b", lambda: len(acked(lab, "b")) >= 3, 90)
        type_into_console(lab, "b", "touch /tmp/stop")
        wait_for("the writer to stop", lambda: "xwj-stopped" in lp.sh(
            lab, "b", f"cat {CONSOLE}/guest-{NAME}*.log"), 60)
        records = sorted(set(acked(lab, "a") + acked(lab, "b")))
        numbers = [int(r.split()[1]) for r in records]
        assert numbers == list(range(1, len(numbers) + 1)), "journal has gaps"
        assert len(numbers) > before >= 5
        disk = lab.exec("b", ["dd", f"if={pair.device}", "bs=512", "skip=1",
                              f"count={len(numbers)}", "iflag=direct"], timeout=60).stdout
        on_disk = [line.rstrip() for line in disk.splitlines()]
        assert on_disk == records
    finally:
        lp.sh(lab, "b", f"xl destroy {NAME} 2>/dev/null || true", check=False)
        lp.sh(lab, "a", f"xl destroy {NAME} 2>/dev/null || true", check=False)
        lp.destroy_pair(lab, pair)
