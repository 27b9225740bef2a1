"""hipctl argument handling: local commands on a temporary config dir, daemon commands
through an injected caller that records the control requests."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from hip.ctl import run
from hip.daemon.control import ControlRequest, encode_response
from hip.errors import DaemonError

pytestmark = pytest.mark.unit

HIT_C = "2001:2a:4a1f:7c1e:91a2:37c0:3b1e:55d0"


class Recorder:
    """Stands in for hipd: records requests, answers with canned results."""

    def __init__(self, answers: dict[str, Any] | None = None, fail: bool = False) -> None:
        self.requests: list[ControlRequest] = []
        self.answers = answers or {}
        self.fail = fail

    def __call__(self, request: ControlRequest, socket_path: str) -> Any:
        self.requests.append(request)
        if self.fail:
            raise DaemonError(f"hipd is not running: no control socket at {socket_path!r}")
        return self.answers.get(request.command, {})


def _run(argv: list[str], caller: Recorder | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(argv, out=out, err=err, caller=caller or Recorder(fail=True))
    return status, out.getvalue(), err.getvalue()


def test_keygen_once_then_refuses(tmp_path: Path) -> None:
    cfg = str(tmp_path / "hip")
    status, out, _ = _run(["keygen", "--algorithm", "ed25519", "--config-dir", cfg, "--json"])
    assert status == 0
    doc = json.loads(out)
    assert doc["algorithm"] == "ed25519" and doc["hit"].startswith("2001:2")
    assert oct((tmp_path / "hip").stat().st_mode & 0o777) == "0o700"
    key = tmp_path / "hip" / "host_key.pem"
    before = key.read_bytes()
    status, _, err = _run(["keygen", "--config-dir", cfg])
    assert status == 1
    assert "already exists" in err and doc["hit"] in err
    assert key.read_bytes() == before  # never silently regenerated
    status, out, _ = _run(["hit", "--config-dir", cfg])
    assert (status, out.strip()) == (0, doc["hit"])


def test_hit_without_key_says_how_to_make_one(tmp_path: Path) -> None:
    status, _, err = _run(["hit", "--config-dir", str(tmp_path)])
    assert status == 1
    assert "hipctl keygen" in err


def test_peer_add_list_del(tmp_path: Path) -> None:
    cfg = str(tmp_path)
    daemon = Recorder()
    status, _, err = _run(["peer", "add", "corr", HIT_C, "10.3.0.2", "--config-dir", cfg], daemon)
    assert status == 0, err
    assert [r.command for r in daemon.requests] == ["reload-hosts"]
    status, out, _ = _run(["peer", "--config-dir", cfg, "--json"])
    assert json.loads(out) == [{"name": "corr", "hit": HIT_C, "locators": ["10.3.0.2"]}]
    status, _, err = _run(["peer", "add", "corr", HIT_C, "--config-dir", cfg])
    assert status == 2 and "--replace" in err
    status, _, _ = _run(["peer", "del", "corr", "--config-dir", cfg])  # no hipd: still fine
    assert status == 0
    status, out, _ = _run(["peer", "list", "--config-dir", cfg])
    assert out.strip() == "(no peers)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["peer", "add", "x", "10.0.0.1"], "'10.0.0.1' is not an IPv6 address; write a HIT"),
        (["peer", "add", "x", "fd00::1"], "'fd00::1' is not a HIT: HITs lie in 2001:20::/28"),
        (["peer", "add", "x", HIT_C, "nowhere"], "'nowhere' is not an IP address"),
        (["peer", "add", "bad name!", HIT_C], "peer name 'bad name!' is invalid"),
        (["peer", "del", "ghost"], "no peer 'ghost'"),
        (["close", "ghost"], "unknown peer 'ghost'"),
        (["update-locators", "10.0.0.999"], "'10.0.0.999' is not an IP address"),
        (["update-locators", "ff02::1"], "'ff02::1' is a multicast address"),
    ],
)
def test_bad_arguments_are_quoted(tmp_path: Path, argv: list[str], message: str) -> None:
    daemon = Recorder()
    status, _, err = _run([*argv, "--config-dir", str(tmp_path)], daemon)
    assert status == 2
    assert message in err
    assert not [r for r in daemon.requests if r.command != "reload-hosts"]


def test_usage_errors_exit_2() -> None:
    assert _run([])[0] == 2
    assert _run(["frobnicate"])[0] == 2
    assert _run(["keygen", "--algorithm", "dsa"])[0] == 2


def test_daemon_commands_send_requests(tmp_path: Path) -> None:
    cfg = str(tmp_path)
    daemon = Recorder({"update-locators": {"locators": ["10.2.0.2"], "peers_updated": 1},
                       "close": {"state": "CLOSING"}})
    assert _run(["peer", "add", "corr", HIT_C, "--config-dir", cfg], daemon)[0] == 0
    status, out, _ = _run(["update-locators", "10.2.0.2", "--socket", "/tmp/x.sock"], daemon)
    assert status == 0 and "UPDATE sent to 1 peer" in out
    status, out, _ = _run(["close", "corr", "--config-dir", cfg, "--json"], daemon)
    assert status == 0 and json.loads(out) == {"state": "CLOSING"}
    status, _, _ = _run(["connect", HIT_C, "10.3.0.2", "--config-dir", cfg], daemon)
    assert status == 0
    assert _run(["rekey", "corr", "--config-dir", cfg], daemon)[0] == 0
    sent = [(r.command, r.args) for r in daemon.requests if r.command != "reload-hosts"]
    assert sent == [
        ("update-locators", {"locators": ["10.2.0.2"]}),
        ("close", {"peer": HIT_C}),
        ("connect", {"peer": HIT_C, "locator": "10.3.0.2"}),
        ("rekey", {"peer": HIT_C}),
    ]


def test_show_renders_and_reports_missing_daemon() -> None:
    state = {
        "hit": HIT_C, "data_plane": "userspace", "locators": ["10.1.0.2"],
        "associations": [{
            "peer_hit": "2001:2a::9", "name": "m", "state": "ESTABLISHED",
            "peer_locators": [{"address": "10.3.0.2", "state": "ACTIVE", "preferred": True}],
            "sa": {"spi_in": "0x00001000", "spi_out": "0x00002000", "esp_transform": 9,
                   "own_locator": "10.1.0.2", "peer_locator": "10.3.0.2"},
            "esp": {"sent": {"packets": 5}, "received": [{"packets": 4,
                                                          "dropped": {"bad-icv": 2}}]},
        }],
        "dropped": {"hip-malformed": 3},
    }
    status, out, _ = _run(["show"], Recorder({"show": state}))
    assert status == 0
    for text in ("ESTABLISHED", "10.3.0.2 ACTIVE preferred", "SPI in 0x00001000",
                 "bad-icv 2", "hip-malformed 3", "received 4 packets"):
        assert text in out
    status, out, _ = _run(["show", "--json"], Recorder({"show": state}))
    assert json.loads(out) == state
    status, out, err = _run(["show", "--json"])
    assert status == 1 and "hipd is not running" in err
    assert json.loads(out)["ok"] is False


def test_control_protocol_lines() -> None:
    req = ControlRequest("close", {"peer": HIT_C})
    assert ControlRequest.decode(req.encode()) == req
    with pytest.raises(DaemonError, match="not JSON"):
        ControlRequest.decode(b"{nope")
    with pytest.raises(DaemonError, match="no known command"):
        ControlRequest.decode(b'{"command": "rm -rf"}')
    assert json.loads(encode_response(error="boom")) == {"ok": False, "error": "boom"}


class _GoneReader(io.StringIO):
    """stdout whose reader has exited, as with ``hipctl peer --json | head -c1``."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_reader_gone_is_a_quiet_failure(tmp_path: Path) -> None:
    err = io.StringIO()
    status = run(["peer", "--json", "--config-dir", str(tmp_path)], out=_GoneReader(), err=err,
                 caller=Recorder(fail=True))
    assert status == 1
    assert err.getvalue() == ""


def test_deeply_nested_request_is_one_error_line() -> None:
    # Issue 11, item 5: json.loads raised RecursionError, a traceback in hipd's log.
    deep = b'{"command": "show", "args": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001
    with pytest.raises(DaemonError, match="nested too deeply") as info:
        ControlRequest.decode(deep + b"\n")
    assert len(str(info.value)) < 300
