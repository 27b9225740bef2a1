"""The kernel ESP data plane: Linux XFRM states and policies in BEET mode via ``ip xfrm``.

Building argv lists (pure, tested without root) is separate from running them (through
:mod:`hip.runner`).  Inner selectors are the HITs, outer addresses the locators, so a
move replaces only the outer addresses: the states are re-added with the same SPIs and
keys and the policies' templates updated in place (``ip xfrm policy update``).
iproute2 has no XFRM_MSG_MIGRATE, hence delete-and-add of the states.

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
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address

from hip.crypto import ESP_SUITES, EspTransform
from hip.dataplane import HIP_UDP_PORT, HIT_PREFIX, Encapsulation, Locator, SecurityAssociation
from hip.errors import DataPlaneError
from hip.runner import Runner, default_runner

DEFAULT_DEVICE = "hip0"
#: Priority of the catch-all ACQUIRE policy: numerically above (so weaker than) the
#: per-peer policies, which keep the default 0.
ACQUIRE_POLICY_PRIORITY = 2000


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


def state_add_argv(sa: SecurityAssociation, *, outbound: bool) -> list[str]:
    """``ip xfrm state add`` for one direction of ``sa``."""
    if outbound:
        src, dst, spi = sa.own_locator, sa.peer_locator, sa.spi_out
        enc, auth, inner_src, inner_dst = sa.enc_key_out, sa.auth_key_out, sa.own_hit, sa.peer_hit
    else:
        src, dst, spi = sa.peer_locator, sa.own_locator, sa.spi_in
        enc, auth, inner_src, inner_dst = sa.enc_key_in, sa.auth_key_in, sa.peer_hit, sa.own_hit
    argv = [
        "ip", "xfrm", "state", "add", "src", str(src), "dst", str(dst), "proto", "esp",
        "spi", f"{spi:#010x}", "reqid", _reqid(sa), "mode", "beet", "replay-window", "64",
        *algorithm_args(sa.suite_id, enc, auth),
        "sel", "src", f"{inner_src}/128", "dst", f"{inner_dst}/128",
    ]
    if sa.encapsulation is Encapsulation.UDP:
        argv += ["encap", "espinudp", str(HIP_UDP_PORT), str(HIP_UDP_PORT), "0.0.0.0"]
    return argv


def state_delete_argv(src: Locator, dst: Locator, spi: int) -> list[str]:
    """``ip xfrm state delete`` for the state identified by (dst, spi, esp)."""
    return ["ip", "xfrm", "state", "delete", "src", str(src), "dst", str(dst),
            "proto", "esp", "spi", f"{spi:#010x}"]


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
        """Install ``sa`` (replacing an earlier pair with the same peer)."""
        self.remove(sa.peer_hit)
        self.runner.run(state_add_argv(sa, outbound=True))
        self.runner.run(state_add_argv(sa, outbound=False))
        self.runner.run(policy_argv(sa, outbound=True))
        self.runner.run(policy_argv(sa, outbound=False))
        self.installed[sa.peer_hit] = sa

    def update_locators(self, peer_hit: IPv6Address, own: Locator, peer: Locator) -> None:
        """Re-add the states between the new locators; update the policies in place."""
        old = self.installed.get(peer_hit)
        if old is None:
            raise DataPlaneError(f"no XFRM SA with {peer_hit} to move to {own} -> {peer}")
        new = replace(old, own_locator=own, peer_locator=peer)
        self._delete_states(old)
        self.runner.run(state_add_argv(new, outbound=True))
        self.runner.run(state_add_argv(new, outbound=False))
        self.runner.run(policy_argv(new, outbound=True))
        self.runner.run(policy_argv(new, outbound=False))
        self.installed[peer_hit] = new

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
