"""Lab settings: --rtt/--rate/--loss parsing, netem argv, the address plan, validation."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from xenwam.errors import ConfigError
from xenwam.lab.config import (
    LabConfig,
    Layout,
    Shaping,
    correspondent_routes,
    dom0_network_commands,
    guest_address,
    host_index,
    link_address,
    parse_duration_ms,
    parse_loss_percent,
    parse_rate_kbit,
    site_gateway,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "ms"), [("40ms", 40.0), ("0.04s", 40.0), ("40", 40.0),
                                          ("500us", 0.5), ("0ms", 0.0)])
def test_durations(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize(("text", "kbit"), [("50mbit", 50000), ("800kbit", 800),
                                            ("1gbit", 1000000), ("1.5Mbit", 1500), ("0", 0)])
def test_rates(text: str, kbit: int) -> None:
    assert parse_rate_kbit(text) == kbit


@pytest.mark.parametrize("bad", ["40 ms", "fast", "-3ms", "40m"])
def test_bad_duration_is_refused_quoting_it(bad: str) -> None:
    with pytest.raises(ConfigError, match=repr(bad)[1:-1]):
        parse_duration_ms(bad)


@pytest.mark.parametrize("bad", ["50mbps", "50", "lots", "500bit"])
def test_bad_rate_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_rate_kbit(bad)


def test_loss() -> None:
    assert parse_loss_percent("0.5%") == 0.5
    assert parse_loss_percent("2") == 2.0
    with pytest.raises(ConfigError, match="100"):
        parse_loss_percent("100")
    with pytest.raises(ConfigError):
        parse_loss_percent("-1")


def test_netem_argv_splits_rtt_over_both_directions() -> None:
    argv = Shaping.parse("40ms", "50mbit", "0.5").netem_argv("wan")
    assert argv == ["tc", "qdisc", "replace", "dev", "wan", "root", "netem",
                    "delay", "20ms", "rate", "50000kbit", "loss", "0.5%"]


def test_netem_argv_only_names_what_is_set() -> None:
    assert Shaping.parse("10ms").netem_argv("wan") == [
        "tc", "qdisc", "replace", "dev", "wan", "root", "netem", "delay", "5ms"]


def test_null_shaping_removes_the_qdisc() -> None:
    shaping = Shaping.parse()
    assert shaping.is_null
    assert shaping.netem_argv("wan") == ["tc", "qdisc", "del", "dev", "wan", "root"]


def test_wan_plan_has_three_subnets() -> None:
    assert link_address("a") == ipaddress.IPv4Interface("10.0.0.1/24")
    assert link_address("b") == ipaddress.IPv4Interface("10.0.0.2/24")
    assert site_gateway(Layout.WAN, "a") == ipaddress.IPv4Interface("10.1.0.1/24")
    assert guest_address(Layout.WAN, "a", 1) == ipaddress.IPv4Interface("10.1.0.10/24")
    assert guest_address(Layout.WAN, "b", 1) == ipaddress.IPv4Interface("10.2.0.10/24")


def test_lan_plan_is_one_subnet_without_collisions() -> None:
    a = guest_address(Layout.LAN, "a", 1)
    b = guest_address(Layout.LAN, "b", 1)
    assert a.network == b.network == ipaddress.IPv4Network("10.0.0.0/24")
    assert a != b
    assert site_gateway(Layout.LAN, "b") == link_address("b")


def test_wan_dom0_routes_to_the_peer_site_over_the_link() -> None:
    cmds = dom0_network_commands(Layout.WAN, "a")
    assert ["ip", "addr", "add", "10.0.0.1/24", "dev", "wan"] in cmds
    assert ["ip", "addr", "add", "10.1.0.1/24", "dev", "xenbr0"] in cmds
    assert ["ip", "route", "add", "10.2.0.0/24", "via", "10.0.0.2"] in cmds
    assert ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"] in cmds


def test_lan_dom0_bridges_the_link() -> None:
    cmds = dom0_network_commands(Layout.LAN, "b")
    assert cmds == [["ip", "link", "set", "wan", "master", "xenbr0"],
                    ["ip", "addr", "add", "10.0.0.2/24", "dev", "xenbr0"]]
    assert correspondent_routes(Layout.LAN) == []


def test_correspondent_routes_each_site_via_its_dom0() -> None:
    assert correspondent_routes(Layout.WAN) == [
        ["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.1"],
        ["ip", "route", "add", "10.2.0.0/24", "via", "10.0.0.2"],
    ]


def test_unknown_host_is_refused_naming_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'c'.*a, b"):
        host_index("c")


def test_names_derive_from_run_dir_and_fit_interface_limits(tmp_path: Path) -> None:
    one = LabConfig(run_dir=tmp_path / "one")
    two = LabConfig(run_dir=tmp_path / "two")
    assert one.switch_netns != two.switch_netns
    assert len(one.tap_name("a")) <= 15
    assert one.ssh_port("a") == 2201 and one.ssh_port("b") == 2202


def test_bad_lab_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        LabConfig(run_dir=tmp_path, ssh_port_base=80)
    with pytest.raises(ConfigError, match="memory"):
        LabConfig(run_dir=tmp_path, memory_mib=600)
