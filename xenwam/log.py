"""The one logging configuration for every xenwam and hip command.

``-v`` raises verbosity (INFO, then DEBUG), ``-q`` lowers it (ERROR only).  Logs go to
stderr so stdout stays clean for ``--json`` output.  ``XENWAM_LOG_JSON=1`` switches the
log lines themselves to one JSON object per line for collectors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def add_verbosity_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` and ``-q/--quiet`` to ``parser``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="say more: -v for progress details, -vv for every command run",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print errors only",
    )


def level_for(verbose: int, quiet: bool) -> int:
    """The logging level that ``-v`` x ``verbose`` or ``-q`` asks for."""
    if quiet:
        return logging.ERROR
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1:
        return logging.INFO
    return logging.WARNING


def configure(verbose: int = 0, quiet: bool = False) -> None:
    """Configure the root logger once, for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("XENWAM_LOG_JSON") == "1":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler.setLevel(level_for(verbose, quiet))
    root.addHandler(handler)
    root.setLevel(level_for(verbose, quiet))


#: The logger every external command run is reported to (:mod:`xenwam.runner`).
COMMANDS_LOGGER = "xenwam.runner"


@contextlib.contextmanager
def command_log(path: Path) -> Iterator[None]:
    """While inside, every command xenwam runs (locally or over ssh) is appended to
    ``path`` with its start, exit status and duration, whatever the verbosity: the
    record of where a migration's time went."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(message)s",
                                           "%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger(COMMANDS_LOGGER)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
