"""CI's part of the fault matrix (issue 13), on real Xen and DRBD: the case that
exercises xenwam's own recovery (a killed orchestrator while memory moves: `--recover`
must follow xl migrate, which went on alone).  The crashed source while the guest waits
paused on the destination left CI for its time budget.  One case per fault kind is
``xenwam bench faults --cases kinds`` (about 25 minutes); the whole matrix is
``xenwam bench faults`` (docs/reliability.md).

Each case is a real ``xenwam migrate`` of one guest whose journal writer keeps
appending flushed, acknowledged records to its disk; the fault is injected at the
moment the migration's own event stream names, and the invariants are checked from
both hosts (:mod:`xenwam.lab.faults`): the guest runs on exactly one host, no
acknowledged record is lost, the copies reconnect without a split brain, the journal
says how it ended and a second ``--recover`` is a no-op, and a migration without a
fault then succeeds (the case rolls forward: the guest moves).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from xenwam.lab import faults

pytestmark = pytest.mark.lab


def test_ci_cases_keep_every_invariant(lab: Any) -> None:
    settings = faults.Settings(cases=faults.select("ci"))
    runner = faults.FaultRunner(lab.current(), settings, say=lambda m: print(f"[faults] {m}",
                                                                             flush=True))
    try:
        results = runner.run()
    finally:
        # Its journal writer would otherwise share the host's CPU with later tests.
        lab.current().remove_guest(runner.name, (runner.resource,))
    doc = {"results": [asdict(r) for r in results]}
    print(faults.render_report(doc))
    print("fault-results", json.dumps(doc))
    assert [r.case for r in results] == list(faults.CI_CASES)
    for r in results:
        assert r.triggered, (r.case, r.error)
        assert r.passed, (r.case, r.error, r.checks, r.seen)
