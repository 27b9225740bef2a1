"""The plan of a migration: pure checks of what was observed on both hosts.

Nothing here runs a command.  The orchestrator gathers ``xl list -l``, the resource files,
the DRBD states and both site files, and :func:`plan_resources` / :func:`plan_network`
decide whether the guest can move and how, or refuse with the fix, before anything
changes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from xenwam.drbd.info import DeviceState
from xenwam.drbd.resource import Resource
from xenwam.errors import ConfigError
from xenwam.site import Site
from xenwam.xen.xl import DomainConfig

#: Time the suspended guest spends outside the memory copy itself (suspend, device
#: teardown on the source, disk attach and device model on the destination).  Measured
#: in the lab under TCG (docs/migrate.md); a site can set its own.
DEFAULT_HANDOVER_OVERHEAD_MS = 4000.0
#: Share of the guest's memory assumed still dirty when xl stops pre-copying (libxc stops
#: after 5 rounds or under 50 dirty pages).  A crude, stated assumption: see docs.
DEFAULT_FINAL_DIRTY_FRACTION = 0.02


@dataclass(frozen=True)
class ResourcePlan:
    """One disk of the guest and what the migration does with its resource."""

    name: str
    vdev: str
    minor: int
    device: str
    size_bytes: int
    #: The resource file's model as it was before the migration (restored on abort).
    original: dict[str, Any]
    #: True when the resource already pairs with the destination (a return trip): no
    #: new copy, no seed, only the resync of what changed.
    reuse_pair: bool


@dataclass(frozen=True)
class NetworkPlan:
    """What the guest's network becomes on the destination."""

    source_bridge: str | None
    destination_bridge: str
    address: str | None  # ADDR/PREFIX, or None when the site hands out addresses (DHCP)
    gateway: str
    subnet: str

    @property
    def bridge_changes(self) -> bool:
        """True when the vifs must be re-plugged on another bridge (config rewrite)."""
        return self.source_bridge != self.destination_bridge


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first change."""

    id: str
    domain: str
    domid: int
    memory_mib: int
    source_hostname: str
    destination: str
    destination_hostname: str
    resources: tuple[ResourcePlan, ...]
    network: NetworkPlan
    downtime_estimate_ms: float
    max_downtime_ms: float | None
    #: What the guest's ``data/xenwam/agent`` said before the move (``xenwam-guest-agent
    #: 1``), None when it runs no agent: then nobody applies the new network.
    guest_agent: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data (``plan.json`` in the journal directory, ``--dry-run --json``)."""
        doc = asdict(self)
        for r in doc["resources"]:
            model = r["original"]
            if "shared_secret" in model:
                model["shared_secret"] = "<hidden>"
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any], originals: dict[str, Any]) -> Plan:
        """Rebuild a plan from ``plan.json`` and ``originals.json`` (``--recover``)."""
        try:
            resources = tuple(ResourcePlan(**{**r, "original": originals[r["name"]]})
                              for r in doc["resources"])
            fields = {k: v for k, v in doc.items() if k not in ("resources", "network")}
            return cls(resources=resources, network=NetworkPlan(**doc["network"]), **fields)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"the migration's plan.json is damaged ({exc})") from exc


def plan_resources(config: DomainConfig, resources: dict[str, Resource],
                   states: dict[str, DeviceState], sizes: dict[str, int],
                   source_hostname: str, destination_hostname: str) -> tuple[ResourcePlan, ...]:
    """Check every disk of ``config`` is a xenwam resource that can move; the plan for each.

    ``resources`` are the resource files found on the source, ``states`` their DRBD
    states there, ``sizes`` their devices' sizes in bytes.
    """
    if not config.disks:
        raise ConfigError(f"guest {config.name!r} has no disks: use `xl migrate` for a "
                          "diskless guest")
    plans = []
    for disk in config.disks:
        if disk.is_cdrom:
            raise ConfigError(f"guest {config.name!r} has a CD-ROM ({disk.vdev}): eject it "
                              "(`xl cd-eject`) before migrating")
        if not disk.is_xenwam:
            raise ConfigError(
                f"disk {disk.vdev} of guest {config.name!r} ({disk.target}) is not a xenwam "
                "resource: put it under one with `xenwam disk adopt NAME --disk "
                f"{disk.target} --minor N`, write it as 'script=block-xenwam, target=NAME' "
                "in the guest's config and restart the guest (docs/migrate.md)")
        name = disk.target
        resource = resources.get(name)
        if resource is None:
            raise ConfigError(f"disk {disk.vdev} of {config.name!r} names resource {name!r}, "
                              "which has no file here (`xenwam disk status`)")
        state = states[name]
        if not state.is_primary or state.disk != "UpToDate":
            raise ConfigError(
                f"resource {name!r} is {state.role} {state.disk} here, but the running guest "
                "should hold it Primary and UpToDate; see `xenwam disk status`")
        reuse = False
        if not resource.is_single:
            peer = resource.peer(source_hostname)
            if peer.hostname != destination_hostname:
                raise ConfigError(
                    f"resource {name!r} already pairs with host {peer.hostname!r}, not "
                    f"{destination_hostname!r}: take that peer away first (`xenwam disk "
                    f"disconnect {name}` and redefine it with `xenwam disk adopt`)")
            reuse = True
        plans.append(ResourcePlan(name=name, vdev=disk.vdev, minor=resource.minor,
                                  device=resource.device, size_bytes=sizes[name],
                                  original=resource.to_json(), reuse_pair=reuse))
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise ConfigError(f"guest {config.name!r} uses one resource twice: {names}")
    return tuple(plans)


def plan_network(config: DomainConfig, destination: Site, address: str | None
                 ) -> NetworkPlan:
    """The guest's network on the destination site.

    ``address`` is the operator's ``--ip``; without it the site's rule applies to the
    vif's configured ``ip=`` (and a site that hands out addresses by DHCP needs none).
    """
    bridges = {n.bridge for n in config.nics}
    if len(bridges) > 1:
        names = sorted(b or "?" for b in bridges)
        raise ConfigError(f"guest {config.name!r} has vifs on several bridges {names}: "
                          "xenwam moves guests with one network; give a config with -C")
    source_bridge = next(iter(bridges)) if bridges else None
    net = destination.network
    if address is None and net.assign != "dhcp":
        old = next((n.ip for n in config.nics if n.ip), None)
        if old is not None:
            prefix = net.network.prefixlen
            address = net.address_for(f"{old.split('/')[0]}/{prefix}")
        elif config.nics:
            raise ConfigError(
                f"cannot tell the address of guest {config.name!r} on site "
                f"{destination.name!r}: pass --ip ADDRESS/PREFIX (inside {net.subnet}), or "
                "give its vif an ip= in the config")
    return NetworkPlan(source_bridge=source_bridge, destination_bridge=net.bridge,
                       address=address, gateway=net.gateway, subnet=net.subnet)


def estimate_downtime_ms(memory_mib: int, bandwidth_mbit: float, rtt_ms: float,
                         overhead_ms: float = DEFAULT_HANDOVER_OVERHEAD_MS,
                         dirty_fraction: float = DEFAULT_FINAL_DIRTY_FRACTION) -> float:
    """The expected paused time: the last dirty pages over the link, a few round trips of
    xl's handshake, and the fixed handover overhead.

    The model is deliberately simple and its inputs are stated: the final dirty set is
    ``dirty_fraction`` of memory (xl exposes no dirty-rate figure to measure it with);
    docs/migrate.md compares it with what the lab measured.
    """
    final_bytes = memory_mib * 1024 * 1024 * dirty_fraction
    copy_ms = final_bytes * 8 / (bandwidth_mbit * 1e6) * 1000
    return round(overhead_ms + copy_ms + 4 * rtt_ms, 1)


#: Earlier migrations the handover overhead is calibrated on (the most recent ones).
CALIBRATION_SAMPLES = 5


def calibrated_overhead_ms(samples: list[tuple[float, int]], bandwidth_mbit: float,
                           rtt_ms: float,
                           dirty_fraction: float = DEFAULT_FINAL_DIRTY_FRACTION
                           ) -> float | None:
    """The handover overhead this host has shown: for each of the most recent earlier
    migrations from it, ``(paused seconds, guest MiB)``, the paused time minus what the
    model puts down to the copy and the round trips; the median of those, or ``None``
    with no samples.  The fixed part of the paused time (device teardown, the
    destination's restore and hotplug scripts) depends on the hosts far more than on the
    guest, so what this host measured predicts it better than any default."""
    rest = sorted(
        max(0.0, seconds * 1000 - (estimate_downtime_ms(mib, bandwidth_mbit, rtt_ms, 0.0,
                                                        dirty_fraction)))
        for seconds, mib in samples[-CALIBRATION_SAMPLES:])
    if not rest:
        return None
    mid = len(rest) // 2
    return round(rest[mid] if len(rest) % 2 else (rest[mid - 1] + rest[mid]) / 2, 1)


def check_downtime(estimate_ms: float, max_downtime_ms: float | None) -> None:
    """Refuse (before anything changes) a migration expected to overrun its budget."""
    if max_downtime_ms is not None and estimate_ms > max_downtime_ms:
        raise ConfigError(
            f"expected downtime {math.ceil(estimate_ms)} ms exceeds --max-downtime "
            f"{max_downtime_ms:g} ms; raise the budget, or migrate when the link is faster "
            "or the guest quieter")
