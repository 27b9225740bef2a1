"""Lab guests and readers: xl config text, captured `xl list`, ping gaps, tick logs."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from xenwam.errors import ConfigError, XenError
from xenwam.lab.xl import (
    GuestSpec,
    PingReply,
    clock_offset,
    first_after,
    guest_mac,
    longest_gap,
    parse_ping,
    parse_ticks,
    parse_xl_list,
    rebounds,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data"


def _spec(**kw: object) -> GuestSpec:
    args: dict[str, object] = {
        "name": "g1", "address": ipaddress.IPv4Interface("10.1.0.10/24"),
        "gateway": ipaddress.IPv4Address("10.1.0.1"), "mac": guest_mac(1),
    }
    args.update(kw)
    return GuestSpec(**args)  # type: ignore[arg-type]


def test_xl_list_dom0_only() -> None:
    doms = parse_xl_list((DATA / "xl-list-4.17-dom0-only.txt").read_text())
    assert len(doms) == 1
    assert doms[0].name == "Domain-0" and doms[0].domid == 0
    assert doms[0].memory_mib == 512 and doms[0].vcpus == 1
    assert doms[0].state == "r-----"


def test_xl_list_with_pvh_guest() -> None:
    doms = parse_xl_list((DATA / "xl-list-4.17-one-pvh-guest.txt").read_text())
    assert [(d.name, d.domid, d.memory_mib, d.state) for d in doms] == [
        ("Domain-0", 0, 512, "r-----"), ("g1", 1, 128, "-b----")]
    assert doms[1].cpu_seconds == pytest.approx(7.7)


def test_xl_list_after_migration_keeps_the_name() -> None:
    doms = parse_xl_list((DATA / "xl-list-4.17-after-migration.txt").read_text())
    assert [d.name for d in doms] == ["Domain-0", "g1"]


@pytest.mark.parametrize("bad", ["", "garbage\n", "Name ID\nDomain-0 zero 512 1 r----- 1.0\n"])
def test_bad_xl_list_raises(bad: str) -> None:
    with pytest.raises(XenError):
        parse_xl_list(bad)


def test_guest_config_is_pvh_with_vif_and_disk() -> None:
    text = _spec().xl_config()
    assert 'type = "pvh"' in text
    assert 'name = "g1"' in text
    assert "memory = 128" in text
    assert 'vif = ["bridge=xenbr0,mac=00:16:3e:58:57:01"]' in text
    assert "target=/var/lib/xenwam-lab/g1-data.img" in text
    assert "xw.ip=10.1.0.10/24 xw.gw=10.1.0.1" in text


@pytest.mark.parametrize("name", ["G1", "1g", "g 1", "a" * 40, "g1;rm", "g1\n"])
def test_bad_guest_name_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="guest name"):
        _spec(name=name)


def test_too_little_guest_memory_refused() -> None:
    with pytest.raises(ConfigError, match="96"):
        _spec(memory_mib=64)


PING = """\
PING 10.0.0.10 (10.0.0.10) 56(84) bytes of data.
[1795331000.100000] 64 bytes from 10.0.0.10: icmp_seq=1 ttl=64 time=1.21 ms
[1795331000.150000] 64 bytes from 10.0.0.10: icmp_seq=2 ttl=64 time=1.05 ms
[1795331006.300000] 64 bytes from 10.0.0.10: icmp_seq=125 ttl=64 time=2.80 ms
[1795331006.350000] 64 bytes from 10.0.0.10: icmp_seq=126 ttl=64 time=1.10 ms
"""


def test_ping_parse() -> None:
    replies = parse_ping(PING)
    assert replies[0] == PingReply(1795331000.1, 1)
    assert [r.seq for r in replies] == [1, 2, 125, 126]


def test_gap_spans_the_silence_around_the_migration() -> None:
    rep = longest_gap(parse_ping(PING), start=1795331000.12, end=1795331005.0)
    assert rep.answered_after
    assert rep.longest_gap == pytest.approx(6.15)
    assert rep.replies == 4


def test_no_reply_after_the_migration_means_no_gap_figure() -> None:
    rep = longest_gap(parse_ping(PING), start=1795331000.12, end=1795331007.0)
    assert not rep.answered_after
    assert rep.longest_gap is None


def test_ticks_from_console_log() -> None:
    text = "/ # \x1b[6nxw-tick 2 1795331014\nxw-tick 3 1795331015\r\nnoise\nxw-tick 4 17953310"
    ticks = parse_ticks(text)
    # The last line is still being written: it is not counted.
    assert [t.count for t in ticks] == [2, 3]
    assert ticks[0].time == 1795331014


def test_console_exec_round_trip_skips_echo_and_ticks() -> None:
    from xenwam.lab.xl import console_exec_script, parse_console_exec

    line = console_exec_script("uname -r", "ab12")
    console = (f"/ # {line}\r\n"          # the shell echoes the typed line
               "XWBEGIN-ab12\r\n"
               "xw-tick 41 1795331014\r\n"
               "6.1.0-56-amd64\r\n"
               "XWEND-ab12 0\r\n/ # ")
    result = parse_console_exec(console, "ab12")
    assert result is not None
    assert result.exit_status == 0
    assert result.output == "6.1.0-56-amd64"
    assert parse_console_exec(console, "ffff") is None
    assert parse_console_exec(f"/ # {line}\r\nXWBEGIN-ab12\r\nhalf", "ab12") is None


def test_migrate_argv_per_transport() -> None:
    from xenwam.lab.xl import migrate_argv, receive_listener_argv

    assert migrate_argv("g1", "10.0.0.2", "ssh") == ["xl", "migrate", "g1", "10.0.0.2"]
    assert migrate_argv("g1", "10.0.0.2", "socat") == [
        "xl", "migrate", "-s", "", "g1", "socat - TCP:10.0.0.2:8002"]
    with pytest.raises(ConfigError, match="'scp'"):
        migrate_argv("g1", "10.0.0.2", "scp")
    listener = receive_listener_argv("10.0.0.2")
    assert listener[1] == "TCP-LISTEN:8002,bind=10.0.0.2,reuseaddr"
    assert "fork" not in listener[1]


HIPD_LOG = """\
2026-12-02 01:50:10,120 hipd INFO hipd ready: HIT 2001:22::1, locators 10.0.0.100
2026-12-02 01:50:20,000 hipd INFO rebound with 2001:22::9 (peer): 10.1.0.10 -> 10.2.0.10
2026-12-02 01:50:21,500 hipd INFO rebound with 2001:22::99 (peer): 10.1.0.11 -> 10.2.0.11
Traceback (most recent call last):
2026-12-02 01:51:02,250 hipd INFO rebound with 2001:22::9 (peer): 10.2.0.10 -> 10.1.0.10
"""


def test_rebounds_reads_the_peers_completed_rebindings_only() -> None:
    base = time.mktime(time.strptime("2026-12-02 01:50:20", "%Y-%m-%d %H:%M:%S"))
    assert rebounds(HIPD_LOG, "2001:22::9") == [base, base + 42.25]
    assert rebounds(HIPD_LOG, "2001:22::7") == []


def test_first_after_and_clock_offset() -> None:
    assert first_after([10.0, 20.0, 30.0], 15.5) == 4.5
    assert first_after([10.0], 15.5) is None
    offset, error = clock_offset(100.0, 250.5, 101.0)  # the remote read 150 s ahead
    assert (offset, error) == (150.0, 0.5)
