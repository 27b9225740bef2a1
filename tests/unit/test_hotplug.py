"""block-xenwam's logic against a dict-backed xenstore and a scripted DRBD."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xenwam.drbd.device import DrbdDevice
from xenwam.drbd.resource import Host, Resource
from xenwam.errors import ConfigError
from xenwam.hotplug import BlockHotplug, CliXenstore, absolute, physical_device_value
from xenwam.runner import CommandResult

pytestmark = pytest.mark.unit

HOOK = Path(__file__).resolve().parents[2] / "hooks" / "block-xenwam"
BACKEND = "backend/vbd/7/51712"

RES = Resource(
    name="guest1", minor=0,
    hosts=(Host("hosta", "10.99.0.1", 7789, "/dev/loop0", "/dev/loop1"),
           Host("hostb", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop1")),
    shared_secret="hotplug-test-secret",
)

# /proc/drbd of DRBD 8.4 in the states the hook meets (layout as the kernel prints it).
PROC_SECONDARY = """version: 8.4.11 (api:1/proto:86-101)
 0: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----
    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
"""
PROC_PRIMARY = PROC_SECONDARY.replace("ro:Secondary/Primary", "ro:Primary/Primary")
PROC_INCONSISTENT = PROC_SECONDARY.replace("ds:UpToDate/UpToDate", "ds:Inconsistent/UpToDate")


class DictXenstore:
    """Xenstore as a dict of absolute paths (a unit-test fake)."""

    def __init__(self, data: dict[str, str] | None = None) -> None:
        self.data = {absolute(k): v for k, v in (data or {}).items()}
        self.writes: list[tuple[str, str]] = []

    def read(self, path: str) -> str | None:
        return self.data.get(absolute(path))

    def write(self, path: str, value: str) -> None:
        self.data[absolute(path)] = value
        self.writes.append((path, value))

    def write_all(self, pairs: Sequence[tuple[str, str]]) -> None:
        for path, value in pairs:
            self.write(path, value)

    def list(self, path: str) -> list[str]:
        prefix = absolute(path).rstrip("/") + "/"
        return sorted({k[len(prefix):].split("/")[0] for k in self.data if k.startswith(prefix)})


@dataclass
class ScriptedRunner:
    """Answers each drbdadm call and flips /proc/drbd as the kernel would."""

    proc: list[str]
    fail_with: str | None = None
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], **kw: object) -> CommandResult:
        self.calls.append(list(argv))
        if self.fail_with:
            if kw.get("check", True):
                from xenwam.errors import CommandError
                raise CommandError(self.fail_with)
            return CommandResult(tuple(argv), 11, "", self.fail_with, 0.0)
        if "primary" in argv:
            self.proc[0] = self.proc[0].replace("ro:Secondary/", "ro:Primary/")
        if "secondary" in argv:
            self.proc[0] = self.proc[0].replace("ro:Primary/", "ro:Secondary/")
        return CommandResult(tuple(argv), 0, "", "", 0.0)


def make_hook(xs: DictXenstore, runner: ScriptedRunner) -> BlockHotplug:
    def load(name: str) -> Resource:
        if name != RES.name:
            raise ConfigError(f"no xenwam resource {name!r}")
        return RES

    return BlockHotplug(
        xenstore=xs, load_resource=load,
        make_device=lambda r: DrbdDevice(r, runner=runner, read_proc=lambda: runner.proc[0]),
        stat_rdev=lambda path: os.makedev(147, 0),
    )


def test_physical_device_is_hex_major_minor() -> None:
    assert physical_device_value(os.makedev(147, 0)) == "93:0"
    assert physical_device_value(os.makedev(254, 17)) == "fe:11"


def test_add_on_primary_runs_nothing_and_connects() -> None:
    runner = ScriptedRunner([PROC_PRIMARY])
    xs = DictXenstore({f"{BACKEND}/params": "guest1"})
    assert make_hook(xs, runner).run("add", BACKEND) == 0
    assert runner.calls == []  # the downtime-window fast path
    assert xs.read(f"{BACKEND}/physical-device") == "93:0"
    assert xs.read(f"{BACKEND}/physical-device-path") == "/dev/drbd0"
    assert xs.read(f"{BACKEND}/hotplug-status") == "connected"
    assert xs.writes[-1] == (f"{BACKEND}/hotplug-status", "connected")


def test_add_promotes_secondary_once_and_is_idempotent() -> None:
    runner = ScriptedRunner([PROC_SECONDARY])
    xs = DictXenstore({f"{BACKEND}/params": "guest1"})
    hook = make_hook(xs, runner)
    assert hook.run("add", BACKEND) == 0
    assert hook.run("add", BACKEND) == 0
    assert runner.calls == [["drbdadm", "primary", "guest1"]]
    assert xs.read(f"{BACKEND}/hotplug-status") == "connected"


def test_add_refuses_inconsistent_data_with_advice() -> None:
    runner = ScriptedRunner([PROC_INCONSISTENT])
    xs = DictXenstore({f"{BACKEND}/params": "guest1"})
    assert make_hook(xs, runner).run("add", BACKEND) == 1
    assert xs.read(f"{BACKEND}/hotplug-status") == "error"
    assert "wait-sync guest1" in (xs.read(f"{BACKEND}/hotplug-error") or "")
    assert runner.calls == []


def test_promote_refused_by_drbd_says_switch_to_handover() -> None:
    runner = ScriptedRunner([PROC_SECONDARY],
                            fail_with="State change failed: Multiple primaries not allowed")
    xs = DictXenstore({f"{BACKEND}/params": "guest1"})
    assert make_hook(xs, runner).run("add", BACKEND) == 1
    assert xs.read(f"{BACKEND}/hotplug-status") == "error"
    message = xs.read(f"{BACKEND}/hotplug-error") or ""
    assert "Multiple primaries" in message and "xenwam disk handover guest1" in message


def test_unknown_resource_and_missing_params_are_reported() -> None:
    runner = ScriptedRunner([PROC_SECONDARY])
    xs = DictXenstore({f"{BACKEND}/params": "nosuch"})
    assert make_hook(xs, runner).run("add", BACKEND) == 1
    assert "'nosuch'" in (xs.read(f"{BACKEND}/hotplug-error") or "")
    xs = DictXenstore({})
    assert make_hook(xs, runner).run("add", BACKEND) == 1
    assert "target=RESOURCE" in (xs.read(f"{BACKEND}/hotplug-error") or "")


def test_remove_demotes() -> None:
    runner = ScriptedRunner([PROC_PRIMARY])
    xs = DictXenstore({f"{BACKEND}/params": "guest1", f"{BACKEND}/physical-device": "93:0"})
    assert make_hook(xs, runner).run("remove", BACKEND) == 0
    assert runner.calls == [["drbdadm", "secondary", "guest1"]]
    # A second remove finds it Secondary and does nothing.
    assert make_hook(xs, runner).run("remove", BACKEND) == 0
    assert len(runner.calls) == 1


def test_remove_keeps_primary_while_another_local_backend_uses_it() -> None:
    runner = ScriptedRunner([PROC_PRIMARY])
    other = "backend/vbd/8/51712"
    xs = DictXenstore({
        f"{BACKEND}/params": "guest1", f"{BACKEND}/physical-device": "93:0",
        f"{other}/params": "guest1", f"{other}/physical-device": "93:0",
        "backend/vbd/9/51712/params": "another-resource",
    })
    assert make_hook(xs, runner).run("remove", BACKEND) == 0
    assert runner.calls == []


def test_nothing_keys_on_the_domain_name() -> None:
    # The hook reads only under XENBUS_PATH (and other backends): no /local/domain/N/name.
    runner = ScriptedRunner([PROC_SECONDARY])
    xs = DictXenstore({f"{BACKEND}/params": "guest1",
                       "/local/domain/7/name": "guest--incoming"})
    seen: list[str] = []
    original = xs.read

    def spy(path: str) -> str | None:
        seen.append(absolute(path))
        return original(path)

    xs.read = spy  # type: ignore[method-assign]
    assert make_hook(xs, runner).run("add", BACKEND) == 0
    assert all("/name" not in p for p in seen)


def test_cli_xenstore_builds_absolute_paths() -> None:
    @dataclass
    class Echo:
        calls: list[list[str]] = field(default_factory=list)

        def run(self, argv: Sequence[str], **kw: object) -> CommandResult:
            self.calls.append(list(argv))
            return CommandResult(tuple(argv), 0, "guest1\n", "", 0.0)

    echo = Echo()
    xs = CliXenstore(runner=echo)
    assert xs.read(f"{BACKEND}/params") == "guest1"
    xs.write(f"{BACKEND}/hotplug-status", "connected")
    xs.write_all([(f"{BACKEND}/physical-device", "93:0"), ("/abs/key", "v")])
    assert echo.calls == [
        ["xenstore-read", f"/local/domain/0/{BACKEND}/params"],
        ["xenstore-write", f"/local/domain/0/{BACKEND}/hotplug-status", "connected"],
        ["xenstore-write", f"/local/domain/0/{BACKEND}/physical-device", "93:0",
         "/abs/key", "v"],
    ]


def test_hook_shell_syntax_and_usage() -> None:
    assert subprocess.run(["sh", "-n", str(HOOK)]).returncode == 0
    result = subprocess.run([str(HOOK), "bogus"], capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"]})
    assert result.returncode == 2
    assert "usage" in result.stderr
    result = subprocess.run([str(HOOK), "add"], capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"]})
    assert result.returncode == 2  # bad usage, as `xenwam hotplug` says it
    assert "XENBUS_PATH is not set" in result.stderr


def test_each_call_is_journaled_with_outcome(tmp_path: Path) -> None:
    from xenwam.hotplug import append_journal

    log = tmp_path / "hotplug.log"
    runner = ScriptedRunner([PROC_SECONDARY])
    xs = DictXenstore({f"{BACKEND}/params": "guest1"})
    hook = make_hook(xs, runner)
    hook.journal = lambda record: append_journal(record, log)
    hook.run("add", BACKEND)
    hook.run("add", BACKEND)
    xs.data.clear()
    hook.run("remove", BACKEND)
    import json

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["action"], r["outcome"], r["status"]) for r in lines] == [
        ("add", "promoted", 0), ("add", "already primary", 0),
        ("remove", lines[2]["outcome"], 1)]
    assert lines[2]["outcome"].startswith("error: ") and "params is empty" in lines[2]["outcome"]
    assert all(r["xenbus_path"] == BACKEND and r["seconds"] >= 0 for r in lines)


def test_hook_reports_a_crash_of_xenwam_itself(tmp_path: Path) -> None:
    """If python3 fails before xenwam can report, the shell writes the error itself."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "xenstore-write.args"
    (bin_dir / "python3").write_text("#!/bin/sh\necho 'ImportError: boom' >&2\nexit 3\n")
    (bin_dir / "xenstore-read").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "xenstore-write").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    (bin_dir / "flock").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "mkdir").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    lock_dir = tmp_path / "run"
    lock_dir.mkdir()
    script = HOOK.read_text().replace("lockdir=/run/xenwam", f"lockdir={lock_dir}")
    hook = tmp_path / "block-xenwam"
    hook.write_text(script)
    hook.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "XENBUS_PATH": BACKEND,
           "XENWAM_ROOT": str(HOOK.parents[1])}
    result = subprocess.run([str(hook), "add"], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    args = record.read_text().splitlines()
    assert args[0] == f"{BACKEND}/hotplug-error"
    assert "exited with status 3" in args[1]
    assert args[2:] == [f"{BACKEND}/hotplug-status", "error"]


def test_default_xenstore_falls_back_to_the_tools_without_xenstored() -> None:
    from pathlib import Path

    from xenwam.hotplug import CliXenstore, default_xenstore

    if Path("/run/xenstored/socket").exists() or Path("/dev/xen/xenbus").exists():
        pytest.skip("this host has a xenstore that pyxs could reach")
    assert isinstance(default_xenstore(), CliXenstore)


def test_readme_gives_the_lock_wait_the_hook_uses() -> None:
    import re

    waits = re.findall(r"flock -w (\d+)", HOOK.read_text())
    readme = (HOOK.parent / "README.md").read_text()
    assert len(waits) == 1
    assert f"at most {waits[0]} s" in " ".join(readme.split())
    assert not set(re.findall(r"at most (\d+) s", " ".join(readme.split()))) - set(waits)


def test_journal_keeps_a_bounded_record_of_a_huge_path(tmp_path: Path) -> None:
    import json

    from xenwam.hotplug import RECORD_TEXT_MAX, append_journal

    log = tmp_path / "hotplug.log"
    huge = "backend/vbd/1/" + "9" * 100_000
    hook = make_hook(DictXenstore({}), ScriptedRunner([PROC_SECONDARY]))
    hook.journal = lambda record: append_journal(record, log)
    assert hook.run("add", huge) == 1
    line = log.read_text()
    assert len(line) < 3 * RECORD_TEXT_MAX
    record = json.loads(line)
    assert record["xenbus_path"].endswith(f"[{len(huge)} characters]")


@pytest.mark.parametrize(("argv", "env"), [
    (["block", "add"], {"XENBUS_PATH": "backend/vbd/1/" + "9" * 100_000}),
    (["block", "add"], {"XENBUS_PATH": "../../etc/passwd"}),
    (["block", "add", "--xenbus-path", "backend/vbd/1/51712\n"], {}),
    (["block", "add", "--xenbus-path", "x" * 100_000], {}),
    (["block", "frobnicate"], {"XENBUS_PATH": BACKEND}),
])
def test_hook_entry_refuses_a_bad_backend_path_in_one_line(
        tmp_path: Path, argv: list[str], env: dict[str, str]) -> None:
    from cli_process import Sandbox

    run = Sandbox(tmp_path).run(argv, module="xenwam.hotplug", env=env)
    assert run.returncode == 2, run.describe()
    assert len(run.stderr.splitlines()) == 1 and len(run.stderr) < 500, run.describe()
    assert not run.escapes, run.describe()
