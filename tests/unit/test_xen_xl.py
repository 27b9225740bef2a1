"""``xl`` argv builders and parsers, on ``xl list -l`` output captured from Xen 4.17."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from xenwam.errors import XenError
from xenwam.xen import xl
from xenwam.xen.xl import DiskSpec, DomainConfig, MigrateOptions, NicSpec

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "xen"
FILE_DISK = DATA / "xl-list-l-4.17-pvh-file-disk.json"
XENWAM_DISK = DATA / "xl-list-l-4.17-pvh-xenwam-disk.json"


def one(path: Path) -> DomainConfig:
    domains = xl.parse_list_long(path.read_text())
    assert len(domains) == 1
    return domains[0]


def test_parse_list_long_pvh_guest_on_a_file_disk() -> None:
    g1 = one(FILE_DISK)
    assert (g1.domid, g1.name, g1.type) == (1, "g1", "pvh")
    assert (g1.memory_mib, g1.max_memory_mib, g1.vcpus) == (128, 128, 1)
    assert g1.kernel == "/var/lib/xenwam-lab/vmlinuz"
    assert g1.ramdisk == "/var/lib/xenwam-lab/guest-initrd.gz"
    assert g1.cmdline == "console=hvc0 quiet xw.ip=10.1.0.10/24 xw.gw=10.1.0.1"
    assert g1.disks == (DiskSpec(vdev="xvda", target="/var/lib/xenwam-lab/g1-data.img",
                                 script=None, format="raw", readwrite=True, is_cdrom=False),)
    assert g1.nics == (NicSpec(mac="00:16:3e:58:57:01", bridge="xenbr0"),)
    assert (g1.on_poweroff, g1.on_reboot, g1.on_crash) == (None, "restart", "preserve")
    assert g1.raw["c_info"]["name"] == "g1"


def test_parse_list_long_pvh_guest_on_a_xenwam_resource() -> None:
    g2 = one(XENWAM_DISK)
    assert (g2.domid, g2.name, g2.type, g2.memory_mib) == (2, "g2", "pvh", 128)
    assert g2.disks == (DiskSpec(vdev="xvda", target="g2-disk", script="block-xenwam",
                                 format="raw", readwrite=True, is_cdrom=False),)
    assert g2.disks[0].is_xenwam
    assert g2.nics[0].bridge == "xenbr0" and g2.nics[0].mac == "00:16:3e:58:57:02"


def test_parse_list_long_takes_one_object_as_well_as_a_list() -> None:
    doc = json.loads(XENWAM_DISK.read_text())
    assert xl.parse_list_long(json.dumps(doc[0])) == xl.parse_list_long(json.dumps(doc))


@pytest.mark.parametrize("text", [
    "", "not json", "42", '"g1"', '[{"domid": 1}]', '[{"config": {"c_info": {}}}]',
    '[{"config": {"c_info": {"name": "g1"}, "b_info": {"max_memkb": "lots"}}}]',
    '[{"config": {"c_info": {"name": "g1"}, "disks": ["xvda"]}}]',
])
def test_parse_list_long_refuses_what_is_not_xl_output(text: str) -> None:
    with pytest.raises(XenError):
        xl.parse_list_long(text)


@pytest.mark.parametrize(("script", "expected"), [
    ("block-xenwam", True),
    ("/etc/xen/scripts/block-xenwam", True),
    (None, False),
    ("block", False),
    ("block-xenwam-old", False),
    ("/etc/xen/block-xenwam/other", False),
])
def test_disk_is_xenwam_by_its_script(script: str | None, expected: bool) -> None:
    assert DiskSpec(vdev="xvda", target="g1", script=script).is_xenwam is expected


def _config_lines(text: str) -> dict[str, str]:
    return dict(line.split(" = ", 1) for line in text.splitlines())


def test_render_config_of_a_captured_guest() -> None:
    g2 = one(XENWAM_DISK)
    lines = _config_lines(xl.render_config(g2))
    assert lines["name"] == '"g2"' and lines["type"] == '"pvh"'
    assert lines["kernel"] == '"/var/lib/xenwam-lab/vmlinuz"'
    assert lines["cmdline"] == '"console=hvc0 quiet xw.ip=10.1.0.11/24 xw.gw=10.1.0.1"'
    assert lines["memory"] == "128" and lines["vcpus"] == "1"
    assert "maxmem" not in lines  # not above memory
    assert lines["disk"] == \
        '["format=raw, vdev=xvda, access=rw, script=block-xenwam, target=g2-disk"]'
    assert lines["vif"] == '["bridge=xenbr0,mac=00:16:3e:58:57:02"]'
    assert lines["on_reboot"] == '"restart"' and "on_poweroff" not in lines


def test_render_config_carries_the_new_bridge_and_every_disk_option() -> None:
    g1 = replace(one(FILE_DISK).with_bridge("br-site-b"), max_memory_mib=256,
                 disks=(DiskSpec("xvda", "g1-disk", "block-xenwam", "raw"),
                        DiskSpec("xvdb", "/srv/iso,1.iso", None, None, readwrite=False,
                                 is_cdrom=True)),
                 nics=(NicSpec("00:16:3e:00:00:01", "xenbr0", "vif-bridge", "e1000",
                               "10.1.0.10"),))
    lines = _config_lines(xl.render_config(g1.with_bridge("br-site-b")))
    assert lines["maxmem"] == "256"
    assert lines["disk"] == ('["format=raw, vdev=xvda, access=rw, script=block-xenwam, '
                             'target=g1-disk", "vdev=xvdb, access=ro, devtype=cdrom, '
                             'target=/srv/iso,1.iso"]')
    assert lines["vif"] == ('["bridge=br-site-b,mac=00:16:3e:00:00:01,script=vif-bridge,'
                            'model=e1000,ip=10.1.0.10"]')


@pytest.mark.parametrize("field", ["name", "cmdline", "kernel"])
@pytest.mark.parametrize("value", ['a"b', "a\nb"])
def test_render_config_refuses_a_value_it_cannot_quote(field: str, value: str) -> None:
    g1 = replace(one(FILE_DISK), **{field: value})
    with pytest.raises(XenError, match="cannot write"):
        xl.render_config(g1)


def test_migrate_argv_plain() -> None:
    assert xl.migrate("g1", "site-b") == ["xl", "migrate", "g1", "site-b"]


def test_migrate_argv_with_every_option() -> None:
    options = MigrateOptions(transport="xenwam-transport --level 3", config_path="/tmp/g1.cfg",
                             paused=True, no_daemon=True, debug=True)
    assert xl.migrate("g1", "site-b", options) == [
        "xl", "migrate", "-s", "xenwam-transport --level 3", "-C", "/tmp/g1.cfg", "-p", "-e",
        "--debug", "g1", "site-b"]


@pytest.mark.parametrize(("options", "flags"), [
    (MigrateOptions(transport=""), ["-s", ""]),
    (MigrateOptions(config_path="g1.cfg"), ["-C", "g1.cfg"]),
    (MigrateOptions(paused=True), ["-p"]),
    (MigrateOptions(no_daemon=True), ["-e"]),
    (MigrateOptions(debug=True), ["--debug"]),
])
def test_migrate_argv_each_option_alone(options: MigrateOptions, flags: list[str]) -> None:
    assert xl.migrate("g1", "h", options) == ["xl", "migrate", *flags, "g1", "h"]


@pytest.mark.parametrize("name", ["g1\n", "", "-g1", "g 1", "g1/x", "../g1", "g" * 65,
                                  "g\x1b[2J"])
def test_check_domain_refuses(name: str) -> None:
    with pytest.raises(XenError, match="invalid domain name"):
        xl.check_domain(name)
    with pytest.raises(XenError):
        xl.migrate(name, "site-b")
    with pytest.raises(XenError):
        xl.list_long(name)


@pytest.mark.parametrize("name", ["g1", "7", "web-1.example", "G_1"])
def test_check_domain_accepts(name: str) -> None:
    assert xl.check_domain(name) == name


def test_transport_command_is_quoted_for_xl() -> None:
    assert xl.transport_command("/usr/bin/xenwam-transport", "--level", "3 4") == \
        "/usr/bin/xenwam-transport --level '3 4'"


def test_migrate_receive_argv() -> None:
    from xenwam.xen.xl import migrate_receive

    assert migrate_receive() == ["xl", "migrate-receive"]
    assert migrate_receive(paused=True, no_daemon=True, debug=True) == [
        "xl", "migrate-receive", "-p", "-e", "-d"]
