"""Parsers against output captured from real DRBD 8.4.11 / drbd-utils 9.22 in the lab."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenwam.drbd.info import (
    DeviceState,
    parse_events2,
    parse_proc_drbd,
    parse_role,
    parse_status,
    states_from_events,
)
from xenwam.errors import DrbdError

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "drbd"
SCENARIOS = sorted(p.name[len("proc_drbd-8.4.11-"):-len(".txt")]
                   for p in DATA.glob("proc_drbd-8.4.11-*.txt"))


def read(name: str) -> str:
    return (DATA / name).read_text()


def proc(scenario: str) -> DeviceState:
    return parse_proc_drbd(read(f"proc_drbd-8.4.11-{scenario}.txt")).devices[42]


def status(scenario: str) -> DeviceState:
    states = parse_status(read(f"drbdsetup-9.22-status-{scenario}.txt"))
    assert len(states) == 1
    return states[0]


def events(scenario: str) -> DeviceState:
    states = states_from_events(parse_events2(read(f"drbdsetup-9.22-events2-{scenario}.txt")))
    assert len(states) == 1
    return states[0]


def test_all_scenarios_present() -> None:
    assert len(SCENARIOS) >= 10
    for s in SCENARIOS:
        assert (DATA / f"drbdsetup-9.22-status-{s}.txt").exists()
        assert (DATA / f"drbdsetup-9.22-events2-{s}.txt").exists()


def test_proc_version_and_sync_progress() -> None:
    p = parse_proc_drbd(read("proc_drbd-8.4.11-syncing-a.txt"))
    assert (p.version, p.api, p.protocol_range) == ("8.4.11", "1", (86, 101))
    d = p.devices[42]
    assert (d.connection, d.replication, d.role, d.peer_role) == (
        "Connected", "SyncSource", "Primary", "Secondary")
    assert (d.disk, d.peer_disk, d.protocol, d.flags) == ("UpToDate", "Inconsistent", "A", "r-----")
    assert d.sent_kib == 38968 and d.out_of_sync_kib == 223176
    assert d.sync is not None
    assert (d.sync.percent, d.sync.out_of_sync_kib, d.sync.total_kib) == (17.0, 223176, 262144)
    assert (d.sync.eta_seconds, d.sync.rate_kib_s) == (22, 9740)
    assert d.is_syncing and not d.in_sync


def test_proc_states_through_the_lifecycle() -> None:
    assert proc("up-a").connection == "WFConnection"
    ci = proc("connected-inconsistent-a")
    assert ci.is_connected and (ci.disk, ci.peer_disk) == ("Inconsistent", "Inconsistent")
    assert proc("synced-a").in_sync and proc("synced-a").protocol == "A"
    assert proc("handover-a").protocol == "C"
    assert proc("handover-b").protocol == "C"  # forwarded by DRBD to the peer
    assert proc("dual-primary-a").is_primary and proc("dual-primary-a").peer_role == "Primary"
    assert proc("bulk-again-b").protocol == "A"
    sa = proc("standalone-a")
    assert (sa.connection, sa.replication, sa.protocol) == ("StandAlone", None, None)
    assert proc("syncing-b").replication == "SyncTarget"
    assert proc("syncing-b").received_kib > 0


def test_status_sync_and_statistics() -> None:
    s = status("syncing-a")
    assert (s.resource, s.minor, s.role, s.disk) == ("xwt-cap", 42, "Primary", "UpToDate")
    assert (s.connection, s.replication, s.peer_disk) == ("Connected", "SyncSource",
                                                          "Inconsistent")
    assert (s.sent_kib, s.out_of_sync_kib, s.size_kib) == (54288, 207856, 262144)
    assert s.sync is not None and s.sync.percent == 20.71
    sa = status("standalone-a")
    assert (sa.connection, sa.replication, sa.peer_role) == ("StandAlone", None, "Unknown")


def test_events2_fields() -> None:
    ev = parse_events2(read("drbdsetup-9.22-events2-syncing-a.txt"))
    assert [e.kind for e in ev] == ["resource", "connection", "device", "peer-device"]
    assert ev[3].fields["out-of-sync"] == "180384"
    assert events("standalone-b").replication is None  # "Off": no peer


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_three_sources_agree_on_roles_and_disks(scenario: str) -> None:
    p, s, e = proc(scenario), status(scenario), events(scenario)
    for other in (s, e):
        assert (p.role, p.peer_role, p.disk, p.peer_disk) == (
            other.role, other.peer_role, other.disk, other.peer_disk)
        # 8.4 says WFConnection where drbdsetup says Connecting.
        assert p.is_connected == other.is_connected
        if not p.is_syncing:
            assert p.out_of_sync_kib == other.out_of_sync_kib
            assert p.replication == other.replication


def test_role_cstate_dstate_lines() -> None:
    role, cstate, dstate = read("drbdadm-9.22-role-cstate-dstate-syncing-a.txt").split()
    assert parse_role(role) == ("Primary", "Secondary")
    assert cstate == "SyncSource" and parse_role(dstate) == ("UpToDate", "Inconsistent")
    with pytest.raises(DrbdError, match="'nonsense'"):
        parse_role("nonsense")


def test_unloaded_module_and_garbage() -> None:
    assert parse_proc_drbd("").devices == {}
    with pytest.raises(DrbdError, match="unexpected line"):
        parse_proc_drbd("version: 8.4.11 (api:1/proto:86-101)\nwhat is this\n")
    with pytest.raises(DrbdError, match="before any resource"):
        parse_status("  volume:0 minor:1 disk:UpToDate\n")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_parsers_raise_only_drbd_error(text: str) -> None:
    for parse in (parse_proc_drbd, parse_status, parse_events2):
        # Any other exception escaping fails the test.
        with contextlib.suppress(DrbdError):
            parse(text)  # type: ignore[operator]
