"""``hipctl``: look at and steer hipd, manage the host identity and the peers.

``keygen``, ``hit`` and ``peer`` work on files in the configuration directory (default
``/etc/hip``) and need no running hipd; ``show``, ``update-locators``, ``close`` and
``connect`` talk to hipd over its root-only Unix socket.  Every command takes ``--json``
for machine-readable output on stdout; messages go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from hip import keystore
from hip.daemon.control import DEFAULT_SOCKET, ControlRequest, call
from hip.errors import HIPError
from hip.hosts import (
    HostsFile,
    HostsFileError,
    PeerEntry,
    check_name,
    load_hosts,
    parse_hit,
    parse_locator,
    save_hosts,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: Longest one ``events`` request waits in hipd (within the control call's timeout);
#: hipctl asks again until its own timeout.
EVENT_POLL_WAIT = 5.0

#: How hipctl talks to hipd; tests of argument handling inject a recorder.
Caller = Callable[[ControlRequest, str], Any]


def _default_caller(request: ControlRequest, socket_path: str) -> Any:
    return call(request, socket_path)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of hipctl (exposed for tests and docs)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument("--config-dir", default=keystore.DEFAULT_CONFIG_DIR,
                        help="where the host key and hosts file live (default %(default)s)")
    common.add_argument("--socket", default=DEFAULT_SOCKET,
                        help="hipd control socket (default %(default)s)")
    parser = argparse.ArgumentParser(
        prog="hipctl", description="Control hipd, the HIP daemon.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("show", parents=[common],
                   help="associations, locators, SPIs and counters of the running hipd")
    keygen = sub.add_parser("keygen", parents=[common],
                            help="create the host identity (once; never overwritten)")
    keygen.add_argument("--algorithm", choices=keystore.ALGORITHMS, default="ecdsa-p256",
                        help="host identity algorithm (default %(default)s)")
    sub.add_parser("hit", parents=[common], help="print this host's HIT")

    peer = sub.add_parser("peer", parents=[common], help="list, add or delete peers")
    peer_sub = peer.add_subparsers(dest="peer_command", metavar="ACTION")
    peer_sub.add_parser("list", parents=[common], help="list peers (the default)")
    add = peer_sub.add_parser("add", parents=[common], help="add a peer")
    add.add_argument("name", help="a name for the peer, used instead of its HIT")
    add.add_argument("hit", help="the peer's HIT (2001:2x:...)")
    add.add_argument("locators", nargs="*", help="addresses to reach the peer at first")
    add.add_argument("--replace", action="store_true", help="replace an entry of that name/HIT")
    delete = peer_sub.add_parser("del", parents=[common], help="delete a peer")
    delete.add_argument("peer", help="name or HIT")

    upd = sub.add_parser("update-locators", parents=[common],
                         help="tell hipd our addresses changed (none given: re-read them)")
    upd.add_argument("locators", nargs="*", help="our locators, preferred first")
    close = sub.add_parser("close", parents=[common], help="close the association with a peer")
    close.add_argument("peer", help="name or HIT")
    rekey = sub.add_parser("rekey", parents=[common],
                           help="new ESP keys and SPIs with a peer (UPDATE with ESP_INFO)")
    rekey.add_argument("peer", help="name or HIT")
    connect = sub.add_parser("connect", parents=[common],
                             help="start a base exchange with a peer now")
    connect.add_argument("peer", help="name or HIT")
    connect.add_argument("locator", nargs="?", help="where to send I1 (default: hosts file)")
    events = sub.add_parser("events", parents=[common],
                            help="hipd's protocol events; --json prints one JSON object a line")
    events.add_argument("--follow", action="store_true", help="keep printing new events")
    events.add_argument("--peer", help="only events with this peer (name or HIT)")
    events.add_argument("--name", action="append", default=[], metavar="EVENT",
                        help="only events of this name (e.g. Rebound); may be repeated")
    events.add_argument("--after", type=int, default=0, metavar="ID",
                        help="only events after this id (default: all hipd kept)")
    events.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                        help="with --follow: stop after S seconds")
    wait = sub.add_parser("wait-rebound", parents=[common],
                          help="wait until a move is taken in by both ends (exit 1 on timeout)")
    wait.add_argument("--peer", help="only a rebinding with this peer (name or HIT)")
    wait.add_argument("--timeout", type=_seconds, default=30.0, metavar="S",
                      help="give up after S seconds (default %(default)s)")
    wait.add_argument("--after", type=int, default=None, metavar="ID",
                      help="also accept events after this id (default: only ones to come)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0-86400 seconds")
    return value


def _emit(out: TextIO, as_json: bool, doc: object, text: str) -> None:
    if as_json:
        json.dump(doc, out, indent=2, sort_keys=True, default=str)
        out.write("\n")
    else:
        out.write(text if text.endswith("\n") else text + "\n")


def _hosts_path(args: argparse.Namespace) -> Path:
    return Path(args.config_dir) / "hosts"


def _resolve_peer(args: argparse.Namespace, key: str) -> str:
    return str(load_hosts(_hosts_path(args)).resolve(key))


def render_show(state: dict[str, Any]) -> str:
    """Human-readable ``hipctl show`` from hipd's state document."""
    lines = [
        f"HIT {state.get('hit')}  data plane {state.get('data_plane')}  "
        f"locators {', '.join(state.get('locators', [])) or '(none)'}",
    ]
    for assoc in state.get("associations", []):
        lines.append(f"peer {assoc.get('peer_hit')} ({assoc.get('name') or 'unnamed'}): "
                     f"{assoc.get('state')}")
        for loc in assoc.get("peer_locators", []):
            lines.append(f"  peer locator {loc.get('address')} {loc.get('state')}"
                         + (" preferred" if loc.get("preferred") else ""))
        sa = assoc.get("sa")
        if sa:
            lines.append(f"  SPI in {sa.get('spi_in')} out {sa.get('spi_out')}  "
                         f"ESP transform {sa.get('esp_transform')}  "
                         f"{sa.get('own_locator')} -> {sa.get('peer_locator')}")
        esp = assoc.get("esp")
        if esp:
            sent = esp.get("sent", {})
            received = esp.get("received", [])
            lines.append(f"  ESP sent {sent.get('packets', 0)} packets, received "
                         f"{sum(r.get('packets', 0) for r in received)} packets")
            drops: dict[str, int] = {}
            for r in received:
                for reason, n in r.get("dropped", {}).items():
                    drops[reason] = drops.get(reason, 0) + n
            if drops:
                lines.append("  ESP dropped " + ", ".join(f"{k} {v}" for k, v in drops.items()))
        resent = state.get("esp_resent_after_move", {}).get(assoc.get("peer_hit"))
        if resent:
            lines.append(f"  ESP re-sent after moves: {resent} packets")
        queued = assoc.get("queued_packets")
        if queued:
            lines.append(f"  queued packets waiting for the base exchange: {queued}")
    dropped = state.get("dropped", {})
    if dropped:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    return "\n".join(lines)


def run(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    caller: Caller = _default_caller,
) -> int:
    """Run hipctl with ``argv``; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    try:
        return _dispatch(args, out, caller)
    except BrokenPipeError:
        # The reader went away (`hipctl show --json | head`): nothing more to tell it.
        return EXIT_FAILURE
    except HIPError as exc:
        if args.json:
            _emit(out, True, {"ok": False, "error": str(exc)}, "")
        err.write(f"hipctl: {exc}\n")
        return EXIT_USAGE if isinstance(exc, HostsFileError) else EXIT_FAILURE


def _dispatch(args: argparse.Namespace, out: TextIO, caller: Caller) -> int:
    command = args.command
    if command == "keygen":
        info = keystore.create_identity(args.config_dir, args.algorithm)
        _emit(out, args.json, info.as_dict(),
              f"created {info.algorithm} host identity in {info.path}\nHIT {info.hit}")
        return EXIT_OK
    if command == "hit":
        info = keystore.load_identity_info(args.config_dir)
        _emit(out, args.json, info.as_dict(), str(info.hit))
        return EXIT_OK
    if command == "peer":
        return _peer(args, out, caller)
    if command == "show":
        state = caller(ControlRequest("show"), args.socket)
        _emit(out, args.json, state, render_show(state))
        return EXIT_OK
    if command == "update-locators":
        locators = [str(parse_locator(text)) for text in args.locators]
        result = caller(ControlRequest("update-locators", {"locators": locators}), args.socket)
        _emit(out, args.json, result,
              f"locators now {', '.join(result.get('locators', []))}; UPDATE sent to "
              f"{result.get('peers_updated', 0)} peer(s)")
        return EXIT_OK
    if command in ("close", "connect", "rekey"):
        hit = _resolve_peer(args, args.peer)
        request_args: dict[str, Any] = {"peer": hit}
        if command == "connect" and args.locator:
            request_args["locator"] = str(parse_locator(args.locator))
        result = caller(ControlRequest(command, request_args), args.socket)
        _emit(out, args.json, result, f"{command}: {hit}: {result.get('state', 'requested')}")
        return EXIT_OK
    if command == "events":
        return _events(args, out, caller)
    if command == "wait-rebound":
        return _wait_rebound(args, out, caller)
    raise AssertionError(f"unhandled command {command!r}")  # argparse restricts choices


def render_event(record: dict[str, Any]) -> str:
    """One journaled event as a line for a person."""
    stamp = time.strftime("%H:%M:%S", time.localtime(float(record.get("time", 0))))
    rest = " ".join(f"{k}={v}" for k, v in record.items()
                    if k not in ("id", "time", "event", "our_hit", "peer_hit"))
    return (f"{record.get('id')} {stamp} {record.get('event')} peer {record.get('peer_hit')}"
            + (f" {rest}" if rest else ""))


def _print_event(out: TextIO, as_json: bool, record: dict[str, Any]) -> None:
    out.write((json.dumps(record, sort_keys=True) if as_json else render_event(record)) + "\n")
    out.flush()


def _events(args: argparse.Namespace, out: TextIO, caller: Caller) -> int:
    peer = _resolve_peer(args, args.peer) if args.peer else None
    after: int = args.after
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        wait = 0.0
        if args.follow:
            wait = EVENT_POLL_WAIT
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
        reply = caller(ControlRequest("events", {"after": after, "names": args.name,
                                                 "peer": peer, "wait": wait}), args.socket)
        if reply.get("lost"):
            sys.stderr.write(f"hipctl: {reply['lost']} older events were already forgotten\n")
        for record in reply.get("events", []):
            _print_event(out, args.json, record)
        after = int(reply.get("last", after))
        if not args.follow or (deadline is not None and time.monotonic() >= deadline):
            return EXIT_OK


def _wait_rebound(args: argparse.Namespace, out: TextIO, caller: Caller) -> int:
    peer = _resolve_peer(args, args.peer) if args.peer else None
    after: int | None = args.after
    deadline = time.monotonic() + args.timeout
    while True:
        wait = max(0.0, min(EVENT_POLL_WAIT, deadline - time.monotonic()))
        request: dict[str, Any] = {"names": ["Rebound"], "peer": peer, "wait": wait}
        if after is not None:
            request["after"] = after
        reply = caller(ControlRequest("events", request), args.socket)
        records = reply.get("events", [])
        if records:
            _print_event(out, args.json, records[0])
            return EXIT_OK
        after = int(reply.get("last", after or 0))
        if time.monotonic() >= deadline:
            raise HIPError(f"no rebinding{' with ' + peer if peer else ''} reported within "
                           f"{args.timeout:g} s (`hipctl events` shows what hipd saw)")


def _peer(args: argparse.Namespace, out: TextIO, caller: Caller) -> int:
    path = _hosts_path(args)
    hosts = load_hosts(path)
    action = args.peer_command or "list"
    if action == "list":
        _emit(out, args.json,
              [{"name": e.name, "hit": str(e.hit), "locators": [str(x) for x in e.locators]}
               for e in hosts.entries],
              "\n".join(e.line() for e in hosts.entries) or "(no peers)")
        return EXIT_OK
    if action == "add":
        entry = PeerEntry(
            check_name(args.name),
            parse_hit(args.hit),
            tuple(parse_locator(text) for text in args.locators),
        )
        hosts.add(entry, replace=args.replace)
        save_hosts(path, hosts)
        changed = {"added": entry.name, "hit": str(entry.hit)}
    else:
        entry = hosts.remove(args.peer)
        save_hosts(path, hosts)
        changed = {"deleted": entry.name, "hit": str(entry.hit)}
    _tell_daemon(args, caller)
    _emit(out, args.json, changed, f"{action} {entry.line()}")
    return EXIT_OK


def _tell_daemon(args: argparse.Namespace, caller: Caller) -> None:
    # A running hipd re-reads the hosts file; with no hipd the file is all there is.
    with contextlib.suppress(HIPError):
        caller(ControlRequest("reload-hosts"), args.socket)


def main() -> None:
    """Console entry point of ``hipctl``."""
    status = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Output is still pending for a reader that went away; the interpreter's own
        # flush at exit would fail again with a traceback: send it to /dev/null instead.
        status = EXIT_FAILURE
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(status)


__all__ = ["HostsFile", "build_parser", "main", "render_show", "run"]

if __name__ == "__main__":
    main()
