"""The lab end to end: real Xen 4.17 under QEMU, stock xl migrate over the WAN.

Stock ``xl migrate`` in the lan layout is the bench smoke's ``stock-lan`` method
(tests/lab/test_bench_migrate.py).  The lan-layout tests (marker ``lan``) run after every
other lab test, in this file's order, the teardown check last.
"""

from __future__ import annotations

import json
import time

import pytest

from xenwam.cli import main
from xenwam.lab import Layout
from xenwam.lab.config import correspondent_address

pytestmark = pytest.mark.lab


# ---------------------------------------------------------------- wan layout

def test_wan_link_is_shaped_with_netem(lab) -> None:
    wan = lab.use(Layout.WAN)
    for host in ("a", "b"):
        qdisc = wan.exec(host, ["tc", "qdisc", "show", "dev", "wan"]).stdout
        assert "netem" in qdisc and "delay 10ms" in qdisc, qdisc
    # dom0 a to dom0 b crosses both shaped egresses: about 20 ms round trip.
    out = wan.exec("a", ["ping", "-n", "-c", "3", "10.0.0.2"]).stdout
    rtts = [float(w.split("=")[1]) for w in out.split() if w.startswith("time=")]
    assert rtts and min(rtts) >= 19.0, out


def test_wan_sites_are_routed_subnets_reachable_from_correspondent(lab) -> None:
    wan = lab.use(Layout.WAN)
    assert wan.ping_from_correspondent("10.1.0.1")
    assert wan.ping_from_correspondent("10.2.0.1")
    corr = wan.correspondent().run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
    assert str(correspondent_address()) in corr


def test_wan_migration_keeps_guest_running_and_renumbered_guest_answers(lab) -> None:
    wan = lab.use(Layout.WAN)
    guest = wan.create_guest("a")
    assert guest.address.startswith("10.1.0.")
    assert wan.ping_from_correspondent(guest.address)

    report = wan.migrate_baseline(guest.name)

    assert report.running_on_destination
    # Its old address is wrong for site B: stock Xen leaves it unreachable.
    assert not report.answered_after
    assert not wan.ping_from_correspondent(guest.address)
    # It kept running: the counter it writes to its console went on counting on B.
    first = wan.guest_ticks("b", guest.name)
    time.sleep(3)
    later = wan.guest_ticks("b", guest.name)
    assert first and later[-1].count > first[-1].count > report.ticks_before

    new_address = wan.renumber_guest(guest.name)
    assert new_address.startswith("10.2.0.")
    deadline = time.monotonic() + 30
    while not wan.ping_from_correspondent(new_address) and time.monotonic() < deadline:
        time.sleep(1)
    assert wan.ping_from_correspondent(new_address, count=3)


# ---------------------------------------------------------------- lan layout

@pytest.mark.lan
def test_both_dom0s_run_xl_list(lab) -> None:
    lan = lab.use(Layout.LAN)
    for host in ("a", "b"):
        domains = lan.xl_list(host)
        assert [d.name for d in domains] == ["Domain-0"], (host, domains)
        assert domains[0].domid == 0
        assert domains[0].memory_mib == 512


@pytest.mark.lan
def test_dom0_sees_project_source_share(lab) -> None:
    lan = lab.use(Layout.LAN)
    res = lan.exec("a", ["sh", "-c", ". /etc/profile.d/xenwam.sh && "
                                     "python3 -c 'import xenwam.lab.config as c; print(c.HOSTS)'"])
    assert res.stdout.strip() == "('a', 'b')"


@pytest.mark.lan
def test_cli_status_and_exec_reach_the_lab(lab, capsys) -> None:
    lan = lab.use(Layout.LAN)
    capsys.readouterr()
    assert main(["lab", "status", "--json", "--run-dir", str(lan.run_dir)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "up" and doc["layout"] == "lan"
    assert [h["reachable"] for h in doc["hosts"]] == [True, True]
    assert main(["lab", "exec", "--run-dir", str(lan.run_dir), "b", "--", "hostname"]) == 0
    assert capsys.readouterr().out.strip() == "b"


# ---------------------------------------------------------------- teardown

@pytest.mark.lan
def test_down_leaves_no_process_or_namespace(lab) -> None:
    lab.use(Layout.LAN)
    config_netns = [lab.lab.load_state().config().switch_netns,
                    lab.lab.load_state().config().correspondent_netns]
    pids = set(lab.qemu_pids)
    assert pids

    lab.down()

    for pid in pids:
        assert not _alive(pid), pid
    namespaces = lab.lab.runner.run(["ip", "netns", "list"]).stdout.split()
    assert not set(config_netns) & set(namespaces)
    assert lab.lab.status()["status"] == "down"
    # A second down (as after a crash) finds nothing left and does not fail.
    assert lab.lab.down() == []


def _alive(pid: int) -> bool:
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
