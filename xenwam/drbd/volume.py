"""Putting disks under xenwam resources: adopt an existing disk, provision a new copy.

``xenwam disk adopt NAME --disk DEV --minor N`` puts a guest's existing disk under a
one-host xenwam resource without touching its data: the DRBD metadata is external (a
small file next to the site's disks), so not one byte of the disk is rewritten, and the
guest then boots with ``script=block-xenwam, target=NAME``.  A migration later gives the
resource a peer.

``xenwam disk provision NAME --size BYTES`` makes the empty copy a migration's
destination needs: a sparse file and a metadata file in the site's storage directory,
each behind a loop device.  ``xenwam disk unprovision NAME`` removes exactly what
provision made (an aborted migration's cleanup).  ``xenwam disk install`` writes a
resource file from a JSON model on stdin, which is how the orchestrator hands a peer its
definition, shared secret included, without putting the secret in any argv.

Loop devices do not survive a reboot: ``xenwam disk reattach --all`` at boot puts the
files back behind loop devices and rewrites the resource files (docs/storage.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xenwam import site as sitecfg
from xenwam.cliargs import int_in, matching, regular_file, text_type, writable_device
from xenwam.drbd.device import DrbdDevice
from xenwam.drbd.resource import (
    DEFAULT_CONFIG_DIR,
    FILE_PREFIX,
    MINOR_MAX,
    Host,
    Resource,
    WanProfile,
    install,
    list_resources,
    load,
    uninstall,
    valid_name,
)
from xenwam.drbd.secret import generate as generate_secret
from xenwam.errors import ConfigError, DrbdError
from xenwam.runner import Runner, default_runner

MIB = 1024 * 1024
#: Largest disk ``provision`` makes: 64 TiB (a sparse file; ext4's limit is 16 TiB).
SIZE_MAX = 64 * 1024 * 1024 * MIB
#: Largest resource model ``install`` reads from stdin (a real one is under 2 KiB).
MODEL_MAX = 64 * 1024


def meta_size(size: int) -> int:
    """Bytes of external DRBD 8.4 metadata for a ``size``-byte disk, with room to spare:
    the bitmap (one bit per 4 KiB), the activity log and the superblock."""
    return max(4 * MIB, ((size // (4096 * 8)) + 2 * MIB + MIB - 1) // MIB * MIB)


def check_name(name: str) -> str:
    """``name`` if it is a usable resource name (fullmatch: no trailing newline)."""
    if not valid_name(name):
        raise ConfigError(f"invalid resource name {name!r}: use 1-63 letters, digits, '.', "
                          "'_' or '-', starting with a letter or digit")
    return name


@dataclass
class Loops:
    """Loop devices over files, through ``losetup`` (util-linux)."""

    runner: Runner = default_runner

    def attached(self, path: Path) -> str | None:
        """The loop device already over ``path``, if any."""
        out = self.runner.run(["losetup", "-j", str(path)], check=False).stdout
        first = out.split(":", 1)[0].strip()
        return first or None

    def attach(self, path: Path) -> str:
        """A loop device over ``path`` (the existing one if there is one)."""
        return self.attached(path) or self.runner.run(
            ["losetup", "--find", "--show", str(path)]).stdout.strip()

    def detach(self, path: Path) -> None:
        """Detach the loop device over ``path``, if any."""
        dev = self.attached(path)
        if dev:
            self.runner.run(["losetup", "-d", dev])


def block_size_of(path: str) -> int:
    """Size in bytes of a block device or file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def volume_paths(site: sitecfg.Site, name: str) -> tuple[Path, Path]:
    """The data and metadata files of resource ``name`` in the site's storage directory."""
    base = Path(site.storage_directory)
    return base / f"{name}.img", base / f"{name}.md"


def _resource_for(name: str, minor: int, hosts: tuple[Host, ...], secret: str,
                  site: sitecfg.Site) -> Resource:
    return Resource(name=name, minor=minor, hosts=hosts, shared_secret=secret,
                    wan=WanProfile(rtt_ms=site.rtt_ms, bandwidth_mbit=site.bandwidth_mbit,
                                   csums_alg="md5"))


def adopt(name: str, disk: str, minor: int, site: sitecfg.Site, *,
          config_dir: Path = DEFAULT_CONFIG_DIR, meta_disk: str | None = None,
          loops: Loops | None = None, hostname: str | None = None) -> dict[str, Any]:
    """Put ``disk`` (a block device, or a file given a loop device) under a one-host
    resource; its data is not touched.  Idempotent."""
    check_name(name)
    loops = loops or Loops()
    src = Path(disk)
    if not src.exists():
        raise ConfigError(f"--disk {disk!r} does not exist")
    device = loops.attach(src) if src.is_file() else disk
    if meta_disk is None:
        _, meta_file = volume_paths(site, name)
        meta_file.parent.mkdir(parents=True, exist_ok=True)
        if not meta_file.exists():
            with open(meta_file, "wb") as f:
                f.truncate(meta_size(block_size_of(device)))
        meta_disk = loops.attach(meta_file)
    host = Host(hostname=hostname or socket.gethostname(), address=site.replication_address,
                port=site.port_for(minor), disk=device, meta_disk=meta_disk,
                disk_file=str(src.resolve()) if src.is_file() else None)
    try:
        old: Resource | None = _load_quiet(name, config_dir)
    except ConfigError:
        old = None
    secret = old.shared_secret if old is not None else generate_secret()
    resource = _resource_for(name, minor, (host,), secret, site)
    install(resource, config_dir)
    drbd = DrbdDevice(resource)
    created = drbd.create_md()
    drbd.up()
    st = drbd.state()
    forced = False
    if st.disk == "Inconsistent":
        # The first adoption: the guest's disk is, by definition, the good copy.
        drbd.promote(force=True)
        drbd.demote()
        forced = True
    st = drbd.state()
    return {"resource": name, "device": resource.device, "disk": device,
            "meta_disk": meta_disk, "metadata_created": created, "declared_uptodate": forced,
            "state": st.to_json()}


def _load_quiet(name: str, config_dir: Path) -> Resource | None:
    path = config_dir / f"{FILE_PREFIX}{name}.res"
    return load(name, config_dir) if path.exists() else None


def provision(name: str, size: int, site: sitecfg.Site,
              loops: Loops | None = None) -> dict[str, Any]:
    """An empty (sparse, all-zero) copy of ``size`` bytes plus its metadata file, each
    behind a loop device.  Idempotent: an existing copy of the same size is kept."""
    check_name(name)
    if size <= 0 or size % 4096:
        raise ConfigError(f"invalid size {size}: give a positive multiple of 4096 bytes")
    loops = loops or Loops()
    data, meta = volume_paths(site, name)
    data.parent.mkdir(parents=True, exist_ok=True)
    fresh = not data.exists()
    if not fresh and data.stat().st_size != size:
        raise DrbdError(f"{data} exists with {data.stat().st_size} bytes, not {size}: an "
                        f"earlier copy of {name!r}; remove it with `xenwam disk unprovision "
                        f"{name}` if it is not in use")
    for path, length in ((data, size), (meta, meta_size(size))):
        if not path.exists():
            with open(path, "wb") as f:
                f.truncate(length)
    return {"resource": name, "disk": loops.attach(data), "meta_disk": loops.attach(meta),
            "files": [str(data), str(meta)], "zeroed": fresh}


def unprovision(name: str, site: sitecfg.Site, config_dir: Path = DEFAULT_CONFIG_DIR,
                loops: Loops | None = None, *, demote: bool = False,
                device: DrbdDevice | None = None) -> dict[str, Any]:
    """Take resource ``name`` down here and remove what :func:`provision` made.

    A Primary copy is refused, unless ``demote``: then it is made Secondary first, which
    DRBD itself refuses while anything (a guest's blkback, a mount) holds the device
    open, so a copy in use is never removed.  That is for a copy a migration left
    Primary here when its abort could not reach this host."""
    check_name(name)
    loops = loops or Loops()
    resource = _load_quiet(name, config_dir)
    demoted = False
    if resource is not None:
        dev = device or DrbdDevice(resource)
        if dev.state().is_primary:
            if not demote:
                raise DrbdError(f"resource {name!r} is Primary here: a guest may be using "
                                "it; refusing to remove this copy (--demote removes a "
                                "Primary copy that nothing holds open)")
            demoted = dev.demote(attempts=1)
        dev.down()
        uninstall(name, config_dir)
    removed = []
    for path in volume_paths(site, name):
        loops.detach(path)
        if path.exists():
            path.unlink()
            removed.append(str(path))
    return {"resource": name, "removed": removed, "demoted": demoted}


def _is_loop(device: str) -> bool:
    return device.startswith("/dev/loop")


def reattach(name: str, site: sitecfg.Site, config_dir: Path = DEFAULT_CONFIG_DIR,
             loops: Loops | None = None, hostname: str | None = None) -> dict[str, Any]:
    """Put this host's files of resource ``name`` back behind loop devices after a reboot
    (loop devices do not survive one) and rewrite the resource file if their numbers
    changed.  DRBD itself is not touched: ``drbdadm adjust NAME`` (or ``xenwam disk
    attach``) then brings the resource up.  Idempotent.

    The data file is the one ``adopt`` recorded (``disk_file``) or, for a copy
    ``provision`` made, the site's volume file; the metadata file is the site's."""
    check_name(name)
    loops = loops or Loops()
    resource = load(name, config_dir)
    me = resource.host(hostname or socket.gethostname())
    data_file, meta_file = volume_paths(site, name)
    disk, meta = me.disk, me.meta_disk
    missing = []
    if _is_loop(disk):
        backing = Path(me.disk_file) if me.disk_file else data_file
        if backing.exists():
            disk = loops.attach(backing)
        else:
            missing.append(str(backing))
    if _is_loop(meta):
        if meta_file.exists():
            meta = loops.attach(meta_file)
        else:
            missing.append(str(meta_file))
    if missing:
        raise DrbdError(f"resource {name!r}: {' and '.join(missing)} missing on this host; "
                        "its copy here is gone (`xenwam disk unprovision` cleans up)")
    changed = (disk, meta) != (me.disk, me.meta_disk)
    if changed:
        mine = replace(me, disk=disk, meta_disk=meta)
        install(replace(resource, hosts=tuple(mine if h is me else h
                                              for h in resource.hosts)), config_dir)
    return {"resource": name, "changed": changed, "disk": disk, "meta_disk": meta}


def forget(name: str, config_dir: Path = DEFAULT_CONFIG_DIR,
           hostname: str | None = None) -> dict[str, Any]:
    """Drop the resource's peer: this host's copy goes on alone, as after ``adopt``.

    The device keeps its role and data (a guest using it is not disturbed); only the
    connection goes and the file is rewritten for one host.  The peer's copy is left as
    it is: ``xenwam disk unprovision NAME`` there removes it.  Idempotent."""
    check_name(name)
    resource = load(name, config_dir)
    if resource.is_single:
        return {"resource": name, "changed": False, "peer": None}
    me = resource.host(hostname or socket.gethostname())
    peer = resource.peer(me.hostname)
    DrbdDevice(resource).disconnect()
    install(replace(resource, hosts=(me,), mode="bulk"), config_dir)
    return {"resource": name, "changed": True, "peer": peer.hostname}


# ------------------------------------------------------------------ CLI


#: A resource name, refused at parse time unless :func:`valid_name`.
resource_name_arg = matching("resource name", valid_name,
                             "use 1-63 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit")


def _size(text: str) -> int:
    value = int_in(4096, SIZE_MAX, " bytes")(text)
    if value % 4096:
        raise argparse.ArgumentTypeError(f"{value} is not a multiple of 4096 bytes")
    return value


#: A disk size for ``provision``: a positive multiple of 4096 bytes.
size_arg = text_type("integer", _size)


def _site(args: argparse.Namespace) -> sitecfg.Site:
    return sitecfg.load(Path(args.site) if args.site else None)


def _print(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(doc))
    else:
        for key, value in doc.items():
            if key != "state":
                print(f"{key}: {value}")


def _adopt(args: argparse.Namespace) -> int:
    _print(args, adopt(args.name, args.disk, args.minor, _site(args),
                       config_dir=Path(args.config_dir), meta_disk=args.meta_disk))
    return 0


def provision_fresh(name: str, size: int, site: sitecfg.Site,
                    config_dir: Path = DEFAULT_CONFIG_DIR, loops: Loops | None = None, *,
                    device: DrbdDevice | None = None) -> dict[str, Any]:
    """:func:`unprovision` with ``demote`` (a stale copy goes, one in use is refused
    and nothing is made), then :func:`provision`: a new copy in one step, for a
    migration's destination.  The result says under ``stale`` what was removed."""
    loops = loops or Loops()
    stale = unprovision(name, site, config_dir, loops, demote=True, device=device)
    doc = provision(name, size, site, loops)
    doc["stale"] = {"removed": stale["removed"], "demoted": stale["demoted"]}
    return doc


def _provision(args: argparse.Namespace) -> int:
    site = _site(args)
    if args.fresh:
        _print(args, provision_fresh(args.name, args.size, site, Path(args.config_dir)))
    else:
        _print(args, provision(args.name, args.size, site))
    return 0


def _unprovision(args: argparse.Namespace) -> int:
    _print(args, unprovision(args.name, _site(args), Path(args.config_dir),
                             demote=args.demote))
    return 0


def read_model(data: bytes) -> Resource:
    """The resource model ``xenwam disk install`` was given on stdin, validated.

    Anything else (not UTF-8, not JSON, nested too deep, too large, fields of the wrong
    type or out of range) is a :class:`ConfigError` of one line that never quotes the
    shared secret.
    """
    if len(data) > MODEL_MAX:
        raise ConfigError(f"stdin holds more than {MODEL_MAX} bytes: not a resource model; "
                          "pipe in the JSON of one resource; nothing was written")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("stdin is not UTF-8 text: pipe in the JSON of one resource; "
                          "nothing was written") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"stdin is not a JSON resource model ({exc.msg} at line "
                          f"{exc.lineno} column {exc.colno}); nothing was written") from None
    except RecursionError:
        raise ConfigError("stdin is JSON nested too deep to be a resource model; "
                          "nothing was written") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"stdin holds a JSON {type(doc).__name__}, not one object (a "
                          "resource model); nothing was written")
    resource = Resource.from_json(doc)
    resource.validate()
    return resource


def _forget(args: argparse.Namespace) -> int:
    doc = forget(args.name, Path(args.config_dir))
    _print(args, doc)
    if doc["changed"] and not args.json and not getattr(args, "quiet", False):
        print(f"{args.name} now runs on this host alone; on {doc['peer']}, `xenwam disk "
              f"unprovision {args.name}` removes the old copy", file=sys.stderr)
    return 0


def _reattach(args: argparse.Namespace) -> int:
    site = _site(args)
    config_dir = Path(args.config_dir)
    if args.all == (args.name is not None):
        raise ConfigError("give one resource NAME or --all")
    names = ([r.name for r in list_resources(config_dir)] if args.all else [args.name])
    docs = [reattach(n, site, config_dir) for n in names]
    if args.json:
        print(json.dumps({"resources": docs}))
    else:
        for d in docs:
            what = "loop devices set up again, file rewritten" if d["changed"] else \
                "nothing to do"
            print(f"{d['resource']}: {what} ({d['disk']}, {d['meta_disk']})")
    return 0


def install_from_peer(resource: Resource, config_dir: Path = DEFAULT_CONFIG_DIR,
                      hostname: str | None = None) -> Path:
    """Install a definition of ``resource`` made on the other host (what a migration's
    source sends), keeping this host's own backing devices from its current file when
    it has one: the sender knows them only as they were when it last heard, and after a
    reboot ``reattach`` may have put the copy behind other loop devices here.  Which
    devices back the peer's copy does not matter to DRBD here, nor to the sender."""
    me = hostname or socket.gethostname()
    try:
        current = _load_quiet(resource.name, config_dir)
    except ConfigError:
        current = None  # an unreadable file is replaced whole, as `install` always did
    own = next((h for h in current.hosts if h.hostname == me), None) if current else None
    if own is not None and any(h.hostname == me for h in resource.hosts):
        resource = replace(resource, hosts=tuple(
            replace(h, disk=own.disk, meta_disk=own.meta_disk, disk_file=own.disk_file)
            if h.hostname == me else h for h in resource.hosts))
    return install(resource, config_dir)


def _install(args: argparse.Namespace) -> int:
    resource = read_model(sys.stdin.buffer.read(MODEL_MAX + 1))
    path = install_from_peer(resource, Path(args.config_dir))
    _print(args, {"resource": resource.name, "file": str(path)})
    return 0


def register(sub: Any, shared: argparse.ArgumentParser) -> None:
    """Add ``adopt``, ``provision``, ``unprovision`` and ``install`` to ``xenwam disk``."""
    site_opt = argparse.ArgumentParser(add_help=False)
    site_opt.add_argument("--site", type=regular_file,
                          help="site file (default: $XENWAM_SITE or /etc/xenwam/site.toml)")
    p = sub.add_parser(
        "adopt", parents=[shared, site_opt],
        help="put an existing guest disk under a one-host resource (data untouched)",
        description="Put an existing disk under a xenwam DRBD resource with external "
                    "metadata, so the guest can boot from it with "
                    "'script=block-xenwam, target=NAME' and be migrated later. The disk's "
                    "data is not rewritten. Idempotent.")
    p.add_argument("name", type=resource_name_arg,
                   help="resource name (the guest config's target=)")
    p.add_argument("--disk", type=writable_device, required=True,
                   help="the guest's disk: a block device or file")
    p.add_argument("--minor", type=int_in(0, MINOR_MAX), required=True,
                   help="DRBD minor (/dev/drbdMINOR)")
    p.add_argument("--meta-disk", type=writable_device,
                   help="device for the metadata (default: a file in the site's storage "
                        "directory)")
    p.set_defaults(handler=_adopt)

    p = sub.add_parser("provision", parents=[shared, site_opt],
                       help="an empty copy for a migration's destination (sparse file + loop)")
    p.add_argument("name", type=resource_name_arg)
    p.add_argument("--size", type=size_arg, required=True,
                   help="bytes, a multiple of 4096 (the source disk's size)")
    p.add_argument("--fresh", action="store_true",
                   help="first remove any copy of NAME here, as `unprovision --demote` "
                        "does (a copy left by a migration that did not end here; one in "
                        "use is refused and nothing is made); --json then says under "
                        "'stale' what was removed")
    p.set_defaults(handler=_provision)

    p = sub.add_parser("unprovision", parents=[shared, site_opt],
                       help="take a resource down here and remove the copy provision made")
    p.add_argument("name", type=resource_name_arg)
    p.add_argument("--demote", action="store_true",
                   help="demote a Primary copy first, if nothing holds it open (a copy an "
                        "aborted migration left Primary here); one in use is refused")
    p.set_defaults(handler=_unprovision)

    p = sub.add_parser("forget", parents=[shared],
                       help="drop the peer: this host's copy goes on alone",
                       description="Disconnect the resource's peer and rewrite its file for "
                                   "this host alone, as `adopt` leaves it; the device keeps "
                                   "its role and data, so a running guest is not disturbed. "
                                   "After a migration the old host keeps a copy that stays "
                                   "nearly current (the trip back sends only what changed); "
                                   "run this on the host where the guest runs to end that, "
                                   "then `xenwam disk unprovision NAME` on the old host. "
                                   "`xenwam migrate --forget` does both. Idempotent.")
    p.add_argument("name", type=resource_name_arg)
    p.set_defaults(handler=_forget)

    p = sub.add_parser("reattach", parents=[shared, site_opt],
                       help="after a reboot: the disks' files back behind loop devices",
                       description="Loop devices do not survive a reboot. Put each xenwam "
                                   "disk's files (an adopted file, a provisioned copy, the "
                                   "metadata) back behind loop devices and rewrite the "
                                   "resource file if the device numbers changed. DRBD is "
                                   "not touched: run `drbdadm adjust all` afterwards, as "
                                   "the drbd service does at boot. Idempotent.")
    p.add_argument("name", nargs="?", type=resource_name_arg, help="one resource")
    p.add_argument("--all", action="store_true", help="every xenwam resource on this host")
    p.set_defaults(handler=_reattach)

    p = sub.add_parser("install", parents=[shared],
                       help="write a resource file from a JSON model on stdin (a "
                            "peer's: this host's own backing devices are kept from its "
                            "current file, if any)")
    p.set_defaults(handler=_install)
