"""CI's smoke run of ``xenwam bench migrate`` (issue 12): the smallest case, so the command
cannot rot.

One data disk size, one WAN profile, one repeat: freeze-and-copy and ``xenwam migrate``
in the wan layout, then stock ``xl migrate`` once the session's lab is in its lan layout
(hence the ``lan`` marker: it runs after the wan tests, and the lan tests after it reuse
the lan lab).  Figures are printed, never judged: the test checks that every method ran
and produced each figure, that the plots and the xenwam run's timeline exist, and that the
ratios P1-P4 were computed.  About 15 minutes under TCG (two --hip guests: freeze-and-copy
moves one to B and xenwam the same one back; one boot of the lan layout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xenwam.lab import migrate_bench

pytestmark = [pytest.mark.lab, pytest.mark.lan]

FIGURES = ("disruption_seconds", "paused_seconds", "total_seconds", "link_bytes")


def test_the_smallest_bench_migrate(lab: Any, tmp_path: Path) -> None:
    out = tmp_path / "bench-migrate"
    status = migrate_bench.main(["--out-dir", str(out), "--json"], labs=lab)
    doc = json.loads((out / migrate_bench.RESULTS_NAME).read_text())
    print("bench-migrate", json.dumps({"runs": doc["runs"], "ratios": doc["ratios"]}))
    runs = {r["method"]: r for r in doc["runs"]}
    assert set(runs) == set(migrate_bench.METHODS)
    for method, run in runs.items():
        assert run["error"] is None, (method, run["error"])
        for key in FIGURES:
            assert run[key] is not None, (method, key, run)
        assert run["wire_bytes"], (method, run)
        assert all(v is not None for v in run["wire_bytes"].values()), (method, run)
        assert run["disruption_kind"], (method, run)
    for method in ("freeze-copy", "xenwam"):
        assert runs[method]["bound_seconds"] is not None, runs[method]
    assert set(runs["xenwam"]["wire_bytes"]) == {"seed", "resync", "memory"}
    assert runs["xenwam"]["timeline"] and Path(runs["xenwam"]["timeline"]).is_file()
    assert [Path(p).name for p in doc["plots"]] == ["disruption-per-method.png",
                                                   "disruption-vs-size.png"]
    assert all(Path(p).is_file() for p in doc["plots"])
    assert {r["ratio"] for r in doc["ratios"]} == {"P1", "P2", "P3", "P4"}
    section = migrate_bench.render_section(doc)
    assert doc["commit"] in section and "| P1 |" in section
    assert status == 0
