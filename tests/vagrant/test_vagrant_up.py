"""The reduced Vagrant check: ``vagrant up xen-a`` from the box the lab build makes, Xen
answering ``xl info`` in it, ``vagrant destroy``, and nothing left behind in libvirt.

Lab tier (it needs root, libvirtd and minutes of QEMU), and marked ``vagrant`` too: it
runs only when asked for by name, ``python3 -m pytest -m vagrant tests/vagrant -s``, so
the lab tier's CI run does not boot a third Xen host beside the lab's.  Needs
``scripts/setup-vagrant``; libvirtd is started with ``scripts/libvirtd-start`` when none
answers, and then stopped again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenwam.lab import config as cfg
from xenwam.lab.build import Builder
from xenwam.lab.vagrant_box import BOX_NAME, BoxMaker, parse_box_list
from xenwam.runner import default_runner

pytestmark = [pytest.mark.lab, pytest.mark.vagrant]

SOURCE = Path(__file__).resolve().parents[2]
VAGRANT_DIR = SOURCE / "vagrant"
LIBVIRT = "qemu:///system"


def _virsh(*args: str) -> list[str]:
    res = default_runner.run(["virsh", "-c", LIBVIRT, *args], timeout=60)
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def _libvirt_objects() -> dict[str, set[str]]:
    """Every domain, network, storage pool and volume libvirt knows."""
    objects = {"domains": set(_virsh("list", "--all", "--name")),
               "networks": set(_virsh("net-list", "--all", "--name")),
               "pools": set(_virsh("pool-list", "--all", "--name")),
               "volumes": set()}
    for pool in objects["pools"]:
        for line in _virsh("vol-list", pool)[2:]:  # two header lines
            objects["volumes"].add(f"{pool}/{line.split()[0]}")
    return objects


@pytest.fixture
def libvirtd(request: pytest.FixtureRequest) -> Iterator[None]:
    """libvirtd answering on qemu:///system; stopped again if this fixture started it."""
    if "vagrant" not in (request.config.option.markexpr or ""):
        pytest.skip("boots a Xen host under libvirt for minutes: run it with -m vagrant")
    if os.geteuid() != 0:
        pytest.skip("the vagrant check needs root (libvirtd, the lab build)")
    missing = [t for t in ("vagrant", "virsh", "libvirtd") if shutil.which(t) is None
               and not Path("/usr/sbin", t).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: run scripts/setup-vagrant")
    answering = default_runner.run(["virsh", "-c", LIBVIRT, "version"], check=False,
                                   timeout=30).ok
    if not answering:
        default_runner.run([str(SOURCE / "scripts" / "libvirtd-start")], timeout=120)
    try:
        yield
    finally:
        if not answering:
            default_runner.run([str(SOURCE / "scripts" / "libvirtd-stop")], check=False,
                               timeout=60)


def test_vagrant_up_one_xen_host(libvirtd: None, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    arts = Builder(cfg.default_cache_dir(), progress=print).build()
    maker = BoxMaker(progress=print)
    box = maker.make(arts, cfg.default_cache_dir() / "vagrant" /
                     f"{BOX_NAME}-{arts.directory.name}.box")
    boxes = parse_box_list(default_runner.run(["vagrant", "box", "list"]).stdout)
    if box.seconds or (BOX_NAME, "libvirt") not in boxes:
        maker.add(box)
    timings["build_and_box_seconds"] = round(time.monotonic() - t0, 1)

    before = _libvirt_objects()
    env = {"VAGRANT_CWD": str(VAGRANT_DIR), "CORRESPONDENT": "0",
           "VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    try:
        t0 = time.monotonic()
        default_runner.run(["vagrant", "up", "xen-a"], env=env, timeout=1800)
        timings["vagrant_up_seconds"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        res = default_runner.run(["vagrant", "ssh", "xen-a", "-c", "xl info"], env=env,
                                 timeout=300)
        timings["xl_info_seconds"] = round(time.monotonic() - t0, 1)
        info = dict(line.split(":", 1) for line in res.stdout.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        assert info.get("xen_major") == "4" and info.get("xen_minor") == "17", res.stdout
        (tmp_path / "xl-info.txt").write_text(res.stdout)
    finally:
        t0 = time.monotonic()
        default_runner.run(["vagrant", "destroy", "-f", "xen-a"], env=env, check=False,
                           timeout=600)
        timings["vagrant_destroy_seconds"] = round(time.monotonic() - t0, 1)
        # vagrant-libvirt keeps the box's base volume in the pool for the next `up`, and
        # the pool it made for it: take both away so nothing is left.
        after = _libvirt_objects()
        for vol in sorted(after["volumes"] - before["volumes"]):
            pool, name = vol.split("/", 1)
            if name.startswith(BOX_NAME):
                _virsh("vol-delete", "--pool", pool, name)
        for pool in sorted(after["pools"] - before["pools"]):
            if not _virsh("vol-list", pool)[2:]:
                _virsh("pool-destroy", pool)
                _virsh("pool-undefine", pool)
        print("vagrant timings:", json.dumps(timings))
    left = _libvirt_objects()
    new = {kind: sorted(left[kind] - before[kind]) for kind in left}
    assert not any(new.values()), f"left behind in libvirt: {new}"
