"""Drive one DRBD resource through its lifecycle, each step idempotent.

Every operation first reads the device's state and does nothing if the device is already
where the operation would take it, so a step can be repeated after a crash or run from
both the source's and the destination's side of a migration.  State comes from
``/proc/drbd`` (no subprocess: the hotplug path is inside the downtime window); commands
come from :mod:`~xenwam.drbd.cmdgen` and run through the injected
:class:`~xenwam.runner.Runner`.  Clock and sleep are injected for the waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from xenwam.drbd import cmdgen
from xenwam.drbd.info import DeviceState, Generations, parse_gi, parse_proc_drbd
from xenwam.drbd.resource import Resource
from xenwam.errors import CommandError, DrbdError
from xenwam.runner import Runner, default_runner

log = logging.getLogger(__name__)

PROC_DRBD = Path("/proc/drbd")
#: drbdmeta's words when a device has no metadata yet (the only case create-md may force).
NO_METADATA_MARKERS = ("No valid meta data found", "no suitable meta data found")


def read_proc_drbd() -> str:
    """The text of ``/proc/drbd``; empty if the module is not loaded."""
    try:
        return PROC_DRBD.read_text()
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class Progress:
    """One progress report of a resync, computed from two looks at the device."""

    percent: float
    out_of_sync_kib: int
    rate_kib_s: float | None
    eta_seconds: float | None
    replication: str | None
    elapsed: float


@dataclass
class DrbdDevice:
    """Lifecycle operations on one resource, as seen from the local host."""

    resource: Resource
    runner: Runner = default_runner
    read_proc: Callable[[], str] = read_proc_drbd
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    config: Path | None = None
    #: Every command this object ran, for logs and tests.
    history: list[list[str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The resource name."""
        return self.resource.name

    def state(self) -> DeviceState:
        """The device's state now (``Unconfigured`` if the kernel does not know it)."""
        proc = parse_proc_drbd(self.read_proc())
        found = proc.devices.get(self.resource.minor)
        if found is None:
            return DeviceState(minor=self.resource.minor, resource=self.name)
        return replace(found, resource=self.name)

    def generations(self) -> Generations | None:
        """The attached disk's data generations; ``None`` while no disk is attached."""
        if self.state().disk in ("Diskless", "Unconfigured"):
            return None
        return parse_gi(self._run(cmdgen.get_gi(self.name, config=self.config)))

    def _run(self, argv: list[str], timeout: float = 60.0) -> str:
        self.history.append(argv)
        try:
            return self.runner.run(argv, timeout=timeout).stdout
        except CommandError as exc:
            raise DrbdError(f"resource {self.name!r}: {exc}") from exc

    # --- metadata, up, down ----------------------------------------------------------

    def create_md(self) -> bool:
        """Write metadata unless valid metadata is already there; return whether it wrote.

        Only drbdmeta's own "no valid meta data" answer lets this force a write: any
        other failure of the check is raised, so existing metadata is never wiped.
        """
        if self.state().disk != "Diskless":
            return False  # attached: the metadata exists and is in use
        self.history.append(cmdgen.dump_md(self.name, config=self.config))
        check = self.runner.run(cmdgen.dump_md(self.name, config=self.config), check=False)
        if check.ok:
            return False
        said = check.stderr + check.stdout
        if not any(marker in said for marker in NO_METADATA_MARKERS):
            raise DrbdError(
                f"resource {self.name!r}: cannot tell whether metadata exists on "
                f"{self.resource.hosts[0].meta_disk!r} or its peer's: {said.strip()[-400:]!r}; "
                "check the meta-disk device and run `xenwam disk create-md` again"
            )
        self._run(cmdgen.create_md(self.name, force=True, config=self.config))
        return True

    def up(self) -> None:
        """Bring the resource up: configure, attach and start connecting, as needed."""
        st = self.state()
        if st.connection == "Unconfigured" and self.resource.is_single:
            # drbdadm attaches a one-host resource, then fails its network step ("cannot
            # configure network without knowing my peer"): attached and StandAlone is
            # exactly what a disk with no peer yet should be.
            argv = cmdgen.up(self.name, config=self.config)
            self.history.append(argv)
            result = self.runner.run(argv, check=False)
            after = self.state()
            if after.disk == "Diskless" or after.connection == "Unconfigured":
                raise DrbdError(f"resource {self.name!r}: `drbdadm up` did not attach the disk: "
                                f"{(result.stderr or result.stdout).strip()[-400:]!r}")
            return
        if st.connection == "Unconfigured":
            self._run(cmdgen.up(self.name, config=self.config))
            return
        if st.disk == "Diskless":
            self._run(cmdgen.attach(self.name, config=self.config))
        if st.connection == "StandAlone":
            self._run(cmdgen.connect(self.name, config=self.config))

    def adjust(self) -> None:
        """Bring the running device into line with its (rewritten) resource file: how a
        disk with no peer gets one, and how a mode written into the file takes effect."""
        self._run(cmdgen.adjust(self.name, config=self.config))

    def down(self) -> None:
        """Take the resource down (disconnect, detach, remove from the kernel)."""
        if self.state().connection != "Unconfigured":
            self._run(cmdgen.down(self.name, config=self.config))

    def attach(self) -> None:
        """Attach the backing disk if the device is Diskless, configuring the resource
        and its minor first if the kernel does not know it; never connects (how a copy's
        data generations are read before it meets its peer)."""
        st = self.state()
        if st.connection == "Unconfigured":
            self._run(cmdgen.new_resource(self.name, config=self.config))
            self._run(cmdgen.new_minor(self.name, config=self.config))
        if st.disk == "Diskless":
            self._run(cmdgen.attach(self.name, config=self.config))

    def detach(self) -> None:
        """Detach the backing disk if attached."""
        st = self.state()
        if st.connection != "Unconfigured" and st.disk != "Diskless":
            self._run(cmdgen.detach(self.name, config=self.config))

    def connect(self) -> None:
        """Start connecting to the peer if StandAlone."""
        if self.state().connection == "StandAlone":
            self._run(cmdgen.connect(self.name, config=self.config))

    def disconnect(self) -> None:
        """Drop the connection unless already StandAlone or unconfigured."""
        if self.state().connection not in ("StandAlone", "Unconfigured"):
            self._run(cmdgen.disconnect(self.name, config=self.config))

    def rejoin_unwritten(self) -> bool:
        """Rejoin the peer, giving up this copy's side of a split brain that holds no
        writes: its bitmap is empty, so nothing was written here since the two parted
        (DRBD's own ``discard-zero-changes`` rule).  Such a split brain is what a copy
        left Primary by a handover gets when the link dies: both primaries start a new
        data generation.  Refuses a copy with writes or one in use; returns False if the
        copy was connected already (nothing to do)."""
        if not self._parted_unwritten():
            return False
        self.disconnect()
        self.demote(attempts=1)
        self._run(cmdgen.connect(self.name, discard_my_data=True, config=self.config))
        return True

    def _parted_unwritten(self) -> bool:
        """False if connected; True if parted from the peer with nothing written here
        since (empty bitmap); :class:`DrbdError` if something was: the precondition of
        giving up this copy's side of a split brain."""
        st = self.state()
        if st.is_connected:
            return False
        if st.out_of_sync_kib:
            raise DrbdError(
                f"resource {self.name!r}: {st.out_of_sync_kib} KiB were written to this "
                "copy since it parted from its peer; refusing to discard them (see "
                "docs/migrate.md on split brain)")
        return True

    def rejoin_as_target(self) -> bool:
        """Rejoin the peer as the target of a resync although this copy is Primary and in
        use, giving up its side of a split brain that holds no writes.  This is the
        destination of a move cut off during the memory copy: the guest arrived, held
        paused, on a copy that lacks what it wrote on the source meanwhile; its memory
        matches the source's copy, so that copy's data is the one to keep.  The peer
        must connect with the same options (:meth:`reconnect_keeping_writes`).
        Refuses a copy with writes; returns False if it was connected already."""
        if not self._parted_unwritten():
            return False
        self.reconnect_keeping_writes()  # DRBD wants the peer's options: the same call
        return True

    def reconnect_keeping_writes(self) -> None:
        """Connect again, with the options by which an unwritten Primary yields
        (:data:`cmdgen.UNWRITTEN_PRIMARY_YIELDS`; both sides of such a rejoin connect
        with them): run on the copy with writes while the peer runs
        :meth:`rejoin_as_target`, this copy's writes since they parted are resynced to
        the peer."""
        self.disconnect()
        self._run(cmdgen.connect(self.name, unwritten_primary_yields=True, config=self.config))

    # --- roles -----------------------------------------------------------------------

    def promote(self, *, force: bool = False) -> bool:
        """Make this host Primary; return False (and run nothing) if it already is."""
        if self.state().is_primary:
            return False
        self._run(cmdgen.primary(self.name, force=force, config=self.config))
        return True

    def demote(self, *, attempts: int = 10, interval: float = 0.5) -> bool:
        """Make this host Secondary; return False if it already was.

        blkback may release the device a moment after the domain is gone, so "held open"
        is retried ``attempts`` times before it is an error.
        """
        if not self.state().is_primary:
            return False
        argv = cmdgen.secondary(self.name, config=self.config)
        for attempt in range(1, attempts + 1):
            self.history.append(argv)
            result = self.runner.run(argv, check=False)
            if result.ok:
                return True
            if "held open" not in result.stderr or attempt == attempts:
                raise DrbdError(
                    f"resource {self.name!r}: demoting failed: "
                    f"{result.stderr.strip()[-400:]!r}; find what holds {self.resource.device} "
                    "open (a guest, a mount) and stop it, then run `xenwam disk demote`"
                )
            self.sleep(interval)
        return True  # pragma: no cover - the loop returns or raises

    # --- replication mode --------------------------------------------------------------

    def to_handover(self) -> None:
        """Switch the live connection to protocol C with two primaries allowed.

        Needed before a migration's memory handover: both hosts hold the disk at once.
        Running it again is harmless; DRBD forwards the change to the peer.
        """
        st = self.state()
        if not st.is_connected:
            raise DrbdError(
                f"resource {self.name!r} is {st.connection}, not Connected: the switch to "
                "protocol C must reach the peer; connect and wait for sync first"
            )
        self._run(cmdgen.net_options(self.name, cmdgen.HANDOVER, config=self.config))

    def favour_resync(self) -> None:
        """Guarantee the resync half the link even while the guest writes (see
        :attr:`WanProfile.c_min_rate_converge_kib`); until the next ``adjust`` or ``up``
        the resource file's floor no longer applies."""
        self._run(cmdgen.resync_floor(self.name, self.resource.wan.c_min_rate_converge_kib,
                                      config=self.config))

    def to_bulk(self) -> None:
        """Switch back to protocol A with pull-ahead and a single primary."""
        st = self.state()
        if st.is_primary and st.peer_role == "Primary":
            raise DrbdError(
                f"resource {self.name!r} is Primary on both hosts: demote one side "
                "(`xenwam disk demote`) before leaving dual-primary mode"
            )
        self._run(cmdgen.net_options(self.name, cmdgen.BULK, config=self.config))

    def skip_initial_sync(self) -> bool:
        """Declare both freshly created disks identical (after seeding): no full sync.

        DRBD accepts this only while connected with brand-new metadata on both sides; it
        then marks both UpToDate.  Returns False if both are already UpToDate.
        """
        st = self.state()
        if st.disk == "UpToDate" and st.peer_disk == "UpToDate":
            return False
        if not st.is_connected or st.disk != "Inconsistent" or st.peer_disk != "Inconsistent":
            raise DrbdError(
                f"resource {self.name!r} is {st.connection} {st.disk}/{st.peer_disk}: skipping "
                "the initial sync needs both new disks Inconsistent and Connected; create "
                "fresh metadata on both hosts, bring both up and wait for the connection"
            )
        self._run(cmdgen.new_current_uuid(self.name, clear_bitmap=True, config=self.config))
        return True

    # --- waiting ---------------------------------------------------------------------

    def wait_connected(self, timeout: float = 120.0, interval: float = 0.5) -> DeviceState:
        """Wait until the connection is up; raise :class:`DrbdError` after ``timeout``."""
        start = self.clock()
        while True:
            st = self.state()
            if st.is_connected:
                return st
            if self.clock() - start > timeout:
                raise DrbdError(
                    f"resource {self.name!r} did not connect within {timeout:g} s (it is "
                    f"{st.connection}); check the peer is up and the link and port "
                    "are reachable"
                )
            self.sleep(interval)

    def wait_for_sync(
        self,
        timeout: float = 3600.0,
        interval: float = 1.0,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> DeviceState:
        """Wait until both disks are UpToDate and nothing is out of sync.

        Reports :class:`Progress` (percent, rate, ETA) after each look; the rate is the
        drop in out-of-sync data between two looks, so it is the same for any kernel.
        """
        start = self.clock()
        first_oos: int | None = None
        last: tuple[float, int] | None = None
        while True:
            now = self.clock()
            st = self.state()
            oos = st.sync.out_of_sync_kib if st.sync is not None else st.out_of_sync_kib
            if first_oos is None or oos > first_oos:
                first_oos = oos
            rate = None
            if last is not None and now > last[0]:
                rate = max(0.0, (last[1] - oos) / (now - last[0]))
            if rate is None and st.sync is not None and st.sync.rate_kib_s is not None:
                rate = float(st.sync.rate_kib_s)
            if st.sync is not None:
                percent = st.sync.percent
            elif st.in_sync:
                percent = 100.0
            else:
                percent = 100.0 * (1 - oos / first_oos) if first_oos else 0.0
            eta = oos / rate if rate else None
            if on_progress is not None:
                on_progress(Progress(percent=percent, out_of_sync_kib=oos, rate_kib_s=rate,
                                     eta_seconds=eta, replication=st.replication,
                                     elapsed=now - start))
            if st.in_sync:
                return st
            if now - start > timeout:
                raise DrbdError(
                    f"resource {self.name!r} not in sync after {timeout:g} s ({st.connection} "
                    f"{st.replication} {st.disk}/{st.peer_disk}, {oos} KiB out of sync); "
                    "check the link and `xenwam disk status`, then wait again"
                )
            last = (now, oos)
            self.sleep(interval)

    def verify(self, timeout: float = 3600.0, interval: float = 1.0,
               on_progress: Callable[[Progress], None] | None = None) -> int:
        """Run DRBD's online verify to its end; return the KiB it found out of sync.

        Both hosts read every block and compare digests (``verify-alg``); blocks that
        differ are only marked, never copied.  ``0`` is the proof that both copies match.
        Only digests cross the link, so the resync ceilings are lifted while it runs
        (:attr:`WanProfile.verify_max_rate_kib`) and put back after.
        """
        st = self.state()
        if not st.is_connected:
            raise DrbdError(f"resource {self.name!r} is {st.connection}: online verify needs "
                            "the peer connected")
        wan = self.resource.wan
        self._run(cmdgen.resync_ceiling(self.name, wan.verify_max_rate_kib,
                                        wan.verify_fill_target_kib, config=self.config))
        try:
            return self._verify(st, timeout, interval, on_progress)
        finally:
            try:
                self._run(cmdgen.resync_ceiling(self.name, wan.resync_max_rate_kib,
                                                wan.c_fill_target_kib, config=self.config))
            except DrbdError as exc:  # a device gone meanwhile has no ceilings left
                log.warning("%s: could not put the resync ceilings back after the verify: "
                            "%s", self.name, exc)

    def _verify(self, st: DeviceState, timeout: float, interval: float,
                on_progress: Callable[[Progress], None] | None) -> int:
        if st.replication not in ("VerifyS", "VerifyT"):
            self._run(cmdgen.verify(self.name, config=self.config))
        start = self.clock()
        seen_running = False
        while True:
            st = self.state()
            running = st.replication in ("VerifyS", "VerifyT")
            seen_running = seen_running or running
            if on_progress is not None:
                on_progress(Progress(percent=st.sync.percent if st.sync else
                                     (100.0 if not running else 0.0),
                                     out_of_sync_kib=st.out_of_sync_kib, rate_kib_s=None,
                                     eta_seconds=None, replication=st.replication,
                                     elapsed=self.clock() - start))
            if not running and (seen_running or self.clock() - start > 5 * interval):
                if not st.is_connected:
                    raise DrbdError(f"resource {self.name!r}: the connection dropped during "
                                    f"online verify ({st.connection})")
                return st.out_of_sync_kib
            if self.clock() - start > timeout:
                raise DrbdError(f"resource {self.name!r}: online verify did not end within "
                                f"{timeout:g} s")
            self.sleep(interval)

    # --- teardown ---------------------------------------------------------------------

    def teardown(self) -> None:
        """Demote, disconnect and take the resource down; safe to repeat."""
        self.demote()
        self.disconnect()
        self.down()
