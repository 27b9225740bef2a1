"""Benchmarks of the ``hip`` package, kept out of it (as aioquic keeps its examples out).

Guests carry ``hip`` alone (the lab copies the whole ``hip/`` directory into them);
measuring tools have no place there.  Each module has ``main(argv) -> int`` and is run
as ``xenwam bench NAME`` or ``python -m hipbench.MODULE``:

* :mod:`hipbench.core` (``xenwam bench hip``) -- the sans-I/O protocol core on one core:
  base exchanges, handovers, UPDATE round trips per second;
* :mod:`hipbench.crypto` (``xenwam bench hip-crypto``) -- crypto primitives and the
  packet codec, per call;
* :mod:`hipbench.hipd` (``xenwam bench hipd``) -- two real hipd processes in network
  namespaces: handover time, userspace ESP throughput; also the record stream tools
  (``sink``, ``source``) the hipd network tests run.

The figures go into docs/benchmarks.md; no test asserts a timing.
"""
