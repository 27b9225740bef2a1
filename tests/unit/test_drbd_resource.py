"""Resource model: validation, rendering, atomic install, and drbdadm's own parse."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xenwam.drbd.resource import (
    Host,
    Resource,
    WanProfile,
    install,
    list_resources,
    load,
    parse_resource_file,
    uninstall,
)
from xenwam.errors import ConfigError

pytestmark = pytest.mark.unit

DRBDADM_84 = "/usr/lib/drbd/drbdadm-84"


def make(**changes: object) -> Resource:
    base = Resource(
        name="guest1",
        minor=0,
        hosts=(
            Host("hosta", "10.99.0.1", 7789, "/dev/vg0/guest1", "/dev/vg0/guest1-md"),
            Host("hostb", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop1"),
        ),
        shared_secret="s3cret-for-tests",
        wan=WanProfile(rtt_ms=80.0, bandwidth_mbit=50.0),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_render_has_wan_profile_and_external_metadata() -> None:
    text = make().render()
    assert "protocol A;" in text
    assert "on-congestion pull-ahead;" in text
    assert "meta-disk /dev/vg0/guest1-md;" in text
    assert "address ipv4 10.99.0.2:7789;" in text
    assert 'shared-secret "s3cret-for-tests";' in text
    assert "cram-hmac-alg sha256;" in text
    # 80 ms RTT: 5x is 0.4 s, below the 2 s floor, so 20 tenths.
    assert "c-plan-ahead 20;" in text


def test_plan_ahead_follows_long_rtt() -> None:
    wan = WanProfile(rtt_ms=700.0)
    assert wan.plan_ahead_tenths == 35  # 5 x 0.7 s = 3.5 s
    assert wan.plan_ahead_tenths * 100 >= 5 * wan.rtt_ms


def test_congestion_fill_below_send_buffer() -> None:
    wan = WanProfile(rtt_ms=100, bandwidth_mbit=100)
    assert wan.congestion_fill_kib * 1024 < wan.sndbuf
    assert wan.congestion_fill_kib * 1024 >= wan.bdp_bytes


def test_ping_timeout_leaves_room_for_a_loaded_links_queue() -> None:
    # 80 ms: four RTTs are 0.32 s, under a 20 Mbit/s netem queue's 0.6 s; the floor is 2 s.
    assert WanProfile(rtt_ms=80.0).ping_timeout_tenths == 20
    assert WanProfile(rtt_ms=700.0).ping_timeout_tenths == 28  # four RTTs
    for rtt in (1.0, 80.0, 700.0, 2000.0):
        wan = WanProfile(rtt_ms=rtt)
        assert wan.timeout_tenths > wan.ping_timeout_tenths  # drbd.conf's rule
    assert "ping-timeout 20;" in make().render()


def test_a_checksum_resync_is_not_paced_at_the_link_rate() -> None:
    # 50 mbit is 6103 KiB/s; one BDP at 80 ms is 488 KiB, under the 1 MiB floor.
    plain = make()
    assert "c-max-rate 6103k;" in plain.render() and "c-fill-target 1024k;" in plain.render()
    csums = make(wan=dataclasses.replace(plain.wan, csums_alg="md5"))
    text = csums.render()
    # Digests of matching blocks are counted at the block's size: 8x the link, while
    # the data in flight stays at the same fill target.
    assert "c-max-rate 48824k;" in text and "c-fill-target 1024k;" in text
    assert csums.wan.resync_max_rate_kib == 8 * csums.wan.c_max_rate_kib
    fast = WanProfile(bandwidth_mbit=10_000_000.0, csums_alg="md5")
    assert fast.resync_max_rate_kib == 4 * 1024 * 1024  # drbdsetup's ceiling


@pytest.mark.parametrize(
    ("changes", "quoted"),
    [
        ({"name": "bad name"}, "'bad name'"),
        ({"minor": -1}, "-1"),
        ({"shared_secret": "short"}, "8-64"),
        ({"shared_secret": 'has"quote' * 2}, "printable"),
        ({"cram_hmac_alg": "md4"}, "'md4'"),
        ({"wan": WanProfile(protocol="C")}, "pull-ahead needs protocol A"),
        ({"wan": WanProfile(rtt_ms=1000, c_plan_ahead=20)}, "at least 5x the RTT"),
        ({"wan": WanProfile(sndbuf_bytes=64 * 1024 * 1024)}, "sndbuf"),
    ],
)
def test_validation_quotes_input(changes: dict[str, object], quoted: str) -> None:
    with pytest.raises(ConfigError) as err:
        make(**changes).validate()
    assert quoted in str(err.value)
    assert "nothing was written" in str(err.value) or "use" in str(err.value)


@pytest.mark.parametrize(
    "host",
    [
        Host("hostb", "10.99.0.300", 7789, "/dev/loop0", "/dev/loop1"),
        Host("hostb", "10.99.0.2", 70000, "/dev/loop0", "/dev/loop1"),
        Host("hostb", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop0"),
        Host("hostb", "10.99.0.2", 7789, "relative/disk", "/dev/loop1"),
        Host("hostb", "10.99.0.2", 7789, "/dev/x;y", "/dev/loop1"),
        Host("host_b!", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop1"),
        Host("hosta", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop1"),
        Host("hostb", "fd00::2", 7789, "/dev/loop0", "/dev/loop1"),
    ],
)
def test_bad_host_refused(host: Host) -> None:
    res = make(hosts=(make().hosts[0], host))
    with pytest.raises(ConfigError):
        res.validate()


def test_ipv6_address_rendered_in_brackets() -> None:
    hosts = (
        Host("hosta", "fd00::1", 7789, "/dev/loop0", "/dev/loop1"),
        Host("hostb", "fd00::2", 7790, "/dev/loop0", "/dev/loop1"),
    )
    assert "address ipv6 [fd00::2]:7790;" in make(hosts=hosts).render()


def test_model_round_trips_through_the_file() -> None:
    res = make()
    assert parse_resource_file(res.render()) == res


def test_file_not_written_by_xenwam_refused() -> None:
    with pytest.raises(ConfigError, match="not written by xenwam"):
        parse_resource_file("resource r0 {\n}\n", "/etc/drbd.d/r0.res")


def test_install_is_atomic_and_private(tmp_path: Path) -> None:
    res = make()
    path = install(res, tmp_path)
    assert path == tmp_path / "xenwam-guest1.res"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load("guest1", tmp_path) == res
    assert [r.name for r in list_resources(tmp_path)] == ["guest1"]

    def refuse(tmp: Path) -> None:
        assert tmp.read_text() == make(minor=5).render()
        raise ConfigError("checker said no")

    with pytest.raises(ConfigError, match="checker said no"):
        install(make(minor=5), tmp_path, check=refuse)
    # The old file is untouched and no temporary file is left behind.
    assert load("guest1", tmp_path).minor == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xenwam-guest1.res"]


def test_invalid_resource_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        install(make(minor=-3), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_uninstall(tmp_path: Path) -> None:
    install(make(), tmp_path)
    assert uninstall("guest1", tmp_path) is True
    assert uninstall("guest1", tmp_path) is False
    with pytest.raises(ConfigError, match="does not exist"):
        load("guest1", tmp_path)


@pytest.mark.skipif(not os.path.exists(DRBDADM_84), reason="drbd-utils (drbdadm-84) not installed")
def test_drbdadm_84_parses_the_rendered_file(tmp_path: Path) -> None:
    path = tmp_path / "r.res"
    path.write_text(make().render())
    # Without a resource name drbdadm parses every resource, whatever this host is called.
    out = subprocess.run([DRBDADM_84, "-c", str(path), "dump"],
                         capture_output=True, text=True, check=True).stdout
    assert "on-congestion    pull-ahead;" in out
    assert "meta-disk        /dev/vg0/guest1-md;" in out
    assert "c-plan-ahead      20;" in out


@pytest.mark.skipif(shutil.which("drbdadm") is None, reason="drbd-utils not installed")
def test_drbdadm_refuses_what_validation_would_not_catch(tmp_path: Path) -> None:
    # The checker hook is how `disk define --check` lets drbdadm veto a file.
    path = tmp_path / "r.res"
    path.write_text(make().render().replace("protocol A;", "protocol Q;"))
    result = subprocess.run([DRBDADM_84 if os.path.exists(DRBDADM_84) else "drbdadm",
                             "-c", str(path), "dump"], capture_output=True, text=True)
    assert result.returncode != 0


# --- a trailing newline is not part of a valid name (issue 11, item 8) ----------------

@pytest.mark.parametrize("name", ["g7\n", "g7\n\n", "\ng7"])
def test_a_newline_is_never_part_of_a_resource_name(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid resource name"):
        make(name=name).validate()
    with pytest.raises(ConfigError, match="invalid resource name"):
        install(make(name=name), tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="invalid resource name"):
        load(name, tmp_path)


@pytest.mark.parametrize("host", [
    Host("hostb\n", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop1"),
    Host("hostb", "10.99.0.2", 7789, "/dev/loop0\n", "/dev/loop1"),
    Host("hostb", "10.99.0.2", 7789, "/dev/loop0", "/dev/loop1\n"),
])
def test_a_newline_is_never_part_of_a_host_name_or_disk(host: Host) -> None:
    with pytest.raises(ConfigError):
        make(hosts=(make().hosts[0], host)).validate()


# --- the shared secret is never shown (issue 11, item 9) -------------------------------

def test_a_malformed_model_line_does_not_quote_the_secret() -> None:
    text = make().render().replace('"minor": 0', '"minor": "zero"')
    with pytest.raises(ConfigError) as refused:
        parse_resource_file(text, "/etc/drbd.d/xenwam-guest1.res")
    assert "s3cret-for-tests" not in str(refused.value)
    assert "guest1" in str(refused.value)  # still says which resource
    short = {"name": "g1", "minor": 1, "hosts": [], "shared_secret": "s3cret-for-tests"}
    with pytest.raises(ConfigError) as refused:
        Resource.from_json(short)
    assert "s3cret-for-tests" not in str(refused.value)


def test_a_foreign_first_line_is_not_quoted() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_resource_file('shared-secret "s3cret-for-tests";\n', "/etc/drbd.d/xenwam-x.res")
    assert "s3cret-for-tests" not in str(refused.value)


def test_the_secret_is_not_in_the_repr() -> None:
    assert "s3cret-for-tests" not in repr(make())
