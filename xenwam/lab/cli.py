"""``xenwam lab ...``: build, start, use and stop the QEMU Xen lab."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xenwam.cliargs import directory, int_in, matching, new_file, number_in, text_type
from xenwam.errors import ConfigError, LabError
from xenwam.lab import config as cfg
from xenwam.lab.build import Artifacts, Builder, check_build_tools
from xenwam.lab.config import HOSTS, LabConfig, Layout, Shaping
from xenwam.lab.lab import Lab, MigrationReport, XenwamMigration
from xenwam.lab.qemu import HostFiles
from xenwam.lab.vagrant_box import ACCEL_ENV, BOX_NAME, BoxMaker, libvirt_qemu_user, probe_accel
from xenwam.lab.xl import TRANSPORTS, valid_guest_name
from xenwam.migrate.cli import format_mib as mib
from xenwam.migrate.cli import format_seconds as secs
from xenwam.migrate.phases import Phase

#: Longest wait a lab command accepts (a day), in seconds.
TIMEOUT_MAX = 24 * 3600.0
GUEST_NAME = matching("guest name", valid_guest_name,
                      "use 1-31 lower-case letters, digits or dashes, starting with a letter")


def _parsed_by(parse: Any, what: str) -> Any:
    """An argparse type that keeps the text once ``parse`` accepts it."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"give a {what}; see --help for examples")
        try:
            parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    return text_type(what, check)

HELP = """\
The lab: two real Xen 4.17 hosts (PV dom0) under QEMU TCG, site A and site B, joined by a
shaped WAN link, plus a correspondent in a network namespace. Needs root.
  xenwam lab demo                 build (cached), boot, create a guest, migrate it, report
  xenwam lab up --layout lan      boot the hosts (wan: routed subnets; lan: one segment)
  xenwam lab exec a -- xl list    run a command in a dom0
  xenwam lab down                 stop everything the lab started
Run directory: --run-dir or $XENWAM_LAB_RUN (default ~/.cache/xenwam/lab-run).
"""


def _progress(args: argparse.Namespace) -> Any:
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)

    def say(msg: str) -> None:
        if not quiet:
            print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return say


def _lab(args: argparse.Namespace) -> Lab:
    run_dir = Path(args.run_dir) if args.run_dir else cfg.default_run_dir()
    return Lab(run_dir=run_dir.resolve(), progress=_progress(args))


def _cache(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir) if args.cache_dir else cfg.default_cache_dir()


def _build(args: argparse.Namespace) -> Artifacts:
    check_build_tools()
    return Builder(_cache(args), progress=_progress(args)).build(
        force=getattr(args, "force", False))


def _config(args: argparse.Namespace, lab: Lab) -> LabConfig:
    return LabConfig(
        run_dir=lab.run_dir, layout=Layout(args.layout),
        shaping=Shaping.parse(args.rtt, args.rate, args.loss),
        ssh_port_base=args.port_base,
        source_dir=None if args.no_share else cfg.source_tree(),
    )


def _emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(text)


def cmd_build(args: argparse.Namespace) -> int:
    """Build (or find cached) the lab's images."""
    start = time.monotonic()
    arts = _build(args)
    _emit(args, {"artifacts": str(arts.directory),
                 "seconds": round(time.monotonic() - start, 1)}, str(arts.directory))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Boot the lab."""
    lab = _lab(args)
    config = _config(args, lab)  # refuses bad flags before anything is built or started
    arts = _build(args)
    state = lab.up(config, arts)
    _emit(args, asdict(state), f"lab up ({state.layout}) in {state.boot_seconds} s; "
          f"try `xenwam lab exec a -- xl list`")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the lab."""
    done = _lab(args).down()
    _emit(args, {"done": done}, "\n".join(done) or "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Report the lab."""
    doc = _lab(args).status()
    lines = [f"lab in {doc['run_dir']}: {doc['status']}"]
    for h in doc["hosts"]:
        names = ", ".join(f"{d['name']}({d['domid']})" for d in h["domains"])
        lines.append(f"  host {h['host']}: qemu pid {h['qemu_pid']}, "
                     f"{'reachable' if h['reachable'] else 'unreachable'}; domains: {names}")
    for g in doc.get("guests", []):
        lines.append(f"  guest {g['name']} on {g['host']} at {g['address']}")
    _emit(args, doc, "\n".join(lines))
    return 0 if doc["status"] in ("up", "down", "absent") else 1


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a command in a dom0, passing its output through."""
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise LabError("give the command to run after the host, e.g. "
                       "`xenwam lab exec a -- xl list`")
    res = _lab(args).exec(args.host, command, check=False, timeout=args.timeout)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.exit_status


def cmd_ssh(args: argparse.Namespace) -> int:
    """Interactive ssh into a dom0."""
    cfg.host_index(args.host)
    argv = _lab(args).ssh_argv(args.host, tty=True)
    os.execvp(argv[0], argv)
    return 1  # not reached


def cmd_console(args: argparse.Namespace) -> int:
    """Attach to a host's serial console (Xen and dom0); Ctrl-] ends."""
    cfg.host_index(args.host)
    sock = HostFiles.for_host(_lab(args).run_dir, args.host).serial_socket
    if not sock.exists():
        raise LabError(f"no console socket {sock}; is the lab up? (`xenwam lab status`)")
    print("connected to the console; Ctrl-] to leave", file=sys.stderr)
    argv = ["socat", "-,raw,echo=0,escape=0x1d", f"UNIX-CONNECT:{sock}"]
    os.execvp(argv[0], argv)
    return 1


def cmd_guest_create(args: argparse.Namespace) -> int:
    """Create a PVH guest on a host."""
    rec = _lab(args).create_guest(args.host, args.name, memory_mib=args.memory,
                                  python=args.python, xenwam_disk=args.xenwam_disk,
                                  hip=args.hip)
    _emit(args, asdict(rec), f"guest {rec.name} on host {rec.host} at {rec.address}"
          + (f", HIT {rec.hit}" if rec.hit else ""))
    return 0


def cmd_guest_exec(args: argparse.Namespace) -> int:
    """Run a shell command in a guest through its console."""
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise LabError("give the command after the guest name, e.g. "
                       "`xenwam lab guest exec g1 -- ip addr`")
    res = _lab(args).guest_exec(args.name, " ".join(command), timeout=args.timeout)
    _emit(args, asdict(res), res.output)
    return res.exit_status


def _report_text(rep: MigrationReport) -> str:
    gap = (f"{rep.longest_gap_seconds} s" if rep.longest_gap_seconds is not None
           else "never answered again")
    return "\n".join([
        f"stock xl migrate of {rep.domain}: host {rep.source} -> {rep.destination} "
        f"({rep.layout} layout, over {rep.transport})",
        f"  total time            {rep.total_seconds} s",
        "  guest paused          "
        + (f"{rep.paused_seconds} s (xl's suspend request to the destination's unpause)"
           if rep.paused_seconds is not None else "not measured"),
        f"  longest ping gap      {gap} (50 ms ping from the correspondent, "
        f"{rep.ping_replies} replies)",
        f"  answers at old address after: {'yes' if rep.answered_after else 'no'}",
        f"  running on {rep.destination}: {'yes' if rep.running_on_destination else 'NO'}; "
        f"counter {rep.ticks_before} before -> {rep.ticks_after} after",
    ])


def cmd_migrate_baseline(args: argparse.Namespace) -> int:
    """Stock xl migrate, measured."""
    rep = _lab(args).migrate_baseline(args.domain, args.to, transport=args.transport)
    _emit(args, asdict(rep), _report_text(rep))
    return 0 if rep.running_on_destination else 1


def _xenwam_report_text(rep: XenwamMigration) -> str:
    r = rep.report

    gap = (f"{rep.longest_gap_seconds} s" if rep.longest_gap_seconds is not None
           else "no reply after the move")
    lines = [
        f"xenwam migrate of {rep.domain}: host {rep.source} -> {rep.destination}: "
        f"{rep.outcome} (journal {rep.migration_id} in dom0 {rep.source})",
        f"  total time            {secs(r.get('total_seconds'))}",
        f"  guest paused          {secs(r.get('downtime_seconds'))} "
        f"(estimate {r.get('downtime_estimate_ms')} ms)",
        f"  disk: seeded          {mib(r.get('seed_data_bytes'))} of data as "
        f"{mib(r.get('seed_wire_bytes'))} on the wire; "
        f"resync {mib((r.get('resync_kib') or 0) * 1024)}",
        f"  disk: online verify   {r.get('verify_out_of_sync_kib')} KiB out of sync "
        f"({secs(r.get('verify_seconds'))})",
        f"  memory                {mib(r.get('memory_raw_bytes'))} sent as "
        f"{mib(r.get('memory_wire_bytes'))} (zstd transport)",
        "  phases                " + ", ".join(
            f"{p.value} {float(v):.0f} s" for p in Phase
            if (v := (r.get("phase_seconds") or {}).get(p.value)) is not None),
    ]
    if rep.client_silence_seconds is not None:
        lines.append(f"  client (50 ms ping)   silent {rep.client_silence_seconds} s: last "
                     f"reply from the old address to the first from {rep.new_address}")
    else:
        lines.append(f"  client (50 ms ping)   at the old address: longest gap {gap}, "
                     f"{rep.ping_replies} replies")
    agent = rep.agent_report or {}
    if agent:
        lines.append(f"  guest agent           {agent.get('status')}: the guest has "
                     f"{agent.get('address')} ({agent.get('took-ms')} ms to apply; "
                     f"{secs(r.get('agent_seconds'))} after unpause as dom0 saw it)")
    elif rep.renumber_seconds is not None:
        lines.append(f"  new site address      {rep.new_address}: "
                     f"{'answers' if rep.answered_at_new_address else 'SILENT'} "
                     f"{rep.renumber_seconds} s after the lab renumbered it through its "
                     "console (the guest runs no xenwam agent)")
    c = rep.connection
    if c is not None:
        kept = c.get("error") is None and c.get("lost") == 0 and c.get("out_of_order") == 0
        paused = r.get("downtime_seconds")
        after = (f"; {float(c['longest_gap_seconds']) - float(paused):.1f} s of it after "
                 "the unpause" if paused is not None else "")
        lines.append(
            f"  client's TCP over HIP {'KEPT' if kept else 'BROKEN'}: {c.get('echoed')} of "
            f"{c.get('sent')} records echoed, {c.get('lost')} lost, "
            f"{c.get('out_of_order')} out of order; longest gap "
            f"{c.get('longest_gap_seconds')} s{after}"
            + (f"; error: {c['error']}" if c.get("error") else ""))
    if rep.update_acked_seconds is not None or rep.first_record_seconds is not None:
        lines.append(f"  after the unpause     the correspondent's hipd rebound in "
                     f"{secs(rep.update_acked_seconds)}, the first record came back in "
                     f"{secs(rep.first_record_seconds)} (clocks aligned within "
                     f"{secs(rep.clock_error_seconds)})")
    if r.get("error"):
        lines.append(f"  error                 {r['error']}")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    """Build, boot, create a guest, migrate it (xenwam or stock xl), report, tear down."""
    lab = _lab(args)
    config = _config(args, lab)
    t0 = time.monotonic()
    arts = _build(args)
    build_s = time.monotonic() - t0
    renumbered: dict[str, Any] | None = None
    try:
        state = lab.up(config, arts)
        if args.method == "xenwam":
            lab.start_correspondent_hipd()
            guest = lab.create_guest("a", xenwam_disk=True, hip=True)
            xrep = lab.migrate_xenwam(guest.name)
            doc = {"build_seconds": round(build_s, 1), "boot_seconds": state.boot_seconds,
                   "migration": asdict(xrep)}
            text = (f"build {build_s:.0f} s (cached if short), boot {state.boot_seconds} s\n"
                    + _xenwam_report_text(xrep))
            conn = xrep.connection or {}
            ok = (xrep.outcome.startswith("done") and conn.get("error") is None
                  and conn.get("lost") == 0 and conn.get("out_of_order") == 0)
        else:
            guest = lab.create_guest("a")
            rep = lab.migrate_baseline(guest.name, transport=args.transport)
            if config.layout is Layout.WAN and rep.running_on_destination:
                # The guest needs an address of its new site.
                t0 = time.monotonic()
                address = lab.renumber_guest(guest.name)
                answered = False
                while time.monotonic() - t0 < 30 and not answered:
                    answered = lab.ping_from_correspondent(address)
                renumbered = {"address": address, "answered": answered,
                              "seconds": round(time.monotonic() - t0, 1)}
            doc = {"build_seconds": round(build_s, 1), "boot_seconds": state.boot_seconds,
                   "migration": asdict(rep), "renumbered": renumbered}
            text = (f"build {build_s:.0f} s (cached if short), boot {state.boot_seconds} s\n"
                    + _report_text(rep))
            if renumbered is not None:
                text += (f"\n  renumbered by hand to {renumbered['address']}: "
                         f"{'answers' if renumbered['answered'] else 'still silent'} after "
                         f"{renumbered['seconds']} s")
            ok = rep.running_on_destination
    finally:
        if not args.keep:
            lab.down()
    _emit(args, doc, text)
    return 0 if ok else 1


def cmd_vagrant_box(args: argparse.Namespace) -> int:
    """Pack the cached lab build as a vagrant-libvirt box (and add it to Vagrant)."""
    arts = _build(args)
    out = (Path(args.output) if args.output
           else _cache(args) / "vagrant" / f"{BOX_NAME}-{arts.directory.name}.box")
    maker = BoxMaker(progress=_progress(args))
    box = maker.make(arts, out, force=args.force)
    if args.add:
        maker.add(box, args.name)
    # What the box's Vagrantfile will choose on this host (the same probe, as the user
    # libvirt runs QEMU as).
    accel = probe_accel(qemu_user=libvirt_qemu_user())
    _emit(args, {"box": str(box.path), "build_key": box.build_key,
                 "seconds": box.seconds, "added_as": args.name if args.add else None,
                 "accel": accel.value},
          str(box.path) + (f" (added as {args.name})" if args.add else
                           f"\nadd it with `vagrant box add --force --name {args.name} "
                           f"{box.path}`") +
          f"\nmachines made from it on this host run under {accel.value.upper()} "
          f"(set {ACCEL_ENV}=kvm or tcg to choose)")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``xenwam lab`` and its subcommands."""
    lab = subparsers.add_parser("lab", parents=[common], help="the QEMU Xen lab",
                                description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--run-dir", type=directory,
                       help="lab run directory (default $XENWAM_LAB_RUN or "
                       "~/.cache/xenwam/lab-run)")
    where.add_argument("--cache-dir", type=directory,
                       help="build cache (default $XENWAM_LAB_CACHE or ~/.cache/xenwam/lab)")
    where.add_argument("--json", action="store_true", help="print JSON")
    boot = argparse.ArgumentParser(add_help=False)
    boot.add_argument("--layout", choices=[x.value for x in Layout], default="wan",
                      help="wan: sites on routed subnets (default); lan: one segment")
    boot.add_argument("--rtt", default="0ms", type=_parsed_by(cfg.parse_duration_ms, "duration"),
                      help="WAN round-trip time, e.g. 40ms")
    boot.add_argument("--rate", default="0", type=_parsed_by(cfg.parse_rate_kbit, "rate"),
                      help="WAN rate, e.g. 50mbit (0: unlimited)")
    boot.add_argument("--loss", default="0", type=_parsed_by(cfg.parse_loss_percent, "loss"),
                      help="WAN loss in percent, e.g. 0.5")
    boot.add_argument("--port-base", type=int_in(1024, 65000), default=2201,
                      help="ssh port of host a in the lab namespace (b: +1)")
    boot.add_argument("--no-share", action="store_true",
                      help="do not share the source tree into dom0 at /opt/xenwam")
    sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)
    parents = [common, where]

    p = sub.add_parser("build", parents=parents, help="build or reuse the cached images")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(handler=cmd_build)
    p = sub.add_parser("vagrant-box", parents=parents,
                       help="pack the cached build as a vagrant-libvirt box (vagrant/)")
    p.add_argument("--output", type=new_file,
                   help="box file (default CACHE/vagrant/xenwam-dom0-KEY.box)")
    p.add_argument("--force", action="store_true", help="repack even if up to date")
    p.add_argument("--add", action="store_true", help="then `vagrant box add --force` it")
    p.add_argument("--name", default=BOX_NAME, help="box name for --add",
                   type=matching("box name", lambda s: bool(re.fullmatch(r"[\w./-]{1,64}", s)),
                                 "letters, digits, dot, dash, underscore, slash"))
    p.set_defaults(handler=cmd_vagrant_box)
    p = sub.add_parser("up", parents=[*parents, boot], help="boot the two hosts")
    p.set_defaults(handler=cmd_up)
    p = sub.add_parser("down", parents=parents, help="stop everything the lab started")
    p.set_defaults(handler=cmd_down)
    p = sub.add_parser("status", parents=parents, help="hosts, domains, guests")
    p.set_defaults(handler=cmd_status)
    for name, handler, what in (("ssh", cmd_ssh, "an interactive shell in a dom0"),
                                ("console", cmd_console, "a host's serial console")):
        p = sub.add_parser(name, parents=parents, help=what)
        p.add_argument("host", choices=HOSTS)
        p.set_defaults(handler=handler)
    p = sub.add_parser("exec", parents=parents,
                       help="run a command in a dom0 (options before HOST)")
    p.add_argument("host", choices=HOSTS)
    p.add_argument("--timeout", type=number_in(0, TIMEOUT_MAX), default=600.0)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    p.set_defaults(handler=cmd_exec)
    # --run-dir belongs to `create`/`exec` only: given on `guest` as well, argparse
    # would let the subcommand's default overwrite it.
    p = sub.add_parser("guest", parents=[common], help="lab guests")
    gsub = p.add_subparsers(dest="guest_command", metavar="GUEST_COMMAND", required=True)
    g = gsub.add_parser("create", parents=parents, help="create a PVH guest on a host")
    g.add_argument("host", choices=HOSTS)
    g.add_argument("--name", type=GUEST_NAME, help="guest name (default gN)")
    g.add_argument("--memory", type=int_in(96, 65536),
                   help="MiB (default 128, 192 with --python, 224 with --hip)")
    g.add_argument("--python", action="store_true",
                   help="also carry python3, cryptography and the current hip package")
    g.add_argument("--hip", action="store_true",
                   help="run hipd (kernel ESP) peered with the correspondent's, the xenwam "
                        "guest agent and a records echo server (port 7001); implies --python")
    g.add_argument("--xenwam-disk", action="store_true",
                   help="its data disk is a xenwam DRBD resource (`xenwam disk adopt`), so "
                        "`xenwam migrate` can move it")
    g.set_defaults(handler=cmd_guest_create)
    g = gsub.add_parser("exec", parents=parents,
                        help="run a shell command in a guest via its console (text output)")
    g.add_argument("name", type=GUEST_NAME)
    g.add_argument("--timeout", type=number_in(0, TIMEOUT_MAX), default=60.0)
    g.add_argument("cmd", nargs=argparse.REMAINDER, help="-- SHELL COMMAND...")
    g.set_defaults(handler=cmd_guest_exec)
    p = sub.add_parser("migrate-baseline", parents=parents,
                       help="stock xl migrate of a guest, timed, with a 50 ms ping")
    p.add_argument("domain", type=GUEST_NAME)
    p.add_argument("--to", choices=HOSTS, help="destination (default: the other host)")
    p.add_argument("--transport", choices=TRANSPORTS, default="ssh",
                   help="ssh (xl's default) or socat (xl -s with a one-shot TCP listener "
                        "on the destination's link address)")
    p.set_defaults(handler=cmd_migrate_baseline)
    p = sub.add_parser("demo", parents=[*parents, boot],
                       help="build, boot, create a guest, migrate it, report, stop")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--method", choices=("xenwam", "stock"), default="xenwam",
                   help="xenwam migrate with the guest's disk (default), or stock xl "
                        "migrate of memory only, for comparison")
    p.add_argument("--transport", choices=TRANSPORTS, default="ssh",
                   help="with --method stock: how xl migrate carries the stream")
    # The demo shows a wide-area link unless told otherwise.
    p.set_defaults(handler=cmd_demo, rtt="40ms", rate="50mbit")
