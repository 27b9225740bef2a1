"""``xenwam bench NAME``: run one of the project's benchmarks.

Each benchmark is a module with ``main(argv) -> int`` that measures, prints a table (or
JSON with ``--json``) and says which command reproduces it; the figures go into
docs/benchmarks.md.  Benchmarks are never timed assertions in tests.
"""

from __future__ import annotations

import argparse
import importlib

from xenwam.errors import BenchError

#: Benchmark name -> (module, one-line description).
BENCHMARKS: dict[str, tuple[str, str]] = {
    "hip": ("hipbench.core", "HIP core: base exchanges and UPDATE round trips per second"),
    "hip-crypto": ("hipbench.crypto", "HIP crypto primitives and packet codec, per call"),
    "hipd": ("hipbench.hipd", "hipd in namespaces: handover time, userspace ESP throughput"),
    "drbd": ("xenwam.lab.drbd_bench", "DRBD seeding vs full sync, resync after disconnect (lab)"),
    "migrate": ("xenwam.lab.migrate_bench",
                "xenwam migrate vs freeze-and-copy and stock xl migrate, with plots (lab)"),
    "faults": ("xenwam.lab.faults",
               "xenwam migrate's fault matrix: a fault at each phase, invariants checked (lab)"),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    """Add ``xenwam bench``."""
    lines = "\n".join(f"  {name:<10} {desc}" for name, (_, desc) in BENCHMARKS.items())
    p = subparsers.add_parser(
        "bench",
        parents=[common],
        help="run a benchmark and print its figures",
        description="Run one of xenwam's benchmarks. Arguments after NAME go to the "
        "benchmark itself (try `xenwam bench NAME --help`).",
        epilog="benchmarks:\n" + lines + "\n\nResults are recorded in docs/benchmarks.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME", help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``xenwam bench``."""
    module_name, _ = BENCHMARKS[args.name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BenchError(
            f"benchmark {args.name!r} is not available in this tree ({module_name}: {exc})"
        ) from exc
    return int(module.main(list(args.args)))
