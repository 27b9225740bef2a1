"""``xenwam disk`` command line: define, status, seeding digests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_process import CliRun, Sandbox

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
    secret.chmod(0o600)
    return main(["disk", "define", name, "--minor", str(minor), "--config-dir", str(tmp_path),
                 "--host", "hosta,10.0.0.1:7789,/dev/loop0,/dev/loop1",
                 "--host", "hostb,10.0.0.2:7789,/dev/loop0,/dev/loop1",
                 "--secret-file", str(secret), "--rtt-ms", "120"])


def test_define_then_status_table(tmp_path: Path) -> None:
    assert define(tmp_path, "g1", 3) == 0
    assert define(tmp_path, "g2", 4) == 0
    rows = status_rows(list_resources(tmp_path), PROC, hostname="hosta")
    assert [(r.state.resource, r.state.replication, r.state.connection, r.peer_host)
            for r in rows] == [("g1", "SyncSource", "Connected", "hostb"),
                               ("g2", None, "Unconfigured", "hostb")]
    assert rows[0].behind == ("peer", 56320)  # the sync's own count
    table = format_status(rows)
    assert "14.8%" in table and "4608K/s" in table and "Unconfigured" in table
    assert "peer 55.0M" in table and "COPY-AT" in table


DISCONNECTED = """version: 8.4.11 (api:1/proto:86-101)
 3: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown A r-----
    ns:100 nr:0 dw:20480 dr:10240 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:20480
 4: cs:StandAlone ro:Secondary/Unknown ds:Outdated/DUnknown   r-----
    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
"""


def test_status_says_which_copy_lags_while_apart(tmp_path: Path) -> None:
    define(tmp_path, "g1", 3)
    define(tmp_path, "g2", 4)
    running, stale = status_rows(list_resources(tmp_path), DISCONNECTED, hostname="hostb")
    assert running.peer_host == "hosta" and running.behind == ("peer", 20480)
    assert running.to_json()["behind"] == {"copy": "peer", "kib": 20480}
    assert stale.behind == ("here", 0)  # outdated: how much only the other side knows
    table = format_status([running, stale])
    assert "peer 20.0M" in table and "here 0K" in table


def test_forget_leaves_this_host_alone_and_is_idempotent(tmp_path: Path) -> None:
    from xenwam.drbd.volume import forget
    define(tmp_path, "g1", 3)
    if os.path.exists("/proc/drbd"):
        pytest.skip("this host runs DRBD: forget would act on its minor 3")
    assert forget("g1", tmp_path, hostname="hostb") == {"resource": "g1", "changed": True,
                                                        "peer": "hosta"}
    (only,) = list_resources(tmp_path)
    assert [h.hostname for h in only.hosts] == ["hostb"]
    assert forget("g1", tmp_path, hostname="hostb")["changed"] is False


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


# --- bad input, through the real command in its own process (issue 11, items 7-9) ----

SECRET = "Zq4TmV8pL2xN7rKc"
HOST_A = "hosta,10.0.0.1:7789,/dev/loop0,/dev/loop1"
HOST_B = "hostb,10.0.0.2:7789,/dev/loop0,/dev/loop1"


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    sandbox = Sandbox(tmp_path)
    secret = sandbox.root / "work" / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    (sandbox.root / "work" / "cfg").mkdir()
    with open(sandbox.root / "work" / "disk.img", "wb") as f:
        f.truncate(1 << 20)
    (sandbox.root / "work" / "dir").mkdir()
    return sandbox


def _define_argv(*extra: str, hosts: tuple[str, ...] = (HOST_A, HOST_B),
                 secret: str = "secret") -> list[str]:
    argv = ["disk", "define", "g1", "--minor", "3", "--config-dir", "cfg",
            "--secret-file", secret]
    for h in hosts:
        argv += ["--host", h]
    return argv + list(extra)


def assert_refused(run: CliRun, *words: str) -> None:
    """Exit 2, one line on stderr naming ``words``, no traceback, nothing escaped."""
    assert run.returncode == 2, run.describe()
    assert len(run.stderr.splitlines()) == 1, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    for word in words:
        assert word in run.stderr, run.describe()
    assert not run.escapes, run.describe()


def test_define_with_a_good_secret_file_works(box: Sandbox) -> None:
    run = box.run(_define_argv())
    assert run.returncode == 0, run.describe()
    assert (box.root / "work" / "cfg" / "xenwam-g1.res").exists()


@pytest.mark.parametrize(("secret", "words"), [
    ("nonexistent", ("does not exist", "xenwam disk secret")),
    ("dir", ("not a regular file",)),
    ("binary", ("not ASCII",)),
    ("open", ("0644", "chmod 600")),
    ("short", ("has 3 characters",)),
])
def test_define_refuses_a_bad_secret_file(box: Sandbox, secret: str,
                                          words: tuple[str, ...]) -> None:
    work = box.root / "work"
    (work / "binary").write_bytes(bytes(range(256)))
    (work / "binary").chmod(0o600)
    (work / "open").write_text(SECRET + "\n")
    (work / "open").chmod(0o644)
    (work / "short").write_text("abc\n")
    (work / "short").chmod(0o600)
    run = box.run(_define_argv(secret=secret))
    assert_refused(run, *words)
    assert SECRET not in run.stderr + run.stdout
    assert not list((work / "cfg").iterdir())


HOST_C = "hostc,10.0.0.3:7789,/dev/a,/dev/b"


@pytest.mark.parametrize("hosts", [(HOST_A,), (HOST_A, HOST_B, HOST_C)])
def test_define_needs_exactly_two_hosts(box: Sandbox, hosts: tuple[str, ...]) -> None:
    run = box.run(_define_argv(hosts=hosts))
    assert_refused(run, "--host given " + ("once" if len(hosts) == 1 else "3 times"))
    assert not list((box.root / "work" / "cfg").iterdir())


def test_config_dir_naming_a_file_is_refused(box: Sandbox) -> None:
    for argv in (_define_argv("--config-dir", "disk.img"),
                 ["disk", "status", "--config-dir", "disk.img"],
                 ["disk", "up", "g1", "--config-dir", "disk.img"]):
        assert_refused(box.run(argv), "not a directory")


@pytest.mark.parametrize("command", ["seed-send", "seed-receive", "digest"])
@pytest.mark.parametrize(("device", "words"), [("missing.img", "does not exist"),
                                                ("dir", "is a directory")])
def test_seeding_refuses_a_missing_file_or_a_directory(box: Sandbox, command: str,
                                                       device: str, words: str) -> None:
    assert_refused(box.run(["disk", command, device]), words)


@pytest.mark.parametrize(("argv", "words"), [
    (["disk", "seed-send", "disk.img", "--level", "99"], "outside 1-22"),
    (["disk", "seed-send", "disk.img", "--block-size", "0"], "outside 4096-"),
    (["disk", "seed-send", "disk.img", "--block-size", "5000"], "multiple of 4096"),
    (["disk", "digest", "disk.img", "--size", "-5"], "outside 0-"),
    (["disk", "digest", "disk.img", "--size", str(1 << 30)], "larger than disk.img"),
    (["disk", "digest", "disk.img", "--block-size", "0"], "outside 4096-"),
    (["disk", "wait-sync", "g1", "--timeout", "nan"], "--timeout"),
    (["disk", "define", "g7\n", "--minor", "3", "--host", HOST_A, "--host", HOST_B],
     "'g7\\n'"),
])
def test_bad_numbers_and_names_are_refused(box: Sandbox, argv: list[str], words: str) -> None:
    run = box.run(argv)
    assert_refused(run, words)
    assert run.stdout == ""


def test_secret_command_writes_a_private_secret_and_keeps_an_existing_one(box: Sandbox) -> None:
    made = box.run(["disk", "secret", "new-secret"])
    assert made.returncode == 0, made.describe()
    path = box.root / "work" / "new-secret"
    first = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first.strip()) == 48 and first.strip().isalnum()
    assert first.strip() not in made.stdout + made.stderr
    again = box.run(["disk", "secret", "new-secret"])
    assert_refused(again, "already exists", "--force")
    assert path.read_text() == first
    forced = box.run(["disk", "secret", "new-secret", "--force"])
    assert forced.returncode == 0, forced.describe()
    assert path.read_text() != first and path.stat().st_mode & 0o777 == 0o600
    defined = box.run(_define_argv(secret="new-secret"))
    assert defined.returncode == 0, defined.describe()
    assert_refused(box.run(["disk", "secret", "dir"]), "is a directory")
    assert_refused(box.run(["disk", "secret", "no/such/dir/file"]), "not an existing directory")
