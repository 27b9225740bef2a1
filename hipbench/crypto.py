"""``python -m hipbench.crypto``: micro-benchmarks of the HIP crypto primitives and the
packet codec (not a test; prints Markdown tables).

Run it on an otherwise idle core; the tables in docs/benchmarks.md ("HIP crypto
primitives" and "HIP packet codec") come from this command.  ``--only crypto`` or
``--only codec`` runs one of the two tables.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import ip_address

from hip.crypto import (
    DHGroup,
    Keymat,
    decrypt_encrypted_param,
    draw_keys,
    encrypt_encrypted_param,
    generate_dh,
    hmac_digest,
)
from hip.errors import HIPError
from hip.host import HIPHost
from hip.identity import HostIdentity
from hip.outbox import OutgoingPacket
from hip.packet import PacketType, integrity_bytes, parse, serialize
from hip.params import ParamType
from hip.puzzle import solve_puzzle
from hip.random import SeededRandom, SystemRandom

TABLES = ("crypto", "codec")


def _row(label: str, fn: Callable[[], object], number: int) -> str:
    seconds = timeit.timeit(fn, number=number) / number
    return f"| {label} | {seconds * 1e6:,.0f} µs | {1 / seconds:,.0f}/s |"


def rows() -> list[str]:
    """Time each crypto primitive and return Markdown table rows."""
    rng = SystemRandom()
    data = bytes(600)  # about the size of a signed I2 without HOST_ID
    out = ["| operation | time per call | calls per second |", "|---|---|---|"]
    for kind, n in (("ecdsa-p256", 300), ("ecdsa-p384", 100), ("ed25519", 300), ("rsa", 30)):
        ident = HostIdentity.generate(kind, rng)
        label = "rsa-3072" if kind == "rsa" else kind
        sig = ident.sign(data)
        out.append(_row(f"sign 600 B, {label}", partial(ident.sign, data), n))
        out.append(_row(f"verify 600 B, {label}", partial(ident.public.verify, sig, data), n))
    for group in (DHGroup.NIST_P256, DHGroup.CURVE25519, DHGroup.NIST_P384, DHGroup.MODP_3072):
        a, b = generate_dh(group, rng), generate_dh(group, rng)
        peer = b.public_bytes()
        n = 30 if group is DHGroup.MODP_3072 else 300
        out.append(_row(f"DH key pair, {group.name}", partial(generate_dh, group, rng), n))
        out.append(_row(f"DH shared secret, {group.name}", partial(a.shared_secret, peer), n))
    hit_i = HostIdentity.generate("ecdsa-p256", rng).hit
    hit_r = HostIdentity.generate("ecdsa-p384", rng).hit
    out.append(_row(
        "KEYMAT + draw_keys (SHA-384, AES-256, ESP 9)",
        lambda: draw_keys(Keymat("sha384", bytes(32), hit_i, hit_r, bytes(48), bytes(48)),
                          4, hit_i, hit_r, 9),
        1000,
    ))
    out.append(_row("HMAC-SHA-384, 600 B", lambda: hmac_digest("sha384", bytes(48), data), 3000))
    kmac = partial(hmac_digest, "cshake128", bytes(32), data)
    out.append(_row("KMAC128 (suite 5), 600 B", kmac, 200))
    key = bytes(32)
    payload = encrypt_encrypted_param(4, key, data, rng)
    out.append(_row("ENCRYPTED AES-256-CBC encrypt, 600 B",
                    lambda: encrypt_encrypted_param(4, key, data, rng), 3000))
    out.append(_row("ENCRYPTED AES-256-CBC decrypt, 600 B",
                    lambda: decrypt_encrypted_param(4, key, payload), 3000))
    for k in (10, 16):
        solve = partial(solve_puzzle, "sha384", rng.bytes(48), hit_i, hit_r, k, rng)
        out.append(_row(f"puzzle solve, K={k}, SHA-384 (one #I)", solve, 20))
    return out


def sample_packets() -> dict[PacketType, OutgoingPacket]:
    """One real I1, R1, I2, R2 and UPDATE, from two ECDSA P-256 hosts run in memory."""
    rng = SeededRandom(b"hip.cryptobench")
    addr_a, addr_b, moved = (ip_address("192.0.2.1"), ip_address("192.0.2.2"),
                             ip_address("203.0.113.1"))
    a = HIPHost(HostIdentity.generate("ecdsa-p256", rng), [addr_a], rng=rng)
    b = HIPHost(HostIdentity.generate("ecdsa-p256", rng), [addr_b], rng=rng)
    hosts = {addr_a: a, addr_b: b, moved: a}
    seen: dict[PacketType, OutgoingPacket] = {}

    def pump() -> None:
        busy = True
        while busy:
            busy = False
            for host in (a, b):
                for pkt in host.packets_to_send():
                    busy = True
                    seen.setdefault(PacketType(pkt.data[2] & 0x7F), pkt)
                    hosts[pkt.dst].receive_packet(pkt.data, pkt.src, pkt.dst, 0.0)

    a.connect(b.our_hit, addr_b, 0.0)
    pump()
    a.update_locators([moved], 0.0)
    pump()
    wanted = (PacketType.I1, PacketType.R1, PacketType.I2, PacketType.R2, PacketType.UPDATE)
    missing = [t.name for t in wanted if t not in seen]
    if missing:
        raise HIPError(f"the codec benchmark's exchange sent no {', '.join(missing)}")
    return {t: seen[t] for t in wanted}


def codec_rows(number: int = 5000) -> list[str]:
    """Time serialize, parse and integrity bytes of each sample packet."""
    out = ["| packet | bytes | parameters | serialize | parse | integrity bytes |",
           "|---|---:|---:|---:|---:|---:|"]
    for ptype, pkt in sample_packets().items():
        packet = parse(pkt.data, pkt.src, pkt.dst)
        # Serialize a fresh copy each time: a parsed packet remembers its wire bytes.
        fresh = type(packet)(packet.packet_type, packet.sender_hit, packet.receiver_hit,
                             packet.params, packet.controls)
        upto = (ParamType.HIP_SIGNATURE_2 if ptype is PacketType.R1
                else ParamType.HIP_SIGNATURE)
        times = [timeit.timeit(fn, number=number) / number * 1e6 for fn in (
            partial(serialize, fresh, pkt.src, pkt.dst),
            partial(parse, pkt.data, pkt.src, pkt.dst),
            partial(integrity_bytes, packet, upto),
        )]
        out.append(f"| {ptype.name} | {len(pkt.data)} | {len(packet.params)} | "
                   + " | ".join(f"{t:,.1f} µs" for t in times) + " |")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hipbench.crypto`` (and ``xenwam bench hip-crypto``)."""
    parser = argparse.ArgumentParser(prog="python -m hipbench.crypto",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", choices=TABLES, help="run one table (default: both)")
    parser.add_argument("--codec-runs", type=int, default=5000,
                        help="timeit runs per codec figure (default 5000)")
    args = parser.parse_args(argv)
    if args.codec_runs < 1:
        parser.error(f"--codec-runs must be at least 1, got {args.codec_runs}")
    tables = (args.only,) if args.only else TABLES
    if "crypto" in tables:
        sys.stdout.write("\n".join(rows()) + "\n")
    if "codec" in tables:
        if len(tables) > 1:
            sys.stdout.write("\n")
        sys.stdout.write("\n".join(codec_rows(args.codec_runs)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
