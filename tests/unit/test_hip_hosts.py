"""The HIP hosts file: parsing, refusing bad lines with their location, editing, saving."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from hip.hosts import (
    HostsFile,
    HostsFileError,
    PeerEntry,
    load_hosts,
    locator_problem,
    parse_locator,
    save_hosts,
)

pytestmark = pytest.mark.unit

HIT_C = "2001:2a:4a1f:7c1e:91a2:37c0:3b1e:55d0"
HIT_M = "2001:2a:11c4:d21:8f0e:5b02:77aa:e193"

SAMPLE = f"""
# a comment line
correspondent  {HIT_C}  10.3.0.2 fd00::3   # trailing comment
mobile {HIT_M}
"""


def test_parse_sample() -> None:
    hosts = HostsFile.parse(SAMPLE)
    assert [e.name for e in hosts.entries] == ["correspondent", "mobile"]
    c = hosts.entries[0]
    assert c.hit == IPv6Address(HIT_C)
    assert c.locators == (IPv4Address("10.3.0.2"), IPv6Address("fd00::3"))
    assert hosts.entries[1].locators == ()
    assert hosts.resolve("mobile") == IPv6Address(HIT_M)
    assert hosts.resolve(HIT_C) == IPv6Address(HIT_C)
    assert hosts.locators_of(IPv6Address(HIT_C))[0] == IPv4Address("10.3.0.2")


def test_round_trip() -> None:
    hosts = HostsFile.parse(SAMPLE)
    again = HostsFile.parse(hosts.serialize())
    assert again.entries == hosts.entries


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lonely", "needs at least a name and a HIT"),
        ("peer 10.0.0.1", "is not an IPv6 address"),
        ("peer fd00::1", "is not a HIT"),
        ("peer not-an-address", "is not an IPv6 address"),
        (f"peer {HIT_C} 10.0.0.300", "is not an IP address"),
        (f"peer {HIT_C} {HIT_M}", "is a HIT, not a locator"),
        (f"peer {HIT_C} 224.0.0.1", "is a multicast address, which cannot be a locator"),
        (f"peer {HIT_C} ::1", "is a loopback address"),
        (f"-peer {HIT_C}", "peer name '-peer' is invalid"),
        (f"10.1.1.1 {HIT_C}", "looks like an address"),
    ],
)
def test_bad_lines_refused_with_location(line: str, message: str) -> None:
    with pytest.raises(HostsFileError, match=message) as info:
        HostsFile.parse("# header\n" + line + "\n", "/etc/hip/hosts")
    assert str(info.value).startswith("/etc/hip/hosts:2: ")


def test_duplicates_refused() -> None:
    with pytest.raises(HostsFileError, match="clashes"):
        HostsFile.parse(f"a {HIT_C}\nb {HIT_C}\n")
    with pytest.raises(HostsFileError, match="clashes"):
        HostsFile.parse(f"a {HIT_C}\na {HIT_M}\n")


def test_add_replace_remove() -> None:
    hosts = HostsFile.parse(SAMPLE)
    new = PeerEntry("mobile", IPv6Address(HIT_M), (IPv4Address("10.2.0.2"),))
    with pytest.raises(HostsFileError, match="--replace"):
        hosts.add(new)
    hosts.add(new, replace=True)
    assert hosts.find("mobile") == new
    assert len(hosts.entries) == 2
    assert hosts.remove(HIT_M) == new
    with pytest.raises(HostsFileError, match="no peer 'mobile'"):
        hosts.remove("mobile")
    with pytest.raises(HostsFileError, match="unknown peer 'ghost'"):
        hosts.resolve("ghost")


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    assert load_hosts(path).entries == []  # a missing file is an empty one
    hosts = HostsFile.parse(SAMPLE)
    save_hosts(path, hosts)
    assert load_hosts(path).entries == hosts.entries
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hosts.")]
    with pytest.raises(HostsFileError, match="cannot write"):
        save_hosts(tmp_path / "missing-dir" / "hosts", hosts)


@pytest.mark.parametrize(
    ("text", "what"),
    [("224.0.0.251", "multicast"), ("ff02::1", "multicast"), ("127.0.0.1", "loopback"),
     ("::1", "loopback"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
     ("255.255.255.255", "broadcast"), ("169.254.7.1", "link-local"), ("fe80::1", "link-local"),
     (HIT_M, "HIT")],
)
def test_locators_that_reach_no_one_host_are_refused(text: str, what: str) -> None:
    # Issue 11, item 5: hipd's `connect` took a multicast locator and ::1.
    with pytest.raises(HostsFileError, match=what) as info:
        parse_locator(text)
    assert "\n" not in str(info.value) and repr(text) in str(info.value)
    assert locator_problem(ip_address(text)) is not None


@pytest.mark.parametrize("text", ["10.3.0.2", "192.0.2.9", "fd00::3", "2001:db8::7"])
def test_unicast_locators_are_accepted(text: str) -> None:
    assert parse_locator(text) == ip_address(text)
    assert locator_problem(ip_address(text)) is None
