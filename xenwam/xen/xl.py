"""``xl``: argv builders and parsers (pure; the runner that runs them is injected elsewhere).

A running guest's disks and vifs are read from ``xl list -l DOMAIN``, xl's own JSON of
the domain's libxl configuration, never by parsing the text of a config file.  When a
migration has to change the guest's configuration for the destination (another bridge),
:func:`render_config` writes the xl config text that ``xl migrate -C`` sends instead.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from xenwam.errors import XenError

XL = "xl"
#: xl's suffixes for the two copies of a migrating domain.
INCOMING_SUFFIX = "--incoming"
MIGRATEDAWAY_SUFFIX = "--migratedaway"

# xl domain names: no spaces or slashes; we are stricter, and fullmatch (no "\n" tail).
_DOMAIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_domain(name: str) -> str:
    """``name`` if it is a usable domain name or domid, else :class:`XenError` (exit 2)."""
    if not _DOMAIN_RE.fullmatch(name):
        raise XenError(f"invalid domain name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


# ---------------------------------------------------------------- argv builders


def list_() -> list[str]:
    """``xl list``: every domain, one row each."""
    return [XL, "list"]


def list_long(domain: str) -> list[str]:
    """``xl list -l DOMAIN``: the domain's libxl configuration as JSON."""
    return [XL, "list", "-l", check_domain(domain)]


def domid(domain: str) -> list[str]:
    """``xl domid DOMAIN``."""
    return [XL, "domid", check_domain(domain)]


def create(config_path: str, *, paused: bool = False) -> list[str]:
    """``xl create [-p] CONFIG``."""
    return [XL, "create", *(["-p"] if paused else []), config_path]


def unpause(domain: str) -> list[str]:
    """``xl unpause DOMAIN``."""
    return [XL, "unpause", check_domain(domain)]


def pause(domain: str) -> list[str]:
    """``xl pause DOMAIN``."""
    return [XL, "pause", check_domain(domain)]


def destroy(domain: str) -> list[str]:
    """``xl destroy DOMAIN``."""
    return [XL, "destroy", check_domain(domain)]


def save(domain: str, path: str) -> list[str]:
    """``xl save DOMAIN FILE``: suspend to FILE and destroy the domain."""
    return [XL, "save", check_domain(domain), path]


def restore(path: str, *, paused: bool = False, config_path: str | None = None) -> list[str]:
    """``xl restore [-p] [CONFIG] FILE``."""
    return [XL, "restore", *(["-p"] if paused else []),
            *([config_path] if config_path else []), path]


@dataclass(frozen=True)
class MigrateOptions:
    """The flags of ``xl migrate`` that xenwam passes through (same meaning as xl's)."""

    transport: str | None = None   # -s: run "TRANSPORT HOST xl migrate-receive ..."
    config_path: str | None = None  # -C: send this config instead of the domain's
    paused: bool = False           # -p: leave the domain paused on the destination
    no_daemon: bool = False        # -e: do not wait in the background on the destination
    debug: bool = False            # --debug


def migrate(domain: str, host: str, options: MigrateOptions = MigrateOptions()) -> list[str]:
    """``xl migrate [-s CMD] [-C CONFIG] [-p] [-e] [--debug] DOMAIN HOST``."""
    argv = [XL, "migrate"]
    if options.transport is not None:
        argv += ["-s", options.transport]
    if options.config_path is not None:
        argv += ["-C", options.config_path]
    if options.paused:
        argv.append("-p")
    if options.no_daemon:
        argv.append("-e")
    if options.debug:
        argv.append("--debug")
    return [*argv, check_domain(domain), host]


def migrate_receive(*, paused: bool = False, no_daemon: bool = False,
                    debug: bool = False) -> list[str]:
    """``xl migrate-receive [-p] [-e] [-d]``: the destination's end of a migration (what
    ``xl migrate`` runs there, through ssh or a ``-s`` transport)."""
    return [XL, "migrate-receive", *(["-p"] if paused else []), *(["-e"] if no_daemon else []),
            *(["-d"] if debug else [])]


# ---------------------------------------------------------------- parsers


def state_runs(state: str) -> bool:
    """Whether a domain in ``xl list`` state ``state`` (``r-----``, ``-b----``, or
    ``------`` while it waits for a CPU) runs: not paused, shut down, crashed or dying
    (``--p---``, ``---s--``, ``----c-``, ``-----d``)."""
    return not any(flag in state for flag in "pscd")


@dataclass(frozen=True)
class XlDomain:
    """One row of ``xl list``."""

    name: str
    domid: int
    memory_mib: int
    vcpus: int
    state: str
    cpu_seconds: float

    @property
    def paused(self) -> bool:
        """True when xl shows the ``p`` state flag."""
        return "p" in self.state


def parse_xl_list(text: str) -> list[XlDomain]:
    """Parse ``xl list`` output (header line, then one row per domain)."""
    domains = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("Name"):
        raise XenError(f"`xl list` output has no header line: {text[:200]!r}")
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 6:
            raise XenError(f"cannot read this `xl list` row: {line!r}")
        # Names may not contain spaces in xl, so the last five fields are fixed.
        name = " ".join(parts[:-5])
        try:
            domains.append(XlDomain(name, int(parts[-5]), int(parts[-4]), int(parts[-3]),
                                    parts[-2], float(parts[-1])))
        except ValueError:
            raise XenError(f"cannot read this `xl list` row: {line!r}") from None
    return domains


def migrate_pids(ps_output: str, domain: str) -> list[int]:
    """The pids of ``xl migrate ... DOMAIN HOST`` processes in ``ps -eo pid=,args=``
    output (``xl migrate`` outlives a killed parent: it is not in its process group's
    way)."""
    pids = []
    for line in ps_output.splitlines():
        pid, _, args = line.strip().partition(" ")
        words = args.split()
        if (pid.isdigit() and len(words) >= 4 and words[0].rsplit("/", 1)[-1] == "xl"
                and words[1] == "migrate" and words[-2] == domain):
            pids.append(int(pid))
    return pids


def copies_of(domains: list[XlDomain], name: str) -> list[XlDomain]:
    """Every copy of guest ``name`` in an ``xl list``, including xl's migration renames."""
    names = {name, name + INCOMING_SUFFIX, name + MIGRATEDAWAY_SUFFIX}
    return [d for d in domains if d.name in names]


@dataclass(frozen=True)
class DiskSpec:
    """One disk of a domain, as libxl holds it."""

    vdev: str
    target: str  # pdev_path: the file, device or (for block-xenwam) resource name
    script: str | None = None
    format: str | None = None
    readwrite: bool = True
    is_cdrom: bool = False

    @property
    def is_xenwam(self) -> bool:
        """True when the disk is a xenwam DRBD resource (``script=block-xenwam``)."""
        return self.script is not None and self.script.rsplit("/", 1)[-1] == "block-xenwam"

    def xl_spec(self) -> str:
        """The disk as an xl config ``disk = [...]`` entry."""
        parts = []
        if self.format:
            parts.append(f"format={self.format}")
        parts += [f"vdev={self.vdev}", f"access={'rw' if self.readwrite else 'ro'}"]
        if self.is_cdrom:
            parts.append("devtype=cdrom")
        if self.script:
            parts.append(f"script={self.script}")
        parts.append(f"target={self.target}")  # target must come last (it may hold commas)
        return ", ".join(parts)


@dataclass(frozen=True)
class NicSpec:
    """One vif of a domain."""

    mac: str | None
    bridge: str | None
    script: str | None = None
    model: str | None = None
    ip: str | None = None

    def xl_spec(self) -> str:
        """The vif as an xl config ``vif = [...]`` entry."""
        keys = (("bridge", self.bridge), ("mac", self.mac), ("script", self.script),
                ("model", self.model), ("ip", self.ip))
        return ",".join(f"{k}={v}" for k, v in keys if v)


@dataclass(frozen=True)
class DomainConfig:
    """What ``xl list -l`` says about one domain: enough to plan and re-create it."""

    domid: int
    name: str
    type: str
    memory_mib: int
    max_memory_mib: int
    vcpus: int
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str | None = None
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    on_poweroff: str | None = None
    on_reboot: str | None = None
    on_crash: str | None = None
    #: The whole JSON object, for what this record does not model.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def with_bridge(self, bridge: str) -> DomainConfig:
        """This configuration with every vif on ``bridge``."""
        return replace(self, nics=tuple(replace(n, bridge=bridge) for n in self.nics))


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _bool(value: Any) -> bool:
    return value in (True, 1, "True", "true")


def _domain_config(entry: Mapping[str, Any]) -> DomainConfig:
    config = entry.get("config")
    if not isinstance(config, Mapping):
        raise XenError("`xl list -l` entry has no 'config' object")
    c_info, b_info = config.get("c_info") or {}, config.get("b_info") or {}
    name = c_info.get("name")
    if not isinstance(name, str) or not name:
        raise XenError("`xl list -l` entry has no c_info.name")
    dtype = str(c_info.get("type") or "pv").lower()
    max_kb = int(b_info.get("max_memkb") or 0)
    target_kb = int(b_info.get("target_memkb") or max_kb)
    # kernel/ramdisk/cmdline moved to the top of b_info in Xen 4.10; older JSON keeps
    # them under type.pv.
    pv = b_info.get("type.pv") or {}
    disks = tuple(
        DiskSpec(vdev=str(d.get("vdev", "")), target=str(d.get("pdev_path", "")),
                 script=d.get("script"), format=d.get("format"),
                 readwrite=_bool(d.get("readwrite", 1)), is_cdrom=_bool(d.get("is_cdrom", 0)))
        for d in config.get("disks") or [])
    nics = tuple(
        NicSpec(mac=n.get("mac"), bridge=n.get("bridge"), script=n.get("script"),
                model=n.get("model"), ip=n.get("ip"))
        for n in config.get("nics") or [])
    return DomainConfig(
        domid=int(entry.get("domid", -1)), name=name, type=dtype,
        memory_mib=target_kb // 1024, max_memory_mib=max_kb // 1024,
        vcpus=int(b_info.get("max_vcpus") or 1),
        kernel=b_info.get("kernel") or pv.get("kernel"),
        ramdisk=b_info.get("ramdisk") or pv.get("ramdisk"),
        cmdline=b_info.get("cmdline") or pv.get("cmdline"),
        disks=disks, nics=nics,
        on_poweroff=config.get("on_poweroff"), on_reboot=config.get("on_reboot"),
        on_crash=config.get("on_crash"), raw=config,
    )


def parse_list_long(text: str) -> list[DomainConfig]:
    """Parse ``xl list -l`` (a JSON array, one object per domain)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise XenError(f"`xl list -l` did not print JSON ({exc}): {text[:200]!r}") from exc
    if isinstance(doc, Mapping):
        doc = [doc]
    if not isinstance(doc, list):
        raise XenError(f"`xl list -l` printed {type(doc).__name__}, not a list")
    try:
        return [_domain_config(e) for e in doc if isinstance(e, Mapping)]
    except (TypeError, ValueError, AttributeError) as exc:
        raise XenError(f"cannot read `xl list -l` output: {exc}") from exc


def _quote(value: str) -> str:
    if '"' in value or "\n" in value:
        raise XenError(f"cannot write {value!r} into an xl config (quote or newline)")
    return f'"{value}"'


def render_config(config: DomainConfig) -> str:
    """xl config text that re-creates ``config`` (for ``xl migrate -C``).

    It carries what :class:`DomainConfig` models: type, name, kernel, ramdisk, cmdline,
    memory, vcpus, disks, vifs and the on_* actions.  A guest that needs more (PCI
    passthrough, HVM device models, ...) should be migrated with the operator's own
    config file (``xenwam migrate -C``).
    """
    lines = [f"name = {_quote(config.name)}", f"type = {_quote(config.type)}"]
    for key in ("kernel", "ramdisk", "cmdline"):
        value = getattr(config, key)
        if value:
            lines.append(f"{key} = {_quote(value)}")
    lines.append(f"memory = {config.memory_mib}")
    if config.max_memory_mib > config.memory_mib:
        lines.append(f"maxmem = {config.max_memory_mib}")
    lines.append(f"vcpus = {config.vcpus}")
    if config.disks:
        lines.append("disk = [" + ", ".join(_quote(d.xl_spec()) for d in config.disks) + "]")
    if config.nics:
        lines.append("vif = [" + ", ".join(_quote(n.xl_spec()) for n in config.nics) + "]")
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        value = getattr(config, key)
        if value:
            lines.append(f"{key} = {_quote(value)}")
    return "\n".join(lines) + "\n"


def transport_command(script: str, *args: str) -> str:
    """The ``-s`` value that makes xl run ``script ARGS HOST xl migrate-receive ...``."""
    return shlex.join([script, *args])
