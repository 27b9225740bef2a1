"""Doctor: parsers on captured output, and the verdicts drawn from facts."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from xenwam.doctor import (
    HostFacts,
    Status,
    evaluate,
    parse_drbdadm_version,
    parse_qemu_version,
    parse_xl_info_version,
    run_doctor,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "doctor"

# A Debian 12 dom0 as the lab builds it.
DOM0 = HostFacts(
    is_root=True, hypervisor_type="xen", xen_capabilities="control_d", xl_path="/usr/sbin/xl",
    xl_version="4.17.5", xenstored_socket="/run/xenstored/socket", xenbus_device=True,
    drbd_loaded_version="version: 8.4.11 (api:1/proto:86-101)", drbd_module_available=True,
    drbdadm_path="/usr/sbin/drbdadm", drbd_utils_version="9.22.0", xfrm_present=True,
    esp_beet=True, netem=True, tun=True, netns=True, qemu_path=None, qemu_version=None,
    debootstrap_path=None, kernel_release="6.1.0-35-amd64",
)


def test_parse_drbdadm_version_captured() -> None:
    text = (DATA / "drbdadm-9.22.0-version.txt").read_text()
    assert parse_drbdadm_version(text) == "9.22.0"


def test_parse_drbdadm_version_from_code_only() -> None:
    assert parse_drbdadm_version("DRBDADM_VERSION_CODE=0x091600\n") == "9.22.0"
    assert parse_drbdadm_version("garbage") is None


def test_parse_qemu_version_captured() -> None:
    text = (DATA / "qemu-7.2-version.txt").read_text()
    assert parse_qemu_version(text) == "7.2.22"


def test_parse_xl_info_version() -> None:
    text = "host        : a\nxen_major   : 4\nxen_version : 4.17.5\n"
    assert parse_xl_info_version(text) == "4.17.5"
    assert parse_xl_info_version("") is None


def test_dom0_can_migrate() -> None:
    report = evaluate(DOM0)
    assert report.roles["migration"] is True
    assert report.roles["hip"] is True
    assert report.roles["lab"] is False  # no QEMU in dom0


@pytest.mark.parametrize(
    ("change", "check_name"),
    [
        ({"hypervisor_type": None}, "xen hypervisor"),
        ({"xen_capabilities": ""}, "xen control domain"),
        ({"xl_version": None}, "xl"),
        ({"xenstored_socket": None, "xenbus_device": False}, "xenstore"),
        ({"drbd_module_available": False, "drbd_loaded_version": None}, "drbd kernel module"),
        ({"drbdadm_path": None}, "drbd-utils"),
    ],
)
def test_missing_piece_blocks_migration_and_names_its_package(
    change: dict[str, object], check_name: str
) -> None:
    report = evaluate(dataclasses.replace(DOM0, **change))  # type: ignore[arg-type]
    assert report.roles["migration"] is False
    check = next(c for c in report.checks if c.name == check_name)
    assert check.status is Status.MISSING
    assert check.package and check.disables


def test_no_esp_still_allows_hip_over_tun_but_not_without_tun() -> None:
    no_esp = dataclasses.replace(DOM0, esp_beet=False)
    assert evaluate(no_esp).roles["hip"] is True
    assert evaluate(dataclasses.replace(no_esp, tun=False)).roles["hip"] is False


def test_unprobed_kernel_features_are_unknown_not_ok() -> None:
    facts = dataclasses.replace(DOM0, is_root=False, esp_beet=None, netem=None, netns=None)
    report = evaluate(facts)
    esp = next(c for c in report.checks if c.name.startswith("kernel ESP"))
    assert esp.status is Status.UNKNOWN
    assert "root" in esp.detail
    assert report.roles["netns"] is False


def test_json_output_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(json=True, role="migration")
    assert run_doctor(args, gather=lambda: DOM0) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["roles"]["migration"] is True
    assert {c["name"] for c in doc["checks"]} >= {"xl", "drbd-utils", "TUN"}
    no_xen = dataclasses.replace(DOM0, hypervisor_type=None)
    assert run_doctor(args, gather=lambda: no_xen) == 1


def _bare_host() -> HostFacts:
    """A host with nothing: every check fails and names its package."""
    return dataclasses.replace(
        DOM0, hypervisor_type=None, xen_capabilities=None, xl_path=None, xl_version=None,
        xenstored_socket=None, xenbus_device=False, drbd_loaded_version=None,
        drbd_module_available=False, drbdadm_path=None, drbd_utils_version=None,
        xfrm_present=False, esp_beet=False, netem=False, tun=False, netns=False)


@pytest.mark.parametrize("width", [80, 100, 200])
def test_table_keeps_package_names_whole(width: int) -> None:
    import io
    import re

    from rich.console import Console

    from xenwam.doctor import _print_table

    report = evaluate(_bare_host())
    out = io.StringIO()
    _print_table(report, "migration", False,
                 console=Console(file=out, width=width, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    names = {word for c in report.checks
             for word in re.sub(r"\([^)]*\)", "", c.package).split() if word != "/"}
    assert "xen-system-amd64" in names and "linux-image-6.1.0-35-amd64" in names
    cells = set(re.split(r"[\s│┃]+", text))
    assert names <= cells, f"cut: {sorted(names - cells)}"
    assert "…" not in text
