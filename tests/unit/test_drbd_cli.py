"""``xenwam disk`` command line: define, status, seeding digests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xenwam.cli import main
from xenwam.drbd.cli import format_status, parse_host, status_rows
from xenwam.drbd.resource import list_resources
from xenwam.errors import ConfigError

pytestmark = pytest.mark.unit

PROC = """version: 8.4.11 (api:1/proto:86-101)
 3: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent A r-----
    ns:9216 nr:0 dw:0 dr:10240 al:8 bm:0 lo:0 pe:1 ua:0 ap:0 ep:1 wo:f oos:56320
\t[==>.................] sync'ed: 14.8% (56320/65536)K
\tfinish: 0:00:12 speed: 4,608 (4,608) K/sec
"""


def define(tmp_path: Path, name: str, minor: int) -> int:
    secret = tmp_path / "secret"
    secret.write_text("cli-test-secret\n")
    return main(["disk", "define", name, "--minor", str(minor), "--config-dir", str(tmp_path),
                 "--host", "hosta,10.0.0.1:7789,/dev/loop0,/dev/loop1",
                 "--host", "hostb,10.0.0.2:7789,/dev/loop0,/dev/loop1",
                 "--secret-file", str(secret), "--rtt-ms", "120"])


def test_define_then_status_table(tmp_path: Path) -> None:
    assert define(tmp_path, "g1", 3) == 0
    assert define(tmp_path, "g2", 4) == 0
    rows = status_rows(list_resources(tmp_path), PROC)
    assert [(r.resource, r.replication, r.connection) for r in rows] == [
        ("g1", "SyncSource", "Connected"), ("g2", None, "Unconfigured")]
    table = format_status(rows)
    assert "14.8%" in table and "4608K/s" in table and "Unconfigured" in table


def test_status_json_on_a_host_without_drbd(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    define(tmp_path, "g1", 3)
    capsys.readouterr()
    assert main(["disk", "status", "--json", "--config-dir", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["resources"][0]["resource"] == "g1"
    if not os.path.exists("/proc/drbd"):
        assert doc["resources"][0]["connection"] == "Unconfigured"


def test_define_refuses_bad_input_and_writes_nothing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert define(tmp_path, "bad name", 3) == 2
    assert "'bad name'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.res"))


def test_parse_host() -> None:
    h = parse_host("hostb,[fd00::2]:7790,/dev/vg/a,/dev/vg/a-md")
    assert (h.address, h.port) == ("fd00::2", 7790)
    with pytest.raises(ConfigError, match="HOSTNAME,ADDRESS:PORT,DISK,META_DISK"):
        parse_host("hostb,10.0.0.2:7790")


def test_digest_command_matches_for_equal_contents(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with open(a, "wb") as f:
        f.truncate(1 << 20)
    b.write_bytes(bytes(1 << 20))
    main(["disk", "digest", str(a)])
    main(["disk", "digest", str(b)])
    first, second = capsys.readouterr().out.split()
    assert first == second


def test_progress_as_log_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from xenwam.drbd.cli import _progress_reporter
    from xenwam.drbd.device import Progress

    show, done = _progress_reporter(quiet=False)
    show(Progress(percent=42.5, out_of_sync_kib=1000, rate_kib_s=250.0, eta_seconds=4.0,
                  replication="SyncSource", elapsed=3.0))
    show(Progress(percent=0.0, out_of_sync_kib=5, rate_kib_s=None, eta_seconds=None,
                  replication=None, elapsed=0.0))
    done()
    err = capsys.readouterr().err.splitlines()
    assert err == ["sync  42.5% 1000 KiB left 250 KiB/s ETA 4 s",
                   "sync   0.0% 5 KiB left rate ? ETA ?"]
