"""``xenwam bench drbd``: seeding vs DRBD's full sync, and resync after a disconnect.

Runs on a lab that is up (``xenwam lab up``), in its two dom0s, with the same steps as
``tests/lab/test_drbd_seed.py`` (both use :mod:`xenwam.lab.drbdpair`): a mostly empty
disk of ``--size-mib`` is seeded out of band (only non-zero blocks, zstd) and then
connected with its initial sync skipped; the same kind of disk is then fully synced by
DRBD itself.  Bytes on the wire are the dom0 link NIC's counters.  The figures and this
command are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xenwam.cliargs import Parser
from xenwam.errors import BenchError, LabError
from xenwam.lab import drbdpair as lp


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="xenwam bench drbd",
        description="Measure bytes on the wire and time of seeding a fresh DRBD peer vs a "
        "plain DRBD full sync, and resync bytes per byte written after a disconnect. Needs "
        "a lab that is up (`xenwam lab up`); takes several minutes under QEMU TCG.",
    )
    p.add_argument("--run-dir", help="the lab's run directory (default $XENWAM_LAB_RUN)")
    p.add_argument("--size-mib", type=int, default=1024,
                   help="size of the test disk in MiB (default 1024)")
    p.add_argument("--resync-mib", type=int, default=8,
                   help="MiB written while disconnected (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def run(lab: lp.LabExec, size: int, resync_bytes: int) -> dict[str, Any]:
    """Measure on ``lab``; every resource it makes is torn down again."""
    results: dict[str, Any] = {"disk_bytes": size}
    lp.create_images(lab, "xwb-seed", size)
    written = lp.write_guest_like_data(lab, lp.image_path("xwb-seed", "a"), size)
    seeded = lp.seed(lab, "xwb-seed")
    if seeded.send["digest"] != seeded.receive["digest"]:
        raise BenchError(f"seeded copy differs: {seeded.send} vs {seeded.receive}")
    pair = lp.define_pair(lab, "xwb-seed", 45, size, 7845)
    try:
        lp.bring_up(lab, pair)
        lp.xw(lab, "a", "disk", "skip-initial-sync", "xwb-seed")
        lp.xw(lab, "a", "disk", "promote", "xwb-seed")
        resync = lp.resync_after_disconnect(lab, pair, resync_bytes)
        after = lp.digests(lab, "xwb-seed")
        if after["a"] != after["b"]:
            raise BenchError(f"disks differ after resync: {after}")
    finally:
        lp.destroy_pair(lab, pair)
    results["data_bytes"] = written
    results["seed"] = {"wire_bytes": seeded.wire_bytes, "seconds": round(seeded.seconds, 1)}
    results["resync"] = {"written_bytes": resync_bytes, "wire_bytes": resync.wire_bytes,
                         "seconds": round(resync.seconds, 1),
                         "wire_bytes_per_byte_written": round(resync.wire_bytes / resync_bytes,
                                                              3)}
    lp.create_images(lab, "xwb-full", size)
    lp.write_guest_like_data(lab, lp.image_path("xwb-full", "a"), size)
    pair = lp.define_pair(lab, "xwb-full", 47, size, 7847)
    try:
        lp.bring_up(lab, pair)
        full = lp.full_sync(lab, pair)
    finally:
        lp.destroy_pair(lab, pair)
    results["full_sync"] = {"wire_bytes": full.wire_bytes, "seconds": round(full.seconds, 1)}
    results["seed_vs_full_bytes"] = round(full.wire_bytes / max(seeded.wire_bytes, 1), 1)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xenwam bench drbd`` and ``python -m xenwam.lab.drbd_bench``."""
    args = _parser().parse_args(argv)
    if args.size_mib < 64:
        raise BenchError(f"--size-mib {args.size_mib} is too small: use 64 or more")
    from xenwam.lab import Lab

    lab = Lab(Path(args.run_dir)) if args.run_dir else Lab()
    state = lab.load_state()
    if state is None or lab.qemu_pid("a") is None or lab.qemu_pid("b") is None:
        raise LabError(f"no lab is up in {lab.run_dir}; start one with `xenwam lab up` "
                       "(or pass --run-dir)")
    results = run(lab, args.size_mib * lp.MIB, args.resync_mib * lp.MIB)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"disk {args.size_mib} MiB, {results['data_bytes']} bytes of data")
        for key in ("seed", "full_sync"):
            r = results[key]
            print(f"  {key:<10} {r['wire_bytes']:>14,} bytes on the wire  {r['seconds']:>7} s")
        r = results["resync"]
        print(f"  resync     {r['wire_bytes']:>14,} bytes for {r['written_bytes']:,} written "
              f"({r['wire_bytes_per_byte_written']} per byte)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
