"""The xenwam DRBD resource: a small dataclass, its validation, and its ``.res`` file.

A resource joins one backing device on each of two hosts.  Metadata is always external
(``meta-disk DEV``) so that an existing disk is replicated without being shrunk.  The
network section comes from a :class:`WanProfile`: protocol A with ``on-congestion
pull-ahead`` for the bulk copy over a long, thin link, and buffers and resync-controller
settings derived from the measured round-trip time and bandwidth.

Everything is validated before anything is written, and :func:`install` replaces the file
atomically: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from xenwam.drbd.secret import secret_problem
from xenwam.errors import ConfigError

#: Where drbd-utils looks for resource files (``/etc/drbd.conf`` includes ``drbd.d/*.res``).
DEFAULT_CONFIG_DIR = Path("/etc/drbd.d")
#: Every file xenwam writes is called ``xenwam-<name>.res`` so it can find its own.
FILE_PREFIX = "xenwam-"
#: The first line of a rendered file carries the model as JSON, so it can be read back
#: without parsing drbd.conf syntax.
MODEL_MARKER = "# xenwam-resource: "

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9_.+/:@-]+$")
#: HMACs the kernel crypto API offers for ``cram-hmac-alg``; sha1 is allowed for old peers.
HMAC_ALGORITHMS = ("sha256", "sha512", "sha1")
#: Largest minor number drbdsetup accepts (``new-minor`` range).
MINOR_MAX = 1048575
#: drbdsetup's range for ``sndbuf-size`` and ``rcvbuf-size`` (bytes).
BUFFER_MAX = 10 * 1024 * 1024
#: drbdsetup's range for ``c-plan-ahead`` (tenths of a second).
PLAN_AHEAD_MAX = 300
#: drbdsetup's ceilings for ``c-max-rate`` (KiB/s) and ``c-fill-target`` (2^20 sectors,
#: in KiB).
C_MAX_RATE_MAX = 4 * 1024 * 1024
C_FILL_TARGET_MAX_KIB = 512 * 1024
#: Online verify sends one digest per 4 KiB block, not the block (about 1/100 of the
#: bytes both ways), so while it runs the resync ceilings, which are the link's, are
#: lifted this many times: its pace is then the disks' and the CPUs'.  c-min-rate still
#: yields to the guest's own I/O.
VERIFY_PACE_FACTOR = 64
#: With a checksum resync (``csums-alg``) a block both copies hold alike costs a digest on
#: the link, not the block, but DRBD's controller counts the block against ``c-max-rate``:
#: at the link's rate the catch-up after a seed scans the disk no faster than it could
#: send it whole (80 ms / 20 mbit, 1 GiB: about 10 minutes).  The ceiling is lifted this
#: many times; the data in flight stays bounded by ``c-fill-target`` (one BDP, at least
#: 1 MiB), which is what keeps a resync of differing blocks from flooding the link.
CSUMS_PACE_FACTOR = 8
#: The floor of ``ping-timeout`` (tenths of a second): a loaded WAN link's queue delays
#: a ping's answer by far more than its RTT (see :attr:`WanProfile.ping_timeout_tenths`).
PING_TIMEOUT_MIN_TENTHS = 20
#: Replication modes a resource file can be written in (see :attr:`Resource.mode`).
MODES = ("bulk", "handover")


def valid_name(name: str) -> bool:
    """Whether ``name`` can name a resource (and its file, ``xenwam-NAME.res``)."""
    return _NAME_RE.fullmatch(name) is not None


def _fail(what: str, value: object, hint: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:  # a hostile model's field: enough to recognise it, one short line
        shown = f"{shown[:60]}... ({len(shown)} characters)"
    return ConfigError(f"invalid {what} {shown}: {hint}; nothing was written")


#: The JSON type each scalar field of the model must have (bool is not a number here).
_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "minor": (int,), "mode": (str,), "shared_secret": (str,),
    "cram_hmac_alg": (str,),
    "hostname": (str,), "address": (str,), "port": (int,), "disk": (str,),
    "meta_disk": (str,),
    "rtt_ms": (int, float), "bandwidth_mbit": (int, float), "protocol": (str,),
    "on_congestion": (str,), "c_plan_ahead": (int, type(None)),
    "sndbuf_bytes": (int, type(None)), "max_buffers": (int,), "al_extents": (int,),
    "csums_alg": (str, type(None)), "verify_alg": (str,),
}


def _typed(data: object, where: str, resource: object = None) -> dict[str, Any]:
    """``data`` if it is a JSON object whose known fields have their JSON types; else
    :class:`ConfigError` naming the ``resource`` and the field (never its value: it may
    be the secret)."""
    problem = None
    if not isinstance(data, dict):
        problem = f"{where} is a JSON {type(data).__name__}, not an object"
    else:
        for key, value in data.items():
            kinds = _JSON_KINDS.get(key)
            if kinds is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                problem = f"{where}.{key} is a JSON {type(value).__name__}, not {wanted}"
                break
    if problem is not None:
        raise _malformed(resource, problem)
    return cast(dict[str, Any], data)


def _malformed(resource: object, problem: str) -> ConfigError:
    named = f" of {repr(resource)[:70]}" if isinstance(resource, str) else ""
    return ConfigError(f"malformed xenwam resource description{named}: {problem}; "
                       "rewrite it with `xenwam disk define`")


@dataclass(frozen=True)
class WanProfile:
    """How the replication link behaves, and the DRBD settings that follow from it.

    ``rtt_ms`` and ``bandwidth_mbit`` are measurements of the path between the two
    hosts; everything else has a default derived from them.
    """

    rtt_ms: float = 50.0
    bandwidth_mbit: float = 100.0
    protocol: str = "A"
    on_congestion: str = "pull-ahead"
    #: Resync controller look-ahead in tenths of a second; None derives it from the RTT.
    c_plan_ahead: int | None = None
    sndbuf_bytes: int | None = None
    max_buffers: int = 8000
    al_extents: int = 1237
    #: Checksum-based resync: only blocks whose digests differ are sent.
    csums_alg: str | None = None
    #: Hash for DRBD's online verify (``drbdadm verify``), the migration's integrity proof.
    verify_alg: str = "md5"

    @property
    def plan_ahead_tenths(self) -> int:
        """``c-plan-ahead``: at least 5x the RTT (DRBD's guidance) and never below 2 s."""
        if self.c_plan_ahead is not None:
            return self.c_plan_ahead
        return min(PLAN_AHEAD_MAX, max(20, math.ceil(5 * self.rtt_ms / 100.0)))

    @property
    def bdp_bytes(self) -> int:
        """Bandwidth-delay product of the path: the bytes in flight that fill it."""
        return int(self.bandwidth_mbit * 1e6 / 8 * self.rtt_ms / 1000.0)

    @property
    def sndbuf(self) -> int:
        """Send buffer: twice the BDP so the link stays full, within drbdsetup's range."""
        if self.sndbuf_bytes is not None:
            return self.sndbuf_bytes
        return min(BUFFER_MAX, max(512 * 1024, 2 * self.bdp_bytes))

    @property
    def congestion_fill_kib(self) -> int:
        """Go Ahead/Behind once this much is in flight: below the send buffer, or it never
        triggers, but above one BDP, or a healthy link would count as congested."""
        return max(self.bdp_bytes, (self.sndbuf * 3) // 4) // 1024

    @property
    def congestion_extents(self) -> int:
        """Activity-log extents that also count as congestion: most of the log."""
        return max(67, (self.al_extents * 9) // 10)

    @property
    def c_fill_target_kib(self) -> int:
        """Resync data the controller keeps in flight: one BDP, at least 1 MiB."""
        return max(1024, self.bdp_bytes // 1024)

    @property
    def c_max_rate_kib(self) -> int:
        """Resync rate ceiling: the link's bandwidth (KiB/s)."""
        return max(250, int(self.bandwidth_mbit * 1e6 / 8 / 1024))

    @property
    def resync_max_rate_kib(self) -> int:
        """The ``c-max-rate`` written in the resource file: the link's rate, lifted
        :data:`CSUMS_PACE_FACTOR` times when the resync compares checksums."""
        if not self.csums_alg:
            return self.c_max_rate_kib
        return min(C_MAX_RATE_MAX, self.c_max_rate_kib * CSUMS_PACE_FACTOR)

    @property
    def verify_max_rate_kib(self) -> int:
        """The ``c-max-rate`` while an online verify runs (:data:`VERIFY_PACE_FACTOR`)."""
        return min(C_MAX_RATE_MAX, self.c_max_rate_kib * VERIFY_PACE_FACTOR)

    @property
    def verify_fill_target_kib(self) -> int:
        """The ``c-fill-target`` while an online verify runs: its requests in flight."""
        return min(C_FILL_TARGET_MAX_KIB, self.c_fill_target_kib * VERIFY_PACE_FACTOR)

    @property
    def c_min_rate_converge_kib(self) -> int:
        """The resync rate kept even under application writes once a guest's writes are
        slowed to the link's pace: half the link, so a catch-up that had stalled ends
        (DRBD's default floor of 250 KiB/s lets a busy writer starve it for minutes)."""
        return max(250, self.c_max_rate_kib // 2)

    @property
    def ping_timeout_tenths(self) -> int:
        """How long DRBD waits for a ping's answer before it drops the connection: four
        RTTs, and never under :data:`PING_TIMEOUT_MIN_TENTHS`.  While a migration fills
        the link (its memory stream, a resync) the answer waits behind the bottleneck's
        queue, not only the RTT: in the lab at 80 ms / 20 Mbit/s, netem's 1000-packet
        queue is 0.6 s, and DRBD's default 0.5 s dropped a pair mid-move
        ("PingAck did not arrive in time").  A dead peer is still noticed within
        ``ping-int`` (10 s) plus this."""
        return max(PING_TIMEOUT_MIN_TENTHS, math.ceil(4 * self.rtt_ms / 100.0))

    @property
    def timeout_tenths(self) -> int:
        """The peer's ack timeout must exceed the ping timeout (drbd.conf rule)."""
        return max(60, self.ping_timeout_tenths + 10)

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless every setting is one DRBD will accept."""
        if not 0 < self.rtt_ms <= 6000:
            raise _fail("rtt_ms", self.rtt_ms, "give the measured round-trip time, 0-6000 ms")
        if not 0 < self.bandwidth_mbit <= 100_000:
            raise _fail("bandwidth_mbit", self.bandwidth_mbit, "give the link rate in Mbit/s")
        if self.protocol not in ("A", "B", "C"):
            raise _fail("protocol", self.protocol, "use A, B or C")
        if self.on_congestion not in ("block", "pull-ahead", "disconnect"):
            raise _fail("on_congestion", self.on_congestion,
                        "use block, pull-ahead or disconnect")
        if self.on_congestion == "pull-ahead" and self.protocol != "A":
            raise _fail("on_congestion", self.on_congestion,
                        f"pull-ahead needs protocol A, not {self.protocol}; "
                        "use on_congestion=block with protocol C")
        plan = self.plan_ahead_tenths
        if not 0 <= plan <= PLAN_AHEAD_MAX:
            raise _fail("c_plan_ahead", plan, f"DRBD accepts 0-{PLAN_AHEAD_MAX} tenths of a second")
        if plan * 100 < 5 * self.rtt_ms:
            raise _fail("c_plan_ahead", plan,
                        f"must be at least 5x the RTT ({5 * self.rtt_ms:g} ms = "
                        f"{math.ceil(5 * self.rtt_ms / 100)} tenths); raise it or drop it "
                        "to let xenwam derive it")
        if not 0 <= self.sndbuf <= BUFFER_MAX:
            raise _fail("sndbuf_bytes", self.sndbuf, f"DRBD accepts 0-{BUFFER_MAX} bytes")
        if not 32 <= self.max_buffers <= 131072:
            raise _fail("max_buffers", self.max_buffers, "DRBD accepts 32-131072")
        if not 67 <= self.al_extents <= 65534:
            raise _fail("al_extents", self.al_extents, "DRBD accepts 67-65534")
        for what, alg in (("csums_alg", self.csums_alg), ("verify_alg", self.verify_alg)):
            if alg is not None and not re.fullmatch(r"[a-z0-9-]{2,32}", alg):
                raise _fail(what, alg, "name a kernel hash such as crc32c or md5")


@dataclass(frozen=True)
class Host:
    """One side of a resource: the dom0 as DRBD knows it (``uname -n``) and its disks."""

    hostname: str
    address: str
    port: int
    disk: str
    meta_disk: str
    #: The file behind ``disk`` when that is a loop device (xenwam made the loop): loop
    #: devices do not survive a reboot, ``xenwam disk reattach`` sets them up again.
    disk_file: str | None = None

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The replication address, parsed."""
        return ipaddress.ip_address(self.address)

    def validate(self, which: str) -> None:
        """Raise :class:`ConfigError` naming ``which`` host if a field is unusable."""
        if not _HOSTNAME_RE.fullmatch(self.hostname):
            raise _fail(f"{which} hostname", self.hostname,
                        "use the host's `uname -n` (letters, digits, dots, dashes)")
        try:
            self.ip  # noqa: B018 -- parse for validation
        except ValueError:
            raise _fail(f"{which} address", self.address,
                        "use a literal IPv4 or IPv6 address of the replication link") from None
        if not 1 <= self.port <= 65535:
            raise _fail(f"{which} port", self.port, "use a TCP port in 1-65535")
        for what, path in (("disk", self.disk), ("meta_disk", self.meta_disk)):
            if not _PATH_RE.fullmatch(path) or "/../" in path or path.endswith("/.."):
                raise _fail(f"{which} {what}", path,
                            "use an absolute device path without spaces, quotes or '..'")
        if self.disk == self.meta_disk:
            raise _fail(f"{which} meta_disk", self.meta_disk,
                        "metadata is external: give a device other than the data disk")

    def render_address(self) -> str:
        """The ``address`` value as drbd.conf spells it."""
        if isinstance(self.ip, ipaddress.IPv6Address):
            return f"ipv6 [{self.ip}]:{self.port}"
        return f"ipv4 {self.ip}:{self.port}"


@dataclass(frozen=True)
class Resource:
    """A DRBD resource replicating one guest disk between two hosts."""

    name: str
    minor: int
    #: One host (a disk kept under DRBD from boot, no peer yet) or two (replicating).
    hosts: tuple[Host, ...]
    shared_secret: str = field(repr=False)  # never in a traceback or log line
    cram_hmac_alg: str = "sha256"
    wan: WanProfile = field(default_factory=WanProfile)
    #: ``bulk`` (protocol A, pull-ahead, one primary) or ``handover`` (protocol C, two
    #: primaries).  Written into the file, not only set live, so that a reconnect after
    #: a WAN blip (or ``drbdadm adjust``) keeps the mode the migration is in.
    mode: str = "bulk"

    @property
    def is_single(self) -> bool:
        """True for a resource with no peer yet (DRBD runs it StandAlone)."""
        return len(self.hosts) == 1

    @property
    def device(self) -> str:
        """The DRBD block device the guest uses."""
        return f"/dev/drbd{self.minor}"

    @property
    def file_name(self) -> str:
        """The name of the resource file in the drbd.d directory."""
        return f"{FILE_PREFIX}{self.name}.res"

    def host(self, hostname: str) -> Host:
        """The side of the resource that runs on ``hostname``."""
        for h in self.hosts:
            if h.hostname == hostname:
                return h
        joins = " and ".join(repr(h.hostname) for h in self.hosts)
        raise ConfigError(
            f"resource {self.name!r} has no side on host {hostname!r} "
            f"(it is defined on {joins}); run this on one of those hosts or fix the hostnames"
        )

    def peer(self, hostname: str) -> Host:
        """The other side, seen from ``hostname``."""
        mine = self.host(hostname)
        if self.is_single:
            raise ConfigError(f"resource {self.name!r} has no peer yet: it runs on "
                              f"{mine.hostname!r} alone")
        return self.hosts[1] if mine is self.hosts[0] else self.hosts[0]

    def validate(self) -> None:
        """Raise :class:`ConfigError` quoting the first unusable field."""
        if not _NAME_RE.fullmatch(self.name):
            raise _fail("resource name", self.name,
                        "use 1-63 letters, digits, '.', '_' or '-', starting with a letter "
                        "or digit")
        if not 0 <= self.minor <= MINOR_MAX:
            raise _fail("minor", self.minor, f"use 0-{MINOR_MAX}")
        if len(self.hosts) not in (1, 2):
            raise _fail("hosts", len(self.hosts), "a resource has one host, or joins two")
        if self.mode not in MODES:
            raise _fail("mode", self.mode, "use " + " or ".join(MODES))
        self.hosts[0].validate("first")
        if self.is_single:
            self._validate_secret()
            self.wan.validate()
            return
        self.hosts[1].validate("second")
        if self.hosts[0].hostname == self.hosts[1].hostname:
            raise _fail("hostnames", self.hosts[0].hostname,
                        "the two sides must be different hosts")
        if (self.hosts[0].address, self.hosts[0].port) == (self.hosts[1].address,
                                                           self.hosts[1].port):
            raise _fail("addresses", f"{self.hosts[0].address}:{self.hosts[0].port}",
                        "the two sides need different address:port pairs")
        if self.hosts[0].ip.version != self.hosts[1].ip.version:
            raise _fail("addresses", f"{self.hosts[0].address} / {self.hosts[1].address}",
                        "both sides must use the same address family")
        self._validate_secret()
        self.wan.validate()

    def _validate_secret(self) -> None:
        if (problem := secret_problem(self.shared_secret)) is not None:
            raise _fail("shared_secret", "<hidden>", f"it {problem}")
        if self.cram_hmac_alg not in HMAC_ALGORITHMS:
            raise _fail("cram_hmac_alg", self.cram_hmac_alg,
                        "use one of " + ", ".join(HMAC_ALGORITHMS))

    # --- rendering -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The model as plain JSON data (the inverse of :meth:`from_json`)."""
        doc = asdict(self)
        doc["hosts"] = list(doc["hosts"])  # asdict keeps the tuple; JSON has lists
        return doc

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resource:
        """Build a resource from :meth:`to_json` output; raise ConfigError if malformed."""
        try:
            name = data.get("name") if isinstance(data, dict) else None
            _typed(data, "resource", name)
            if not isinstance(data["hosts"], list):
                raise _malformed(name, f"resource.hosts is a JSON "
                                       f"{type(data['hosts']).__name__}, not a list")
            hosts = tuple(Host(**_typed(h, "host", name)) for h in data["hosts"])
            if len(hosts) not in (1, 2):
                raise ValueError("need one or two hosts")
            return cls(
                name=data["name"],
                minor=data["minor"],
                hosts=hosts,
                mode=data.get("mode", "bulk"),
                shared_secret=data["shared_secret"],
                cram_hmac_alg=data.get("cram_hmac_alg", "sha256"),
                wan=WanProfile(**_typed(data.get("wan", {}), "wan", name)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            # Quote the description without its secret, and only the exception's type
            # (its text can quote a field's value).
            shown = {k: v for k, v in data.items() if k != "shared_secret"} \
                if isinstance(data, dict) else data
            raise ConfigError(
                f"malformed xenwam resource description ({type(exc).__name__} in "
                f"{json.dumps(shown)[:200]!r}, shared secret not shown); "
                "rewrite it with `xenwam disk define`"
            ) from None

    def render(self) -> str:
        """The resource file, in the drbd.conf syntax that drbdadm's 8.4 mode reads."""
        self.validate()
        wan = self.wan
        handover = self.mode == "handover"
        net = [
            f"protocol {'C' if handover else wan.protocol};",
            f"on-congestion {'block' if handover else wan.on_congestion};",
            *(["allow-two-primaries yes;"] if handover else []),
            f"verify-alg {wan.verify_alg};",
            f"congestion-fill {wan.congestion_fill_kib}k;",
            f"congestion-extents {wan.congestion_extents};",
            f"sndbuf-size {wan.sndbuf};",
            "rcvbuf-size 0;",  # 0 = let the kernel autotune the receive side
            f"max-buffers {wan.max_buffers};",
            f"max-epoch-size {min(20000, wan.max_buffers)};",
            f"ping-timeout {wan.ping_timeout_tenths};",
            f"timeout {wan.timeout_tenths};",
            f"cram-hmac-alg {self.cram_hmac_alg};",
            f'shared-secret "{self.shared_secret}";',
            # After a split brain DRBD may resolve it alone only when one side wrote
            # nothing while apart; otherwise it stays disconnected and a person decides
            # (`xenwam disk status`, docs/migrate.md).  discard-secondary would silently
            # throw away what a guest wrote on the secondary's host.
            "after-sb-0pri discard-zero-changes;",
            "after-sb-1pri consensus;",
            "after-sb-2pri disconnect;",
        ]
        if wan.csums_alg:
            net.append(f"csums-alg {wan.csums_alg};")
        disk = [
            "on-io-error detach;",
            f"al-extents {wan.al_extents};",
            f"c-plan-ahead {wan.plan_ahead_tenths};",
            f"c-fill-target {wan.c_fill_target_kib}k;",
            f"c-max-rate {wan.resync_max_rate_kib}k;",
            "c-min-rate 250k;",
        ]
        lines = [
            MODEL_MARKER + json.dumps(self.to_json(), sort_keys=True),
            "# Written by xenwam; changes here are overwritten by `xenwam disk define`.",
            f"resource {self.name} {{",
            "  net {",
            *(f"    {line}" for line in net),
            "  }",
            "  disk {",
            *(f"    {line}" for line in disk),
            "  }",
        ]
        for host in self.hosts:
            lines += [
                f"  on {host.hostname} {{",
                f"    device {self.device} minor {self.minor};",
                f"    disk {host.disk};",
                f"    meta-disk {host.meta_disk};",
                f"    address {host.render_address()};",
                "  }",
            ]
        lines.append("}")
        return "\n".join(lines) + "\n"


def parse_resource_file(text: str, origin: str = "resource file") -> Resource:
    """Read back the model that :meth:`Resource.render` put in a file's first line."""
    first = text.split("\n", 1)[0]
    if not first.startswith(MODEL_MARKER):
        raise ConfigError(
            f"{origin} was not written by xenwam (its first line is not the xenwam model "
            f"line; it is not quoted because it may hold a secret); "
            "define the resource with `xenwam disk define`"
        )
    try:
        data = json.loads(first[len(MODEL_MARKER):])
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin} has a damaged model line ({exc}); "
                          "rewrite it with `xenwam disk define`") from exc
    resource = Resource.from_json(data)
    resource.validate()
    return resource


def load(name: str, config_dir: Path = DEFAULT_CONFIG_DIR) -> Resource:
    """Load the xenwam resource called ``name`` from ``config_dir``."""
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(f"invalid resource name {name!r}: use letters, digits, '.', '_', '-'")
    path = config_dir / f"{FILE_PREFIX}{name}.res"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"no xenwam resource {name!r}: {path} does not exist; "
            "define it with `xenwam disk define` or check `xenwam disk status`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {_reason(exc)}") from None
    return parse_resource_file(text, str(path))


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not text; define the resource again with `xenwam disk define`"
    return exc.strerror or str(exc)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {_reason(exc)}") from None


def list_resources(config_dir: Path = DEFAULT_CONFIG_DIR) -> list[Resource]:
    """Every xenwam resource defined in ``config_dir``, sorted by name."""
    if not config_dir.is_dir():
        return []
    return [parse_resource_file(_read(p), str(p))
            for p in sorted(config_dir.glob(f"{FILE_PREFIX}*.res"))]


def install(
    resource: Resource,
    config_dir: Path = DEFAULT_CONFIG_DIR,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Validate ``resource`` and write its file atomically; return the file's path.

    ``check``, if given, is called with the path of the finished temporary file before it
    replaces the old one (for instance to run ``drbdadm -c FILE dump``); if it raises,
    the temporary file is removed and nothing changes.  The file is mode 0600 because it
    holds the shared secret.
    """
    text = resource.render()  # validates
    config_dir.mkdir(parents=True, exist_ok=True)
    target = config_dir / resource.file_name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{resource.file_name}.", dir=config_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        if check is not None:
            check(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(config_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def uninstall(name: str, config_dir: Path = DEFAULT_CONFIG_DIR) -> bool:
    """Remove the resource file of ``name``; return whether there was one."""
    path = config_dir / f"{FILE_PREFIX}{name}.res"
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
