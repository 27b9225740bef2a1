"""Vagrant for real (issue 15), two checks:

- the reduced one (marker ``vagrant``): ``vagrant up xen-a`` from the box the lab build
  makes, Xen answering ``xl info`` in it, ``vagrant destroy``, nothing left in libvirt;
- the whole one (marker ``vagrant_full``): ``vagrant up xen-a xen-b``, a guest whose disk
  is a xenwam DRBD resource created in ``xen-a`` and moved to ``xen-b`` with ``xenwam
  migrate`` (disk and memory, across the two sites' subnets), ``vagrant destroy``,
  nothing left.

Both are lab tier (root, libvirtd, minutes of QEMU) and run only when their marker is
asked for by name, so the lab tier's run does not boot Xen hosts beside the lab's::

    python3 -m pytest -m vagrant tests/vagrant -s         # reduced, about 4 minutes
    python3 -m pytest -m vagrant_full tests/vagrant -s    # whole, about 20 minutes

Need ``scripts/setup-vagrant``; libvirtd is started with ``scripts/libvirtd-start`` when
none answers, and then stopped again.
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
from xenwam.lab.xl import GuestSpec, guest_mac
from xenwam.runner import default_runner
from xenwam.xen.xl import state_runs

pytestmark = pytest.mark.lab

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
    marker = request.node.get_closest_marker("vagrant_full") or \
        request.node.get_closest_marker("vagrant")
    assert marker is not None
    if marker.name not in (request.config.option.markexpr or ""):
        pytest.skip(f"boots Xen hosts under libvirt for minutes: run it with -m {marker.name}")
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


def _box_ready(timings: dict[str, float]) -> None:
    """The box from the lab build (built, packed and added when missing or older)."""
    t0 = time.monotonic()
    arts = Builder(cfg.default_cache_dir(), progress=print).build()
    maker = BoxMaker(progress=print)
    box = maker.make(arts, cfg.default_cache_dir() / "vagrant" /
                     f"{BOX_NAME}-{arts.directory.name}.box")
    boxes = parse_box_list(default_runner.run(["vagrant", "box", "list"]).stdout)
    if box.seconds or (BOX_NAME, "libvirt") not in boxes:
        maker.add(box)
    timings["build_and_box_seconds"] = round(time.monotonic() - t0, 1)


def _vagrant_env() -> dict[str, str]:
    return {"VAGRANT_CWD": str(VAGRANT_DIR), "CORRESPONDENT": "0",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt"}


def _destroy(machines: list[str], before: dict[str, set[str]],
             timings: dict[str, float]) -> None:
    """``vagrant destroy`` of ``machines``, then the box's base volume vagrant-libvirt
    keeps in the pool for the next ``up`` and the pool it made for it."""
    t0 = time.monotonic()
    default_runner.run(["vagrant", "destroy", "-f", *machines], env=_vagrant_env(),
                       check=False, timeout=600)
    timings["vagrant_destroy_seconds"] = round(time.monotonic() - t0, 1)
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


def _left_behind(before: dict[str, set[str]]) -> dict[str, list[str]]:
    left = _libvirt_objects()
    return {kind: sorted(left[kind] - before[kind]) for kind in left
            if left[kind] - before[kind]}


def _ssh(machine: str, command: str, *, input: str | None = None,
         timeout: float = 300) -> str:
    res = default_runner.run(["vagrant", "ssh", machine, "-c", command], env=_vagrant_env(),
                             input=input, timeout=timeout)
    return res.stdout


@pytest.mark.vagrant
def test_vagrant_up_one_xen_host(libvirtd: None, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    _box_ready(timings)
    before = _libvirt_objects()
    try:
        t0 = time.monotonic()
        default_runner.run(["vagrant", "up", "xen-a"], env=_vagrant_env(), timeout=1800)
        timings["vagrant_up_seconds"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        out = _ssh("xen-a", "xl info")
        timings["xl_info_seconds"] = round(time.monotonic() - t0, 1)
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        assert info.get("xen_major") == "4" and info.get("xen_minor") == "17", out
        (tmp_path / "xl-info.txt").write_text(out)
    finally:
        _destroy(["xen-a"], before, timings)
    assert not _left_behind(before), f"left behind in libvirt: {_left_behind(before)}"


def _domains(machine: str) -> dict[str, str]:
    """Domain name -> xl state letters in ``machine``'s Xen, dom0 left out."""
    lines = _ssh(machine, "xl list").splitlines()[1:]
    return {f[0]: f[4] for f in (line.split() for line in lines)
            if len(f) >= 5 and f[0] != "Domain-0" and f[1].isdigit()}


def _alive(state: str | None) -> bool:
    """An `xl list` state of a domain that runs: running, blocked, or waiting for a CPU
    (``------``, common when three TCG machines share two cores); not paused, shut
    down, crashed or dying."""
    return state is not None and len(state) == 6 and state_runs(state)


@pytest.mark.vagrant_full
def test_xenwam_migrate_between_the_vagrant_sites(libvirtd: None, tmp_path: Path) -> None:
    """The QEMU lab's end-to-end check in the Vagrant sites: a guest and its xenwam disk
    moved from site A to site B, over the libvirt WAN network, by ``xenwam migrate`` run
    in xen-a."""
    timings: dict[str, float] = {}
    _box_ready(timings)
    before = _libvirt_objects()
    name, number = "g1", 1
    spec = GuestSpec(name=name, address=cfg.guest_address(cfg.Layout.WAN, "a", number),
                     gateway=cfg.site_gateway(cfg.Layout.WAN, "a").ip,
                     mac=guest_mac(number), disk_resource=f"{name}-disk")
    new_address = cfg.guest_address(cfg.Layout.WAN, "b", number)
    try:
        t0 = time.monotonic()
        default_runner.run(["vagrant", "up", "xen-a", "xen-b"], env=_vagrant_env(),
                           timeout=2400)
        timings["vagrant_up_seconds"] = round(time.monotonic() - t0, 1)
        # The provisioner made both dom0s xenwam hosts, as `xenwam lab up` does.
        for machine in ("xen-a", "xen-b"):
            doctor = _ssh(machine, "xenwam --version && cat /etc/xenwam/site.toml")
            assert "xenwam" in doctor and "[replication]" in doctor, doctor
            assert f'address = "{cfg.link_address(machine[-1]).ip}"' in doctor, doctor
        t0 = time.monotonic()
        _ssh("xen-a", f"truncate -s {spec.data_disk_mib}M {spec.data_disk} && "
                      f"xenwam disk adopt {spec.disk_resource} --disk {spec.data_disk} "
                      f"--minor {number} --json")
        _ssh("xen-a", f"cat > {spec.config_path}", input=spec.xl_config())
        _ssh("xen-a", f"xl create {spec.config_path}", timeout=300)
        timings["guest_create_seconds"] = round(time.monotonic() - t0, 1)
        assert _alive(_domains("xen-a").get(name)), _domains("xen-a")

        t0 = time.monotonic()
        link_b = cfg.link_address("b").ip
        out = _ssh("xen-a", f"xenwam migrate --json --ip {new_address} {name} {link_b}",
                   timeout=2400)
        timings["xenwam_migrate_seconds"] = round(time.monotonic() - t0, 1)
        (tmp_path / "migrate.ndjson").write_text(out)
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        finished = [e for e in events if e.get("event") == "finished"]
        assert finished and finished[-1].get("outcome") == "done", out[-3000:]
        report = finished[-1]
        print("xenwam migrate in vagrant:", json.dumps(report))

        # Exactly one copy, on site B, running; the source has none.
        on_a, on_b = _domains("xen-a"), _domains("xen-b")
        assert name not in on_a and not any(d.startswith(name + "--") for d in on_a), on_a
        assert _alive(on_b.get(name)), on_b
        status = json.loads(_ssh("xen-b", f"xenwam disk status {spec.disk_resource} "
                                          "--json"))
        print("disk on xen-b:", json.dumps(status))
        assert [r.get("role") for r in status["resources"]] == ["Primary"], status
    finally:
        _destroy(["xen-a", "xen-b"], before, timings)
    assert not _left_behind(before), f"left behind in libvirt: {_left_behind(before)}"
