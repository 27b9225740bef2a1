"""``xenwam doctor``: what this host has, and what each missing piece disables.

Split as the rest of xenwam: :func:`gather_facts` looks at the host (files, commands,
a throwaway network namespace for the probes that need to touch the kernel) and returns
a :class:`HostFacts` record; :func:`evaluate` turns facts into a :class:`Report` without
any I/O; the CLI prints the report as a table or as JSON.  The exit status says whether
the host can take the role asked for (``--role``, default ``migration``: a Xen dom0 that
can be a migration source or destination).
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xenwam.errors import CommandError
from xenwam.netns import NetnsSet
from xenwam.runner import Runner, default_runner

if TYPE_CHECKING:
    from rich.console import Console


class Status(enum.StrEnum):
    """Outcome of one check."""

    OK = "ok"
    MISSING = "missing"
    UNKNOWN = "unknown"


class Role(enum.StrEnum):
    """What a host can be asked to do; each role needs a set of checks to pass."""

    MIGRATION = "migration"  # a Xen dom0 that can send or receive a guest
    HIP = "hip"  # can run hipd with some ESP data plane
    LAB = "lab"  # can build and run the QEMU lab
    NETNS = "netns"  # can run the netns test tier


@dataclass(frozen=True)
class HostFacts:
    """Raw observations about a host; produced by :func:`gather_facts`."""

    is_root: bool
    hypervisor_type: str | None  # content of /sys/hypervisor/type
    xen_capabilities: str | None  # content of /proc/xen/capabilities
    xl_path: str | None
    xl_version: str | None  # from `xl info` (needs a running Xen)
    xenstored_socket: str | None
    xenbus_device: bool
    drbd_loaded_version: str | None  # first line of /proc/drbd
    drbd_module_available: bool
    drbdadm_path: str | None
    drbd_utils_version: str | None
    xfrm_present: bool
    esp_beet: bool | None  # None: could not probe (not root)
    netem: bool | None
    tun: bool
    netns: bool | None
    qemu_path: str | None
    qemu_version: str | None
    debootstrap_path: str | None
    kernel_release: str


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: Status
    detail: str
    disables: str  # what does not work without it
    package: str  # the Debian package that provides it
    roles: tuple[Role, ...]


@dataclass(frozen=True)
class Report:
    """Every check plus, per role, whether this host can take it."""

    checks: tuple[Check, ...]
    roles: dict[str, bool] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (what ``--json`` prints)."""
        return {
            "checks": [
                {**asdict(c), "status": str(c.status), "roles": [str(r) for r in c.roles]}
                for c in self.checks
            ],
            "roles": dict(self.roles),
        }


# --- parsers (pure; tested on captured output) -------------------------------------

_XL_VERSION = re.compile(r"^xen_version\s*:\s*(\S+)", re.MULTILINE)
_DRBDADM_VERSION = re.compile(r"^DRBDADM_VERSION=(\S+)", re.MULTILINE)
_DRBDADM_VERSION_CODE = re.compile(r"^DRBDADM_VERSION_CODE=0x([0-9a-fA-F]+)", re.MULTILINE)
_QEMU_VERSION = re.compile(r"QEMU emulator version (\S+)")


def parse_xl_info_version(text: str) -> str | None:
    """The ``xen_version`` field of ``xl info`` output."""
    m = _XL_VERSION.search(text)
    return m.group(1) if m else None


def parse_drbdadm_version(text: str) -> str | None:
    """The drbd-utils version from ``drbdadm --version`` (``DRBDADM_VERSION=9.22.0``)."""
    m = _DRBDADM_VERSION.search(text)
    if m:
        return m.group(1)
    m = _DRBDADM_VERSION_CODE.search(text)
    if m:
        code = int(m.group(1), 16)
        return f"{code >> 16}.{(code >> 8) & 0xFF}.{code & 0xFF}"
    return None


def parse_qemu_version(text: str) -> str | None:
    """The version from ``qemu-system-x86_64 --version``."""
    m = _QEMU_VERSION.search(text)
    return m.group(1) if m else None


# --- gathering (I/O) ---------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _module_available(name: str, runner: Runner, release: str) -> bool:
    if Path(f"/sys/module/{name}").exists():
        return True
    builtin = _read(f"/lib/modules/{release}/modules.builtin") or ""
    if re.search(rf"/{re.escape(name)}\.ko", builtin):
        return True
    if shutil.which("modinfo") is None:
        return False
    return runner.run(["modinfo", "-n", name], check=False).ok


def _probe_in_netns(runner: Runner, argvs: list[list[str]]) -> list[bool] | None:
    """Run each argv in a throwaway namespace; ``None`` if no namespace can be made."""
    with NetnsSet(prefix="xwdoctor", runner=runner) as nsset:
        try:
            ns = nsset.add("p")
        except CommandError:
            return None
        return [ns.run(a, check=False).ok for a in argvs]


# hip's own kernel data plane probe: the state hipd would install, so the doctor's
# answer is hipd's answer (the modules are autoloaded).
def _esp_beet_probe() -> list[str]:
    # Imported here: hip's data plane (and its crypto) costs every xenwam command a
    # seventh of a second to import, and only this probe needs it.
    from hip.dataplane.kernel import state_add_argv
    from hip.dataplane.probe import probe_sa

    return state_add_argv(probe_sa(0x100), outbound=True)
_NETEM_PROBE = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]


def gather_facts(runner: Runner = default_runner) -> HostFacts:
    """Look at this host.  Needs root only for the kernel probes (ESP, netem, netns)."""
    release = os.uname().release
    is_root = os.geteuid() == 0
    xl_path = shutil.which("xl")
    xl_version = None
    hv = _read("/sys/hypervisor/type")
    if xl_path and hv == "xen":
        res = runner.run([xl_path, "info"], check=False, timeout=20)
        xl_version = parse_xl_info_version(res.stdout) if res.ok else None
    drbdadm = shutil.which("drbdadm")
    drbd_utils_version = None
    if drbdadm:
        res = runner.run([drbdadm, "--version"], check=False, timeout=20)
        drbd_utils_version = parse_drbdadm_version(res.stdout + res.stderr)
    qemu = shutil.which("qemu-system-x86_64")
    qemu_version = None
    if qemu:
        try:
            res = runner.run([qemu, "--version"], check=False, timeout=20)
            qemu_version = parse_qemu_version(res.stdout)
        except CommandError:
            qemu_version = None
    socket = next(
        (p for p in ("/run/xenstored/socket", "/var/run/xenstored/socket") if Path(p).exists()),
        None,
    )
    drbd_status = _read("/proc/drbd")
    esp_beet: bool | None = None
    netem: bool | None = None
    netns: bool | None = None
    if is_root and shutil.which("ip"):
        probes = _probe_in_netns(runner, [_esp_beet_probe(), _NETEM_PROBE])
        if probes is None:
            netns = False
        else:
            netns = True
            esp_beet, netem = probes
    return HostFacts(
        is_root=is_root,
        hypervisor_type=hv,
        xen_capabilities=_read("/proc/xen/capabilities"),
        xl_path=xl_path,
        xl_version=xl_version,
        xenstored_socket=socket,
        xenbus_device=Path("/dev/xen/xenbus").exists(),
        drbd_loaded_version=drbd_status.splitlines()[0] if drbd_status else None,
        drbd_module_available=drbd_status is not None
        or _module_available("drbd", runner, release),
        drbdadm_path=drbdadm,
        drbd_utils_version=drbd_utils_version,
        xfrm_present=Path("/proc/net/xfrm_stat").exists(),
        esp_beet=esp_beet,
        netem=netem,
        tun=Path("/dev/net/tun").exists(),
        netns=netns,
        qemu_path=qemu,
        qemu_version=qemu_version,
        debootstrap_path=shutil.which("debootstrap"),
        kernel_release=release,
    )


# --- evaluation (pure) -------------------------------------------------------------


def _tri(value: bool | None) -> Status:
    if value is None:
        return Status.UNKNOWN
    return Status.OK if value else Status.MISSING


def evaluate(f: HostFacts) -> Report:
    """Turn facts into checks and role verdicts.  No I/O."""
    m, h, lab, nt = Role.MIGRATION, Role.HIP, Role.LAB, Role.NETNS
    not_root = "run as root to probe" if not f.is_root else "could not create a namespace"
    is_dom0 = f.xen_capabilities is not None and "control_d" in f.xen_capabilities
    checks = [
        Check(
            "xen hypervisor",
            Status.OK if f.hypervisor_type == "xen" else Status.MISSING,
            ("running on Xen" + (" (dom0)" if is_dom0 else " (not dom0)"))
            if f.hypervisor_type == "xen"
            else f"/sys/hypervisor/type is {f.hypervisor_type or 'absent'}: not a Xen host",
            "migration source/destination", "xen-system-amd64", (m,),
        ),
        Check(
            "xen control domain",
            Status.OK if is_dom0 else Status.MISSING,
            "this is dom0" if is_dom0 else "/proc/xen/capabilities lacks control_d",
            "running or receiving guests", "xen-system-amd64 (boot into Xen)", (m,),
        ),
        Check(
            "xl",
            Status.OK if f.xl_path and f.xl_version else Status.MISSING,
            f"{f.xl_path}, Xen {f.xl_version}" if f.xl_path and f.xl_version
            else (f"{f.xl_path} found but `xl info` has no running Xen" if f.xl_path
                  else "not installed"),
            "xl migrate and guest control", "xen-utils-4.17", (m,),
        ),
        Check(
            "xenstore",
            Status.OK if f.xenstored_socket or f.xenbus_device else Status.MISSING,
            f.xenstored_socket or ("/dev/xen/xenbus" if f.xenbus_device else "no xenstored"),
            "hotplug scripts and domain state", "xenstore-utils / xen-utils-4.17", (m,),
        ),
        Check(
            "drbd kernel module",
            Status.OK if f.drbd_module_available else Status.MISSING,
            f.drbd_loaded_version or ("available, not loaded" if f.drbd_module_available
                                      else f"not in kernel {f.kernel_release}"),
            "disk replication", f"linux-image-{f.kernel_release}", (m,),
        ),
        Check(
            "drbd-utils",
            Status.OK if f.drbdadm_path else Status.MISSING,
            f"drbdadm {f.drbd_utils_version or '(version unknown)'}" if f.drbdadm_path
            else "drbdadm not installed",
            "disk replication", "drbd-utils", (m,),
        ),
        Check(
            "kernel ESP (XFRM BEET)",
            _tri(f.esp_beet),
            {True: "BEET ESP states accepted", False: "XFRM present but ESP/BEET refused"
             if f.xfrm_present else "no XFRM in kernel", None: not_root}[f.esp_beet],
            "kernel HIP data plane (userspace ESP over TUN is used instead)",
            f"linux-image-{f.kernel_release} (esp4, esp6, xfrm_user)", (),
        ),
        Check(
            "TUN",
            Status.OK if f.tun else Status.MISSING,
            "/dev/net/tun" if f.tun else "/dev/net/tun absent",
            "userspace HIP data plane", f"linux-image-{f.kernel_release} (tun)", (h,),
        ),
        Check(
            "netem",
            _tri(f.netem),
            {True: "sch_netem works", False: "qdisc netem unknown to this kernel",
             None: not_root}[f.netem],
            "WAN emulation on this host (the lab shapes inside its dom0s instead)",
            f"linux-image-{f.kernel_release} (sch_netem)", (),
        ),
        Check(
            "network namespaces",
            _tri(f.netns),
            {True: "ip netns works", False: "ip netns add failed", None: not_root}[f.netns],
            "netns tests, lab correspondent", "iproute2", (nt, lab),
        ),
        Check(
            "qemu",
            Status.OK if f.qemu_path else Status.MISSING,
            f"QEMU {f.qemu_version}" if f.qemu_path else "qemu-system-x86_64 not installed",
            "the lab (Xen under QEMU TCG)", "qemu-system-x86", (lab,),
        ),
        Check(
            "debootstrap",
            Status.OK if f.debootstrap_path else Status.MISSING,
            f.debootstrap_path or "not installed",
            "building lab images", "debootstrap", (lab,),
        ),
    ]
    roles: dict[str, bool] = {}
    for role in Role:
        needed = [c for c in checks if role in c.roles]
        roles[str(role)] = all(c.status is Status.OK for c in needed)
    # HIP runs with either data plane: kernel ESP or TUN.
    roles[str(Role.HIP)] = f.tun or bool(f.esp_beet)
    return Report(tuple(checks), roles)


# --- CLI ---------------------------------------------------------------------------

ROLE_HELP = """\
roles:
  migration  a Xen dom0 that can send or receive a guest (default)
  hip        can run hipd (kernel ESP or a TUN device)
  lab        can build and run the QEMU Xen lab
  netns      can run the netns test tier
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    """Add ``xenwam doctor``."""
    p = subparsers.add_parser(
        "doctor",
        parents=[common],
        help="check what this host can do",
        description=(
            "Check this host for everything xenwam uses and print what is there, what each "
            "missing piece disables, and the Debian package that provides it. Kernel probes "
            "(ESP, netem) run in a throwaway network namespace and need root."
        ),
        epilog=ROLE_HELP + "\nexit status: 0 if the host can take --role, 1 if not.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.add_argument("--role", choices=[str(r) for r in Role], default=str(Role.MIGRATION),
                   help="the role the exit status answers for (default: migration)")
    p.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace, gather: Callable[[], HostFacts] = gather_facts) -> int:
    """Handler of ``xenwam doctor``."""
    report = evaluate(gather())
    ok = report.roles[args.role]
    if args.json:
        print(json.dumps({**report.to_json(), "role": args.role, "ok": ok}, indent=2))
    else:
        _print_table(report, args.role, ok)
    return 0 if ok else 1


def _print_table(report: Report, role: str, ok: bool, console: Console | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    style = {Status.OK: "green", Status.MISSING: "red", Status.UNKNOWN: "yellow"}
    console = console or Console()
    table = Table(title="xenwam doctor", box=box.SIMPLE_HEAD)
    # The package name is what the user types into apt: it must never be cut, so its
    # column is at least as wide as the longest name, and long words elsewhere fold
    # onto the next line instead of ending in an ellipsis.
    longest = max((len(word) for c in report.checks if c.status is not Status.OK
                   for word in c.package.split()), default=0)
    table.add_column("check", overflow="fold")
    table.add_column("status", no_wrap=True)
    for col in ("detail", "without it"):
        table.add_column(col, overflow="fold")
    table.add_column("package", overflow="fold")
    for c in report.checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail,
                      "" if c.status is Status.OK else c.disables,
                      "" if c.status is Status.OK else c.package)
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    if natural > console.width:
        # Too wide: rich would shrink every column.  A fixed width is never shrunk, so the
        # package name stays whole and only its parenthesis wraps below it.
        table.columns[-1].width = max(longest, len("package"))
    console.print(table)
    for name, can in report.roles.items():
        console.print(f"  {name:<10} {'[green]yes[/]' if can else '[red]no[/]'}")
    verdict = "can" if ok else "cannot"
    console.print(f"This host {verdict} take the role '{role}'.")
