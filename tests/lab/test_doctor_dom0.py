"""`xenwam doctor` inside a lab dom0 tells the truth: this host can migrate guests."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.lab

#: The lab's ``xenwam`` command, as an operator runs it.
DOCTOR = ["xenwam", "doctor", "--json"]


def test_doctor_in_dom0_finds_xen_drbd_and_kernel_esp(lab: Any) -> None:
    res = lab.exec("a", DOCTOR, check=False, timeout=300)
    doc = json.loads(res.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    # Independent evidence from the same dom0, not from the doctor.
    xl = lab.exec("a", ["xl", "info"], timeout=60).stdout
    xen_version = next(line.split(":", 1)[1].strip() for line in xl.splitlines()
                       if line.startswith("xen_version"))
    assert checks["xen hypervisor"]["status"] == "ok"
    assert checks["xen control domain"]["status"] == "ok"
    assert xen_version in checks["xl"]["detail"]
    assert checks["xenstore"]["status"] == "ok"
    assert checks["drbd kernel module"]["status"] == "ok"
    assert checks["drbd-utils"]["status"] == "ok"
    # Debian's kernel has esp4 and sch_netem as modules; the lab shapes the WAN with netem.
    assert checks["kernel ESP (XFRM BEET)"]["status"] == "ok"
    assert checks["netem"]["status"] == "ok"
    assert doc["roles"]["migration"] is True
    assert res.exit_status == 0, res.stderr
