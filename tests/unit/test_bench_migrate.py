"""``xenwam bench migrate``'s pure parts: its arguments, the bound, the ratios P1-P4, the
docs section, the comparison plots and the parsers of what the lab reads back.  The lab
part itself runs in tests/lab/test_bench_migrate.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from xenwam import cli
from xenwam.bench import BENCHMARKS
from xenwam.errors import ConfigError
from xenwam.lab import migrate_bench as mb
from xenwam.lab import xl
from xenwam.lab.xl import PingReply

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data"
MIB = 1024 * 1024


def test_registered_as_a_benchmark() -> None:
    assert BENCHMARKS["migrate"][0] == "xenwam.lab.migrate_bench"


# ------------------------------------------------------------------ arguments


def test_the_defaults_are_the_smoke_run() -> None:
    s = mb.settings_from(mb.parser().parse_args([]))
    assert s.sizes_mib == (64,)
    assert [p.name for p in s.profiles] == ["20ms/100mbit"]
    assert s.repeats == 1
    assert s.methods == ("freeze-copy", "stock-lan", "xenwam")


def test_the_sweep_parses() -> None:
    s = mb.settings_from(mb.parser().parse_args(mb.SWEEP.split()))
    assert s.sizes_mib == (64, 256, 1024)
    assert [(p.rtt_ms, p.rate_kbit) for p in s.profiles] == [(20.0, 100_000), (80.0, 20_000)]
    assert s.repeats == 3


@pytest.mark.parametrize("argv", [
    ["--sizes-mib", "abc"], ["--sizes-mib", "64,,128"], ["--sizes-mib", "8"],
    ["--sizes-mib", "64,64"], ["--profiles", "20ms"], ["--profiles", "0ms/10mbit"],
    ["--profiles", "20ms/fast"], ["--repeats", "0"], ["--methods", "teleport"],
    ["--write-fraction", "1.5"], ["--write-kib-s", "-1"], ["--docs-from", "/nonexistent"],
    ["--frobnicate"],
])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        mb.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("xenwam bench migrate: error:")


def test_bad_arguments_through_xenwam_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["bench", "migrate", "--repeats", "many"])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_docs_without_results_is_refused(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "b.md"
    docs.write_text("# x\n")
    assert cli.main(["bench", "migrate", "--docs", str(docs)]) == 2
    assert "--docs-from" in capsys.readouterr().err


def test_without_a_lab_it_says_how_to_get_one(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["bench", "migrate", "--run-dir", str(tmp_path / "run"),
                       "--out-dir", str(tmp_path / "out"), "--methods", "xenwam"])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--bring-up" in err and "wan layout" in err


def test_profile_names_round_trip() -> None:
    for text in ("20ms/100mbit", "80ms/20mbit", "40ms/1500kbit"):
        assert mb.Profile.parse(text).name == text
    assert mb.Profile.parse("20ms/100mbit").bytes_per_s == 12_500_000


# ------------------------------------------------------------------ figures


def test_the_bound() -> None:
    must = mb.must_cross_bytes(16 * MIB, 224 * MIB)
    assert must == 240 * MIB
    assert mb.bound_seconds(must, 100_000) == pytest.approx(240 * MIB * 8 / 1e8)
    assert mb.bound_seconds(must, 100_000) == pytest.approx(20.1326592)
    assert mb.bound_seconds(mb.must_cross_bytes(16 * MIB, 224 * MIB, disk=False),
                            20_000) == pytest.approx(224 * MIB * 8 / 2e7)
    assert mb.bound_seconds(must, 0) is None


def test_used_disk_is_the_written_share() -> None:
    s = mb.Settings(write_fraction=0.25)
    assert s.used_disk_bytes(64) == 16 * MIB
    assert s.used_disk_bytes(1024) == 256 * MIB
    assert mb.written_mib(16, 0.01) == 1


def _run(method: str, profile: str | None, size: int, disruption: float | None,
         total: float | None = None, wire: dict[str, int] | None = None,
         bound: float | None = None, error: str | None = None,
         repeat: int = 1) -> dict[str, Any]:
    run = mb.Run(method=method, size_mib=size, profile=profile, repeat=repeat,
                 used_disk_bytes=16 * MIB if size == 64 else 64 * MIB,
                 memory_bytes=224 * MIB, disruption_seconds=disruption,
                 disruption_kind="records gap", paused_seconds=1.5, total_seconds=total,
                 wire_bytes=wire or {}, bound_seconds=bound, error=error)
    from dataclasses import asdict
    return asdict(run)


def results() -> dict[str, Any]:
    settings = mb.Settings(sizes_mib=(64, 256),
                           profiles=(mb.Profile.parse("20ms/100mbit"),), repeats=2)
    runs = [
        _run("stock-lan", None, 64, 3.0), _run("stock-lan", None, 64, 5.0, repeat=2),
        _run("stock-lan", None, 256, 4.0),
        _run("xenwam", "20ms/100mbit", 64, 10.0, 120.0,
             {"seed": 8 * MIB, "resync": MIB, "memory": 40 * MIB}, 20.0),
        _run("xenwam", "20ms/100mbit", 64, 12.0, 100.0,
             {"seed": 8 * MIB, "resync": 3 * MIB, "memory": 40 * MIB}, 20.0, repeat=2),
        _run("xenwam", "20ms/100mbit", 256, 11.0, 150.0,
             {"seed": 36 * MIB, "resync": MIB, "memory": 40 * MIB}, 30.0),
        _run("xenwam", "20ms/100mbit", 256, None, error="BenchError: boom", repeat=2),
        _run("freeze-copy", "20ms/100mbit", 64, 220.0, 230.0,
             {"memory": 30 * MIB, "disk": 9 * MIB}, 20.0),
        _run("freeze-copy", "20ms/100mbit", 256, 550.0, 560.0,
             {"memory": 30 * MIB, "disk": 40 * MIB}, 30.0),
    ]
    doc: dict[str, Any] = {"command": "xenwam bench migrate --sizes-mib 64,256 --repeats 2",
                           "commit": "abc1234", "started": "2026-12-03 10:00:00 UTC",
                           "cpus": 2, "load_average": {"start": [1.5, 1.25, 1.0],
                                                       "end": [2.0, 1.5, 1.0]},
                           "settings": settings.to_json(), "runs": runs}
    doc["ratios"] = mb.ratios(doc)
    return doc


def _row(doc: dict[str, Any], ratio: str, size: int | None) -> dict[str, Any]:
    return next(r for r in doc["ratios"] if r["ratio"] == ratio and r["size_mib"] == size)


def test_p1_against_stock_lan_downtime_plus_two_rtt() -> None:
    doc = results()
    p1 = _row(doc, "P1", None)
    # xenwam: median of 10, 12, 11 = 11; stock: median of 3, 5, 4 = 4; 2 RTT = 0.04 s.
    assert p1["numerator"] == 11.0
    assert p1["denominator"] == pytest.approx(4.04)
    assert p1["value"] == pytest.approx(11.0 / 4.04)
    assert p1["verdict"] == "missed"


def test_p2_per_disk_size() -> None:
    doc = results()
    assert _row(doc, "P2", 64)["value"] == pytest.approx(220.0 / 11.0)
    assert _row(doc, "P2", 256)["value"] == pytest.approx(550.0 / 11.0)  # failed run left out
    assert _row(doc, "P2", 64)["target"] is None


def test_p3_total_over_bound() -> None:
    doc = results()
    assert _row(doc, "P3", 64)["value"] == pytest.approx(110.0 / 20.0)
    assert _row(doc, "P3", 256)["value"] == pytest.approx(150.0 / 30.0)
    assert _row(doc, "P3", 64)["verdict"] == "missed"


def test_p4_wire_over_used_disk_and_ram() -> None:
    doc = results()
    # wire: median of 49 MiB and 51 MiB = 50 MiB; state 16 + 224 MiB.
    assert _row(doc, "P4", 64)["value"] == pytest.approx(50 / 240)
    assert _row(doc, "P4", 64)["verdict"] == "met"
    assert _row(doc, "P4", 256)["value"] == pytest.approx(77 / (64 + 224))


def test_ratios_with_nothing_measured() -> None:
    doc = results()
    doc["runs"] = []
    rows = mb.ratios(doc)
    assert {r["verdict"] for r in rows if r["target"] is not None} == {"not measured"}


# ------------------------------------------------------------------ the docs section


def test_render_section_says_command_commit_load_and_ratios() -> None:
    text = mb.render_section(results())
    assert text.startswith(mb.DOCS_BEGIN) and text.endswith(mb.DOCS_END)
    assert "`xenwam bench migrate --sizes-mib 64,256 --repeats 2`" in text
    assert "`abc1234`" in text and "1.50/1.25/1.00" in text and "2.00/1.50/1.00" in text
    assert "| xenwam | 20ms/100mbit | 64 | 2 | 11.0 (10.0-12.0) | 1.5 (1.5-1.5) |" in text
    assert "| stock-lan | lan, unshaped | 64 | 2 | 4.0 (3.0-5.0) |" in text
    assert "| xenwam | 20ms/100mbit | 256 | 1 (1 failed) |" in text
    assert "memory 40.0, resync 2.0, seed 8.0" in text
    assert "| P1 | xenwam WAN disruption / (stock xl LAN downtime + 2 RTT) | " \
           "20ms/100mbit | all | 2.72 | <= 1 | missed |" in text
    assert "| P4 |" in text and "| met |" in text
    assert "Failed: xenwam 20ms/100mbit 256 MiB run 2: BenchError: boom" in text


def test_render_section_names_every_session_of_a_resumed_sweep() -> None:
    doc = results()
    doc["load_average"] = {"start": [0.5, 0.25, 0.0], "end": [1.0, 1.0, 1.0]}
    doc["sessions"] = [
        {"started": "2026-12-03 10:00:00 UTC", "commit": "abc1234", "runs": 3,
         "note": "two rows measured again"},
        {"started": "2026-12-04 09:00:00 UTC", "commit": "def5678", "runs": 2,
         "load_average": {"start": [0.1, 0.2, 0.3], "end": [1.4, 1.3, 1.2]}},
        {"started": "2026-12-05 08:00:00 UTC", "commit": "0123abc", "runs": 4},
    ]
    header = mb.render_section(doc).splitlines()[1]
    assert "in 3 sessions" in header
    assert "started 2026-12-03 10:00:00 UTC at commit `abc1234`, 3 run(s) " \
           "(two rows measured again)" in header
    assert "started 2026-12-04 09:00:00 UTC at commit `def5678`, 2 run(s), load average " \
           "0.10/0.20/0.30 at its start and 1.40/1.30/1.20 at its end" in header
    # The top-level load average is the last save's, so it belongs to the last session.
    assert "`0123abc`, 4 run(s), load average 0.50/0.25/0.00 at its start and " \
           "1.00/1.00/1.00 at its end" in header
    assert header.count("load average") == 2
    # One session: the single-line form, as before.
    doc["sessions"] = doc["sessions"][:1]
    assert "at commit `abc1234`, started 2026-12-03" in mb.render_section(doc)


def test_update_docs_replaces_only_its_section() -> None:
    base = "# Benchmarks\n\nintro\n"
    first = mb.update_docs(base, mb.DOCS_BEGIN + "\nold\n" + mb.DOCS_END)
    assert first.startswith(base.rstrip("\n")) and "old" in first
    second = mb.update_docs(first + "\n## After\n", mb.DOCS_BEGIN + "\nnew\n" + mb.DOCS_END)
    assert "old" not in second and "new" in second and second.endswith("## After\n")
    assert mb.update_docs(second, mb.DOCS_BEGIN + "\nnew\n" + mb.DOCS_END) == second


def test_docs_regenerated_from_a_results_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    res = tmp_path / "results.json"
    res.write_text(json.dumps(results()))
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    assert mb.main(["--docs-from", str(res), "--docs", str(docs)]) == 0
    assert "| P3 |" in docs.read_text()
    res.write_text("{}")
    assert cli.main(["bench", "migrate", "--docs-from", str(res), "--docs", str(docs)]) == 2
    assert "not a results file" in capsys.readouterr().err


def test_comparison_plots(tmp_path: Path) -> None:
    paths = mb.comparison_plots(results(), tmp_path / "plots")
    assert [p.name for p in paths] == ["disruption-per-method.png", "disruption-vs-size.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 5_000


# ------------------------------------------------------------------ what the lab reads back


#: What TIMED_MIGRATE printed in a lab run of stock xl migrate (trimmed), and its watch.
TIMED = """1796326000.100 Saving to migration stream new xl format (info 0x3/0x0/1515)
1796326000.200 migration target: Ready to receive domain.
1796326019.900 migration target: Transfer complete, requesting permission to start domain.
1796326020.000 migration sender: Target has acknowledged transfer.
1796326020.050 migration sender: Giving target permission to start.
1796326021.400 migration target: Got permission, starting domain.
1796326023.700 migration target: Domain started successsfully.
1796326023.750 migration sender: Target reports successful startup.
1796326026.900 Migration successful.
1796326026.950 xl-exit 0
"""
WATCH_LOG = "1796325999.500 /local/domain/3/control/shutdown\n" \
            "1796326002.250 /local/domain/3/control/shutdown\n" \
            "1796326002.300 /local/domain/3/control/shutdown\n"


def test_stock_migrate_paused_from_the_suspend_request_to_the_reported_unpause() -> None:
    timed = xl.parse_timed_migrate("stray line\n" + TIMED)
    assert timed.status == 0 and len(timed.lines) == 9
    assert timed.output.endswith("Migration successful.")
    # The watch's first event is its own setting; the second is xl's request.
    assert xl.paused_seconds(WATCH_LOG, timed) == pytest.approx(21.5)
    assert xl.paused_seconds(WATCH_LOG.splitlines()[0], timed) is None
    failed = xl.parse_timed_migrate(TIMED.split("1796326023.750")[0]
                                    + "1796326030.0 xl-exit 1\n")
    assert failed.status == 1 and xl.paused_seconds(WATCH_LOG, failed) is None
    assert xl.parse_timed_migrate("").status is None


def test_talk_again_from_the_two_pingers() -> None:
    old = [PingReply(10.0, 1), PingReply(10.05, 2), PingReply(10.1, 3)]
    new = [PingReply(9.0, 1), PingReply(42.5, 2), PingReply(42.55, 3)]
    assert mb.talk_again_seconds(old, new, start=10.08) == pytest.approx(32.4)
    assert mb.talk_again_seconds(old, [], start=10.08) is None


def test_records_gap_only_for_a_connection_kept_whole() -> None:
    kept = {"sent": 100, "echoed": 100, "lost": 0, "out_of_order": 0, "error": None,
            "longest_gap_seconds": 7.25}
    assert mb.records_gap(kept) == 7.25
    assert mb.records_gap({**kept, "error": "receive: timed out"}) is None
    assert mb.records_gap({**kept, "lost": 3}) is None
    assert mb.records_gap(None) is None


def test_writer_stays_in_the_written_share() -> None:
    cmd = mb.writer_command(16, 256)
    assert "count=4 " in cmd and "seek=$((i % 256))" in cmd and "oflag=direct" in cmd
    assert "/tmp/xwb-stop" in cmd


def test_a_bad_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RTT/RATE"):
        mb.Profile.parse("fast")


# ------------------------------------------------------------------ resuming a sweep


class NoLab:
    """A lab handle that records which layouts were asked for (none should be here)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def use(self, layout: Any) -> Any:
        self.asked.append(layout.value)
        raise AssertionError(f"the resumed sweep booted the {layout.value} lab")


def test_a_resumed_sweep_keeps_what_was_measured_and_redoes_what_failed(
        tmp_path: Path) -> None:
    doc = results()
    path = tmp_path / mb.RESULTS_NAME
    path.write_text(json.dumps(doc))
    settings = mb.Settings(sizes_mib=(64, 256), profiles=(mb.Profile.parse("20ms/100mbit"),),
                           repeats=2)
    earlier = mb.resumed(path, settings)
    assert len(earlier["runs"]) == len(doc["runs"]) - 1  # the failed run is done again
    assert earlier["sessions"] == [{"started": "2026-12-03 10:00:00 UTC",
                                    "commit": "abc1234", "runs": len(doc["runs"])}]
    bench = mb.Bench(NoLab(), settings, tmp_path, lambda _m: None,
                     earlier=[mb.Run(**r) for r in earlier["runs"]])
    assert not bench._pending("xenwam", 64, settings.profiles[0], 2)
    assert bench._pending("xenwam", 256, settings.profiles[0], 2)      # it failed
    assert bench._pending("freeze-copy", 64, settings.profiles[0], 2)  # never measured


def test_a_sweep_measured_whole_boots_no_lab_when_resumed(tmp_path: Path) -> None:
    settings = mb.Settings(sizes_mib=(64,), profiles=(mb.Profile.parse("20ms/100mbit"),))
    done = [mb.Run(**_run(m, None if m == "stock-lan" else "20ms/100mbit", 64, 1.0))
            for m in settings.methods]
    labs = NoLab()
    runs = mb.Bench(labs, settings, tmp_path, lambda _m: None, earlier=done).run()
    assert labs.asked == [] and runs == done


def test_a_resumed_session_is_added_with_its_own_load(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings = mb.Settings(sizes_mib=(64,), profiles=(mb.Profile.parse("20ms/100mbit"),))
    done = [_run(m, None if m == "stock-lan" else "20ms/100mbit", 64, 1.0)
            for m in settings.methods]
    first = {"started": "2026-12-03 10:00:00 UTC", "commit": "abc1234", "runs": len(done)}
    (tmp_path / mb.RESULTS_NAME).write_text(json.dumps(
        {"settings": settings.to_json(), "runs": done, "sessions": [first]}))
    argv = ["--sizes-mib", "64", "--profiles", "20ms/100mbit", "--out-dir", str(tmp_path),
            "--resume"]
    assert mb.main(argv, labs=NoLab()) == 0
    doc = json.loads((tmp_path / mb.RESULTS_NAME).read_text())
    assert doc["sessions"][0] == first
    last = doc["sessions"][1]
    assert last["runs"] == 0 and last["load_average"] == doc["load_average"]
    assert doc["started"] == first["started"] and doc["commit"] == "abc1234"
    assert "in 2 sessions" in capsys.readouterr().out


def test_resuming_with_other_settings_or_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / mb.RESULTS_NAME
    path.write_text(json.dumps(results()))
    with pytest.raises(ConfigError, match="other settings"):
        mb.resumed(path, mb.Settings(sizes_mib=(64,)))
    path.write_text("{}")
    with pytest.raises(ConfigError, match="cannot resume"):
        mb.resumed(path, mb.Settings())
    with pytest.raises(ConfigError, match="--out-dir"):
        mb.main(["--resume"])


# ------------------------------------------------------------------ one guest per pair


class LayoutsLab:
    """A lab handle that notes each layout asked for; those in ``up`` are "up" (only
    their shaping is read), any other fails the test."""

    def __init__(self, asked: list[str] | None = None,
                 up: tuple[str, ...] = ("wan", "lan")) -> None:
        self.asked = [] if asked is None else asked
        self.up = up

    def use(self, layout: Any) -> Any:
        from types import SimpleNamespace

        assert layout.value in self.up, layout
        self.asked.append(layout.value)
        config = SimpleNamespace(shaping=None)
        return SimpleNamespace(load_state=lambda: SimpleNamespace(config=lambda: config))


class PairBench(mb.Bench):
    """The bench's order of runs, each method replaced by a note of how it was asked."""

    calls: list[tuple[str, int, Any]]

    def _shape(self, lab: Any, shaping: Any) -> None:
        pass

    def freeze_copy(self, lab: Any, size: int, profile: Any, repeat: int, *,
                    keep: bool = False) -> mb.Run:
        self.calls.append(("freeze-copy", size, keep))
        return self._run("freeze-copy", size, profile, repeat)

    def xenwam(self, lab: Any, size: int, profile: Any, repeat: int) -> mb.Run:
        self.calls.append(("xenwam", size, None))
        return self._run("xenwam", size, profile, repeat)


@pytest.mark.parametrize(("methods", "measured", "expected"), [
    (("freeze-copy", "xenwam"), (), [("freeze-copy", 64, True), ("xenwam", 64, None)]),
    (("freeze-copy",), (), [("freeze-copy", 64, False)]),
    (("freeze-copy", "xenwam"), ("xenwam",), [("freeze-copy", 64, False)]),
], ids=["both", "freeze-copy-alone", "xenwam-measured-before"])
def test_freeze_and_copy_keeps_its_guest_for_the_xenwam_run_that_follows(
        tmp_path: Path, methods: tuple[str, ...], measured: tuple[str, ...],
        expected: list[tuple[str, int, Any]]) -> None:
    """The same guest moves A -> B by freeze-and-copy and back by xenwam (one guest made
    per pair of runs), but only when the xenwam run is still to be done."""
    profile = mb.Profile.parse("20ms/100mbit")
    settings = mb.Settings(sizes_mib=(64,), profiles=(profile,), methods=methods)
    earlier = [mb.Run(**_run(m, "20ms/100mbit", 64, 1.0)) for m in measured]
    bench = PairBench(LayoutsLab(up=("wan",)), settings, tmp_path, lambda _m: None, earlier=earlier)
    bench.calls = []
    bench.run()
    assert bench.calls == expected


class OrderBench(PairBench):
    def stock_lan(self, lab: Any, size: int, repeat: int) -> mb.Run:
        self.calls.append(("stock-lan", size, repeat))
        return self._run("stock-lan", size, None, repeat)

    def _attempt(self, method: str, size: int, profile: Any, repeat: int,
                 action: Any) -> None:
        self.calls.append(("repeat", repeat, profile.name if profile else "lan"))
        super()._attempt(method, size, profile, repeat, action)


def test_a_sweep_measures_every_case_once_before_any_repeat(tmp_path: Path) -> None:
    """A sweep takes hours and is often stopped part way: the first hours must give the
    whole table (every size, profile and method once), not three repeats of its first
    rows."""
    profiles = (mb.Profile.parse("20ms/100mbit"), mb.Profile.parse("80ms/20mbit"))
    settings = mb.Settings(sizes_mib=(64, 256), profiles=profiles, repeats=2)
    asked: list[str] = []
    bench = OrderBench(LayoutsLab(asked), settings, tmp_path, lambda _m: None)
    bench.calls = []
    bench.run()
    cases = [c for c in bench.calls if c[0] == "repeat"]
    assert len(cases) == 2 * (2 * 2 * 2 + 2)  # repeats x (sizes x profiles x WAN + stock)
    first = cases[: len(cases) // 2]
    assert {c[1] for c in first} == {1} and {c[2] for c in first} == {
        "20ms/100mbit", "80ms/20mbit", "lan"}
    assert asked == ["wan", "lan", "wan", "lan"]
    assert len(bench.runs) == len(cases)


def _stand_ins(tmp_path: Path, migrate_status: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "xl": f"""#!/bin/sh
case "$1" in
domid) echo 7 ;;
migrate) echo "migration target: Ready to receive domain." >&2; sleep 0.4
    echo "migration sender: Target reports successful startup." >&2
    echo "Migration successful."; exit {migrate_status} ;;
esac
""",
        "xenstore-watch": """#!/bin/sh
echo "$1"; sleep 0.2; echo "$1"; echo $$ > "$WATCH_PID"; exec sleep 30
""",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "WATCH_PID": str(tmp_path / "watch.pid")}


@pytest.mark.parametrize("status", [0, 3])
def test_the_timed_migrate_script_with_stand_ins(tmp_path: Path, status: int) -> None:
    """The real shell around xl migrate, with stand-in xl and xenstore-watch: xl's lines
    stamped, its exit status passed on, the watch logged and ended with its group."""
    log = tmp_path / "suspend.log"
    done = subprocess.run(["sh", "-c", xl.TIMED_MIGRATE, "sh", "g1", str(log),
                           "xl", "migrate", "g1", "10.0.0.2"], capture_output=True,
                          text=True, timeout=30, env=_stand_ins(tmp_path, status))
    timed = xl.parse_timed_migrate(done.stdout)
    assert timed.status == status
    assert [line for _, line in timed.lines] == [
        "migration target: Ready to receive domain.",
        "migration sender: Target reports successful startup.", "Migration successful."]
    paused = xl.paused_seconds(log.read_text(), timed)
    assert paused is not None and 0.2 <= paused < 10
    assert log.read_text().split()[1] == "/local/domain/7/control/shutdown"
    watcher = int((tmp_path / "watch.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(watcher) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(watcher), "the watch outlived the script"
    finally:
        if _alive(watcher):
            os.kill(watcher, signal.SIGKILL)  # our own stand-in, by pid


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
