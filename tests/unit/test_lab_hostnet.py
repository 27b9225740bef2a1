"""hostnet: the lab address plan applied to a real machine (vagrant), with a fake runner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xenwam.lab import hostnet
from xenwam.lab.config import Layout, Shaping
from xenwam.runner import CommandResult

pytestmark = pytest.mark.unit


@dataclass
class RecordingRunner:
    """Records argv lists; answers "File exists" to the ones listed in ``exists``."""

    exists: set[tuple[str, ...]] = field(default_factory=set)
    calls: list[list[str]] = field(default_factory=list)
    inputs: list[str | bytes | None] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None,
            cwd: str | None = None) -> CommandResult:
        self.calls.append(list(argv))
        self.inputs.append(input)
        if tuple(argv) in self.exists:
            return CommandResult(tuple(argv), 2, "", "RTNETLINK answers: File exists", 0.0)
        return CommandResult(tuple(argv), 0, "", "", 0.0)


def _sysfs(tmp_path: Path, nics: dict[str, str]) -> Path:
    for name, mac in nics.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
    return tmp_path


def test_nic_found_by_mac(tmp_path: Path) -> None:
    sysfs = _sysfs(tmp_path, {"ens5": "52:54:00:12:34:56", "ens6": "52:54:00:00:0a:02"})
    assert hostnet.nic_with_mac("52:54:00:00:0A:02", sysfs) == "ens6"
    assert hostnet.nic_with_mac("52:54:00:00:0b:02", sysfs) is None


def test_host_is_renamed_and_numbered_tolerating_existing_state(tmp_path: Path) -> None:
    sysfs = _sysfs(tmp_path, {"ens6": "52:54:00:00:0b:02"})
    runner = RecordingRunner(exists={("ip", "link", "add", "xenbr0", "type", "bridge")})
    hostnet.configure_host("b", Layout.WAN, Shaping.parse("40ms"), runner, sysfs)
    assert runner.calls[:2] == [["ip", "link", "set", "ens6", "down"],
                                ["ip", "link", "set", "ens6", "name", "wan"]]
    assert ["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.1"] in runner.calls
    assert runner.calls[-1][-2:] == ["delay", "20ms"]


def test_correspondent_gets_address_and_site_routes() -> None:
    runner = RecordingRunner()
    hostnet.configure_correspondent(Layout.WAN, "ens6", runner)
    assert runner.calls[0] == ["ip", "addr", "add", "10.0.0.100/24", "dev", "ens6"]
    assert ["ip", "route", "add", "10.2.0.0/24", "via", "10.0.0.2"] in runner.calls


def test_missing_link_nic_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(hostnet, "nic_with_mac", lambda mac, sysfs=None: None)
    assert hostnet.main(["--host", "a"]) == 1
    assert "52:54:00:00:0a:02" in capsys.readouterr().err



def test_a_vagrant_host_is_made_a_xenwam_host_like_the_labs() -> None:
    """The provisioner and ``xenwam lab up`` share one list of steps: xenwam on the PATH,
    the hook, this host's site file (its own subnet and replication address), DRBD."""
    runner = RecordingRunner()
    hostnet.install_xenwam("b", Layout.WAN, Shaping.parse("40ms", "50mbit"), runner)
    wrote = {call[-1].split(" > ")[1].split(" ")[0]: text
             for call, text in zip(runner.calls, runner.inputs, strict=True)
             if call[:2] == ["sh", "-c"] and text is not None}
    assert set(wrote) == {"/usr/local/bin/xenwam", "/usr/local/bin/xenwam-transport",
                          "/etc/xenwam/site.toml", "/etc/ssh/sshd_config.d/xenwam.conf"}
    assert wrote["/etc/ssh/sshd_config.d/xenwam.conf"] == (
        "ClientAliveInterval 10\nClientAliveCountMax 3\n")
    assert "python3 -m xenwam.cli" in str(wrote["/usr/local/bin/xenwam"])
    site = str(wrote["/etc/xenwam/site.toml"])
    assert '"10.2.0.0/24"' in site and '"10.0.0.2"' in site and "rtt_ms = 40" in site
    assert ["ln", "-sf", "/opt/xenwam/hooks/block-xenwam",
            "/etc/xen/scripts/block-xenwam"] in runner.calls
    assert runner.calls[-3:-1] == [
        ["sh", "-c", "modprobe drbd && echo Y > /sys/module/drbd/parameters/disable_sendpage"],
        ["sh", "-c", "xl sched-credit2 -d Domain-0 -w 1024 2>/dev/null "
                     "|| xl sched-credit -d Domain-0 -w 1024"]]
    # sshd checks its configuration before it is told to reload it.
    assert "/usr/sbin/sshd -t && " in runner.calls[-1][-1]
