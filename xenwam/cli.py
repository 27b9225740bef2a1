"""The ``xenwam`` command line.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; that
function adds an :class:`argparse.ArgumentParser` whose ``handler`` default takes the
parsed arguments and returns the process exit status.  Errors from the
:class:`~xenwam.errors.XenwamError` tree are printed as one clear line (or as JSON with
``--json``) and turned into their exit status; anything else is a bug and shows a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from xenwam import __version__
from xenwam.cliargs import Parser
from xenwam.errors import XenwamError
from xenwam.log import add_verbosity_flags, configure

log = logging.getLogger("xenwam")

#: Each top-level command and the module that registers it, in the order ``--help``
#: lists them.
COMMANDS = {
    "doctor": "xenwam.doctor",
    "migrate": "xenwam.migrate.cli",
    "site": "xenwam.site",
    "lab": "xenwam.lab.cli",
    "disk": "xenwam.drbd.cli",
    "hotplug": "xenwam.hotplug",
    "bench": "xenwam.bench",
}
SUBCOMMAND_MODULES = tuple(COMMANDS.values())

DESCRIPTION = """\
xenwam moves running Xen guests between hosts in different subnets or sites, with no
shared storage. The guest's disk follows it by DRBD replication, its memory moves with
`xl migrate` over xenwam's transport, and its connections survive because they are bound
to a HIP host identity rather than to its IP address.
"""

EPILOG = """\
Start with `xenwam doctor` to see what this host can do. Every command takes -v/-q, and
those that report take --json for scripts. Exit status: 0 success, 1 failure, 2 bad
usage or configuration (nothing was changed).
See docs/ in the source tree, or `xenwam COMMAND --help`.
"""


def command_named(argv: Sequence[str]) -> str | None:
    """The top-level command ``argv`` names (its first word that is not an option), if
    it is one of :data:`COMMANDS`."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every available subcommand registered, or with command ``only``
    alone.  Importing every module costs about 5 s of an emulated dom0's CPU under TCG
    (where the orchestrator calls xenwam on the destination dozens of times); importing
    the one a call names, half of that."""
    common = argparse.ArgumentParser(add_help=False)
    add_verbosity_flags(common)
    parser = Parser(
        prog="xenwam",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"xenwam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ([COMMANDS[only]] if only is not None else SUBCOMMAND_MODULES):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A subsystem not yet present in this tree: leave its command out.
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers, common)
    return parser


def _reader_gone() -> int:
    """The exit status once the reader of stdout has gone away.

    `xenwam disk status --json | head` closes the pipe early: stop quietly with the status
    of a process killed by SIGPIPE, and point stdout at /dev/null so that Python's own
    flush at exit does not fail a second time.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _flushed(status: int) -> int:
    """``status``, once stdout is flushed (or its reader found gone)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xenwam`` console script."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_named(words))
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # --help, --version or a usage error, already printed
        if _flushed(0):
            raise SystemExit(128 + signal.SIGPIPE) from None
        if exc.code in (0, None):
            raise
        return 2  # a usage error comes back as a status, as every other error does
    configure(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        print("xenwam: error: give a COMMAND (see `xenwam --help`)", file=sys.stderr)
        return _flushed(2)
    try:
        return _flushed(int(handler(args)))
    except BrokenPipeError:
        return _reader_gone()
    except XenwamError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        print(f"xenwam: error: {exc}", file=sys.stderr)
        return _flushed(exc.exit_status)
    except KeyboardInterrupt:
        print("xenwam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
