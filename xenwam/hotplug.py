"""The logic of ``hooks/block-xenwam``: Xen's block hotplug contract for DRBD resources.

An xl disk written as ``script=block-xenwam, target=RESOURCE`` makes libxl run the hook
with ``add`` or ``remove`` and ``XENBUS_PATH`` (``backend/vbd/DOMID/DEVID``); the backend's
``params`` key holds RESOURCE.  The contract:

* ``add``: make the resource Primary here, then write ``physical-device`` (the device's
  major:minor in hex) and ``hotplug-status connected``.  On a migration's destination this
  runs inside the downtime window, so an already-Primary resource is a fast no-op: one
  read of ``/proc/drbd``, no command run.
* ``remove``: demote, unless another backend on this host still uses the resource (a
  local migration has both copies of the domain on one host).
* Any failure: ``hotplug-error`` with a message that says what to do, and
  ``hotplug-status error``.

Each call is recorded as one JSON line in ``/run/xenwam/hotplug.log`` (action, backend
path, outcome, seconds), so an operator can see what ran inside the downtime window.

Nothing here looks at the domain's name: xl renames a migrating domain
``NAME--incoming`` / ``NAME--migratedaway``.  The xenstore client is injected; dom0 uses
pyxs when it is installed and the ``xenstore-*`` tools otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenwam.cliargs import Parser, directory
from xenwam.drbd.device import DrbdDevice
from xenwam.drbd.resource import DEFAULT_CONFIG_DIR, Resource, load
from xenwam.errors import XenError, XenwamError
from xenwam.xen.xenstore import (  # noqa: F401 -- re-exported for the hook's users
    CliXenstore,
    PyxsXenstore,
    Xenstore,
    absolute,
    default_xenstore,
)

log = logging.getLogger(__name__)

#: A block backend's path, as libxl passes it (relative) or absolute.
_BACKEND_PATH_RE = re.compile(r"(?:/local/domain/0/)?backend/vbd/[0-9]{1,10}/[0-9]{1,10}")
#: Longest text a journal record or log line keeps of one value.
RECORD_TEXT_MAX = 512


def bounded(text: str, limit: int = RECORD_TEXT_MAX) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text)} characters]"


def physical_device_value(rdev: int) -> str:
    """``physical-device`` as blkback reads it: major and minor in hex, ``fe:0``."""
    return f"{os.major(rdev):x}:{os.minor(rdev):x}"


@dataclass
class BlockHotplug:
    """``add`` and ``remove`` for one backend device, with every side effect injected."""

    xenstore: Xenstore
    load_resource: Callable[[str], Resource]
    make_device: Callable[[Resource], DrbdDevice]
    stat_rdev: Callable[[str], int] = lambda path: os.stat(path).st_rdev
    clock: Callable[[], float] = time.monotonic
    #: Receives one record per call (action, path, outcome, seconds); None keeps nothing.
    journal: Callable[[dict[str, object]], None] | None = None

    def _resource_name(self, xenbus_path: str) -> str:
        name = self.xenstore.read(f"{xenbus_path}/params")
        if not name:
            raise XenError(
                f"{xenbus_path}/params is empty: write the disk as "
                "'script=block-xenwam, target=RESOURCE' in the xl config"
            )
        return name.strip()

    def add(self, xenbus_path: str) -> str:
        """Make the resource Primary and hand its device to blkback; return what it did."""
        start = self.clock()
        name = self._resource_name(xenbus_path)
        resource = self.load_resource(name)
        device = self.make_device(resource)
        state = device.state()
        if state.is_primary:
            did = "already primary"
        else:
            if state.connection == "Unconfigured":
                raise XenError(
                    f"DRBD resource {name!r} is not up on this host: run "
                    f"`xenwam disk up {name}` before starting or migrating the guest"
                )
            # Only UpToDate is known current: a Consistent disk may be behind its peer.
            if state.disk != "UpToDate" and not (
                    state.disk == "Diskless" and state.peer_disk == "UpToDate"):
                raise XenError(
                    f"DRBD resource {name!r} has no good data here (disk {state.disk}, "
                    f"peer {state.peer_disk}): wait for the sync (`xenwam disk wait-sync "
                    f"{name}`) before using it on this host"
                )
            try:
                device.promote()
            except XenwamError as exc:
                hint = ""
                if state.peer_role == "Primary":
                    hint = (f"; the peer is Primary: switch to handover mode first "
                            f"(`xenwam disk handover {name}` on either host)")
                raise XenError(f"cannot make DRBD resource {name!r} primary: {exc}{hint}") from exc
            did = "promoted"
        self.xenstore.write_all([
            (f"{xenbus_path}/physical-device",
             physical_device_value(self.stat_rdev(resource.device))),
            (f"{xenbus_path}/physical-device-path", resource.device),
            (f"{xenbus_path}/hotplug-status", "connected"),
        ])
        log.info("block-xenwam add %s: %s %s in %.3f s", xenbus_path, name, did,
                 self.clock() - start)
        return did

    def _used_elsewhere(self, xenbus_path: str, name: str) -> list[str]:
        """Other backends on this host that hold resource ``name``."""
        mine = absolute(xenbus_path).rstrip("/")
        users = []
        for domid in self.xenstore.list("backend/vbd"):
            for devid in self.xenstore.list(f"backend/vbd/{domid}"):
                path = f"backend/vbd/{domid}/{devid}"
                if absolute(path) == mine:
                    continue
                if (self.xenstore.read(f"{path}/params") or "").strip() != name:
                    continue
                if self.xenstore.read(f"{path}/physical-device"):
                    users.append(path)
        return users

    def remove(self, xenbus_path: str) -> str:
        """Demote the resource unless another local backend still uses it."""
        name = self._resource_name(xenbus_path)
        resource = self.load_resource(name)
        device = self.make_device(resource)
        if not device.state().is_primary:
            return "already secondary"
        users = self._used_elsewhere(xenbus_path, name)
        if users:
            log.info("block-xenwam remove %s: %s still used by %s, stays primary",
                     xenbus_path, name, ", ".join(users))
            return "still in use"
        device.demote()
        return "demoted"

    def run(self, action: str, xenbus_path: str) -> int:
        """Run ``action`` and report failure through xenstore; return the exit status."""
        start = self.clock()
        status, outcome = 0, ""
        try:
            if action == "add":
                outcome = self.add(xenbus_path)
            elif action == "remove":
                outcome = self.remove(xenbus_path)
            else:
                raise XenError(f"unknown hotplug action {action!r}: use add or remove")
        except Exception as exc:  # every failure must reach libxl, not only ours
            message = bounded(str(exc) if isinstance(exc, XenwamError) else (
                f"internal error {type(exc).__name__}: {exc}; report it with the xl log"))
            log.error("block-xenwam %s %s: %s", bounded(action), bounded(xenbus_path), message)
            status, outcome = 1, f"error: {message}"
            try:
                self.xenstore.write_all([(f"{xenbus_path}/hotplug-error", message),
                                         (f"{xenbus_path}/hotplug-status", "error")])
            except Exception as report_exc:
                log.error("could not report the failure in xenstore: %s", report_exc)
        if self.journal is not None:
            try:
                self.journal({"action": action, "xenbus_path": xenbus_path,  # bounded there
                              "outcome": outcome, "status": status,
                              "seconds": round(self.clock() - start, 4)})
            except OSError as exc:
                log.warning("could not record the hotplug call: %s", exc)
        return status


#: One JSON line per hook call, for operators and the lab tests (tmpfs: gone at reboot).
JOURNAL_PATH = Path("/run/xenwam/hotplug.log")


def append_journal(record: dict[str, object], path: Path = JOURNAL_PATH) -> None:
    """Append ``record`` as one JSON line to ``path``, with the wall-clock time."""
    kept = {k: bounded(v) if isinstance(v, str) else v for k, v in record.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:
        out.write(json.dumps({"time": round(time.time(), 3), **kept}) + "\n")


def real_hotplug(config_dir: Path = DEFAULT_CONFIG_DIR) -> BlockHotplug:
    """A :class:`BlockHotplug` wired to this host's xenstore, DRBD and resource files."""
    return BlockHotplug(
        xenstore=default_xenstore(),
        load_resource=lambda name: load(name, config_dir),
        make_device=lambda resource: DrbdDevice(resource),
        journal=append_journal,
    )


def _handle(args: argparse.Namespace) -> int:
    xenbus_path = args.xenbus_path or os.environ.get("XENBUS_PATH")
    if not xenbus_path:
        print("xenwam hotplug: XENBUS_PATH is not set; libxl sets it when it runs "
              "the hook, or pass --xenbus-path", file=sys.stderr)
        return 2
    if not _BACKEND_PATH_RE.fullmatch(xenbus_path):
        # Not a path libxl would give: refuse before touching xenstore, DRBD or the journal.
        print(f"xenwam hotplug: XENBUS_PATH {bounded(xenbus_path, 60)!r} is not a block "
              "backend path (backend/vbd/DOMID/DEVID)", file=sys.stderr)
        return 2
    return real_hotplug(Path(args.config_dir)).run(args.action, xenbus_path)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("add", "remove"), help="what libxl asks for")
    parser.add_argument("--xenbus-path", help="backend path (default: $XENBUS_PATH)")
    parser.add_argument("--config-dir", default=str(DEFAULT_CONFIG_DIR), type=directory,
                        help="where the xenwam-*.res files are (default: %(default)s)")
    parser.set_defaults(handler=_handle)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``xenwam hotplug block add|remove``."""
    hotplug = subparsers.add_parser(
        "hotplug", parents=[common], help="Xen hotplug scripts' logic (run by hooks/)",
        description="Run by the hooks in hooks/; not usually typed by hand.")
    kinds = hotplug.add_subparsers(dest="hotplug_kind", metavar="KIND", required=True)
    block = kinds.add_parser("block", parents=[common],
                             help="block-xenwam: a DRBD resource as a guest disk")
    _add_arguments(block)


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m xenwam.hotplug block add``: the hook's fast path, which skips importing
    every other subcommand (it runs inside the migration downtime)."""
    from xenwam.log import configure

    parser = Parser(prog="xenwam-hotplug")
    kinds = parser.add_subparsers(dest="kind", required=True)
    _add_arguments(kinds.add_parser("block"))
    args = parser.parse_args(argv)
    configure(1)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
