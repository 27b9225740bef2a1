"""QEMU argv for a lab host."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenwam.errors import ConfigError
from xenwam.lab.config import LabConfig
from xenwam.lab.qemu import host_argv, mac_address, overlay_argv

pytestmark = pytest.mark.unit


def _argv(tmp_path: Path, **kw: object) -> list[str]:
    config = LabConfig(run_dir=tmp_path / "run", **kw)  # type: ignore[arg-type]
    return host_argv(config, "b", xen=tmp_path / "xen", kernel=tmp_path / "vmlinuz",
                     initrd=tmp_path / "initrd.gz")


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_host_argv_boots_xen_with_pv_dom0(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert _value(argv, "-cpu") == "qemu64,+npt"
    assert _value(argv, "-smp") == "1"
    assert _value(argv, "-m") == "1536"
    assert "dom0_mem=512M,max:512M" in _value(argv, "-append")
    assert _value(argv, "-initrd") == (f"{tmp_path}/vmlinuz console=hvc0 root=/dev/vda "
                                       f"xw.host=b,{tmp_path}/initrd.gz")


def test_control_is_restricted_user_net_with_loopback_ssh(tmp_path: Path) -> None:
    argv = _argv(tmp_path, ssh_port_base=3300)
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs[0].startswith("user,id=ctl,")
    assert "restrict=on" in netdevs[0]
    assert "hostfwd=tcp:127.0.0.1:3301-10.0.2.15:22" in netdevs[0]
    assert netdevs[1].startswith("tap,id=lnk,ifname=xw")
    assert f"mac={mac_address('b', 2)}" in " ".join(argv)


def test_source_share_is_read_only_9p(tmp_path: Path) -> None:
    assert "-virtfs" not in _argv(tmp_path)
    argv = _argv(tmp_path, source_dir=tmp_path / "src")
    assert _value(argv, "-virtfs") == (f"local,path={tmp_path}/src,mount_tag=xenwam,"
                                       "security_model=none,readonly=on")


def test_path_with_comma_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="comma"):
        _argv(tmp_path / "a,b")


def test_macs_differ_per_host_and_nic() -> None:
    macs = {mac_address(h, n) for h in "ab" for n in (1, 2)}
    assert len(macs) == 4
    assert mac_address("a", 1) == "52:54:00:00:0a:01"


def test_overlay_is_qcow2_over_raw() -> None:
    assert overlay_argv(Path("/c/dom0.img"), Path("/r/a.qcow2")) == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", "/c/dom0.img", "-F", "raw",
        "/r/a.qcow2"]
