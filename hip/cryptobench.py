"""Micro-benchmarks of the HIP crypto primitives (not a test; prints a Markdown table).

Run ``python -m hip.cryptobench`` on an otherwise idle core; the figures in
docs/hip.md ("Identities and crypto") come from this command.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from functools import partial

from hip.crypto import (
    DHGroup,
    Keymat,
    decrypt_encrypted_param,
    draw_keys,
    encrypt_encrypted_param,
    generate_dh,
    hmac_digest,
)
from hip.identity import HostIdentity
from hip.puzzle import solve_puzzle
from hip.random import SystemRandom


def _row(label: str, fn: Callable[[], object], number: int) -> str:
    seconds = timeit.timeit(fn, number=number) / number
    return f"| {label} | {seconds * 1e6:,.0f} µs | {1 / seconds:,.0f}/s |"


def rows() -> list[str]:
    """Time each primitive once and return Markdown table rows."""
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


def main() -> int:
    """Print the table."""
    sys.stdout.write("\n".join(rows()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
