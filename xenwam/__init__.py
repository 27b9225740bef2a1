"""xenwam: wide-area live migration for Xen.

A guest's disk follows it by DRBD replication (seeded with only the blocks that
matter), its memory moves with ``xl migrate`` over xenwam's transport, and its open
connections survive the change of subnet because they are bound to a HIP identity.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
