"""Every ``xenwam`` command, fed missing, malformed and hostile arguments (issue 11).

The commands are found by walking the argparse tree, so a new subcommand is covered the
day it is registered.  Each case runs ``python3 -m xenwam.cli ...`` as its own process in
a sandbox (tests/unit/cli_process.py: scratch HOME and working directory, no external
commands on PATH, an audit hook that refuses every write outside the sandbox, every
process and every socket) and must end with exit status 2, exactly one line on stderr,
no traceback, and nothing attempted outside the sandbox.

Every case gives each required argument a valid value except the one under test, so a
refusal is the refusal of that value, not of a missing neighbour.  Two leaves that share
one argparse action (through a parent parser), or two actions with the same argument
type, are refused by argparse in the same way before any handler runs, so each such
action is fed its bad values once, on the first leaf that has it; actions without a
type are fed on every leaf.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_process import CliRun, Sandbox

from xenwam import cli

pytestmark = pytest.mark.unit

#: A value each required argument accepts, by its ``dest``.  A new required argument
#: must be given one here: the battery refuses to guess.
VALID: dict[str, str] = {
    "name": "g1",
    "minor": "3",
    "host": "hosta,10.0.0.1:7789,/dev/loop0,/dev/loop1",
    "second_host": "hostb,10.0.0.2:7789,/dev/loop0,/dev/loop1",
    "device": "disk.img",
    "file": "new-secret",
    "domain": "g1",
    "disk": "disk.img",
    "size": "1048576",
}
#: Optional arguments given a valid value whenever a command has them, because without
#: them the command would refuse for their absence rather than for the value under test.
ALWAYS: dict[str, str] = {
    "secret_file": "secret",
}
#: Values that are wrong for any argument of their kind.
MALFORMED_NUMBERS = ("abc", "-5", "1e999")
MALFORMED_TEXT = ("", "g7\n", "x" * 5000, "\x1b[2J\x1b]0;owned\x07")
MALFORMED_CHOICE = ("frobnicate", "a\n")
UNKNOWN_OPTION = "--no-such-option"


@dataclass(frozen=True)
class Case:
    """One run of the command, and why it must be refused."""

    argv: tuple[str, ...]
    why: str


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def walk(parser: argparse.ArgumentParser,
         path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser in the tree with the words that reach it, leaves and inner nodes."""
    yield path, parser
    sub = _subparsers(parser)
    if sub is not None:
        for word, child in sub.choices.items():
            yield from walk(child, (*path, word))


def _takes_values(action: argparse.Action) -> bool:
    return (action.nargs != 0 and action.nargs != argparse.REMAINDER
            and not isinstance(action, argparse._SubParsersAction | argparse._HelpAction
                               | argparse._VersionAction))


def _is_number(action: argparse.Action) -> bool:
    return action.type in (int, float) or getattr(action.type, "__name__", "") in (
        "integer", "number")


def _argv(parser: argparse.ArgumentParser, bad: argparse.Action | None = None,
          value: str = "") -> list[str]:
    """Every required argument of ``parser`` with a valid value, and ``bad`` (required
    or not) with ``value``."""
    options: list[str] = []
    positionals: list[str] = []
    for action in parser._actions:
        if not _takes_values(action):
            continue
        values: list[str]
        if action is bad:
            values = [value]
            if action.dest == "host":  # a resource joins two hosts: only one is bad
                values.append(VALID["second_host"])
        elif action.dest in ALWAYS:
            values = [ALWAYS[action.dest]]
        elif action.option_strings and not action.required:
            continue
        elif action.choices is not None:
            values = [str(next(iter(action.choices)))]
        elif action.dest in VALID:
            values = [VALID[action.dest]]
            if action.dest == "host":
                values.append(VALID["second_host"])
        elif action.nargs in ("*", "?"):
            continue
        else:
            raise AssertionError(f"no valid value known for {action.dest!r} of "
                                 f"{parser.prog!r}: add one to VALID")
        for v in values:
            if action.option_strings:
                options.append(f"{action.option_strings[-1]}={v}")  # '=': v may start '-'
            else:
                positionals.append(v)
    if any(v.startswith("-") for v in positionals):
        return [*options, "--", *positionals]
    return options + positionals


def _bad_values(action: argparse.Action) -> tuple[str, ...]:
    if action.choices is not None:
        return MALFORMED_CHOICE
    if _is_number(action):
        return MALFORMED_NUMBERS
    return MALFORMED_TEXT


def cases() -> list[Case]:
    """The whole battery, from the parser tree.

    Each inner node gets an unknown subcommand; each leaf its required arguments left
    out (or, with none, an unknown option); each argument one bad value of its kind,
    taken in turn from that kind's list, so that every bad value is used and the battery
    stays short (each case is a process of its own).
    """
    found: list[Case] = []
    fed: set[object] = set()
    turn: dict[tuple[str, ...], int] = {}
    for path, parser in walk(cli.build_parser()):
        if _subparsers(parser) is not None:
            found.append(Case((*path, "frobnicate"), "unknown subcommand"))
            continue
        required = [a for a in parser._actions if _takes_values(a) and (
            a.required if a.option_strings else a.nargs not in ("*", "?"))]
        if required:
            found.append(Case(path, "missing " + ", ".join(a.dest for a in required)))
        else:
            found.append(Case((*path, UNKNOWN_OPTION, *_argv(parser)), "unknown option"))
        for action in parser._actions:
            if not _takes_values(action):
                continue
            key: object = (action.dest, action.type) if action.type is not None else action
            if key in fed:
                continue
            fed.add(key)
            kind = _bad_values(action)
            value = kind[turn.get(kind, 0) % len(kind)]
            turn[kind] = turn.get(kind, 0) + 1
            found.append(Case((*path, *_argv(parser, action, value)),
                              f"{action.dest} = {value[:20]!r}"))
    return found


def test_battery_uses_every_bad_value() -> None:
    argv_words = {word for case in cases() for word in case.argv}
    for value in (*MALFORMED_NUMBERS, *MALFORMED_TEXT, *MALFORMED_CHOICE):
        assert any(value in word for word in argv_words), value


def test_walk_finds_every_command() -> None:
    words = {path for path, _ in walk(cli.build_parser())}
    assert {("disk", "define"), ("disk", "digest"), ("disk", "secret"), ("lab", "up"),
            ("lab", "guest", "create"), ("hotplug", "block"), ("doctor",),
            ("bench",)} <= words


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sandbox, list[CliRun]]:
    box = Sandbox(tmp_path_factory.mktemp("battery"))
    with open(box.root / "work" / "disk.img", "wb") as f:
        f.truncate(1 << 20)
    (box.root / "work" / "secret").write_text("battery-secret\n")
    (box.root / "work" / "secret").chmod(0o600)
    outside = [Path("/etc/drbd.d"), Path("/run/xenwam"), Path("/var/lib/xenwam")]
    before = {p: _listing(p) for p in outside}
    runs = _run_all(box, cases())
    assert {p: _listing(p) for p in outside} == before
    return box, runs


def _listing(path: Path) -> list[tuple[str, int]]:
    if not path.is_dir():
        return []
    return sorted((p.name, p.stat().st_mtime_ns) for p in path.iterdir())


def _run_all(box: Sandbox, battery: list[Case]) -> list[CliRun]:
    def one(case: Case) -> CliRun:
        return box.run(case.argv, timeout=60)
    workers = (os.cpu_count() or 2) + 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, battery))


def _problems(run: CliRun) -> list[str]:
    problems = []
    if run.returncode != 2:
        problems.append(f"exit {run.returncode}")
    if len(run.stderr.splitlines()) != 1:
        problems.append(f"{len(run.stderr.splitlines())} lines on stderr")
    if "Traceback" in run.stderr:
        problems.append("a traceback")
    if len(run.stderr) > 600:
        problems.append(f"a {len(run.stderr)}-character error")
    if run.escapes:
        problems.append(f"reached outside its sandbox: {list(run.escapes)}")
    return problems


def test_every_command_refuses_bad_arguments_in_one_line(
        battery: tuple[Sandbox, list[CliRun]]) -> None:
    box, runs = battery
    assert len(runs) > 60
    failures = [f"xenwam {' '.join(repr(a)[:40] for a in run.argv)}: "
                f"{', '.join(problems)}\n    stderr: {run.stderr[:300]!r}"
                for run in runs if (problems := _problems(run))]
    assert not failures, f"{len(failures)} of {len(runs)} cases:\n" + "\n".join(failures)
    # The sandbox's own files are all that is there: nothing was created.
    assert sorted(p.name for p in (box.root / "work").iterdir()) == ["disk.img", "secret"]


def test_the_sandbox_catches_a_command_that_acts(tmp_path: Path) -> None:
    """The battery can fail: a command that writes outside or runs a program is caught
    (and stopped)."""
    box = Sandbox(tmp_path)
    outside = Path("/tmp") / f"xenwam-battery-{os.getpid()}"
    run = box.run(["disk", "secret", str(outside)])
    assert not outside.exists()
    assert run.escapes and run.escapes[0][0] == "open", run.describe()
    work = box.root / "work"
    (work / "secret").write_text("battery-secret\n")
    (work / "secret").chmod(0o600)
    defined = box.run(["disk", "define", "g1", "--minor", "3", "--config-dir", "cfg",
                       "--secret-file", "secret", "--host", VALID["host"],
                       "--host", VALID["second_host"]])
    assert defined.returncode == 0 and not defined.escapes, defined.describe()
    acted = box.run(["disk", "up", "g1", "--config-dir", "cfg"])
    assert [event for event, _ in acted.escapes] == ["subprocess.Popen"], acted.describe()
    assert _problems(acted)


def _model(**changes: object) -> dict[str, object]:
    """A valid one-host resource model as `xenwam disk install` reads it, changed."""
    doc: dict[str, object] = {
        "name": "g1", "minor": 3, "mode": "bulk", "shared_secret": "battery-secret-1",
        "cram_hmac_alg": "sha256",
        "hosts": [{"hostname": "hosta", "address": "10.0.0.1", "port": 7789,
                   "disk": "/dev/loop0", "meta_disk": "/dev/loop1"}],
        "wan": {"rtt_ms": 40.0, "bandwidth_mbit": 50.0},
    }
    doc.update(changes)
    return doc


def _host(**changes: object) -> list[dict[str, object]]:
    host: dict[str, object] = {"hostname": "hosta", "address": "10.0.0.1", "port": 7789,
                               "disk": "/dev/loop0", "meta_disk": "/dev/loop1"}
    host.update(changes)
    return [host]


#: Stdins `xenwam disk install` must refuse, and why.
HOSTILE_MODELS: dict[str, bytes] = {
    "empty": b"",
    "not utf-8": b"\xff\xfe{}",
    "not json": b"{name: g1}",
    "too large": b" " * (70 * 1024) + b"{}",
    "nested too deep": b"[" * 5000 + b"]" * 5000,
    "an array": b"[]",
    "a string": b'"g1"',
    "name a number": json.dumps(_model(name=5)).encode(),
    "name with a newline": json.dumps(_model(name="g1\n")).encode(),
    "name a megabyte": json.dumps(_model(name="x" * 60000)).encode(),
    "minor infinite": b'{"name": "g1", "minor": 1e999}',
    "minor a string": json.dumps(_model(minor="3")).encode(),
    "minor a bool": json.dumps(_model(minor=True)).encode(),
    "no hosts": json.dumps(_model(hosts=[])).encode(),
    "hosts an object": json.dumps(_model(hosts={"a": 1})).encode(),
    "host a list": json.dumps(_model(hosts=[[1, 2]])).encode(),
    "host unknown key": json.dumps(_model(hosts=[{"evil": 1}])).encode(),
    "port a string": json.dumps(_model(hosts=_host(port="7789"))).encode(),
    "port a float": json.dumps(_model(hosts=_host(port=7789.5))).encode(),
    "address a number": json.dumps(_model(hosts=_host(address=5))).encode(),
    "hostname escapes": json.dumps(_model(hosts=_host(hostname="\x1b[2J\x1b]0;x\x07"))).encode(),
    "disk with a newline": json.dumps(_model(hosts=_host(disk="/dev/x\nresource y {"))).encode(),
    "secret with a quote": json.dumps(_model(shared_secret='abc"defgh}')).encode(),
    "secret a number": json.dumps(_model(shared_secret=12345678)).encode(),
    "wan a list": json.dumps(_model(wan=[1])).encode(),
    "rtt not a number": b'{"name": "g1", "minor": 3, "hosts": [], "wan": {"rtt_ms": NaN}}',
    "rtt a string": json.dumps(_model(wan={"rtt_ms": "40"})).encode(),
    "csums a number": json.dumps(_model(wan={"csums_alg": 5})).encode(),
}


def test_disk_install_refuses_hostile_stdin_in_one_line(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    argv = ["disk", "install", "--config-dir", "cfg"]
    procs = {why: box.start(argv, stdin) for why, stdin in HOSTILE_MODELS.items()}
    failures = []
    for why, proc in procs.items():
        run = box.finish(proc)
        problems = _problems(run)
        if "battery-secret" in run.stderr or "abc" in run.stderr:
            problems.append("the shared secret shown")
        if problems:
            failures.append(f"{why}: {', '.join(problems)}\n    stderr: {run.stderr[:300]!r}")
    assert not failures, "\n".join(failures)
    assert not (box.root / "work" / "cfg").exists() or not list(
        (box.root / "work" / "cfg").iterdir())
    # The same command with a good model installs it: the refusals above are the model's.
    good = box.run(argv, json.dumps(_model()).encode())
    assert good.returncode == 0 and not good.escapes, good.describe()
    assert (box.root / "work" / "cfg" / "xenwam-g1.res").is_file()


def test_disk_operation_with_install_writes_the_model_then_acts(tmp_path: Path) -> None:
    """``xenwam disk bulk NAME --install`` (what the orchestrator sends the destination, to
    save a round trip): the model on stdin is refused as `install` refuses it, and so is
    a model of another resource, nothing written or run; a good one is written, then the
    operation runs (here it reaches for drbdadm, which the sandbox stops)."""
    box = Sandbox(tmp_path)
    res = box.root / "work" / "cfg" / "xenwam-g1.res"
    hostile = box.run(["disk", "bulk", "g1", "--install", "--config-dir", "cfg"],
                      HOSTILE_MODELS["secret with a quote"])
    assert not _problems(hostile) and not res.exists(), hostile.describe()
    other = box.run(["disk", "bulk", "g2", "--install", "--config-dir", "cfg"],
                    json.dumps(_model()).encode())
    assert not _problems(other) and "not 'g2'" in other.stderr, other.describe()
    assert not res.exists()
    good = box.run(["disk", "bulk", "g1", "--install", "--config-dir", "cfg"],
                   json.dumps(_model()).encode())
    assert res.is_file() and "battery-secret-1" in res.read_text()
    assert [event for event, _ in good.escapes] == ["subprocess.Popen"], good.describe()
