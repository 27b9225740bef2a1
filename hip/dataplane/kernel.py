"""The kernel ESP data plane: Linux XFRM states and policies in BEET mode via ``ip xfrm``.

Building commands (pure, tested without root) is separate from running them (through
:mod:`hip.runner`).  Inner selectors are the HITs, outer addresses the locators, so a
move replaces only the outer addresses: the states are re-added with the same SPIs and
keys and the policies' templates updated in place (``ip xfrm policy update``).
iproute2 has no XFRM_MSG_MIGRATE, hence delete-and-add of the states.  A re-added
state would start its sequence counters at 0, and the peer's anti-replay window, far
ahead, would drop everything we send as replays; so the counters are read first
(:func:`parse_replay_counters`) and the states re-added with ``replay-oseq`` (plus
:data:`MOVE_OSEQ_MARGIN` for packets sent between the read and the delete) and
``replay-seq``.

Commands that carry ESP keys never put them on a command line (readable by any local
user in /proc while they run): they go to ``ip -batch -`` on stdin
(:func:`batch_script`), and what ``ip`` prints back is passed through
:func:`redact_keys` before it reaches an error message or a log.

A dummy device (a TUN device where the dummy driver is missing) holds our HIT and the
route to ``2001:20::/28`` so that applications can bind to and reach HITs; the XFRM
policies then catch that traffic.  A catch-all policy from our HIT to the whole ORCHID
prefix, below every per-peer policy, makes the kernel report a packet to a HIT with no
SA as an XFRM ACQUIRE; :func:`parse_acquires` reads ``ip xfrm monitor acquire`` and
hipd starts the base exchange.  (It has to be a transport-mode template: a BEET
template with wildcard endpoints makes the kernel fail the route lookup instead of
asking.)  The kernel drops the packet that caused the ACQUIRE (``xfrm_larval_drop``);
TCP sends its SYN again a second later, over the new SA.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, ip_address

from hip.crypto import ESP_SUITES, EspTransform
from hip.dataplane import HIP_UDP_PORT, HIT_PREFIX, Encapsulation, Locator, SecurityAssociation
from hip.errors import CommandError, DataPlaneError
from hip.runner import CommandResult, Runner, default_runner

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "hip0"
#: Priority of the catch-all ACQUIRE policy: numerically above (so weaker than) the
#: per-peer policies, which keep the default 0.
ACQUIRE_POLICY_PRIORITY = 2000
#: Added to the outbound sequence number read before a move: packets the kernel sends
#: on the old state between the read and the delete must not have their numbers used
#: again.  A forward jump only slides the peer's window; 4096 covers ~50 ms at 1 Gbit/s
#: of full-size packets, far more than the few milliseconds one ``ip`` run takes.
MOVE_OSEQ_MARGIN = 4096
#: Sequence numbers are 32 bits (no ESN).
_SEQ_MAX = 0xFFFFFFFF
#: ``ip`` reads a batch script from stdin; ``-force`` goes on past a failed line.
BATCH_ARGV = ["ip", "-batch", "-"]
FORCE_BATCH_ARGV = ["ip", "-force", "-batch", "-"]


@dataclass(frozen=True)
class ReplayCounters:
    """An XFRM state's anti-replay context: the highest sequence number received
    (``seq``, inbound states) and the last one sent (``oseq``, outbound states)."""

    seq: int = 0
    oseq: int = 0


def after_move(counters: ReplayCounters, *, outbound: bool) -> ReplayCounters:
    """The counters a state re-added after a move starts from.

    Outbound: past every number the old state may have used (read value plus
    :data:`MOVE_OSEQ_MARGIN`).  Inbound: the highest number received, so that old
    packets replayed after the move are still refused.
    """
    if outbound:
        return ReplayCounters(seq=0, oseq=min(counters.oseq + MOVE_OSEQ_MARGIN, _SEQ_MAX))
    return ReplayCounters(seq=counters.seq, oseq=0)


_HEX_RUN = re.compile(r"(?:0x)?[0-9a-fA-F]{16,}")


def redact_keys(text: str) -> str:
    """``text`` with every run of 16 or more hex digits replaced: ESP keys are at
    least 16 bytes, while SPIs, sequence numbers and bitmaps ``ip`` prints are 8."""
    return _HEX_RUN.sub("<redacted>", text)


def _one_line(stderr: str) -> str:
    """``ip``'s stderr, redacted, on one line, at most 2000 characters."""
    return redact_keys("; ".join(line.strip() for line in stderr.splitlines() if line.strip()))[
        -2000:
    ]


def batch_script(commands: Sequence[Sequence[str]]) -> str:
    """The ``ip -batch`` script running each ``ip`` argv (without its leading "ip").

    ``ip`` splits batch lines on blanks and reads "" as an empty argument (the key of
    NULL encryption).
    """
    lines = []
    for argv in commands:
        if not argv or argv[0] != "ip":
            raise DataPlaneError(f"batch lines are ip commands, not {list(argv[:1])!r}")
        words = []
        for word in argv[1:]:
            if any(c.isspace() or c in "\"'#\\" for c in word):
                raise DataPlaneError(f"{word!r} cannot be written in an ip batch line")
            words.append(word or '""')
        lines.append(" ".join(words))
    return "".join(line + "\n" for line in lines)


def algorithm_args(suite_id: int, enc_key: bytes, auth_key: bytes) -> list[str]:
    """The ``enc``/``auth-trunc`` arguments for ``suite_id`` (RFC 7402 ids).

    The kernel's algorithm names and the ICV length come from :data:`hip.crypto.ESP_SUITES`,
    the one table of transforms that negotiation and the userspace data plane also read.
    """
    try:
        suite = ESP_SUITES[EspTransform(suite_id)]
    except (ValueError, KeyError):
        raise DataPlaneError(
            f"ESP transform {suite_id!r} has no XFRM mapping; use one of "
            f"{sorted(int(t) for t in ESP_SUITES)}"
        ) from None
    # NULL encryption takes an empty key: ``ip xfrm`` wants the argument present.
    enc_arg = "0x" + enc_key.hex() if suite.enc_key_len else ""
    return ["enc", suite.xfrm_enc, enc_arg,
            "auth-trunc", suite.xfrm_auth, "0x" + auth_key.hex(), str(8 * suite.icv_len)]


def _reqid(sa: SecurityAssociation) -> str:
    # One reqid per peer ties its states to its policies; derive it from the HIT so
    # a restarted hipd finds the same one.
    return str(int.from_bytes(sa.peer_hit.packed[-4:], "big") & 0x3FFFFFFF or 1)


def state_add_argv(
    sa: SecurityAssociation, *, outbound: bool, replay: ReplayCounters | None = None
) -> list[str]:
    """``ip xfrm state add`` for one direction of ``sa``, starting from ``replay``.

    It holds the keys: hipd runs it through :func:`batch_script` on stdin, never as a
    command line (only throwaway probe states are run as argv).
    """
    if outbound:
        src, dst, spi = sa.own_locator, sa.peer_locator, sa.spi_out
        enc, auth, inner_src, inner_dst = sa.enc_key_out, sa.auth_key_out, sa.own_hit, sa.peer_hit
    else:
        src, dst, spi = sa.peer_locator, sa.own_locator, sa.spi_in
        enc, auth, inner_src, inner_dst = sa.enc_key_in, sa.auth_key_in, sa.peer_hit, sa.own_hit
    argv = [
        "ip", "xfrm", "state", "add", "src", str(src), "dst", str(dst), "proto", "esp",
        "spi", f"{spi:#010x}", "reqid", _reqid(sa), "mode", "beet", "replay-window", "64",
        *_replay_args(replay),
        *algorithm_args(sa.suite_id, enc, auth),
        "sel", "src", f"{inner_src}/128", "dst", f"{inner_dst}/128",
    ]
    if sa.encapsulation is Encapsulation.UDP:
        argv += ["encap", "espinudp", str(HIP_UDP_PORT), str(HIP_UDP_PORT), "0.0.0.0"]
    return argv


def _replay_args(replay: ReplayCounters | None) -> list[str]:
    if replay is None:
        return []
    return ["replay-seq", f"{replay.seq:#x}", "replay-oseq", f"{replay.oseq:#x}"]


def state_get_argv(src: Locator, dst: Locator, spi: int) -> list[str]:
    """``ip xfrm state get`` for one state; its output holds the keys: never log it."""
    return ["ip", "xfrm", "state", "get", "src", str(src), "dst", str(dst),
            "proto", "esp", "spi", f"{spi:#010x}"]


_STATE_HEAD = re.compile(r"^src (\S+) dst (\S+)\s*$")
_SPI = re.compile(r"\bproto esp spi (0x[0-9a-fA-F]+)")
_REPLAY = re.compile(r"\banti-replay context: seq (0x[0-9a-fA-F]+), oseq (0x[0-9a-fA-F]+)")
_REPLAY_ESN = re.compile(
    r"\bseq-hi 0x[0-9a-fA-F]+, seq (0x[0-9a-fA-F]+), oseq-hi 0x[0-9a-fA-F]+, "
    r"oseq (0x[0-9a-fA-F]+)"
)


def parse_replay_counters(text: str) -> dict[tuple[Locator, int], ReplayCounters]:
    """Each ESP state's anti-replay counters in ``ip xfrm state`` output, by (dst, SPI).

    A state starts with ``src A dst B``; ``proto esp spi 0x...`` names it and
    ``anti-replay context: seq 0x.., oseq 0x..`` (``seq-hi .., seq .., oseq-hi ..,
    oseq ..`` for ESN states) holds its counters.
    """
    found: dict[tuple[Locator, int], ReplayCounters] = {}
    dst: Locator | None = None
    spi: int | None = None
    for line in text.splitlines():
        head = _STATE_HEAD.match(line)
        if head:
            try:
                dst = ip_address(head.group(2))
            except ValueError:
                dst = None
            spi = None
            continue
        named = _SPI.search(line)
        if named:
            spi = int(named.group(1), 16)
        counters = _REPLAY.search(line) or _REPLAY_ESN.search(line)
        if counters and dst is not None and spi is not None:
            found[(dst, spi)] = ReplayCounters(int(counters.group(1), 16),
                                               int(counters.group(2), 16))
    return found


def state_delete_argv(src: Locator, dst: Locator, spi: int) -> list[str]:
    """``ip xfrm state delete`` for the state identified by (dst, spi, esp)."""
    return ["ip", "xfrm", "state", "delete", "src", str(src), "dst", str(dst),
            "proto", "esp", "spi", f"{spi:#010x}"]


_FAILED_LINE = re.compile(r"^Command failed -:(\d+)$", re.MULTILINE)


def failed_batch_lines(result: CommandResult) -> list[int] | None:
    """The script lines ``ip -force -batch -`` reported failed (1-based; empty if it
    succeeded), or None if it failed without saying which line (it did not run)."""
    if result.ok:
        return []
    lines = [int(n) for n in _FAILED_LINE.findall(result.stderr)]
    return lines or None


def policy_argv(sa: SecurityAssociation, *, outbound: bool, verb: str = "update") -> list[str]:
    """``ip xfrm policy add|update`` steering HIT-to-HIT traffic into ``sa``."""
    if outbound:
        sel = ["src", f"{sa.own_hit}/128", "dst", f"{sa.peer_hit}/128", "dir", "out"]
        tmpl = ["src", str(sa.own_locator), "dst", str(sa.peer_locator)]
    else:
        sel = ["src", f"{sa.peer_hit}/128", "dst", f"{sa.own_hit}/128", "dir", "in"]
        tmpl = ["src", str(sa.peer_locator), "dst", str(sa.own_locator)]
    return ["ip", "xfrm", "policy", verb, *sel, "tmpl", *tmpl, "proto", "esp",
            "reqid", _reqid(sa), "mode", "beet"]


def policy_delete_argv(
    own_hit: IPv6Address, peer_hit: IPv6Address, *, outbound: bool
) -> list[str]:
    """``ip xfrm policy delete`` for one direction between two HITs."""
    src, dst = (own_hit, peer_hit) if outbound else (peer_hit, own_hit)
    return ["ip", "xfrm", "policy", "delete", "src", f"{src}/128", "dst", f"{dst}/128",
            "dir", "out" if outbound else "in"]


def acquire_policy_argv(own_hit: IPv6Address, verb: str = "update") -> list[str]:
    """The catch-all policy that turns traffic to unknown HITs into XFRM ACQUIREs."""
    return ["ip", "xfrm", "policy", verb, "src", f"{own_hit}/128", "dst", HIT_PREFIX,
            "dir", "out", "priority", str(ACQUIRE_POLICY_PRIORITY),
            "tmpl", "proto", "esp", "mode", "transport"]


def acquire_monitor_argv() -> list[str]:
    """The command whose output :func:`parse_acquires` reads."""
    return ["ip", "xfrm", "monitor", "acquire"]


def parse_acquires(text: str) -> list[IPv6Address]:
    """Peer HITs of every ACQUIRE in ``ip xfrm monitor acquire`` output, in order.

    Each event starts ``acquire proto esp`` and its ``sel`` line names the flow; the
    destination of the selector is the HIT the kernel needs an SA for.
    """
    hits: list[IPv6Address] = []
    in_event = False
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["acquire"]:
            in_event = True
        elif in_event and words[:1] == ["sel"] and "dst" in words:
            target = words[words.index("dst") + 1].split("/")[0]
            # An IPv4 selector is not ours: HITs are IPv6.
            with contextlib.suppress(ValueError):
                hits.append(IPv6Address(target))
            in_event = False
    return hits


@dataclass
class KernelDataPlane:
    """ESP in the kernel: hipd only programs XFRM; the kernel moves the packets."""

    own_hit: IPv6Address
    runner: Runner = default_runner
    device: str = DEFAULT_DEVICE
    installed: dict[IPv6Address, SecurityAssociation] = field(default_factory=dict)
    kind: str = "kernel"

    def setup(self) -> None:
        """Create the HIT device, the ORCHID route and the catch-all ACQUIRE policy."""
        made = self.runner.run(["ip", "link", "add", self.device, "type", "dummy"], check=False)
        if not made.ok and "File exists" not in made.stderr:
            # No dummy driver in this kernel: a TUN device nobody reads does the same job.
            self.runner.run(["ip", "tuntap", "add", "dev", self.device, "mode", "tun"])
        self.runner.run(["ip", "link", "set", "dev", self.device, "up"])
        self.runner.run(["ip", "-6", "addr", "replace", f"{self.own_hit}/128", "dev",
                         self.device, "nodad"])
        self.runner.run(["ip", "-6", "route", "replace", HIT_PREFIX, "dev", self.device])
        self.runner.run(acquire_policy_argv(self.own_hit))

    def install(self, sa: SecurityAssociation) -> None:
        """Install ``sa`` (replacing an earlier pair with the same peer).

        A pair re-installed with the same SPIs (its encapsulation changed) keeps its
        sequence counters, as in :meth:`update_locators`; new SPIs start from 0.
        """
        old = self.installed.get(sa.peer_hit)
        replay_out = replay_in = None
        if old is not None and (old.spi_in, old.spi_out) == (sa.spi_in, sa.spi_out):
            replay_out, replay_in = self._moved_counters(old)
        self.remove(sa.peer_hit)
        self._add(sa, replay_out, replay_in)
        self.installed[sa.peer_hit] = sa

    def update_locators(self, peer_hit: IPv6Address, own: Locator, peer: Locator) -> None:
        """Re-add the states between the new locators, carrying their sequence counters
        over; update the policies in place."""
        old = self.installed.get(peer_hit)
        if old is None:
            raise DataPlaneError(f"no XFRM SA with {peer_hit} to move to {own} -> {peer}")
        new = replace(old, own_locator=own, peer_locator=peer)
        replay_out, replay_in = self._moved_counters(old)
        # Two ``ip`` runs in all (the read, then delete and add in one batch): in a
        # guest starved of CPU right after a migration each run cost about 1.5 s, and
        # hipd's UPDATE waits for the move (issue 10, finding 2).
        deletes = [state_delete_argv(old.own_locator, old.peer_locator, old.spi_out),
                   state_delete_argv(old.peer_locator, old.own_locator, old.spi_in)]
        script = batch_script([*deletes, *self._add_commands(new, replay_out, replay_in)])
        result = self._run_batch(script, force=True, what=f"move the SAs with {peer_hit}")
        failed = failed_batch_lines(result)
        if failed is None or any(n > len(deletes) for n in failed):
            raise DataPlaneError(
                f"ip -batch could not move the SAs with {peer_hit} to {own} -> {peer} (SPI "
                f"out {old.spi_out:#x}, in {old.spi_in:#x}): "
                f"{_one_line(result.stderr) or '(no output)'}; check `ip xfrm state`")
        if failed:
            log.debug("moving the SAs with %s: an old state was already gone (%s)",
                      peer_hit, _one_line(result.stderr))
        self.installed[peer_hit] = new

    def _moved_counters(
        self, sa: SecurityAssociation
    ) -> tuple[ReplayCounters, ReplayCounters]:
        """Read both states' counters and give what their re-added copies start from."""
        script = batch_script([
            state_get_argv(sa.own_locator, sa.peer_locator, sa.spi_out),
            state_get_argv(sa.peer_locator, sa.own_locator, sa.spi_in),
        ])
        # The output holds the keys: it is parsed, never logged.
        result = self._run_batch(script, force=True, what="read the replay counters")
        found = parse_replay_counters(result.stdout)
        out = found.get((sa.peer_locator, sa.spi_out))
        inbound = found.get((sa.own_locator, sa.spi_in))
        if out is None or inbound is None:
            log.warning(
                "could not read the sequence counters of the SAs with %s (SPI out %#x, in "
                "%#x): %s; re-adding them from 0, the peer may drop what we send as replays "
                "until the next rekey", sa.peer_hit, sa.spi_out, sa.spi_in,
                _one_line(result.stderr) or "not in ip's output")
        return (after_move(out or ReplayCounters(), outbound=True),
                after_move(inbound or ReplayCounters(), outbound=False))

    @staticmethod
    def _add_commands(sa: SecurityAssociation, replay_out: ReplayCounters | None,
                      replay_in: ReplayCounters | None) -> list[list[str]]:
        return [
            state_add_argv(sa, outbound=True, replay=replay_out),
            state_add_argv(sa, outbound=False, replay=replay_in),
            policy_argv(sa, outbound=True),
            policy_argv(sa, outbound=False),
        ]

    def _add(self, sa: SecurityAssociation, replay_out: ReplayCounters | None,
             replay_in: ReplayCounters | None) -> None:
        script = batch_script(self._add_commands(sa, replay_out, replay_in))
        result = self._run_batch(script, force=False, what=f"install the SAs with {sa.peer_hit}")
        if not result.ok:
            raise DataPlaneError(
                f"ip -batch could not install the SAs with {sa.peer_hit} (SPI out "
                f"{sa.spi_out:#x}, in {sa.spi_in:#x}, {sa.own_locator} -> {sa.peer_locator}): "
                f"{_one_line(result.stderr) or '(no output)'}; check "
                "`ip xfrm state` and that esp4/esp6 and xfrm_user are loaded"
            )

    def _run_batch(self, script: str, *, force: bool, what: str) -> CommandResult:
        argv = FORCE_BATCH_ARGV if force else BATCH_ARGV
        try:
            return self.runner.run(argv, check=False, input=script)
        except CommandError as exc:
            # The runner's message may quote ip's stderr, which may quote a key.
            raise DataPlaneError(f"cannot {what}: {redact_keys(str(exc))}") from None

    def remove(self, peer_hit: IPv6Address) -> None:
        """Delete the states and policies with ``peer_hit`` (absent ones are ignored)."""
        old = self.installed.pop(peer_hit, None)
        if old is None:
            return
        self._delete_states(old)
        for outbound in (True, False):
            self.runner.run(policy_delete_argv(old.own_hit, old.peer_hit, outbound=outbound),
                            check=False)

    def _delete_states(self, sa: SecurityAssociation) -> None:
        self.runner.run(state_delete_argv(sa.own_locator, sa.peer_locator, sa.spi_out),
                        check=False)
        self.runner.run(state_delete_argv(sa.peer_locator, sa.own_locator, sa.spi_in),
                        check=False)

    def counters(self) -> dict[str, object]:
        """What is installed; the kernel keeps the packet counters (``ip -s xfrm state``)."""
        return {"peers": {str(h): sa.redacted() for h, sa in self.installed.items()}}

    def close(self) -> None:
        """Remove every SA, the catch-all policy and the HIT device."""
        for hit in list(self.installed):
            self.remove(hit)
        self.runner.run(["ip", "xfrm", "policy", "delete", "src", f"{self.own_hit}/128",
                         "dst", HIT_PREFIX, "dir", "out"], check=False)
        self.runner.run(["ip", "link", "del", self.device], check=False)
