"""The migration plan's checks, on the captured ``xl list -l`` of a guest on a xenwam disk."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from xenwam.drbd.info import DeviceState
from xenwam.drbd.resource import Host, Resource
from xenwam.errors import ConfigError
from xenwam.migrate.plan import (
    NetworkPlan,
    Plan,
    ResourcePlan,
    calibrated_overhead_ms,
    check_downtime,
    estimate_downtime_ms,
    plan_network,
    plan_resources,
)
from xenwam.site import Site, SiteNetwork
from xenwam.xen.xl import DomainConfig, NicSpec, parse_list_long

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "xen"
SECRET = "plan-test-secret-1"
SIZE = 256 * 1024 * 1024


def captured(name: str) -> DomainConfig:
    return parse_list_long((DATA / f"xl-list-l-4.17-pvh-{name}.json").read_text())[0]


def host(name: str, address: str) -> Host:
    return Host(hostname=name, address=address, port=7800,
                disk="/dev/loop0", meta_disk="/dev/loop1")


def resource(*hosts: Host) -> Resource:
    return Resource(name="g2-disk", minor=0, hosts=hosts or (host("hosta", "10.0.0.1"),),
                    shared_secret=SECRET)


PRIMARY = DeviceState(minor=0, resource="g2-disk", role="Primary", disk="UpToDate",
                      connection="StandAlone")


def plan(config: DomainConfig | None = None, res: Resource | None = None,
         state: DeviceState = PRIMARY, destination: str = "hostb"
         ) -> tuple[ResourcePlan, ...]:
    return plan_resources(config or captured("xenwam-disk"), {"g2-disk": res or resource()},
                          {"g2-disk": state}, {"g2-disk": SIZE}, "hosta", destination)


def test_a_one_host_resource_plans_a_new_pair() -> None:
    (r,) = plan()
    assert (r.name, r.vdev, r.minor, r.device, r.size_bytes) == (
        "g2-disk", "xvda", 0, "/dev/drbd0", SIZE)
    assert r.reuse_pair is False
    assert r.original == resource().to_json()


def test_a_resource_already_paired_with_the_destination_is_reused() -> None:
    (r,) = plan(res=resource(host("hosta", "10.0.0.1"), host("hostb", "10.0.0.2")))
    assert r.reuse_pair is True


def test_a_disk_that_is_not_a_xenwam_resource_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as refused:
        plan(config=captured("file-disk"))
    message = str(refused.value)
    assert "xvda" in message and "is not a xenwam resource" in message
    assert "xenwam disk adopt NAME --disk /var/lib/xenwam-lab/g1-data.img --minor N" in message


@pytest.mark.parametrize("state", [
    replace(PRIMARY, role="Secondary"),
    replace(PRIMARY, disk="Inconsistent"),
    replace(PRIMARY, role="Secondary", disk="Inconsistent"),
    DeviceState(minor=0),
])
def test_a_resource_the_guest_does_not_hold_primary_uptodate_is_refused(
        state: DeviceState) -> None:
    with pytest.raises(ConfigError, match=f"is {state.role} {state.disk} here"):
        plan(state=state)


def test_a_resource_paired_with_another_host_is_refused() -> None:
    paired = resource(host("hosta", "10.0.0.1"), host("hostc", "10.0.0.3"))
    with pytest.raises(ConfigError, match="already pairs with host 'hostc', not 'hostb'"):
        plan(res=paired)


def test_a_disk_naming_an_unknown_resource_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no file here"):
        plan_resources(captured("xenwam-disk"), {}, {}, {}, "hosta", "hostb")


def test_a_cdrom_or_no_disk_is_refused() -> None:
    g2 = captured("xenwam-disk")
    with pytest.raises(ConfigError, match="no disks"):
        plan(config=replace(g2, disks=()))
    cd = replace(g2.disks[0], vdev="xvdc", is_cdrom=True)
    with pytest.raises(ConfigError, match="CD-ROM"):
        plan(config=replace(g2, disks=(*g2.disks, cd)))


def test_one_resource_used_twice_is_refused() -> None:
    g2 = captured("xenwam-disk")
    twice = replace(g2, disks=(g2.disks[0], replace(g2.disks[0], vdev="xvdb")))
    with pytest.raises(ConfigError, match="uses one resource twice"):
        plan(config=twice)


def site(assign: str = "host-part", subnet: str = "10.2.0.0/24") -> Site:
    gateway = subnet.split("/")[0].rsplit(".", 1)[0] + ".1"
    return Site(name="site-b", network=SiteNetwork("br-b", subnet, gateway, assign),
                replication_address="10.0.0.2", port_first=7800, port_last=7899,
                storage_directory="/var/lib/xenwam/disks", rtt_ms=40.0, bandwidth_mbit=50.0)


def with_vif_ip(ip: str | None) -> DomainConfig:
    g2 = captured("xenwam-disk")
    return replace(g2, nics=tuple(replace(n, ip=ip) for n in g2.nics))


def test_ip_option_wins() -> None:
    net = plan_network(with_vif_ip("10.1.0.11"), site(), "10.2.0.99/24")
    assert net.address == "10.2.0.99/24"
    assert (net.source_bridge, net.destination_bridge) == ("xenbr0", "br-b")
    assert net.bridge_changes and net.gateway == "10.2.0.1" and net.subnet == "10.2.0.0/24"


@pytest.mark.parametrize(("vif_ip", "subnet", "expected"), [
    ("10.1.0.11", "10.2.0.0/24", "10.2.0.11/24"),
    ("10.1.0.11/24", "10.2.0.0/24", "10.2.0.11/24"),
    ("192.168.5.11", "10.2.7.0/24", "10.2.7.11/24"),
])
def test_host_part_mapping_from_the_vif_ip(vif_ip: str, subnet: str, expected: str) -> None:
    assert plan_network(with_vif_ip(vif_ip), site(subnet=subnet), None).address == expected


def test_no_address_known_is_refused_with_the_fix() -> None:
    fix = re.escape("pass --ip ADDRESS/PREFIX (inside 10.2.0.0/24)")
    with pytest.raises(ConfigError, match=fix):
        plan_network(with_vif_ip(None), site(), None)


def test_a_dhcp_site_needs_no_address() -> None:
    assert plan_network(with_vif_ip(None), site(assign="dhcp"), None).address is None


def test_vifs_on_several_bridges_are_refused() -> None:
    g2 = captured("xenwam-disk")
    two = replace(g2, nics=(*g2.nics, NicSpec("00:16:3e:00:00:09", "xenbr1")))
    with pytest.raises(ConfigError, match="several bridges"):
        plan_network(two, site(), "10.2.0.9/24")


def test_downtime_grows_with_memory_and_shrinks_with_bandwidth() -> None:
    memories = [estimate_downtime_ms(m, 100.0, 40.0) for m in (128, 512, 2048, 8192)]
    assert memories == sorted(memories) and len(set(memories)) == len(memories)
    rates = [estimate_downtime_ms(1024, b, 40.0) for b in (10.0, 50.0, 100.0, 1000.0)]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)
    # The stated model: 2 % of memory over the link, four round trips, the overhead.
    assert estimate_downtime_ms(1000, 80.0, 50.0, overhead_ms=0.0, dirty_fraction=0.01) == \
        round(1000 * 1048576 * 0.01 * 8 / 80e6 * 1000 + 200, 1)


def test_overhead_is_learnt_from_this_hosts_earlier_migrations() -> None:
    assert calibrated_overhead_ms([], 50.0, 40.0) is None
    copy = estimate_downtime_ms(128, 50.0, 40.0, overhead_ms=0.0)
    # The lab's trips (128 MiB guest, 40 ms / 50 mbit): paused 15.7, 17.3 and 13.5 s.
    got = calibrated_overhead_ms([(15.7, 128), (17.3, 128), (13.5, 128)], 50.0, 40.0)
    assert got == round(15700 - copy, 1)  # the median
    assert estimate_downtime_ms(128, 50.0, 40.0, overhead_ms=got) == 15700.0
    # Only the most recent samples count; an even count takes the middle two's mean.
    recent = [(10.0, 128), (12.0, 128), (14.0, 128), (16.0, 128), (18.0, 128)]
    assert calibrated_overhead_ms([(99.0, 128)] * 10 + recent, 50.0, 40.0) == \
        round(14000 - copy, 1)
    assert calibrated_overhead_ms([(10.0, 128), (12.0, 128)], 50.0, 40.0) == \
        round(11000 - copy, 1)
    # A paused time shorter than the model's copy part is no negative overhead.
    assert calibrated_overhead_ms([(0.1, 8192)], 1.0, 40.0) == 0.0


def test_check_downtime_refuses_over_budget() -> None:
    check_downtime(4000.0, None)
    check_downtime(4000.0, 4000.0)
    with pytest.raises(ConfigError, match="expected downtime 4001 ms exceeds --max-downtime "
                                          "4000 ms"):
        check_downtime(4000.2, 4000.0)


def a_plan() -> Plan:
    (r,) = plan()
    return Plan(id="20261201T081500-g2-1a2b", domain="g2", domid=2, memory_mib=128,
                source_hostname="hosta", destination="site-b.example",
                destination_hostname="hostb", resources=(r,),
                network=NetworkPlan("xenbr0", "br-b", "10.2.0.11/24", "10.2.0.1",
                                    "10.2.0.0/24"),
                downtime_estimate_ms=4321.5, max_downtime_ms=None)


def test_plan_json_hides_the_shared_secret() -> None:
    p = a_plan()
    doc = p.to_json()
    text = json.dumps(doc)
    assert SECRET not in text
    assert doc["resources"][0]["original"]["shared_secret"] == "<hidden>"
    assert p.resources[0].original["shared_secret"] == SECRET  # the plan itself untouched


def test_plan_round_trips_through_json_with_the_originals() -> None:
    p = a_plan()
    doc = json.loads(json.dumps(p.to_json()))
    originals = {r.name: r.original for r in p.resources}
    assert Plan.from_json(doc, json.loads(json.dumps(originals))) == p


@pytest.mark.parametrize("damage", ["resources", "network", "domain"])
def test_a_damaged_plan_is_refused(damage: str) -> None:
    doc = a_plan().to_json()
    del doc[damage]
    with pytest.raises(ConfigError, match=r"plan\.json is damaged"):
        Plan.from_json(doc, {"g2-disk": {}})
