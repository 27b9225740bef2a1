"""What xenwam's command lines accept, refused at parse time in one line.

:class:`Parser` is the :class:`argparse.ArgumentParser` of every xenwam command: a usage
error is one line on stderr and exit status 2 (argparse's own prints the whole usage
first), and no value may hold a control or formatting character or run past
:data:`TEXT_MAX` characters.  The argument types below refuse bad values before any
handler runs, so a command that would need root or Xen to act refuses them first.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

#: Longest value any xenwam argument takes (Linux's PATH_MAX).
TEXT_MAX = 4096


def _quote(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error line: escaped, and cut if long."""
    shown = repr(text[:limit])
    return shown + (f"... ({len(text)} characters)" if len(text) > limit else "")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be an argument value, or None if it can."""
    if len(text) > TEXT_MAX:
        return f"is {len(text)} characters long; the limit is {TEXT_MAX}"
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return f"contains the control character U+{ord(ch):04X}"
    return None


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` on one line with where to look, and exit 2."""
        line = " ".join(message.split())
        if len(line) > 400:  # a huge value quoted by argparse itself (an invalid choice)
            line = f"{line[:200]} ... {line[-150:]}"
        self.exit(2, f"{self.prog}: error: {line} (see `{self.prog} --help`)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse as argparse does, then refuse unusable text in this parser's values."""
        ns, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            if action.nargs == argparse.REMAINDER or action.dest == argparse.SUPPRESS:
                continue  # a command line passed through to another program
            value = getattr(ns, action.dest, None)
            values = value if isinstance(value, list) else [value]
            for item in values:
                if isinstance(item, str) and (problem := text_problem(item)) is not None:
                    name = "/".join(action.option_strings) or action.metavar or action.dest
                    self.error(f"argument {name}: {_quote(item)} {problem}")
        return ns, extras


def text_type(name: str, check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type called ``name``: refuses unusable text, then returns ``check(text)``
    (which raises ``argparse.ArgumentTypeError`` to refuse)."""
    def convert(text: str) -> Any:
        problem = text_problem(text)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{_quote(text)} {problem}")
        return check(text)
    convert.__name__ = name
    return convert


def int_in(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An integer in ``[low, high]``."""
    def check(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{_quote(text)} is not a whole number{what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}-{high}{what}")
        return value
    return text_type("integer", check)


def number_in(low: float, high: float, *, low_open: bool = True,
              what: str = "") -> Callable[[str], float]:
    """A finite number in ``(low, high]`` (or ``[low, high]`` if not ``low_open``)."""
    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_quote(text)} is not a number{what}") from None
        inside = (low < value if low_open else low <= value) and value <= high
        if not math.isfinite(value) or not inside:
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(
                f"{_quote(text)} is outside {bracket}{low:g}, {high:g}]{what}")
        return value
    return text_type("number", check)


def _lstat(text: str) -> os.stat_result | None:
    if not text:
        raise argparse.ArgumentTypeError("an empty path names nothing; give a path")
    try:
        return os.stat(text)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{_quote(text)}: {exc.strerror}") from None


def _directory(text: str) -> str:
    st = _lstat(text)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise argparse.ArgumentTypeError(f"{_quote(text)} exists and is not a directory")
    return text


#: A directory that may not exist yet, but is not something else.
directory = text_type("directory", _directory)


def _device(text: str, write: bool) -> str:
    st = _lstat(text)
    if st is None:
        raise argparse.ArgumentTypeError(f"{_quote(text)} does not exist")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a file or block device"
        raise argparse.ArgumentTypeError(
            f"{_quote(text)} is {kind}; give a disk image or block device")
    if not os.access(text, os.R_OK | (os.W_OK if write else 0)):
        raise argparse.ArgumentTypeError(
            f"{_quote(text)} is not {'writable' if write else 'readable'} by this user")
    return text


#: An existing disk image or block device to read.
readable_device = text_type("device", lambda text: _device(text, write=False))
#: An existing disk image or block device to write.
writable_device = text_type("device", lambda text: _device(text, write=True))


def _file(text: str) -> str:
    st = _lstat(text)
    if st is None:
        raise argparse.ArgumentTypeError(f"{_quote(text)} does not exist")
    if not stat.S_ISREG(st.st_mode):
        raise argparse.ArgumentTypeError(f"{_quote(text)} is not a regular file")
    return text


#: An existing regular file.
regular_file = text_type("file", _file)


def _new_path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("an empty path names nothing; give a path")
    parent = os.path.dirname(text) or "."
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{_quote(parent)} is not an existing directory")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{_quote(text)} is a directory; name a file")
    return text


#: A file to create, in a directory that exists.
new_file = text_type("file", _new_path)


def matching(name: str, accept: Callable[[str], bool], hint: str) -> Callable[[str], str]:
    """A string that ``accept`` accepts; ``hint`` says what is accepted."""
    def check(text: str) -> str:
        if not accept(text):
            raise argparse.ArgumentTypeError(f"{_quote(text)} is not a valid {name}: {hint}")
        return text
    return text_type(name, check)


def print_usage_error(prog: str, message: str) -> int:
    """Say ``message`` as a usage error of ``prog`` on stderr; return exit status 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2
