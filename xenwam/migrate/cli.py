"""``xenwam migrate``: the command an operator runs in place of ``xl migrate``."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from xenwam import site as sitecfg
from xenwam.cliargs import (
    directory,
    int_in,
    matching,
    new_file,
    number_in,
    regular_file,
    text_type,
)
from xenwam.drbd.resource import DEFAULT_CONFIG_DIR
from xenwam.errors import ConfigError, MigrationError, XenError, XenwamError
from xenwam.log import command_log
from xenwam.migrate import events as ev
from xenwam.migrate.orchestrator import (
    Migration,
    Options,
    hold_points_from_env,
    local_side,
    new_id,
    process_alive,
    remote_side,
)
from xenwam.migrate.phases import MigrationState, Phase
from xenwam.migrate.plan import Plan
from xenwam.xen import xl

#: In a migration's journal directory: every command it ran, with its duration.
COMMANDS_LOG = "commands.log"

DESCRIPTION = """\
Move the running guest DOMAIN from this dom0 to HOST, disk and memory, over a wide-area
link, while it keeps running. HOST is reached over ssh as root (as `xl migrate` does)
and needs xenwam installed and a site file.

The phases: plan (check both hosts; refuse before changing anything), prepare (an empty
copy of each disk on HOST), seed (the disks' non-zero blocks, compressed), catch-up (DRBD
resyncs by checksum while the guest keeps writing), handover (synchronous replication,
two primaries, online verify), memory (`xl migrate -p` over xenwam's zstd transport; the
guest arrives paused), rebind (its new network written to its xenstore, then unpaused),
finalize (back to asynchronous replication; this host keeps a copy for the trip back,
unless --forget).

A trip back to a host that kept a copy skips prepare and seed: catch-up sends only the
blocks written since the copies were last in sync, also after the two hosts were cut
apart or one was off.  If both copies were written while apart (split brain), the
migration is refused with what to do; xenwam never drops writes to resolve it.

Every phase is journaled in /var/lib/xenwam/migrations/ID/ before the next action.  A
failure before the memory has moved leaves the guest running here with its disk as
before; after it, the migration is completed on HOST.
"""

EPILOG = """\
examples:
  xenwam migrate --dry-run web1 site-b.example   # the plan, nothing changed
  xenwam migrate web1 site-b.example --ip 10.2.0.10/24
  xenwam migrate --json web1 site-b.example | jq .event
  xenwam migrate --status                        # every migration on this host
  xenwam migrate --recover 20261201T081500-web1-1a2b
  xenwam migrate --plot 20261201T081500-web1-1a2b  # its timeline, as a PNG

exit status: 0 migrated, 1 failed (see the journal), 2 refused before anything changed.

environment:
  XENWAM_STATE_DIR  where journals go (default /var/lib/xenwam; migrations/ID below it)
  XENWAM_HOLD_AT    for fault testing only: hold the migration at POINT[,POINT]
                    (before-unpause, after-unpause, finalize) until the file
                    hold-POINT in its journal directory is removed; see docs/reliability.md
The guest's disks must be xenwam resources: see `xenwam disk adopt --help` and
docs/migrate.md.
"""


#: The longest paused time --max-downtime accepts (an hour), in milliseconds.
DOWNTIME_MAX_MS = 3600 * 1000.0
#: The longest --converge-after (a day), in seconds.
CONVERGE_MAX = 24 * 3600.0
#: A migration id as :func:`~xenwam.migrate.orchestrator.new_id` makes it: it names a
#: directory under the state directory, so nothing else (no '/', no '..') is taken.
_ID_RE = re.compile(r"[0-9]{8}T[0-9]{6}-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}-[0-9a-f]{4}")
_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def _is_domain(text: str) -> bool:
    try:
        xl.check_domain(text)
    except XenError:
        return False
    return True


def _is_host(text: str) -> bool:
    if _HOSTNAME_RE.fullmatch(text):
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address(text: str) -> str:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not ADDRESS/PREFIX, e.g. 10.2.0.10/24") from None
    if "/" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: give the prefix too, e.g. {text}/24")
    return text


def _is_command(text: str) -> bool:
    try:
        words = shlex.split(text)
    except ValueError:
        return False
    return bool(words) and not words[0].startswith("-")


domain_arg = matching("domain", _is_domain, "a guest's name or domid: letters, digits, '.', "
                                            "'_' or '-', starting with a letter or digit")
host_arg = matching("host", _is_host, "a dom0's host name or IP address")
migration_id_arg = matching("migration id", lambda text: _ID_RE.fullmatch(text) is not None,
                            "e.g. 20261201T081500-web1-1a2b; `xenwam migrate --status` "
                            "lists them")
address_arg = text_type("address", _address)
command_arg = matching("command", _is_command, "a command line such as 'xenwam' or "
                                               "'python3 -m xenwam'")


def _options(args: argparse.Namespace) -> Options:
    """The orchestrator's options; every value was checked when it was parsed."""
    return Options(domain=args.domain, destination=args.destination,
                   config_path=args.config,
                   debug=args.debug, no_daemon=args.e, paused=args.p, address=args.ip,
                   max_downtime_ms=args.max_downtime, verify=not args.no_verify,
                   converge_after=args.converge_after, transport_level=args.transport_level,
                   agent_timeout=args.agent_timeout, forget=args.forget,
                   rebind_priority=not args.no_rebind_priority,
                   sync_timeout=args.sync_timeout,
                   hold_at=hold_points_from_env(os.environ.get("XENWAM_HOLD_AT")))


def _display(args: argparse.Namespace) -> ev.Display:
    return ev.Display(json_output=args.json, quiet=args.quiet)


def _print_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.json:
        return  # the Finished event carried it
    rows = [
        ("outcome", report.get("outcome")),
        ("total", format_seconds(report.get("total_seconds"))),
        ("downtime (suspended to unpaused)", format_seconds(report.get("downtime_seconds"))),
        ("downtime estimate", f"{report.get('downtime_estimate_ms')} ms"),
        ("seed: data / on the wire", f"{format_mib(report.get('seed_data_bytes'))} / "
                                     f"{format_mib(report.get('seed_wire_bytes'))}"),
        ("resync sent", format_mib((report.get("resync_kib") or 0) * 1024)),
        ("memory: raw / on the wire", f"{format_mib(report.get('memory_raw_bytes'))} / "
                                      f"{format_mib(report.get('memory_wire_bytes'))}"),
        ("writes slowed to the link", format_seconds(report.get("throttled_seconds"))),
        ("online verify: out of sync", f"{report.get('verify_out_of_sync_kib')} KiB in "
                                       f"{format_seconds(report.get('verify_seconds'))}"
                                       + (f" ({report['verify_repaired_kib']} KiB found "
                                          "and resynced before)"
                                          if report.get("verify_repaired_kib") else "")),
        ("new address", report.get("new_address") or "(site DHCP)"),
    ]
    for phase, seconds in (report.get("phase_seconds") or {}).items():
        rows.append((f"  phase {phase}", format_seconds(seconds)))
    if report.get("error"):
        rows.append(("error", report["error"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def format_seconds(v: Any) -> str:
    """A report's seconds for people (``-`` when not measured)."""
    return "-" if v is None else f"{float(v):.1f} s"


def format_mib(v: Any) -> str:
    """A report's byte count in MiB for people (``-`` when not measured)."""
    return "-" if v is None else f"{int(v) / 1048576:.1f} MiB"


def _base(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else ev.STATE_DIR


def _migrate(args: argparse.Namespace) -> int:
    if not args.domain or not args.destination:
        raise ConfigError("give DOMAIN and HOST (or --status / --abort ID / --recover ID)")
    options = _options(args)
    site = sitecfg.load(Path(args.site) if args.site else None)
    if args.dry_run:
        display = _display(args)
        bus = ev.EventBus(None, display)
        migration = Migration(options, bus=bus, journal=None,
                              destination=remote_side(args.destination,
                                                      xenwam_command=args.remote_xenwam),
                              config_dir=Path(args.config_dir), site=site,
                              history_dir=_base(args))
        try:
            plan = migration.make_plan()
        finally:
            display.close()
        doc = plan.to_json()
        print(json.dumps(doc, indent=None if args.json else 2))
        return 0
    if os.geteuid() != 0:
        raise ConfigError("xenwam migrate changes DRBD and Xen state: run it as root")
    migration_id = new_id(options.domain)
    journal = ev.Journal.create(migration_id, _base(args))
    display = _display(args)
    bus = ev.EventBus(journal, display)
    bus.emit(ev.MigrationStarted(time.time(), migration_id, options.domain, "localhost",
                                 options.destination, os.getpid()))
    migration = Migration(options, bus=bus, journal=journal,
                          destination=remote_side(args.destination,
                                                  xenwam_command=args.remote_xenwam),
                          config_dir=Path(args.config_dir), site=site)
    try:
        with command_log(journal.directory / COMMANDS_LOG):
            report = migration.run()
    finally:
        display.close()
    _print_report(args, report.__dict__)
    if not args.json:
        print(f"journal: {journal.directory}", file=sys.stderr)
    return 0 if report.outcome.startswith("done") else 1


def _status(args: argparse.Namespace) -> int:
    base = _base(args)
    ids = [args.status] if isinstance(args.status, str) else sorted(
        p.name for p in base.glob("*") if (p / "journal").is_file()) if base.is_dir() else []
    rows = []
    for mid in ids:
        s = ev.summarize(ev.Journal.open(mid, base))
        running = s.outcome is None and process_alive(s.pid)
        rows.append({"id": s.id, "domain": s.domain, "destination": s.destination,
                     "phase": s.phase, "outcome": s.outcome or
                     ("running" if running else "interrupted: run --recover"),
                     "started": s.started})
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no migrations recorded in {base}")
    else:
        for r in rows:
            print(f"{r['id']}  {r['domain']} -> {r['destination']}  phase {r['phase']}  "
                  f"{r['outcome']}")
    return 0


def ended_for_good(outcome: str | None) -> bool:
    """Whether ``--recover`` has nothing left to do for a migration that ended with
    ``outcome``: a second ``--recover`` changes nothing.  Not so for one whose own cleanup
    failed ("failed: ... run --recover"), which is looked at again, nor for one refused
    at its plan (nothing was changed; recovering says so)."""
    return outcome is not None and outcome != "refused" and not outcome.startswith("failed")


def _recover(args: argparse.Namespace, *, abort: bool) -> int:
    mid = args.recover or args.abort
    journal = ev.Journal.open(mid, _base(args))
    summary = ev.summarize(journal)
    if summary.outcome is None and process_alive(summary.pid):
        if abort:
            os.kill(summary.pid, signal.SIGTERM)
            print(f"asked the running migration (pid {summary.pid}) to abort; "
                  f"`xenwam migrate --status {mid}` follows it")
            return 0
        raise ConfigError(f"migration {mid} is still running (pid {summary.pid}): "
                          "use --abort to stop it")
    if ended_for_good(summary.outcome):
        print(f"migration {mid} already ended: {summary.outcome}")
        return 0
    try:
        plan = Plan.from_json(journal.read_json("plan.json"), journal.read_json("originals.json"))
    except FileNotFoundError:
        print(f"migration {mid} never got past its plan: nothing to recover")
        return 0
    display = _display(args)
    bus = ev.EventBus(journal, display)
    migration = Migration(Options(domain=plan.domain, destination=plan.destination),
                          bus=bus, journal=journal, source=local_side(),
                          destination=remote_side(plan.destination,
                                                  xenwam_command=args.remote_xenwam),
                          config_dir=Path(args.config_dir),
                          site=sitecfg.load(Path(args.site) if args.site else None))
    migration.plan = plan
    migration.state = MigrationState(phase=Phase(summary.phase))
    migration._phase_start = time.time()
    try:
        with command_log(journal.directory / COMMANDS_LOG):
            migration.reattach_local()  # this host may have been rebooted since
            migration.recover_after_failure()
    except XenwamError as exc:
        # Not ended: say so, and let a later --recover look again (ended_for_good).
        migration.report.outcome = "failed: run --recover again once the cause is fixed"
        migration.report.error = str(exc)
        bus.emit(ev.Failed(time.time(), migration.state.phase.value, str(exc)))
        raise
    finally:
        migration.report.total_seconds = 0.0
        journal.write_json("report.json", migration.report.__dict__)
        bus.emit(ev.Finished(time.time(), migration.report.outcome,
                             dict(migration.report.__dict__)))
        display.close()
    if not args.json:
        print(f"migration {mid}: {migration.report.outcome}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from xenwam.migrate import timeline

    base = _base(args)
    directory = base / args.plot
    if not (directory / "journal").is_file():
        raise ConfigError(f"no migration {args.plot!r} in {base}; `xenwam migrate --status` "
                          "lists them")
    try:
        line = timeline.load(directory, Path(args.client) if args.client else None)
    except ConfigError as exc:
        raise ConfigError(f"migration {args.plot}: {exc}") from exc
    output = Path(args.output) if args.output else directory / timeline.DEFAULT_NAME
    timeline.plot(line, output)
    if args.json:
        print(json.dumps({"id": args.plot, "output": str(output)}))
    else:
        print(f"timeline of {args.plot}: {output}")
    return 0


def _handler(args: argparse.Namespace) -> int:
    # --status, --recover, --abort and --plot are a mutually exclusive group: at most one
    # is set.
    if (args.output or args.client) and not args.plot:
        raise ConfigError("--output and --client go with --plot ID")
    if args.plot:
        return _plot(args)
    if args.status is not None:
        return _status(args)
    if args.recover:
        return _recover(args, abort=False)
    if args.abort:
        return _recover(args, abort=True)
    return _migrate(args)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``xenwam migrate``."""
    p = subparsers.add_parser(
        "migrate", parents=[common], help="move a running guest with its disk to another site",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("domain", nargs="?", type=domain_arg,
                   help="the running guest (name or domid)")
    p.add_argument("destination", nargs="?", type=host_arg, metavar="HOST",
                   help="destination dom0, reached over ssh as root")
    p.add_argument("-C", dest="config", metavar="CONFIG", type=regular_file,
                   help="send this xl config instead of the guest's own (as xl migrate -C)")
    p.add_argument("-e", action="store_true",
                   help="do not wait in the background on the destination (as xl -e)")
    p.add_argument("-p", action="store_true",
                   help="leave the guest paused on the destination (as xl -p)")
    p.add_argument("--debug", action="store_true", help="xl's --debug on the memory stream")
    p.add_argument("--dry-run", action="store_true",
                   help="check both hosts and print the plan; change nothing")
    p.add_argument("--json", action="store_true",
                   help="newline-delimited JSON events on stdout (progress included)")
    p.add_argument("--ip", metavar="ADDRESS/PREFIX", type=address_arg,
                   help="the guest's address on the destination site (default: the "
                        "destination site's rule applied to the vif's ip=)")
    p.add_argument("--max-downtime", type=number_in(0, DOWNTIME_MAX_MS, what=" ms"),
                   metavar="MS",
                   help="refuse, before anything changes, if the expected paused time "
                        "exceeds MS (the estimate is explained in docs/migrate.md)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip DRBD's online verify of the two copies before the handover")
    p.add_argument("--converge-after", type=number_in(0, CONVERGE_MAX, what=" seconds"),
                   default=60.0, metavar="S",
                   help="slow the guest's writes to the link's pace when the resync made "
                        "no progress for S seconds (default: %(default)s)")
    p.add_argument("--sync-timeout", type=number_in(1, CONVERGE_MAX, what=" seconds"),
                   default=3600.0, metavar="S",
                   help="give up (the guest stays here, unchanged) if the disks have not "
                        "converged S seconds into the catch-up (default: %(default)s)")
    p.add_argument("--transport-level", type=int_in(0, 19), default=1, metavar="N",
                   help="zstd level of the memory stream, 1-19, or 0 to send it "
                        "uncompressed (default: %(default)s)")
    p.add_argument("--agent-timeout", type=number_in(0, 3600, what=" seconds"), default=20.0,
                   metavar="S",
                   help="after unpausing, wait up to S seconds for the guest agent to "
                        "report its new address (default: %(default)s; a guest without "
                        "the agent is not waited for)")
    p.add_argument("--no-rebind-priority", action="store_true",
                   help="leave the guest's scheduler weight alone (default: from the "
                        "unpause until finalize is done the guest has dom0's weight, so "
                        "that re-binding its network comes before xenwam's own work in "
                        "dom0; its weight is given back at the end)")
    p.add_argument("--forget", action="store_true",
                   help="remove this host's copy of the disks once the guest runs on HOST "
                        "(default: keep it as HOST's peer, kept nearly current, so that "
                        "the trip back sends only what changed)")
    p.add_argument("--site", type=regular_file,
                   help="this host's site file (default: $XENWAM_SITE or "
                        "/etc/xenwam/site.toml)")
    p.add_argument("--config-dir", default=str(DEFAULT_CONFIG_DIR), type=directory,
                   help="DRBD resource files (default: %(default)s)")
    p.add_argument("--remote-xenwam", default="xenwam", metavar="CMD", type=command_arg,
                   help="how to run xenwam on HOST (default: %(default)s)")
    p.add_argument("--state-dir", type=directory,
                   help=f"where journals are kept (default: {ev.STATE_DIR})")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--status", nargs="?", const=True, metavar="ID", type=migration_id_arg,
                       help="show the recorded migrations (or one)")
    which.add_argument("--abort", metavar="ID", type=migration_id_arg,
                       help="stop a running migration (it aborts), or clean up a dead one")
    which.add_argument("--recover", metavar="ID", type=migration_id_arg,
                       help="after the orchestrator died: look at both hosts and abort or "
                            "finish the migration; running it twice is harmless")
    which.add_argument("--plot", metavar="ID", type=migration_id_arg,
                       help="draw the timeline of finished migration ID as a PNG (phases, "
                            "bytes per second per stream, the guest's pause)")
    p.add_argument("--output", metavar="FILE", type=new_file,
                   help="with --plot: where to write the PNG (default: timeline.png in the "
                        "migration's journal directory)")
    p.add_argument("--client", metavar="FILE", type=regular_file,
                   help="with --plot: a JSON of client-side figures whose 'gaps' "
                        "([start, end] wall-clock pairs) are drawn as the client's gaps")
    p.set_defaults(handler=_handler)


__all__ = ["MigrationError", "register"]
