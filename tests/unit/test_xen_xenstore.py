"""The xenstore command-line client, with a scripted runner in place of xenstore-utils.

The stderr texts are what Xen 4.17's ``tools/xenstore/xenstore_client.c`` prints
(``warnx`` prefixes the program name): ``couldn't read path P`` for a read,
``could not list path P`` for a list, ``xs_open: <strerror>`` when neither xenstored's
socket nor /dev/xen/xenbus can be opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from xenwam.errors import CommandError, XenError
from xenwam.runner import CommandResult
from xenwam.xen.xenstore import CliXenstore, absolute

pytestmark = pytest.mark.unit


@dataclass
class ScriptedRunner:
    """Answers each command with the next scripted (status, stdout, stderr), or raises."""

    answers: list[tuple[int, str, str] | Exception]
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None,
            cwd: str | None = None) -> CommandResult:
        self.calls.append(list(argv))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, out, err = answer
        assert not check, "the client reads the status itself"
        return CommandResult(tuple(argv), status, out, err, 0.01)


def client(*answers: tuple[int, str, str] | Exception) -> tuple[CliXenstore, ScriptedRunner]:
    runner = ScriptedRunner(list(answers))
    return CliXenstore(runner), runner


def test_absolute_paths() -> None:
    assert absolute("backend/vbd/3/51712") == "/local/domain/0/backend/vbd/3/51712"
    assert absolute("/vm/x") == "/vm/x"


def test_read_a_value() -> None:
    xs, runner = client((0, "connected\n", ""))
    assert xs.read("backend/vbd/3/51712/state") == "connected"
    assert runner.calls == [["xenstore-read", "/local/domain/0/backend/vbd/3/51712/state"]]


def test_read_an_empty_value_is_not_missing() -> None:
    xs, _ = client((0, "\n", ""))
    assert xs.read("/local/domain/3/name") == ""


def test_read_a_missing_key_is_none() -> None:
    xs, _ = client((1, "", "xenstore-read: couldn't read path /local/domain/3/nope\n"))
    assert xs.read("/local/domain/3/nope") is None


@pytest.mark.parametrize("stderr", [
    "xenstore-read: couldn't start transaction\n",
    "xenstore-read: Permission denied\n",
    "",
])
def test_read_any_other_failure_raises(stderr: str) -> None:
    xs, _ = client((1, "", stderr))
    with pytest.raises(XenError, match="cannot read xenstore '/x'"):
        xs.read("/x")


def test_read_without_the_tool_raises() -> None:
    xs, _ = client(CommandError("xenstore-read: command not found"))
    with pytest.raises(XenError, match="cannot read xenstore"):
        xs.read("/x")


def test_read_without_xenstored_raises() -> None:
    xs, _ = client((1, "", "xenstore-read: xs_open: No such file or directory\n"))
    with pytest.raises(XenError):
        xs.read("/local/domain/0/name")


def test_list_children() -> None:
    xs, runner = client((0, "0\n3\n7\n", ""))
    assert xs.list("/local/domain") == ["0", "3", "7"]
    assert runner.calls == [["xenstore-list", "/local/domain"]]


def test_list_of_a_missing_path_is_empty() -> None:
    xs, _ = client((1, "", "xenstore-list: could not list path /local/domain/9\n"))
    assert xs.list("/local/domain/9") == []


def test_list_other_failure_raises() -> None:
    xs, _ = client((1, "", "xenstore-list: couldn't start transaction\n"))
    with pytest.raises(XenError, match="is xenstored running"):
        xs.list("/local/domain")


def test_write_and_write_all() -> None:
    xs, runner = client((0, "", ""), (0, "", ""))
    xs.write("device/vif/0/ip", "10.2.0.10")
    xs.write_all([("/a", "1"), ("b", "2")])
    assert runner.calls == [
        ["xenstore-write", "/local/domain/0/device/vif/0/ip", "10.2.0.10"],
        ["xenstore-write", "/a", "1", "/local/domain/0/b", "2"],
    ]


def test_write_failure_raises_even_with_a_missing_marker() -> None:
    xs, _ = client((1, "", "xenstore-write: couldn't read path /a\n"))
    with pytest.raises(XenError, match="cannot write xenstore"):
        xs.write("/a", "1")


def test_remove_and_its_failure() -> None:
    xs, runner = client((0, "", ""), (1, "", "xenstore-rm: could not remove path /x\n"))
    xs.remove("device/vbd/51712")
    assert runner.calls == [["xenstore-rm", "/local/domain/0/device/vbd/51712"]]
    with pytest.raises(XenError, match="cannot remove xenstore"):
        xs.remove("/x")
