"""The site file: parsed and validated, every refusal naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xenwam.errors import ConfigError
from xenwam.site import Site, SiteNetwork, load, parse, render

pytestmark = pytest.mark.unit

PATH = Path("/etc/xenwam/site.toml")

GOOD = """\
[site]
name = "site-b"

[network]
bridge = "xenbr0"
subnet = "10.2.0.0/24"
gateway = "10.2.0.1"
assign = "host-part"

[replication]
address = "10.0.0.2"
ports = "7800-7899"

[storage]
directory = "/var/lib/xenwam/disks"

[wan]
rtt_ms = 40
bandwidth_mbit = 50.5
"""


def without(key: str, table: str) -> str:
    """GOOD with the line of ``key`` in ``[table]`` taken out."""
    out, current = [], ""
    for line in GOOD.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if current == table and re.match(rf"{key}\s*=", line):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def with_value(key: str, table: str, value: str) -> str:
    """GOOD with ``key`` in ``[table]`` set to the TOML ``value``."""
    out, current = [], ""
    for line in GOOD.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if current == table and re.match(rf"{key}\s*=", line):
            line = f"{key} = {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_a_good_file() -> None:
    site = parse(GOOD, PATH)
    assert site == Site(name="site-b",
                        network=SiteNetwork("xenbr0", "10.2.0.0/24", "10.2.0.1", "host-part"),
                        replication_address="10.0.0.2", port_first=7800, port_last=7899,
                        storage_directory="/var/lib/xenwam/disks", rtt_ms=40.0,
                        bandwidth_mbit=50.5, path=str(PATH))
    assert isinstance(site.rtt_ms, float)


def test_defaults_for_the_optional_keys() -> None:
    text = without("assign", "network")
    site = parse(without("directory", "storage"), PATH)
    assert site.storage_directory == "/var/lib/xenwam/disks"
    assert parse(text, PATH).network.assign == "host-part"
    ports = parse(without("ports", "replication"), PATH)
    assert (ports.port_first, ports.port_last) == (7800, 7899)


def test_render_reads_back_the_same_site() -> None:
    site = parse(GOOD, PATH)
    assert parse(render(site), PATH) == site


def test_from_json_inverts_to_json() -> None:
    site = parse(GOOD, PATH)
    assert Site.from_json(site.to_json()) == site
    with pytest.raises(ConfigError, match="malformed site description"):
        Site.from_json({"name": "x"})


REQUIRED = [("name", "site"), ("bridge", "network"), ("subnet", "network"),
            ("gateway", "network"), ("address", "replication"), ("rtt_ms", "wan"),
            ("bandwidth_mbit", "wan")]


@pytest.mark.parametrize(("key", "table"), REQUIRED)
def test_a_missing_key_is_named_with_the_file(key: str, table: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(without(key, table), PATH)
    message = str(refused.value)
    assert str(PATH) in message
    assert f"missing key {key!r} in [{table}]" in message


def test_a_missing_table_is_named_with_the_file() -> None:
    text = GOOD.replace("[wan]\nrtt_ms = 40\nbandwidth_mbit = 50.5\n", "")
    with pytest.raises(ConfigError, match=re.escape(f"{PATH}: missing table [wan]")):
        parse(text, PATH)


BAD = [
    ("name", "site", '"site b"'),
    ("name", "site", '"b\\n"'),
    ("name", "site", "7"),
    ("bridge", "network", '"a-bridge-name-too-long"'),
    ("bridge", "network", '"br0;reboot"'),
    ("subnet", "network", '"10.2.0.1/24"'),  # host bits set
    ("subnet", "network", '"ten"'),
    ("gateway", "network", '"10.3.0.1"'),    # outside the subnet
    ("gateway", "network", '"gw"'),
    ("assign", "network", '"static"'),
    ("address", "replication", '"site-b.example"'),
    ("ports", "replication", '"7800"'),
    ("ports", "replication", '"7899-7800"'),
    ("ports", "replication", '"80-90"'),
    ("ports", "replication", '"65000-70000"'),
    ("ports", "replication", "7800"),
    ("directory", "storage", '"relative/dir"'),
    ("directory", "storage", '"/var/lib/../etc"'),
    ("rtt_ms", "wan", "0"),
    ("rtt_ms", "wan", "nan"),
    ("rtt_ms", "wan", "true"),
    ("rtt_ms", "wan", '"40"'),
    ("bandwidth_mbit", "wan", "-1"),
    ("bandwidth_mbit", "wan", "inf"),
]


@pytest.mark.parametrize(("key", "table", "value"), BAD)
def test_a_bad_value_is_named_with_the_file_and_key(key: str, table: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(with_value(key, table, value), PATH)
    message = str(refused.value)
    assert message.startswith(f"{PATH}: [{table}] {key} = "), message
    assert "\n" not in message


def test_not_toml_is_refused_with_the_file() -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{PATH}: not valid TOML")):
        parse("[site\nname = 1", PATH)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read it"):
        load(tmp_path)
    (tmp_path / "site.toml").write_text(GOOD)
    assert load(tmp_path / "site.toml").path == str(tmp_path / "site.toml")


@pytest.mark.parametrize(("old", "subnet", "new"), [
    ("10.1.0.10/24", "10.2.0.0/24", "10.2.0.10/24"),
    ("10.1.0.10", "10.2.0.0/24", "10.2.0.10/24"),
    ("192.168.7.200/24", "10.2.0.0/24", "10.2.0.200/24"),
    ("10.1.3.10/16", "10.2.0.0/16", "10.2.3.10/16"),
    ("10.1.0.10/24", "172.16.8.0/21", "172.16.8.10/21"),
    ("fd00:1::10/64", "fd00:2::/64", "fd00:2::10/64"),
])
def test_address_for_keeps_the_host_part(old: str, subnet: str, new: str) -> None:
    net = SiteNetwork("xenbr0", subnet, subnet.split("/")[0], "host-part")
    assert net.address_for(old) == new


def test_address_for_is_none_under_dhcp_or_without_an_old_address() -> None:
    assert SiteNetwork("xenbr0", "10.2.0.0/24", "10.2.0.1", "dhcp").address_for(
        "10.1.0.10/24") is None
    assert SiteNetwork("xenbr0", "10.2.0.0/24", "10.2.0.1").address_for(None) is None


def test_port_for_stays_inside_the_range() -> None:
    site = parse(with_value("ports", "replication", '"7800-7803"'), PATH)
    assert [site.port_for(m) for m in range(4)] == [7800, 7801, 7802, 7803]
    with pytest.raises(ConfigError, match="no port for DRBD minor 4; widen the range"):
        site.port_for(4)
    with pytest.raises(ConfigError, match="negative"):
        site.port_for(-1)
