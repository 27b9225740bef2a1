"""xenwam's guest agent: applies the network dom0 hands a moved guest through xenstore.

It runs inside the guest next to hipd.  When ``xenwam/network/generation`` in the guest's
xenstore area changes (dom0 writes it while the guest is paused after a migration), the
agent reads the assignment (:mod:`xenwam_guest.layout`), puts the new address on the
interface, points the default route at the new gateway, removes the old addresses,
announces the new address on the segment (gratuitous ARP), and writes what it did under
``data/xenwam/network/``.  hipd sees the address change from netlink and sends its HIP
UPDATEs; the agent knows nothing of HIP.

It polls (every ``--idle-interval``, faster for a while after a link event), which
survives xenstore being briefly gone after a resume, when a watch can be lost.  With
``--xenstore-watch`` it also sets a xenstore watch on the generation key
(:mod:`xenwam_guest.xenbus`: pyxs refuses watches over ``/dev/xen/xenbus``, the guest's
only way to xenstore), meant to wake it as soon as a resumed guest runs (the guest kernel
sets its watches again at resume, which fires them); not yet measured on real Xen, so off
by default.

Garbage in the keys is reported back (``status`` ``error``) and the address is left as
it is; a generation written twice is applied twice, in order, or only the newer if both
came between two polls.

    python3 -m xenwam_guest.agent --interface eth0
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xenwam_guest import layout
from xenwam_guest.errors import AgentError, ApplyError, LayoutError, StoreError, UsageError
from xenwam_guest.layout import AgentReport, IPInterface, NetworkAssignment, Status
from xenwam_guest.xenbus import XenbusError, XenbusWatch

log = logging.getLogger("xenwam-guest-agent")

VERSION = "1"
XENBUS_PATH = "/dev/xen/xenbus"
#: Seconds between two looks at xenstore around a move (after a link event) ...
DEFAULT_INTERVAL = 0.1
#: ... and otherwise: each look costs the guest CPU (a xenstore round trip through dom0),
#: and a resumed guest's network device reports its link at once, which wakes the agent.
DEFAULT_IDLE_INTERVAL = 1.0
#: How long the agent keeps looking every DEFAULT_INTERVAL after a link event.
FAST_FOR = 30.0
#: Gratuitous ARPs sent after an address change, this far apart (RFC 5227 announces twice).
ANNOUNCEMENTS = 3
#: rtnetlink's "gateway is on-link" route flag (linux/rtnetlink.h).
RTNH_F_ONLINK = 4
ANNOUNCE_SPACING = 0.05
ETH_P_ARP = 0x0806


# ---------------------------------------------------------------- side effects, injected

class Store(Protocol):
    """The guest's view of xenstore (paths relative to its home)."""

    def read(self, path: str) -> str | None:
        """The value at ``path``, None if there is none; :class:`StoreError` on failure."""

    def write(self, path: str, value: str) -> None:
        """Set ``path``; :class:`StoreError` on failure."""


class Network(Protocol):
    """What the agent does to the guest's network."""

    def addresses(self, interface: str) -> list[IPInterface]:
        """The addresses on ``interface`` now."""

    def apply(self, interface: str, assignment: NetworkAssignment) -> bool:
        """Make ``interface`` hold exactly the assignment's address, with the default route
        via its gateway; False if it already did.  :class:`ApplyError` on failure."""

    def announce(self, interface: str, address: IPInterface) -> None:
        """Tell the segment that ``address`` is here now (best effort)."""

    def dhcp(self, interface: str) -> None:
        """Get an address from the site's DHCP server; :class:`ApplyError` on failure."""


# ---------------------------------------------------------------- the agent

@dataclass
class Agent:
    """Applies each new generation it finds in the store; :meth:`poll` is one look."""

    interface: str
    store: Store
    network: Network
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    #: The generation last acted on (its raw text), None before the first.
    seen: str | None = None
    #: Seconds between two checks that the agent's key is still there.
    announce_every: float = 10.0
    _announced_at: float | None = None

    def start(self) -> None:
        """Say the agent runs; skip a generation already answered (an agent restart must
        not re-apply an old move, though applying it again would change nothing)."""
        self.announce()
        answered = self.store.read(f"{layout.REPORT_DIR}/generation")
        current = self.store.read(f"{layout.NETWORK_DIR}/generation")
        if answered is not None and answered == current:
            self.seen = current

    def announce(self) -> None:
        """Write the agent's key, by which dom0 knows someone will act on a new network."""
        self.store.write(layout.AGENT_KEY, f"xenwam-guest-agent {VERSION}")
        self._announced_at = self.clock()

    def _announce_if_gone(self) -> None:
        """A guest that moved starts with an empty ``data/`` area on its new host (the
        migration carries none of it): say again that the agent runs, or the next
        ``xenwam migrate`` would find no agent and not wait for one."""
        if self._announced_at is not None and \
                self.clock() - self._announced_at < self.announce_every:
            return
        if self.store.read(layout.AGENT_KEY) is None:
            log.info("the agent's key is gone (the guest moved): announcing again")
            self.announce()
        else:
            self._announced_at = self.clock()

    def poll(self) -> AgentReport | None:
        """Act on a new generation if there is one; the report written, or None."""
        self._announce_if_gone()
        generation = self.store.read(f"{layout.NETWORK_DIR}/generation")
        if generation is None or generation == self.seen:
            return None
        self.seen = generation
        started = self.clock()
        values = {key: self.store.read(f"{layout.NETWORK_DIR}/{key}")
                  for key in layout.NETWORK_KEYS}
        values["generation"] = generation
        read_at = self.clock()
        log.debug("generation %s: its %d keys read in %d ms", generation, len(values),
                  (read_at - started) * 1000)
        try:
            assignment = NetworkAssignment.parse(values)
            if assignment.dhcp:
                self.network.dhcp(self.interface)
                status, message = Status.APPLIED, "address from DHCP"
            elif self.network.apply(self.interface, assignment):
                status, message = Status.APPLIED, f"migration {assignment.migration}"
                log.debug("generation %s: route and address applied in %d ms", generation,
                          (self.clock() - read_at) * 1000)
                assert assignment.address is not None
                self.network.announce(self.interface, assignment.address)
            else:
                status, message = Status.UNCHANGED, "the interface already had it"
        except (LayoutError, ApplyError) as exc:
            status, message = Status.ERROR, str(exc)
            log.error("generation %r not applied: %s", generation, exc)
        took_ms = int((self.clock() - started) * 1000)
        try:
            now_addresses = ",".join(str(a) for a in self.network.addresses(self.interface))
        except ApplyError as exc:
            now_addresses = f"? ({exc})"
        report = AgentReport(generation=generation, status=status, address=now_addresses,
                             message=message, took_ms=took_ms, at=self.wall_clock())
        self.announce()  # a new generation means a new host, whose data/ area was empty
        for key, value in report.to_values():  # the generation last: dom0 waits on it
            self.store.write(f"{layout.REPORT_DIR}/{key}", value)
        log.info("generation %s: %s (%s) in %d ms; %s now has %s", generation,
                 status.value, message, took_ms, self.interface, now_addresses)
        return report


def run(agent: Agent, interval: float, *, sleep: Callable[[float], None] = time.sleep,
        reconnect: Callable[[], None] | None = None,
        keep_going: Callable[[], bool] = lambda: True,
        idle_interval: float | None = None, fast_for: float = FAST_FOR,
        wait: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic) -> None:
    """Poll forever; a store that fails (xenstore gone after a resume) is retried.

    With ``wait`` (block up to the given seconds; True if the guest's link changed) the
    agent looks every ``idle_interval`` seconds, at once when the link changes, and then
    every ``interval`` seconds for ``fast_for`` seconds: a migration's new network is
    written before the guest resumes, and a resumed guest's network device reports its
    link.  Without it, every ``interval`` seconds.
    """
    started = False
    failing = False
    fast_until = -1.0
    while keep_going():
        try:
            if not started:
                agent.start()
                started = True
            agent.poll()
            if failing:
                log.info("xenstore answers again")
                failing = False
        except StoreError as exc:
            if not failing:
                log.warning("xenstore: %s; retrying every %g s", exc, interval)
                failing = True
            if reconnect is not None:
                reconnect()
        if wait is None:
            sleep(interval)
            continue
        now = clock()
        pause = interval if failing or now < fast_until else (idle_interval or interval)
        if wait(pause):
            log.debug("link event: looking every %g s for %g s", interval, fast_for)
            fast_until = clock() + fast_for


# ---------------------------------------------------------------- real side effects

class XenbusStore:
    """xenstore through pyxs over ``/dev/xen/xenbus`` (reconnects after a failure)."""

    def __init__(self, path: str = XENBUS_PATH) -> None:
        self.path = path
        self._client: Any = None

    def _connected(self) -> Any:
        if self._client is None:
            from pyxs import Client  # only guests have (and need) pyxs

            client = Client(xen_bus_path=self.path)
            try:
                client.connect()
            except Exception as exc:  # pyxs raises its own ConnectionError
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            self._client = client
        return self._client

    def reconnect(self) -> None:
        """Drop the connection; the next call opens a new one."""
        if self._client is not None:
            with contextlib.suppress(Exception):  # already broken: why we reconnect
                self._client.close()
            self._client = None

    def read(self, path: str) -> str | None:
        """The value at ``path``, or None."""
        client = self._connected()
        try:
            value = client.read(path.encode())
        except Exception as exc:  # pyxs's errors carry the errno first
            if exc.args and exc.args[0] == errno.ENOENT:
                return None
            raise StoreError(f"cannot read {path}: {exc!r}") from exc
        return bytes(value).decode(errors="replace")

    def write(self, path: str, value: str) -> None:
        """Set ``path``."""
        client = self._connected()
        try:
            client.write(path.encode(), value.encode())
        except Exception as exc:
            raise StoreError(f"cannot write {path}: {exc!r}") from exc


def arp_announcement(mac: bytes, address: ipaddress.IPv4Address) -> bytes:
    """A gratuitous ARP request (RFC 5227 section 2.3's announcement) as an Ethernet frame:
    sender and target protocol address both ``address``, to the broadcast address."""
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
    ip = address.packed
    ethernet = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return ethernet + arp


class WatchLost(Exception):
    """The xenstore watch broke; the agent goes on polling without it."""


class LinuxNetwork:
    """The guest's network through netlink (pyroute2)."""

    def __init__(self, dhcp_command: Sequence[str] = (),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.dhcp_command = tuple(dhcp_command)
        self.sleep = sleep
        self._ipr: Any = None
        self._events: Any = None

    def _netlink(self) -> Any:
        """One netlink socket for the agent's life, opened before the first move: importing
        pyroute2 and opening it takes seconds in a small guest just after a resume, which
        is exactly when the new address is needed."""
        if self._ipr is None:
            from pyroute2 import IPRoute  # only guests have (and need) it

            self._ipr = IPRoute()
        return self._ipr

    def open_events(self) -> None:
        """Subscribe to the guest's link events (:meth:`wait` reads them)."""
        if self._events is None:
            from pyroute2 import IPRoute
            from pyroute2.netlink.rtnl import RTMGRP_LINK

            events = IPRoute()
            events.bind(groups=RTMGRP_LINK)
            self._events = events

    def wait(self, timeout: float, watch: XenbusWatch | None = None) -> bool:
        """Block up to ``timeout`` seconds; True if a link event came or ``watch`` (a
        xenstore watch on the network key) fired (all read)."""
        fds = [f.fileno() for f in (self._events, watch) if f is not None]
        if not fds:
            self.sleep(timeout)
            return False
        try:
            readable, _, _ = select.select(fds, [], [], 0 if watch and watch.pending
                                           else timeout)
        except OSError as exc:
            log.warning("waiting: %s; polling on time alone", exc)
            self.sleep(timeout)
            return False
        woke = False
        if watch is not None and (watch.pending or watch.fileno() in readable):
            try:
                paths = watch.events()
            except (OSError, XenbusError) as exc:
                log.warning("xenstore watch: %s; polling on time alone", exc)
                raise WatchLost from exc
            if paths:
                log.debug("xenstore watch fired: %s", ", ".join(paths))
                woke = True
        if self._events is not None and self._events.fileno() in readable:
            try:
                while True:
                    self._events.get()  # one batch; drain what else is already there
                    more, _, _ = select.select([self._events.fileno()], [], [], 0)
                    if not more:
                        break
                woke = True
            except OSError as exc:
                log.warning("netlink events: %s; polling on time alone", exc)
                with contextlib.suppress(Exception):
                    self._events.close()
                self._events = None
        return woke

    def _reset(self) -> None:
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None

    @staticmethod
    def _index(ipr: Any, interface: str) -> int:
        found = ipr.link_lookup(ifname=interface)
        if not found:
            raise ApplyError(f"there is no interface {interface!r} in this guest")
        return int(found[0])

    def addresses(self, interface: str) -> list[IPInterface]:
        """Global addresses on ``interface`` (IPv4, then IPv6)."""
        ipr = self._netlink()
        try:
            index = self._index(ipr, interface)
            found: list[IPInterface] = []
            for msg in ipr.get_addr(index=index):
                if msg.get("scope", 0) != 0:  # link-local and host scopes stay put
                    continue
                found.append(ipaddress.ip_interface(
                    f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
        except OSError as exc:
            self._reset()
            raise ApplyError(f"netlink: cannot list the addresses of {interface}: "
                             f"{exc}") from exc
        return sorted(found, key=lambda a: (a.version, a))

    def apply(self, interface: str, assignment: NetworkAssignment) -> bool:
        """The default route via the new gateway first (on-link: the new subnet is not on
        the interface yet), then the new address, then the old addresses go.

        hipd announces a new address as soon as netlink reports it: by then packets from
        it must already leave through the new site's router.  (Address first, hipd's
        UPDATE went to the old site's gateway, waited for an ARP answer that never came
        on the new site, and was lost: seconds until hipd retransmitted it.)  hipd also
        sees the new locator before it loses the old one."""
        from pyroute2.netlink.exceptions import NetlinkError

        new = assignment.address
        assert new is not None
        old = [a for a in self.addresses(interface) if a.version == new.version]
        if old == [new]:
            return False
        family = socket.AF_INET if new.version == 4 else socket.AF_INET6
        ipr = self._netlink()
        try:
            index = self._index(ipr, interface)
            if assignment.gateway is not None:
                any_address = "0.0.0.0" if new.version == 4 else "::"
                ipr.route("replace", family=family, dst=any_address, dst_len=0,
                          gateway=str(assignment.gateway), oif=index, flags=RTNH_F_ONLINK)
            if new not in old:
                ipr.addr("add", index=index, address=str(new.ip),
                         prefixlen=new.network.prefixlen)
            for stale in old:
                if stale != new:
                    ipr.addr("del", index=index, address=str(stale.ip),
                             prefixlen=stale.network.prefixlen)
        except NetlinkError as exc:
            raise ApplyError(f"netlink refused the change on {interface}: {exc}") from exc
        except OSError as exc:
            self._reset()
            raise ApplyError(f"netlink: {exc}") from exc
        return True

    def announce(self, interface: str, address: IPInterface) -> None:
        """Gratuitous ARPs for an IPv4 address (IPv6: the kernel's own DAD and unsolicited
        neighbour advertisements do it)."""
        if address.version != 4:
            return
        try:
            mac = bytes.fromhex(Path(f"/sys/class/net/{interface}/address")
                                .read_text().strip().replace(":", ""))
            frame = arp_announcement(mac, ipaddress.IPv4Address(address.ip))
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
                sock.bind((interface, ETH_P_ARP))
                for i in range(ANNOUNCEMENTS):
                    if i:
                        self.sleep(ANNOUNCE_SPACING)
                    sock.send(frame)
        except (OSError, ValueError) as exc:
            log.warning("could not announce %s on %s: %s", address, interface, exc)

    def dhcp(self, interface: str) -> None:
        """Run the ``--dhcp-command`` (with the interface as its last argument)."""
        if not self.dhcp_command:
            raise ApplyError("dom0 asked for DHCP but the agent has no --dhcp-command")
        # The agent's only child process: a site's DHCP client is a program, not a library.
        try:
            res = subprocess.run([*self.dhcp_command, interface], capture_output=True,
                                 text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ApplyError(f"{self.dhcp_command[0]}: {exc}") from exc
        if res.returncode != 0:
            raise ApplyError(f"{' '.join(self.dhcp_command)} {interface} failed "
                             f"(exit {res.returncode}): {res.stderr.strip()[-200:]}")


def _waiter(network: LinuxNetwork, xenbus: str) -> Callable[[float], bool]:
    """The run loop's wait: link events, and a xenstore watch on the network key when the
    device grants one (it wakes the agent as soon as a resumed guest runs); a watch that
    breaks is dropped and the poll carries on alone."""
    key = f"{layout.NETWORK_DIR}/generation"
    watch: list[XenbusWatch] = []
    try:
        watch.append(XenbusWatch(key, "xenwam-network", xenbus))
        log.info("xenstore watch on %s", key)
    except (OSError, XenbusError) as exc:
        log.warning("no xenstore watch on %s (%s): polling alone", key, exc)

    def wait(timeout: float) -> bool:
        try:
            return network.wait(timeout, watch[0] if watch else None)
        except WatchLost:
            with contextlib.suppress(OSError):
                watch.pop().close()
            return True  # look at once: whatever broke it may have been a move
    return wait


# ---------------------------------------------------------------- command line

class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit 2, not argparse's usage block."""

    def error(self, message: str) -> Any:  # argparse's signature says NoReturn
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="xenwam-guest-agent",
        description="Apply the network dom0 hands this Xen guest through xenstore after a "
                    "migration (xenwam migrate), and report back what was done.",
        epilog="Keys: see docs/guest-agent.md. Runs until killed; logs to stderr.")
    parser.add_argument("--interface", default="eth0",
                        help="the interface to renumber (default: eth0)")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help=f"seconds between two looks at xenstore for {FAST_FOR:g} s "
                             f"after the guest's link changed, as when it resumes on a new "
                             f"host (default: {DEFAULT_INTERVAL})")
    parser.add_argument("--idle-interval", type=float, default=DEFAULT_IDLE_INTERVAL,
                        help=f"seconds between two looks otherwise (default: "
                             f"{DEFAULT_IDLE_INTERVAL}); 0: always --interval")
    parser.add_argument("--xenbus", default=XENBUS_PATH,
                        help=f"the xenbus device (default: {XENBUS_PATH})")
    parser.add_argument("--dhcp-command", default="",
                        help="command run with the interface appended when dom0 asks for "
                             "DHCP, e.g. 'udhcpc -n -q -i' (default: none: report an error)")
    parser.add_argument("--xenstore-watch", action="store_true",
                        help="also set a xenstore watch on the network key, which wakes the "
                             "agent as soon as a resumed guest runs (not yet shown on real "
                             "Xen; the poll stays either way)")
    parser.add_argument("--once", action="store_true",
                        help="look once, act if needed, and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``xenwam-guest-agent``: exit 2 with one line for bad arguments."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s xenwam-guest-agent: %(message)s")
    try:
        if not 0.01 <= args.interval <= 60:
            raise UsageError(f"--interval {args.interval:g} is outside 0.01-60 seconds")
        if args.idle_interval != 0 and not args.interval <= args.idle_interval <= 600:
            raise UsageError(f"--idle-interval {args.idle_interval:g} must be 0 or between "
                             f"--interval ({args.interval:g}) and 600 seconds")
        if not args.interface or "/" in args.interface or len(args.interface) > 15:
            raise UsageError(f"--interface {args.interface!r} is not an interface name")
        if not os.path.exists(args.xenbus):
            raise UsageError(f"{args.xenbus} does not exist: is this a Xen guest? "
                             "(the xenbus device comes with the kernel's Xen support)")
        store = XenbusStore(args.xenbus)
        network = LinuxNetwork(args.dhcp_command.split())
        started = time.monotonic()
        have = network.addresses(args.interface)  # netlink ready before the first move
        log.info("%s has %s (netlink ready in %.1f s)", args.interface,
                 ",".join(map(str, have)) or "no address", time.monotonic() - started)
        agent = Agent(args.interface, store, network)
        if args.once:
            agent.start()
            agent.poll()
            return 0
        if args.idle_interval:
            try:
                network.open_events()
            except OSError as exc:
                raise ApplyError(f"netlink: cannot subscribe to link events: {exc}") from exc
            log.info("watching xenstore %s for %s every %g s, every %g s for %g s after a "
                     "link event", layout.NETWORK_DIR, args.interface, args.idle_interval,
                     args.interval, FAST_FOR)
            run(agent, args.interval, reconnect=store.reconnect,
                idle_interval=args.idle_interval,
                wait=_waiter(network, args.xenbus) if args.xenstore_watch else network.wait)
        else:
            log.info("watching xenstore %s every %g s for %s", layout.NETWORK_DIR,
                     args.interval, args.interface)
            run(agent, args.interval, reconnect=store.reconnect)
    except AgentError as exc:
        print(f"xenwam-guest-agent: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
