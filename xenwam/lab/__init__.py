"""The QEMU Xen lab: two real Xen 4.17 hosts (PV dom0) under QEMU TCG, from Debian packages.

Command line: ``xenwam lab build|up|down|status|ssh|console|exec|guest create|
migrate-baseline|demo`` (see ``xenwam lab --help`` and docs/lab.md).

Python API, for tests and other subsystems (run as root)::

    from xenwam.lab import Lab, LabConfig, Layout, Shaping, Builder

    arts = Builder(default_cache_dir()).build()          # cached by input hash
    lab = Lab(Path("/tmp/my-lab"))                       # any run directory
    lab.up(LabConfig(run_dir=lab.run_dir, layout=Layout.WAN,
                     shaping=Shaping.parse("40ms", "50mbit", "0"),
                     source_dir=source_tree()), arts)
    lab.exec("a", ["xl", "list"]).stdout                 # argv runs in dom0 a over ssh
    lab.correspondent().run(["ping", "-c1", "10.0.0.1"]) # the correspondent's namespace
    g = lab.create_guest("a")                            # PVH guest with a data disk
    lab.migrate_baseline(g.name)                         # stock xl migrate, measured
    lab.down()                                           # always; also after a crash

Each lab lives in its own run directory (``$XENWAM_LAB_RUN``, default
``~/.cache/xenwam/lab-run``); its namespaces are named from a hash of that path, and its
QEMUs' ssh ports are inside its own switch namespace, so two labs with different run
directories coexist.  Only :meth:`Lab.down` of the same run directory stops a lab's QEMUs.
In each dom0 the project's source tree is mounted read-only at ``/opt/xenwam`` and
``PYTHONPATH`` points there for login shells (``. /etc/profile.d/xenwam.sh`` for others).
"""

from xenwam.lab.build import Artifacts, Builder
from xenwam.lab.config import (
    LabConfig,
    Layout,
    Shaping,
    default_cache_dir,
    default_run_dir,
    source_tree,
)
from xenwam.lab.lab import GuestRecord, Lab, MigrationReport

__all__ = [
    "Artifacts",
    "Builder",
    "GuestRecord",
    "Lab",
    "LabConfig",
    "Layout",
    "MigrationReport",
    "Shaping",
    "default_cache_dir",
    "default_run_dir",
    "source_tree",
]
