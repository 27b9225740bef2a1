"""DRBD resources between the two lab dom0s, and the storage measurements made on them.

Used by ``tests/lab/test_drbd*.py`` and by the storage benchmark.  Backing disks are loop
devices over sparse files in dom0 (``/var/lib/xenwam-lab/drbd``); xenwam runs in dom0 from
the source tree the lab shares at ``/opt/xenwam``.  Bytes on the wire are read from the
link NIC's counters in dom0, so they include every header and retransmission.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from xenwam.drbd import cmdgen
from xenwam.errors import DrbdError
from xenwam.runner import CommandResult

HOSTS = ("a", "b")
#: The dom0s' addresses on the lab's link (xenwam.lab.config.link_address).
LINK = {"a": "10.0.0.1", "b": "10.0.0.2"}
WORK = "/var/lib/xenwam-lab/drbd"
XENWAM = ("env", "PYTHONPATH=/opt/xenwam", "python3", "-m", "xenwam.cli")
MIB = 1024 * 1024


class LabExec(Protocol):
    """What this module needs of a lab: running a command in a dom0."""

    def exec(self, host: str, argv: Sequence[str], *, timeout: float = ...,
             check: bool = ..., input: str | None = ...) -> CommandResult: ...


def sh(lab: LabExec, host: str, script: str, timeout: float = 120.0,
       check: bool = True) -> str:
    """Run a shell snippet in ``host``'s dom0; return its stdout."""
    return lab.exec(host, ["sh", "-ec", script], timeout=timeout, check=check).stdout


def xw(lab: LabExec, host: str, *args: str, timeout: float = 120.0) -> str:
    """Run ``xenwam ARGS`` in ``host``'s dom0; return its stdout."""
    return lab.exec(host, [*XENWAM, *args], timeout=timeout).stdout


def link_bytes(lab: LabExec, host: str) -> int:
    """Bytes sent plus received so far on the NIC ``host`` reaches its peer through."""
    peer = LINK["b" if host == "a" else "a"]
    stats = "/sys/class/net/$dev/statistics"
    out = sh(lab, host, f"dev=$(ip -o route get {peer} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p'); "
                        f"cat {stats}/tx_bytes {stats}/rx_bytes")
    tx, rx = (int(v) for v in out.split())
    return tx + rx


def status_json(lab: LabExec, host: str, name: str) -> dict[str, Any]:
    """``xenwam disk status --json NAME`` on ``host``: the resource's entry."""
    doc = json.loads(xw(lab, host, "disk", "status", "--json", name))
    return dict(doc["resources"][0])


@dataclass
class Pair:
    """A resource defined on both hosts, with its loop devices."""

    name: str
    minor: int
    size: int
    port: int
    loops: dict[str, tuple[str, str]]

    def image(self, host: str) -> str:
        """The sparse backing file on ``host``."""
        return image_path(self.name, host)

    @property
    def device(self) -> str:
        """The DRBD device."""
        return f"/dev/drbd{self.minor}"


def image_path(name: str, host: str) -> str:
    """Where the backing file of resource ``name`` lives on ``host``."""
    return f"{WORK}/{name}-{host}.img"


def create_images(lab: LabExec, name: str, size: int) -> None:
    """Fresh sparse backing and metadata files on both hosts."""
    for h in HOSTS:
        sh(lab, h, f"{shlex.join(cmdgen.load_module())}; mkdir -p {WORK}; "
                   f"rm -f {WORK}/{name}-{h}.*; truncate -s {size} {image_path(name, h)}; "
                   f"truncate -s {16 * MIB} {WORK}/{name}-{h}.md")


def define_pair(lab: LabExec, name: str, minor: int, size: int, port: int,
                rtt_ms: float = 20.0, csums_alg: str | None = None) -> Pair:
    """Loop devices over the images and ``xenwam disk define --check`` on both hosts."""
    hostnames = {h: sh(lab, h, "uname -n").strip() for h in HOSTS}
    loops = {}
    for h in HOSTS:
        out = sh(lab, h, f"losetup -f --show {image_path(name, h)}; "
                         f"losetup -f --show {WORK}/{name}-{h}.md").split()
        loops[h] = (out[0], out[1])
    secret = sh(lab, "a", "head -c 30 /dev/urandom | base64 | tr -d '/+=\\n'")[:40]
    for h in HOSTS:
        lab.exec(h, ["sh", "-c", f"umask 077; cat > {WORK}/{name}.secret"], input=secret)
        args = ["disk", "define", name, "--minor", str(minor), "--check",
                "--secret-file", f"{WORK}/{name}.secret", "--rtt-ms", f"{rtt_ms:g}"]
        if csums_alg:
            args += ["--csums-alg", csums_alg]
        for peer in HOSTS:
            disk, meta = loops[peer]
            args += ["--host", f"{hostnames[peer]},{LINK[peer]}:{port},{disk},{meta}"]
        xw(lab, h, *args)
    return Pair(name=name, minor=minor, size=size, port=port, loops=loops)


def destroy_pair(lab: LabExec, pair: Pair) -> None:
    """Tear down on both hosts; best effort, so a failed test still cleans up."""
    for h in HOSTS:
        sh(lab, h, f"drbdadm down {pair.name} 2>/dev/null || true; "
                   f"losetup -d {pair.loops[h][0]} {pair.loops[h][1]} 2>/dev/null || true; "
                   f"rm -f /etc/drbd.d/xenwam-{pair.name}.res {WORK}/{pair.name}-{h}.* "
                   f"{WORK}/{pair.name}.secret", check=False)


def bring_up(lab: LabExec, pair: Pair) -> None:
    """Metadata, up, and connected on both hosts."""
    for h in HOSTS:
        xw(lab, h, "disk", "create-md", pair.name)
        xw(lab, h, "disk", "up", pair.name)
    for h in HOSTS:
        # The ssh timeout outlasts xenwam's own, so its DrbdError (with the state) arrives.
        xw(lab, h, "disk", "wait-connected", pair.name, "--timeout", "120", timeout=180)


def write_guest_like_data(lab: LabExec, path: str, size: int = 1024 * MIB) -> int:
    """Fill a mostly empty disk of ``size`` bytes as a guest would: a filesystem-like
    head, files and a text journal (compressible); return how many bytes were written.

    The files sit at 300/1024 and the journal at 900/1024 of the disk (300 MiB and
    900 MiB on the 1 GiB disk the tests and docs use)."""
    if size < 64 * MIB:
        raise DrbdError(f"a guest-like disk needs at least 64 MiB, not {size // MIB} MiB")
    files_mib = size * 300 // 1024 // MIB
    journal_mib = size * 900 // 1024 // MIB
    sh(lab, "a", f"dd if=/dev/urandom of={path} bs=1M count=4 conv=notrunc 2>/dev/null; "
                 f"dd if=/dev/urandom of={path} bs=1M count=8 seek={files_mib} conv=notrunc "
                 f"2>/dev/null; yes journal-entry | head -c {2 * MIB} | "
                 f"dd of={path} bs=1M seek={journal_mib} conv=notrunc 2>/dev/null; sync")
    return 14 * MIB


@dataclass(frozen=True)
class SeedResult:
    """One out-of-band seeding, as both ends and the link saw it."""

    wire_bytes: int
    seconds: float
    send: dict[str, Any]
    receive: dict[str, Any]


def seed(lab: LabExec, name: str, port: int = 7899, timeout: float = 900.0) -> SeedResult:
    """Stream resource ``name``'s image from a to b with ``disk seed-send | socat``."""
    image_a, image_b = image_path(name, "a"), image_path(name, "b")
    out = f"{WORK}/{name}.seed"
    xenwam = shlex.join(XENWAM)
    sh(lab, "b", f"rm -f {out}.json {out}.err; (socat -u TCP-LISTEN:{port},reuseaddr STDOUT | "
                 f"{xenwam} disk seed-receive --zeroed {image_b} > {out}.json "
                 f"2> {out}.err) > /dev/null 2>&1 &")
    # Wait until the listener is there rather than racing it.
    deadline = time.monotonic() + 60
    while f":{port} " not in sh(lab, "b", "ss -ltn"):
        if time.monotonic() > deadline:
            raise DrbdError(f"seed listener on b port {port} did not start")
        time.sleep(0.5)
    before = link_bytes(lab, "a")
    start = time.monotonic()
    sent = sh(lab, "a", f"{xenwam} disk seed-send {image_a} 2>{out}.send | "
                        f"socat -u STDIN TCP:{LINK['b']}:{port}; cat {out}.send",
              timeout=timeout)
    while not sh(lab, "b", f"cat {out}.json 2>/dev/null || true").strip():
        if time.monotonic() - start > timeout:
            raise DrbdError("seed-receive did not finish: "
                            + sh(lab, "b", f"cat {out}.err", check=False))
        time.sleep(0.5)
    seconds = time.monotonic() - start
    wire = link_bytes(lab, "a") - before
    return SeedResult(wire_bytes=wire, seconds=seconds,
                      send=json.loads(sent.strip().splitlines()[-1]),
                      receive=json.loads(sh(lab, "b", f"cat {out}.json")))


@dataclass(frozen=True)
class SyncResult:
    """One DRBD (re)sync, measured on the link."""

    wire_bytes: int
    seconds: float


def measure(lab: LabExec, action: Callable[[], None]) -> SyncResult:
    """Run ``action`` and return the link bytes and time it took."""
    before = link_bytes(lab, "a")
    start = time.monotonic()
    action()
    return SyncResult(wire_bytes=link_bytes(lab, "a") - before,
                      seconds=time.monotonic() - start)


def full_sync(lab: LabExec, pair: Pair, timeout: float = 1800.0) -> SyncResult:
    """DRBD's own initial sync: a forced Primary and every block sent to the peer."""
    def run() -> None:
        xw(lab, "a", "disk", "promote", "--force", pair.name)
        xw(lab, "a", "disk", "wait-sync", pair.name, "--timeout", f"{timeout:g}",
           "--interval", "2", timeout=timeout + 60)
    return measure(lab, run)


def resync_after_disconnect(lab: LabExec, pair: Pair, write_bytes: int) -> SyncResult:
    """Disconnect, write ``write_bytes`` on a (Primary), reconnect and wait for the resync;
    the result counts only the reconnect and resync."""
    xw(lab, "a", "disk", "disconnect", pair.name)
    # At 600/1024 of the disk (600 MiB on the 1 GiB test disk), clear of the seeded data.
    seek_mib = pair.size * 600 // 1024 // MIB
    if seek_mib * MIB + write_bytes > pair.size:
        raise DrbdError(f"cannot write {write_bytes // MIB} MiB at {seek_mib} MiB of a "
                        f"{pair.size // MIB} MiB disk")
    sh(lab, "a", f"dd if=/dev/urandom of={pair.device} bs=1M count={write_bytes // MIB} "
                 f"seek={seek_mib} oflag=direct 2>/dev/null")

    def run() -> None:
        xw(lab, "a", "disk", "connect", pair.name)
        xw(lab, "a", "disk", "wait-connected", pair.name)
        xw(lab, "a", "disk", "wait-sync", pair.name, "--timeout", "600", timeout=660)
    return measure(lab, run)


def digests(lab: LabExec, name: str) -> dict[str, str]:
    """``xenwam disk digest`` of each host's backing image."""
    return {h: json.loads(xw(lab, h, "disk", "digest", "--json", image_path(name, h),
                             timeout=900))["digest"] for h in HOSTS}


def sha256s(lab: LabExec, name: str) -> dict[str, str]:
    """coreutils' sha256 of each host's whole backing image (an independent check)."""
    return {h: sh(lab, h, f"sha256sum < {image_path(name, h)}", timeout=900).split()[0]
            for h in HOSTS}
