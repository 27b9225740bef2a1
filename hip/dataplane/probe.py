"""Choose the ESP data plane at start-up: kernel XFRM BEET if the kernel can, else userspace.

The probe asks the kernel directly: it adds a throwaway BEET state between loopback
addresses and deletes it again.  Kernels without ESP (``esp4``/``esp6``) or without BEET
refuse the add ("Requested type not found" or similar), and that refusal is the answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from hip.dataplane import SecurityAssociation
from hip.dataplane.kernel import state_add_argv, state_delete_argv
from hip.errors import CommandError, DataPlaneError
from hip.random import RandomSource, default_random
from hip.runner import Runner, default_runner


class DataPlaneKind(enum.Enum):
    """Which data plane to run; AUTO probes."""

    AUTO = "auto"
    KERNEL = "kernel"
    USERSPACE = "userspace"


@dataclass(frozen=True)
class ProbeResult:
    """Whether the kernel can do BEET ESP, and why not if it cannot."""

    kernel_beet: bool
    reason: str


def probe_sa(spi: int) -> SecurityAssociation:
    """A throwaway BEET ESP state (HITs inside, loopback outside) the kernel accepts
    only if it has XFRM, ESP and the BEET mode; also used by ``xenwam doctor``."""
    loop = IPv4Address("127.0.0.1")
    return SecurityAssociation(
        own_hit=IPv6Address("2001:20::1"), peer_hit=IPv6Address("2001:20::2"),
        spi_in=spi, spi_out=spi, suite_id=9, enc_key_in=bytes(32), auth_key_in=bytes(32),
        enc_key_out=bytes(32), auth_key_out=bytes(32), own_locator=loop, peer_locator=loop,
    )


def probe_kernel(
    runner: Runner = default_runner, rng: RandomSource | None = None
) -> ProbeResult:
    """Try to add and delete a BEET ESP state; report whether the kernel accepted it.

    ``rng`` draws the throwaway SPI (default: the system's CSPRNG).
    """
    # A random SPI in the top range keeps clear of anything hipd or an admin installed.
    spi = 0xF0000000 | int.from_bytes(default_random(rng).bytes(3), "big")
    argv = state_add_argv(probe_sa(spi), outbound=True)
    try:
        result = runner.run(argv, check=False)
    except CommandError as exc:
        return ProbeResult(False, str(exc))
    if not result.ok:
        return ProbeResult(
            False, f"kernel refused a BEET ESP state: {result.stderr.strip() or result.stdout}"
        )
    loop = IPv4Address("127.0.0.1")
    runner.run(state_delete_argv(loop, loop, spi), check=False)
    return ProbeResult(True, "kernel accepted a BEET ESP state")


@dataclass(frozen=True)
class DataPlaneChoice:
    """The data plane hipd will run, and why."""

    kind: DataPlaneKind
    reason: str


def choose(
    kind: DataPlaneKind, runner: Runner = default_runner, rng: RandomSource | None = None
) -> DataPlaneChoice:
    """Resolve AUTO by probing; refuse KERNEL when the kernel cannot do it."""
    if kind is DataPlaneKind.USERSPACE:
        return DataPlaneChoice(kind, "userspace data plane requested")
    result = probe_kernel(runner, rng)
    if result.kernel_beet:
        return DataPlaneChoice(DataPlaneKind.KERNEL, result.reason)
    if kind is DataPlaneKind.KERNEL:
        raise DataPlaneError(
            f"the kernel data plane was requested but {result.reason}; load esp4/esp6 "
            "(`modprobe esp4 esp6`) or start hipd with --data-plane userspace"
        )
    return DataPlaneChoice(DataPlaneKind.USERSPACE, result.reason)
