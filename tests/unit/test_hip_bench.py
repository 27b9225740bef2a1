"""``python -m hipbench.core`` runs and reports what it measured (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from hipbench.core import COMBINATIONS, main, measure, render_table

pytestmark = pytest.mark.unit


def test_bench_json_has_every_combination(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seconds", "0.02", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["results"]
    assert [r["identity"] for r in rows] == [c.identity for c in COMBINATIONS]
    assert [r["dh_group"] for r in rows] == [7, 12]
    for row in rows:
        assert row["base_exchanges_per_s"] > 0 and row["handovers_per_s"] > 0
        assert row["update_round_trips_per_s"] > 0
        # I1 + R1 + I2 + R2 of real sizes: a few hundred bytes each.
        assert 600 < row["base_exchange_bytes"] < 3000


def test_bench_table_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    result = measure("ECDSA P-256 + ECDH P-256", "ecdsa-p256", 7, 0.02)
    table = render_table([result])
    assert table.splitlines()[2].startswith("| ECDSA P-256 + ECDH P-256 |")
    with pytest.raises(SystemExit):
        main(["--seconds", "0"])
    assert "--seconds must be positive" in capsys.readouterr().err


def test_a_failed_run_raises_a_hip_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from hip.errors import HIPError
    from hip.host import HIPHost
    from hipbench.core import BenchmarkError

    assert issubclass(BenchmarkError, HIPError)
    # An Initiator that never sends its I1: the base exchange cannot complete.
    monkeypatch.setattr(HIPHost, "packets_to_send", lambda self: [])
    with pytest.raises(BenchmarkError, match="did not complete"):
        measure("ECDSA P-256 + ECDH P-256", "ecdsa-p256", 7, 0.01)


def test_cryptobench_codec_table_and_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from hipbench import crypto as cryptobench

    assert cryptobench.main(["--only", "codec", "--codec-runs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| packet | bytes |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| I1", "| R1", "| I2", "| R2", "| UPDATE"]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[1]) >= 48 and int(cells[2]) >= 1
        assert all(c.endswith("µs") for c in cells[3:])
    with pytest.raises(SystemExit):
        cryptobench.main(["--codec-runs", "0"])
    assert "--codec-runs must be at least 1" in capsys.readouterr().err


def test_benchmarks_are_wired_into_xenwam_bench() -> None:
    import importlib
    import inspect

    from xenwam.bench import BENCHMARKS

    for name in ("hip", "hip-crypto", "hipd"):
        module = importlib.import_module(BENCHMARKS[name][0])
        assert list(inspect.signature(module.main).parameters) == ["argv"]
