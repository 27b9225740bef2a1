"""Argv builders for drbdadm and drbdsetup: pure functions, no I/O.

``drbdadm`` (drbd-utils 9.22) reads the resource files and, when the running kernel module
is 8.4, hands each step to its 8.4 tools (``drbdsetup-84``, ``drbdmeta ... v08``).  Options
written after the subcommand are passed through to drbdsetup/drbdmeta and override the
file's values for that call only, which is how the live protocol switch is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DRBDADM = "drbdadm"
DRBDSETUP = "drbdsetup"


@dataclass(frozen=True)
class NetOptions:
    """The net options that differ between bulk replication and migration handover."""

    protocol: str
    allow_two_primaries: bool
    on_congestion: str

    def as_flags(self) -> list[str]:
        """drbdsetup long options; on-congestion goes with the protocol in one call because
        DRBD refuses pull-ahead under any protocol but A."""
        return [
            f"--protocol={self.protocol}",
            f"--allow-two-primaries={'yes' if self.allow_two_primaries else 'no'}",
            f"--on-congestion={self.on_congestion}",
        ]


#: Bulk copy over the WAN: asynchronous, and fall behind rather than stall the guest.
BULK = NetOptions(protocol="A", allow_two_primaries=False, on_congestion="pull-ahead")
#: Handover: synchronous, so both hosts may hold the disk open as primaries.
HANDOVER = NetOptions(protocol="C", allow_two_primaries=True, on_congestion="block")


#: DRBD's switch for copying data into its socket instead of handing the network stack
#: the page itself (sendpage, zero copy).
NO_SENDPAGE_PARAMETER = "/sys/module/drbd/parameters/disable_sendpage"


def load_module() -> list[str]:
    """Load DRBD and make it copy what it sends.

    A guest's writes reach DRBD in pages that blkback maps from the guest (grants).  With
    sendpage, DRBD hands those pages to TCP, which holds them until the peer acknowledges
    them; when the link dies under a protocol C connection (a handover or memory phase
    cut off), the dead socket keeps them for minutes, blkback cannot unmap the grants,
    and dom0's xenwatch thread blocks in ``gnttab_unmap_refs_sync``: no device of any
    guest can then be added or removed on that host (found by the fault matrix: the next
    incoming migration failed and the old domain stayed a zombie).  Copying costs a
    little CPU on a path the link limits anyway.  The parameter is writable at run time,
    so this also fixes a module that is already loaded."""
    return ["sh", "-c", f"modprobe drbd && echo Y > {NO_SENDPAGE_PARAMETER}"]


def _drbdadm(sub: str, resource: str, *options: str, config: Path | None = None) -> list[str]:
    argv = [DRBDADM]
    if config is not None:
        argv += ["-c", str(config)]
    return [*argv, sub, *options, resource]


def create_md(resource: str, *, force: bool = False, config: Path | None = None) -> list[str]:
    """Write fresh DRBD metadata (``--force`` skips drbdmeta's question on old data)."""
    return _drbdadm("create-md", resource, *(["--force"] if force else []), config=config)


def dump_md(resource: str, *, config: Path | None = None) -> list[str]:
    """Print the metadata; exits non-zero when there is none (used as an existence check)."""
    return _drbdadm("dump-md", resource, config=config)


def up(resource: str, *, config: Path | None = None) -> list[str]:
    """Create the resource in the kernel, attach its disk and start connecting."""
    return _drbdadm("up", resource, config=config)


def adjust(resource: str, *, config: Path | None = None) -> list[str]:
    """Bring the running resource into line with its file (idempotent ``up``)."""
    return _drbdadm("adjust", resource, config=config)


def down(resource: str, *, config: Path | None = None) -> list[str]:
    """Disconnect, detach and remove the resource from the kernel."""
    return _drbdadm("down", resource, config=config)


def new_resource(resource: str, *, config: Path | None = None) -> list[str]:
    """Make the resource known to the kernel (no minor, no disk, no network)."""
    return _drbdadm("new-resource", resource, config=config)


def new_minor(resource: str, *, config: Path | None = None) -> list[str]:
    """Create the resource's minor (then ``attach`` gives it its disk)."""
    return _drbdadm("new-minor", resource, config=config)


def attach(resource: str, *, config: Path | None = None) -> list[str]:
    """Attach the backing disk."""
    return _drbdadm("attach", resource, config=config)


def detach(resource: str, *, config: Path | None = None) -> list[str]:
    """Detach the backing disk (the device goes Diskless)."""
    return _drbdadm("detach", resource, config=config)


#: Connect options by which a split brain between a Primary that wrote nothing since the
#: two parted and a Secondary that did is resolved towards the Secondary: the 1-primary
#: case takes the 0-primary rule (discard-zero-changes), and the Primary may become the
#: resync's target.  DRBD compares the after-sb settings when peers meet, so both sides
#: connect with them; they last for that connection only (the file keeps ``consensus``).
UNWRITTEN_PRIMARY_YIELDS = ("--after-sb-1pri=violently-as0p", "--rr-conflict=violently")


def connect(resource: str, *, discard_my_data: bool = False,
            unwritten_primary_yields: bool = False,
            config: Path | None = None) -> list[str]:
    """Start connecting to the peer (``discard_my_data``: this side's data since the two
    parted is given up when they meet, and the peer's is synced here;
    ``unwritten_primary_yields``: see :data:`UNWRITTEN_PRIMARY_YIELDS`)."""
    flags = [*(["--discard-my-data"] if discard_my_data else []),
             *(UNWRITTEN_PRIMARY_YIELDS if unwritten_primary_yields else ())]
    return _drbdadm("connect", resource, *flags, config=config)


def disconnect(resource: str, *, config: Path | None = None) -> list[str]:
    """Drop the connection (StandAlone)."""
    return _drbdadm("disconnect", resource, config=config)


def primary(resource: str, *, force: bool = False, config: Path | None = None) -> list[str]:
    """Promote; ``force`` makes an Inconsistent disk the data source (first start only)."""
    return _drbdadm("primary", resource, *(["--force"] if force else []), config=config)


def secondary(resource: str, *, config: Path | None = None) -> list[str]:
    """Demote."""
    return _drbdadm("secondary", resource, config=config)


def resync_floor(resource: str, kib_s: int, *, config: Path | None = None) -> list[str]:
    """Change the live device's c-min-rate: the resync rate kept under application I/O."""
    return _drbdadm("disk-options", resource, f"--c-min-rate={kib_s}k", config=config)


def resync_ceiling(resource: str, max_rate_kib: int, fill_target_kib: int, *,
                   config: Path | None = None) -> list[str]:
    """Change the live device's resync controller ceilings (c-max-rate, c-fill-target),
    which also pace an online verify."""
    return _drbdadm("disk-options", resource, f"--c-max-rate={max_rate_kib}k",
                    f"--c-fill-target={fill_target_kib}k", config=config)


def net_options(resource: str, options: NetOptions, *, config: Path | None = None) -> list[str]:
    """Change net options of the live connection (needs protocol version 100 or later)."""
    return _drbdadm("net-options", resource, *options.as_flags(), config=config)


def new_current_uuid(resource: str, *, clear_bitmap: bool,
                     config: Path | None = None) -> list[str]:
    """Start a new data generation; with ``clear_bitmap`` on a freshly created, connected
    pair this marks both disks UpToDate without a sync (the seeding shortcut)."""
    return _drbdadm("new-current-uuid", resource,
                    *(["--clear-bitmap"] if clear_bitmap else []), config=config)


def get_gi(resource: str, *, config: Path | None = None) -> list[str]:
    """Print the attached disk's data generation identifiers (``CURRENT:BITMAP:H1:H2:...``)."""
    return _drbdadm("get-gi", resource, config=config)


def verify(resource: str, *, config: Path | None = None) -> list[str]:
    """Start DRBD's online verify of the connected pair."""
    return _drbdadm("verify", resource, config=config)


def dump(resource: str, *, config: Path | None = None) -> list[str]:
    """Parse and print the configuration: a syntax and sanity check of a resource file."""
    return _drbdadm("dump", resource, config=config)


def status(resource: str | None = None) -> list[str]:
    """``drbdsetup status`` with every field, for one resource or all."""
    return [DRBDSETUP, "status", resource or "all", "--verbose", "--statistics"]


def events2_now(resource: str | None = None) -> list[str]:
    """One snapshot of the state as ``events2`` lines, then exit."""
    return [DRBDSETUP, "events2", resource or "all", "--now", "--statistics"]


def role(resource: str, *, config: Path | None = None) -> list[str]:
    """Print ``Local/Peer`` roles."""
    return _drbdadm("role", resource, config=config)


def cstate(resource: str, *, config: Path | None = None) -> list[str]:
    """Print the connection state."""
    return _drbdadm("cstate", resource, config=config)


def dstate(resource: str, *, config: Path | None = None) -> list[str]:
    """Print ``Local/Peer`` disk states."""
    return _drbdadm("dstate", resource, config=config)
