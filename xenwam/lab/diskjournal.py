"""A lab guest's write journal: numbered records its disk must never lose.

Typed into a lab guest's busybox shell, :data:`WRITER` writes record N (``xwj N TIME``,
512 bytes) to sector N of the guest's first disk, flushes it and only then prints
``xwj-ack xwj N TIME`` on the guest's console, which its Xen host logs under
:data:`CONSOLE_DIR`.  A record acknowledged on the console is therefore one the guest was
told is durable: after any migration, crash or abort it must be on the disk of the host
where the guest runs.  Used by the fault matrix (:mod:`xenwam.lab.faults`) and the
migration tests.
"""

from __future__ import annotations

import re
from typing import Protocol

from xenwam.runner import CommandResult

#: Where the lab's Xen hosts log their guests' consoles.
CONSOLE_DIR = "/var/log/xen/console"

#: The journal writer, for a guest's shell: one record every half second until
#: /tmp/stop exists, then ``xwj-stopped``.
WRITER = (
    "(n=0; while [ ! -e /tmp/stop ]; do n=$((n+1)); "
    "r=$(printf 'xwj %08d %s' $n $(date +%s)); "
    "printf '%-511s\\n' \"$r\" | dd of=/dev/xvda bs=512 seek=$n conv=notrunc 2>/dev/null "
    "&& sync && echo \"xwj-ack $r\"; sleep 0.5; done; echo xwj-stopped) "
    "> /dev/hvc0 2>&1 &"
)

ACK_RE = re.compile(r"xwj-ack (xwj \d{8} \d+)")


class Dom0s(Protocol):
    """What this module needs of a lab: a command in a host's dom0."""

    def exec(self, host: str, argv: list[str], *, timeout: float = ...,
             check: bool = ...) -> CommandResult: ...


def acked(lab: Dom0s, host: str, name: str) -> list[str]:
    """The records guest ``name`` acknowledged while it ran on ``host`` (its console log
    there), in order."""
    text = lab.exec(host, ["sh", "-c", f"cat {CONSOLE_DIR}/guest-{name}*.log 2>/dev/null "
                                       "|| true"], timeout=60).stdout
    return ACK_RE.findall(text)


def record_number(record: str) -> int:
    """N of ``xwj N TIME``."""
    return int(record.split()[1])


def on_disk(lab: Dom0s, host: str, device: str, last: int) -> list[str]:
    """Records 1..``last`` as ``device`` on ``host`` holds them (blank ones included)."""
    if last <= 0:
        return []
    # O_DIRECT: the guest writes through blkback, around dom0's page cache, so a buffered
    # read could return what an earlier read left cached there.
    out = lab.exec(host, ["dd", f"if={device}", "iflag=direct", "bs=512", "skip=1",
                          f"count={last}"], timeout=120).stdout
    return [line.rstrip() for line in out.splitlines()][:last]


def missing(lab: Dom0s, host: str, device: str, records: list[str]) -> list[str]:
    """Which of ``records`` (acknowledged) ``device`` on ``host`` does not hold."""
    if not records:
        return []
    disk = on_disk(lab, host, device, max(record_number(r) for r in records))
    return [r for r in records if len(disk) < record_number(r)
            or disk[record_number(r) - 1] != r]
