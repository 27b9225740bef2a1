"""``python -m hipbench.core``: how fast the HIP protocol core runs on one core.

Two :class:`hip.host.HIPHost` objects exchange real packets in memory (no sockets, no
sleeping): every packet is serialized, checksummed, parsed, MACed and signed exactly as
on the wire.  Measured per identity/DH combination:

* base exchanges per second -- I1, R1, I2, R2 processed by both ends (the Responder's
  R1 is pre-signed, as in production; the Initiator solves the default puzzle);
* mobility handovers per second -- ``update_locators`` on one end until the peer has
  verified the new locator: UPDATE(LOCATOR_SET, SEQ), UPDATE(SEQ, ACK,
  ECHO_REQUEST_SIGNED), UPDATE(ACK, ECHO_RESPONSE_SIGNED): three signed UPDATEs;
* UPDATE round trips per second -- rekeys: UPDATE(ESP_INFO, SEQ), UPDATE(ESP_INFO, SEQ,
  ACK), UPDATE(ACK), counted as one round trip each (the third packet only confirms).

The clock of the protocol is simulated; the process's CPU time (``time.process_time``)
only measures, so the rates are per second of one core's time, whatever else the machine
runs.  Results vary with the machine; docs/benchmarks.md records the command and
the figures of one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from ipaddress import ip_address

from hip.config import HIPConfig
from hip.errors import HIPError
from hip.events import Address
from hip.host import HIPHost
from hip.identity import HostIdentity
from hip.random import SeededRandom
from hip.states import State


@dataclass(frozen=True)
class Combination:
    """A host identity type and DH group measured together."""

    label: str
    identity: str
    dh_group: int


#: The two combinations issue 3 asks for.
COMBINATIONS: tuple[Combination, ...] = (
    Combination("ECDSA P-256 + ECDH P-256", "ecdsa-p256", 7),
    Combination("Ed25519 + X25519", "ed25519", 12),
)


class BenchmarkError(HIPError):
    """The benchmark's own protocol run went wrong, so its figures would mean nothing."""


@dataclass(frozen=True)
class Result:
    """One row of the benchmark table."""

    combination: str
    identity: str
    dh_group: int
    base_exchanges_per_s: float
    handovers_per_s: float
    update_round_trips_per_s: float
    base_exchange_bytes: int


class _Wire:
    """Delivers every queued datagram between two hosts until both are quiet."""

    def __init__(self, hosts: dict[Address, HIPHost]) -> None:
        self.hosts = hosts
        self.bytes_moved = 0

    def pump(self, now: float) -> None:
        busy = True
        while busy:
            busy = False
            for host in list(self.hosts.values()):
                for pkt in host.packets_to_send():
                    target = self.hosts.get(pkt.dst)
                    if target is None:
                        continue
                    busy = True
                    self.bytes_moved += len(pkt.data)
                    target.receive_packet(pkt.data, pkt.src, pkt.dst, now)


def _rate(work: Callable[[], None], seconds: float) -> float:
    # CPU time of this process, not wall time: "per second on one core" should not depend
    # on what else the (shared) machine is running.
    work()  # warm-up: pre-signed R1s, caches
    count = 0
    start = time.process_time()
    while True:
        work()
        count += 1
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return count / elapsed


def measure(label: str, kind: str, group: int, seconds: float) -> Result:
    """Run the three measurements for one combination."""
    # One Initiator address and a frozen clock: the Responder's flood protections (I1s per
    # source, the puzzle difficulty rising with the I1 rate) would soon drop or slow
    # every exchange, so the figure would depend on how fast the machine is.  They are
    # policy, not the exchange's cost: off here.
    cfg = HIPConfig(dh_groups=(group,), i1_source_rate=1e12, i1_source_burst=10**12,
                    i1_rate_threshold=10**12)
    rng = SeededRandom(b"hip.bench " + kind.encode())
    id_i = HostIdentity.generate(kind, rng)
    id_r = HostIdentity.generate(kind, rng)
    addr_i, addr_r = ip_address("192.0.2.1"), ip_address("192.0.2.2")
    responder = HIPHost(id_r, [addr_r], config=cfg, rng=rng)
    responder.precompute_r1(0.0)
    clock = [0.0]

    def base_exchange() -> None:
        initiator = HIPHost(id_i, [addr_i], config=cfg, rng=rng, now=clock[0])
        wire = _Wire({addr_i: initiator, addr_r: responder})
        initiator.connect(id_r.hit, addr_r, clock[0])
        wire.pump(clock[0])
        assoc = initiator.association(id_r.hit)
        if assoc is None or assoc.state is not State.ESTABLISHED:
            state = assoc.state.value if assoc is not None else "no association"
            raise BenchmarkError(
                f"{label}: the benchmark's base exchange did not complete ({state}); "
                "run the unit tests (tests/unit/test_hip_association.py) to find out why")
        responder.associations.clear()  # keep the Responder's table from growing

    base_rate = _rate(base_exchange, seconds)
    probe = HIPHost(id_i, [addr_i], config=cfg, rng=rng)
    wire = _Wire({addr_i: probe, addr_r: responder})
    probe.connect(id_r.hit, addr_r, 0.0)
    wire.pump(0.0)
    base_bytes = wire.bytes_moved

    # An established pair for the UPDATE measurements.
    initiator = probe
    spare = [ip_address("203.0.113.1"), ip_address("203.0.113.2")]
    turn = [0]

    def handover() -> None:
        new = spare[turn[0] % 2]
        turn[0] += 1
        old = initiator.locators[0]
        del wire.hosts[old]
        wire.hosts[new] = initiator
        clock[0] += 0.001
        initiator.update_locators([new], clock[0])
        wire.pump(clock[0])

    handover_rate = _rate(handover, seconds)

    def rekey() -> None:
        clock[0] += 0.001
        initiator.rekey(id_r.hit, clock[0])
        wire.pump(clock[0])

    rekey_rate = _rate(rekey, seconds)
    if initiator.drops or responder.drops:
        raise BenchmarkError(
            f"{label}: the benchmark's packets were dropped (initiator "
            f"{dict(initiator.drops)}, responder {dict(responder.drops)}); the figures "
            "would not measure the normal path, so none are reported")
    return Result(label, kind, group, round(base_rate, 1), round(handover_rate, 1),
                  round(rekey_rate, 1), base_bytes)


def render_table(results: Sequence[Result]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| identity + DH | base exchanges/s | handovers/s (3 UPDATEs) | "
        "UPDATE round trips/s (rekey) | bytes per base exchange |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.combination} | {r.base_exchanges_per_s:.1f} | "
                     f"{r.handovers_per_s:.1f} | {r.update_round_trips_per_s:.1f} | "
                     f"{r.base_exchange_bytes} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hipbench.core``."""
    parser = argparse.ArgumentParser(prog="python -m hipbench.core", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="CPU seconds of measuring per figure (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    results = [measure(c.label, c.identity, c.dh_group, args.seconds) for c in COMBINATIONS]
    if args.json:
        print(json.dumps({
            "python": platform.python_version(),
            "machine": platform.machine(),
            "seconds_per_figure": args.seconds,
            "results": [asdict(r) for r in results],
        }, indent=2))
    else:
        print(render_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
