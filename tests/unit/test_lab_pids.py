"""Process ownership checks the lab relies on before it signals anything."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from xenwam.lab.lab import _argv_of, _has_arg_pair, _pid_alive
from xenwam.runner import start_background

pytestmark = pytest.mark.unit


def test_an_exited_child_is_dead_not_a_zombie_that_answers_signals() -> None:
    proc = start_background(["sleep", "100"])
    assert _pid_alive(proc.pid)
    # Right after fork the child may not have exec'd yet (seen on a loaded machine).
    deadline = time.monotonic() + 5
    while _argv_of(proc.pid) != ["sleep", "100"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _argv_of(proc.pid) == ["sleep", "100"]
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(proc.pid)


def test_ownership_needs_the_exact_pidfile_argument() -> None:
    argv = ["qemu-system-x86_64", "-name", "x", "-pidfile", "/run/lab/a.pid"]
    assert _has_arg_pair(argv, "-pidfile", "/run/lab/a.pid")
    # A lab in /run/lab2 or a pidfile of the same prefix is someone else's QEMU.
    assert not _has_arg_pair(argv, "-pidfile", "/run/lab/a.pi")
    assert not _has_arg_pair(["qemu", "-pidfile", "/run/lab2/a.pid"], "-pidfile",
                             "/run/lab/a.pid")
    assert not _has_arg_pair(["qemu", "/run/lab/a.pid"], "-pidfile", "/run/lab/a.pid")


def test_a_pidfile_qemu_has_not_written_yet_is_not_an_exited_qemu(tmp_path: Path) -> None:
    from xenwam.lab.lab import Lab

    lab = Lab(tmp_path)
    pidfile = tmp_path / "a.pid"
    pidfile.write_text("")  # created, pid not yet written
    assert not lab._qemu_exited(pidfile)
    assert not lab._qemu_exited(tmp_path / "missing.pid")
    pidfile.write_text(f"{os.getpid()}\n")  # a pid that is not a QEMU of this lab
    assert lab._qemu_exited(pidfile)
