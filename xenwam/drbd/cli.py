"""``xenwam disk ...``: define, drive, seed and inspect xenwam's DRBD resources."""

from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

from xenwam.cliargs import (
    directory,
    int_in,
    matching,
    new_file,
    number_in,
    readable_device,
    writable_device,
)
from xenwam.drbd import cmdgen, seed, volume
from xenwam.drbd.device import DrbdDevice, Progress, read_proc_drbd
from xenwam.drbd.info import DeviceState, Generations, parse_proc_drbd
from xenwam.drbd.resource import (
    DEFAULT_CONFIG_DIR,
    MINOR_MAX,
    Host,
    Resource,
    WanProfile,
    install,
    list_resources,
    load,
)
from xenwam.drbd.secret import read_secret_file, write_secret_file
from xenwam.drbd.volume import resource_name_arg
from xenwam.errors import ConfigError, DrbdError
from xenwam.runner import default_runner

log = logging.getLogger(__name__)

#: Subcommands that map straight onto one idempotent DrbdDevice operation.
SIMPLE_OPERATIONS: dict[str, tuple[str, str]] = {
    "create-md": ("create_md", "write DRBD metadata unless valid metadata exists"),
    "up": ("up", "configure, attach and connect the resource"),
    "down": ("down", "take the resource down"),
    "adjust": ("adjust", "bring the running resource in line with its file (its net "
                         "settings, its peer), configuring and connecting it as needed"),
    "attach": ("attach", "attach the backing disk"),
    "detach": ("detach", "detach the backing disk"),
    "connect": ("connect", "connect to the peer"),
    "disconnect": ("disconnect", "drop the connection to the peer"),
    "demote": ("demote", "make this host Secondary"),
    "handover": ("to_handover", "switch the live connection to protocol C, two primaries"),
    "bulk": ("to_bulk", "switch back to protocol A with pull-ahead, one primary"),
    "skip-initial-sync": ("skip_initial_sync",
                          "after seeding: mark both new disks UpToDate without a sync"),
    "teardown": ("teardown", "demote, disconnect and take down"),
    "rejoin-unwritten": ("rejoin_unwritten",
                         "rejoin the peer giving up this copy's side of a split brain, "
                         "only if nothing was written here since they parted"),
    "rejoin-as-target": ("rejoin_as_target",
                         "rejoin the peer as a resync's target although Primary and in "
                         "use (a migrated guest held paused here), giving up this copy's "
                         "side of a split brain; only if nothing was written here since"),
}


#: Longest wait a command accepts (a week), in seconds.
TIMEOUT_MAX = 7 * 24 * 3600.0


def block_size_arg(text: str) -> int:
    """A seeding block size: a multiple of 4096 up to seed.MAX_BLOCK_SIZE."""
    value = int_in(4096, seed.MAX_BLOCK_SIZE)(text)
    if (problem := seed.block_size_problem(value)) is not None:
        raise argparse.ArgumentTypeError(f"{value}: {problem}")
    return value


def _is_hash_name(text: str) -> bool:
    return re.fullmatch(r"[a-z0-9-]{2,32}", text) is not None


def parse_host(text: str) -> Host:
    """``HOSTNAME,ADDRESS:PORT,DISK,META_DISK`` (IPv6 as ``[addr]:port``)."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ConfigError(
            f"invalid --host {text!r}: write HOSTNAME,ADDRESS:PORT,DISK,META_DISK, "
            "e.g. hosta,10.99.0.1:7789,/dev/vg/guest,/dev/vg/guest-meta"
        )
    hostname, addr_port, disk, meta = parts
    addr, sep, port = addr_port.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"invalid address {addr_port!r} in --host {text!r}: write ADDRESS:PORT")
    return Host(hostname=hostname, address=addr.strip("[]"), port=int(port), disk=disk,
                meta_disk=meta)


def _config_dir(args: argparse.Namespace) -> Path:
    return Path(args.config_dir)


def _drbdadm_check(name: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        result = default_runner.run(cmdgen.dump(name, config=path), check=False)
        if not result.ok:
            raise ConfigError(
                f"drbdadm rejects the resource file for {name!r}: "
                f"{result.stderr.strip()[-600:]!r}; nothing was written"
            )
    return check


def _define(args: argparse.Namespace) -> int:
    if len(args.host) != 2:
        times = "once" if len(args.host) == 1 else f"{len(args.host)} times"
        raise ConfigError(f"--host given {times}: a resource joins exactly two hosts; "
                          "give --host once for each; nothing was written")
    hosts = (parse_host(args.host[0]), parse_host(args.host[1]))
    if args.secret_file:
        secret = read_secret_file(Path(args.secret_file))
    else:
        raise ConfigError("give --secret-file FILE holding the shared secret; make one with "
                          "`xenwam disk secret FILE`")
    resource = Resource(
        name=args.name, minor=args.minor,
        hosts=hosts,
        shared_secret=secret,
        wan=WanProfile(rtt_ms=args.rtt_ms, bandwidth_mbit=args.bandwidth_mbit,
                       csums_alg=args.csums_alg),
    )
    check = _drbdadm_check(resource.name) if args.check else None
    try:
        path = install(resource, _config_dir(args), check=check)
    except OSError as exc:
        raise ConfigError(f"cannot write {resource.file_name} in {args.config_dir}: "
                          f"{exc.strerror}; nothing was written") from None
    print(path)
    return 0


def _device(args: argparse.Namespace) -> DrbdDevice:
    return DrbdDevice(load(args.name, _config_dir(args)))


def _simple(operation: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        if args.install:
            resource = volume.read_model(sys.stdin.buffer.read(volume.MODEL_MAX + 1))
            if resource.name != args.name:
                raise ConfigError(f"--install: stdin holds resource {resource.name!r}, not "
                                  f"{args.name!r}; nothing was written")
            volume.install_from_peer(resource, _config_dir(args))
        device = _device(args)
        if getattr(args, "create_md", False):
            device.create_md()
        result = getattr(device, operation)()
        if args.json:
            print(json.dumps({"resource": args.name, "operation": operation,
                              "changed": result if isinstance(result, bool) else None}))
        return 0
    return handler


def _promote(args: argparse.Namespace) -> int:
    changed = _device(args).promote(force=args.force)
    if args.json:
        print(json.dumps({"resource": args.name, "operation": "promote", "changed": changed}))
    return 0


def _progress_reporter(quiet: bool) -> tuple[Callable[[Progress], None], Callable[[], None]]:
    """A rich progress bar on a terminal, log lines otherwise."""
    if quiet:
        return (lambda p: None), (lambda: None)
    if sys.stderr.isatty():
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as Bar

        bar = Bar(TextColumn("sync"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
                  transient=False)
        task = bar.add_task("sync", total=100.0, rate="", eta="?")
        bar.start()

        def show(p: Progress) -> None:
            bar.update(task, completed=p.percent,
                       rate=f"{p.rate_kib_s:,.0f} KiB/s" if p.rate_kib_s is not None else "",
                       eta=f"{p.eta_seconds:.0f} s" if p.eta_seconds is not None else "?")
        return show, bar.stop

    def log_line(p: Progress) -> None:
        rate = f"{p.rate_kib_s:,.0f} KiB/s" if p.rate_kib_s is not None else "rate ?"
        eta = f"ETA {p.eta_seconds:.0f} s" if p.eta_seconds is not None else "ETA ?"
        print(f"sync {p.percent:5.1f}% {p.out_of_sync_kib} KiB left {rate} {eta}",
              file=sys.stderr, flush=True)
    return log_line, (lambda: None)


def _wait_sync(args: argparse.Namespace) -> int:
    device = _device(args)
    show, done = _progress_reporter(args.quiet or args.json)
    try:
        state = device.wait_for_sync(timeout=args.timeout, interval=args.interval,
                                     on_progress=show)
    finally:
        done()
    if args.json:
        print(json.dumps(state.to_json()))
    return 0


def _wait_connected(args: argparse.Namespace) -> int:
    _device(args).wait_connected(timeout=args.timeout)
    return 0


@dataclass(frozen=True)
class StatusRow:
    """One resource as ``xenwam disk status`` shows it: this host's device, where the
    other copy is, and how far behind the copy that lags is."""

    state: DeviceState
    peer_host: str | None
    generations: Generations | None = None

    @property
    def behind(self) -> tuple[str, int] | None:
        """Which copy lags (``"peer"`` or ``"here"``) and by how many KiB, or ``None``
        when both hold the same data or there is no peer."""
        st = self.state
        if self.peer_host is None or st.disk == "Diskless":
            return None
        kib = st.sync.out_of_sync_kib if st.sync else st.out_of_sync_kib
        if st.disk in ("Inconsistent", "Outdated") or st.replication in (
                "SyncTarget", "PausedSyncT", "Behind"):
            return ("here", kib)
        if kib == 0 and st.peer_disk in ("UpToDate", "DUnknown"):
            return None
        return ("peer", kib)

    def to_json(self) -> dict[str, object]:
        """Plain data for ``--json``."""
        doc = self.state.to_json()
        behind = self.behind
        doc["peer_host"] = self.peer_host
        doc["behind"] = ({"copy": behind[0], "kib": behind[1]} if behind is not None
                         else None)
        doc["generations"] = (self.generations.to_json() if self.generations is not None
                              else None)
        return doc


def status_rows(resources: list[Resource], proc_text: str,
                hostname: str | None = None) -> list[StatusRow]:
    """The state of every xenwam resource, named, from one read of /proc/drbd."""
    devices = parse_proc_drbd(proc_text).devices
    me = hostname or socket.gethostname()
    rows = []
    for r in resources:
        found = devices.get(r.minor)
        base = found if found is not None else DeviceState(minor=r.minor)
        peers = [h.hostname for h in r.hosts if h.hostname != me]
        rows.append(StatusRow(replace(base, resource=r.name),
                              None if r.is_single else (peers[0] if peers else "?")))
    return rows


def _kib(kib: int) -> str:
    for unit, size in (("G", 1024 * 1024), ("M", 1024)):
        if kib >= size:
            return f"{kib / size:.1f}{unit}"
    return f"{kib}K"


def format_status(rows: list[StatusRow]) -> str:
    """A plain table of :func:`status_rows` for people."""
    header = ("RESOURCE", "MINOR", "ROLE", "DISK", "COPY-AT", "CONNECTION", "PEER",
              "PEER-DISK", "PROTO", "BEHIND", "SYNC", "RATE")
    table = [header]
    for row in rows:
        s = row.state
        sync = f"{s.sync.percent:.1f}%" if s.sync else "-"
        rate = f"{s.sync.rate_kib_s}K/s" if s.sync and s.sync.rate_kib_s else "-"
        behind = row.behind
        lag = "-" if behind is None else f"{behind[0]} {_kib(behind[1])}"
        table.append((s.resource or "?", str(s.minor), s.role, s.disk, row.peer_host or "-",
                      s.connection if s.replication in (None, "Established")
                      else s.replication, s.peer_role, s.peer_disk, s.protocol or "-",
                      lag, sync, rate))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)


def _status(args: argparse.Namespace) -> int:
    resources = list_resources(_config_dir(args))
    if args.name:
        resources = [r for r in resources if r.name in args.name]
        missing = set(args.name) - {r.name for r in resources}
        if missing:
            raise ConfigError(f"no xenwam resource {sorted(missing)!r} in {args.config_dir}; "
                              "see `xenwam disk status` for the defined ones")
    rows = status_rows(resources, read_proc_drbd())
    if args.json:
        by_name = {r.name: r for r in resources}
        rows = [replace(row, generations=DrbdDevice(by_name[row.state.resource or ""])
                        .generations()) for row in rows]
        print(json.dumps({"host": socket.gethostname(),
                          "resources": [r.to_json() for r in rows]}, indent=2))
    elif rows:
        print(format_status(rows))
    else:
        print(f"no xenwam resources defined in {args.config_dir}")
    return 0


def _open(path: str, mode: str) -> BinaryIO:
    """``path`` opened for seeding; a failure is the caller's bad input."""
    try:
        return cast(BinaryIO, open(path, mode))  # closed by the caller
    except OSError as exc:
        raise ConfigError(f"cannot open {path}: {exc.strerror}") from None


def _secret(args: argparse.Namespace) -> int:
    write_secret_file(Path(args.file), force=args.force)
    print(f"wrote a new shared secret to {args.file} (mode 0600); copy it to the peer "
          "host the same way, e.g. with scp, and keep it at mode 0600 there")
    return 0


def _seed_send(args: argparse.Namespace) -> int:
    with _open(args.device, "rb") as source:
        stats = seed.send(source, sys.stdout.buffer, block_size=args.block_size,
                          level=args.level)
    print(json.dumps(stats.to_json()), file=sys.stderr)
    return 0


def _seed_receive(args: argparse.Namespace) -> int:
    with _open(args.device, "r+b") as target:
        stats = seed.receive(sys.stdin.buffer, target, target_is_zeroed=args.zeroed)
    print(json.dumps(stats.to_json()))
    return 0


def _digest(args: argparse.Namespace) -> int:
    with _open(args.device, "rb") as f:
        size = args.size
        if size is not None and size > seed.device_size(f):
            raise ConfigError(f"--size {size} is larger than {args.device} "
                              f"({seed.device_size(f)} bytes)")
        digest = seed.sparse_digest(f, args.block_size, size)
    print(json.dumps({"device": args.device, "digest": digest}) if args.json else digest)
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``xenwam disk`` and its subcommands."""
    disk = subparsers.add_parser(
        "disk", parents=[common], help="DRBD resources that carry guest disks",
        description="Define, drive and inspect the DRBD resources that replicate guest "
                    "disks between hosts. Every operation is idempotent.")
    sub = disk.add_subparsers(dest="disk_command", metavar="ACTION", required=True)
    shared = argparse.ArgumentParser(add_help=False, parents=[common])
    shared.add_argument("--config-dir", default=str(DEFAULT_CONFIG_DIR), type=directory,
                        help="directory of the xenwam-*.res files (default: %(default)s)")
    shared.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("status", parents=[shared],
                       help="every xenwam resource: role, where its other copy is, how far behind",
                       description="One line per xenwam resource on this host: its role "
                                   "and disk state, the host holding the other copy "
                                   "(COPY-AT), the connection, and which copy lags by how "
                                   "much (BEHIND: 'peer 12.0M' means the other copy misses "
                                   "12 MiB of this one's writes; a resync or a migration "
                                   "sends only those). --json adds each disk's data "
                                   "generations.")
    p.add_argument("name", nargs="*", type=resource_name_arg, help="only these resources")
    p.set_defaults(handler=_status)

    p = sub.add_parser("define", parents=[shared], help="write /etc/drbd.d/xenwam-NAME.res")
    p.add_argument("name", type=resource_name_arg)
    p.add_argument("--minor", type=int_in(0, MINOR_MAX), required=True,
                   help="DRBD minor (/dev/drbdMINOR)")
    p.add_argument("--host", action="append", required=True,
                   help="HOSTNAME,ADDRESS:PORT,DISK,META_DISK; give it twice")
    p.add_argument("--secret-file",
                   help="file holding the shared secret, mode 0600 (see `xenwam disk secret`)")
    p.add_argument("--rtt-ms", type=number_in(0, 6000), default=50.0,
                   help="measured round-trip time")
    p.add_argument("--bandwidth-mbit", type=number_in(0, 100_000), default=100.0,
                   help="link rate")
    p.add_argument("--csums-alg", type=matching("hash name", _is_hash_name, "e.g. crc32c"),
                   help="checksum-based resync with this hash (e.g. crc32c)")
    p.add_argument("--check", action="store_true",
                   help="have drbdadm parse the file before it replaces the old one")
    p.set_defaults(handler=_define)

    for command, (operation, text) in SIMPLE_OPERATIONS.items():
        p = sub.add_parser(command, parents=[shared], help=text)
        p.add_argument("name", type=resource_name_arg)
        p.add_argument("--install", action="store_true",
                       help="first write the resource model read from stdin, as `xenwam "
                            "disk install` does (keeping this host's own backing devices "
                            "from its current file): one call where a remote caller made "
                            "two")
        if command == "up":
            p.add_argument("--create-md", action="store_true",
                           help="first write DRBD metadata unless valid metadata exists "
                                "(as `xenwam disk create-md`)")
        p.set_defaults(handler=_simple(operation))

    p = sub.add_parser("promote", parents=[shared], help="make this host Primary")
    p.add_argument("name", type=resource_name_arg)
    p.add_argument("--force", action="store_true",
                   help="first start only: make this host's Inconsistent disk the source of a "
                        "full sync to the peer")
    p.set_defaults(handler=_promote)

    p = sub.add_parser("wait-sync", parents=[shared],
                       help="wait until both disks are UpToDate, showing progress")
    p.add_argument("name", type=resource_name_arg)
    p.add_argument("--timeout", type=number_in(0, TIMEOUT_MAX), default=3600.0)
    p.add_argument("--interval", type=number_in(0, 3600), default=1.0)
    p.set_defaults(handler=_wait_sync)

    p = sub.add_parser("wait-connected", parents=[shared], help="wait for the connection")
    p.add_argument("name", type=resource_name_arg)
    p.add_argument("--timeout", type=number_in(0, TIMEOUT_MAX), default=120.0)
    p.set_defaults(handler=_wait_connected)

    volume.register(sub, shared)

    p = sub.add_parser("secret", parents=[common],
                       help="write a fresh shared secret to FILE at mode 0600")
    p.add_argument("file", type=new_file, help="where to write it")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(handler=_secret)

    p = sub.add_parser("seed-send", parents=[common],
                       help="write the seeding stream of DEVICE (non-zero blocks) to stdout")
    p.add_argument("device", type=readable_device)
    p.add_argument("--block-size", type=block_size_arg, default=seed.DEFAULT_BLOCK_SIZE)
    p.add_argument("--level", type=int_in(1, 22), default=3, help="zstd level, 1-22")
    p.set_defaults(handler=_seed_send)

    p = sub.add_parser("seed-receive", parents=[common],
                       help="apply a seeding stream from stdin to DEVICE and verify it")
    p.add_argument("device", type=writable_device)
    p.add_argument("--zeroed", action="store_true",
                   help="DEVICE is known to be all zeros (new sparse file or volume)")
    p.set_defaults(handler=_seed_receive)

    p = sub.add_parser("digest", parents=[common],
                       help="the seeding digest of DEVICE (equal digests = equal contents)")
    p.add_argument("device", type=readable_device)
    p.add_argument("--size", type=int_in(0, 2**63 - 1),
                   help="digest only the first SIZE bytes")
    p.add_argument("--block-size", type=block_size_arg, default=seed.DEFAULT_BLOCK_SIZE)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_digest)


__all__ = ["DrbdError", "StatusRow", "format_status", "parse_host", "register",
           "status_rows"]
