"""`xenwam doctor` tells the truth about the machine it runs on (probes need root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns


def test_doctor_matches_the_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("doctor's kernel probes need root")
    proc = subprocess.run(
        [sys.executable, "-m", "xenwam.cli", "doctor", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    doc = json.loads(proc.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    on_xen = Path("/sys/hypervisor/type").exists() and (
        Path("/sys/hypervisor/type").read_text().strip() == "xen"
    )
    assert (checks["xen hypervisor"]["status"] == "ok") is on_xen
    assert (checks["TUN"]["status"] == "ok") is Path("/dev/net/tun").exists()
    assert (checks["drbd-utils"]["status"] == "ok") is (shutil.which("drbdadm") is not None)
    assert (checks["qemu"]["status"] == "ok") is (shutil.which("qemu-system-x86_64") is not None)
    # The ESP probe must agree with an independent attempt to use ESP in the kernel.
    esp_ok = checks["kernel ESP (XFRM BEET)"]["status"] == "ok"
    loaded = Path("/proc/net/xfrm_stat").exists() and any(
        Path(f"/sys/module/{m}").exists() for m in ("esp4", "esp6")
    )
    if loaded:
        assert esp_ok
    # Exit status answers the migration role.
    assert (proc.returncode == 0) is doc["roles"]["migration"]
    if not on_xen:
        assert proc.returncode == 1
