"""``hipd``: the HIP daemon, a thin asyncio shell around :class:`hip.host.HIPHost`.

Everything protocol-shaped happens in the sans-I/O core; this module only moves bytes
and time between it and the world:

* HIP control packets from :class:`hip.daemon.transport.HipTransport` go to
  ``host.receive_packet(data, src, dst, now)``; ``host.packets_to_send()`` goes back out;
  one asyncio timer follows ``host.get_timer()``.
* Core events drive the ESP data plane (:mod:`hip.dataplane`): SAs are installed,
  moved and removed as the core reports them.
* A packet an application sends to a HIT with no association is queued and a base
  exchange starts to the locators the hosts file gives; the queue is flushed when the
  SAs arrive.
* Our locators come from netlink address events (:mod:`hip.daemon.netlink`), or from
  ``hipctl update-locators``; a change is handed to ``host.update_locators``, which
  sends UPDATE to every peer.
* ``hipctl`` talks to us over a Unix socket only root may use
  (:mod:`hip.daemon.control_server`).

A peer can make the core drop its packet, never crash the daemon: any exception out
of the receive path is caught, counted as ``core-exception`` and logged as a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, ip_address
from pathlib import Path
from typing import Any

from hip import keystore
from hip.association import Association
from hip.config import HIPConfig
from hip.daemon.control import DEFAULT_SOCKET, ControlRequest
from hip.daemon.control_server import ControlServer
from hip.daemon.eventlog import EventJournal
from hip.daemon.netlink import NetlinkEvents, RouteRequests
from hip.daemon.peer_memory import DEFAULT_STATE_DIR, PeerMemory
from hip.daemon.transport import Carrier, HipTransport
from hip.dataplane import DataPlane, Encapsulation, Locator, SecurityAssociation
from hip.dataplane.probe import DataPlaneKind, choose
from hip.dataplane.resend import DEFAULT_RESEND, NO_RESEND
from hip.dataplane.userspace import DEFAULT_TUN_NAME, NoAssociation, UserspaceDataPlane
from hip.errors import DaemonError, HIPError
from hip.events import (
    AssociationClosed,
    AssociationEstablished,
    AssociationFailed,
    PacketDropped,
    Rebound,
    SecurityAssociationsChanged,
)
from hip.host import HIPHost
from hip.hosts import HostsFile, load_hosts, parse_locator
from hip.identity import HostIdentity
from hip.mobility import PeerLocatorSet
from hip.runner import LineStream

log = logging.getLogger("hipd")

#: Packets kept per peer while its base exchange runs, and how long they may wait.
QUEUE_PACKETS = 256
QUEUE_SECONDS = 30.0
#: A new address is announced only once the peers are routable from it (an UPDATE sent
#: before the route exists is lost and costs a full retransmission timeout); give up
#: waiting for a route after this long and announce anyway.
ROUTE_WAIT_MAX = 1.0
#: Longest wait before reopening a netlink event socket that failed (doubles from 1 s).
NETLINK_RETRY_MAX = 30.0
#: A locator check that failed runs again after this long, the wait doubling up to
#: LOCATOR_RETRY_MAX until one succeeds: a lost check would be a lost move.
LOCATOR_RETRY_FIRST = 0.1
LOCATOR_RETRY_MAX = 2.0
#: Seconds between two reactions to ESP with an unknown SPI from the same locator.
UNKNOWN_SPI_HOLDOFF = 2.0
#: Longest a hipctl ``events`` request may wait for a new event; hipctl asks again.
MAX_EVENT_WAIT = 30.0


@dataclass
class DaemonOptions:
    """Everything hipd is told on its command line."""

    config_dir: str = keystore.DEFAULT_CONFIG_DIR
    socket_path: str = DEFAULT_SOCKET
    data_plane: DataPlaneKind = DataPlaneKind.AUTO
    carrier: Carrier = Carrier.RAW
    udp_port: int = 10500
    tun_name: str = DEFAULT_TUN_NAME
    #: Fixed locators; empty means "every global address, followed by netlink".
    locators: tuple[Locator, ...] = ()
    #: Interfaces whose addresses are not locators (besides our TUN/dummy device).
    ignore_interfaces: tuple[str, ...] = ()
    #: Where peers' last verified locators are kept (None: not kept across restarts;
    #: the command line defaults to /var/lib/hip).
    state_dir: str | None = None
    #: Userspace data plane: after a move, send again at once the TCP segments the peer
    #: may have missed, rather than leave TCP to its backed-off retransmission timer.
    resend_after_move: bool = True


@dataclass
class _Queued:
    packets: deque[tuple[float, bytes]] = field(default_factory=deque)


class Hipd:
    """The daemon: owns the HIP host, the transport, the data plane and the queues."""

    def __init__(
        self,
        options: DaemonOptions,
        identity: HostIdentity,
        hosts: HostsFile,
        *,
        config: HIPConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        route_requests: RouteRequests | None = None,
    ) -> None:
        self.options = options
        self.identity = identity
        self.hit = IPv6Address(identity.hit)
        self.hosts = hosts
        self.config = config or HIPConfig()
        self.clock = clock
        #: Packets hipd itself dropped, by reason; ``stats`` counts what went well.
        self.counters: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.puzzle_peak = 0
        self.locators: tuple[Locator, ...] = options.locators
        self.manual_locators = bool(options.locators)
        self.host: HIPHost | None = None
        self.plane: DataPlane | None = None
        self.userspace: UserspaceDataPlane | None = None
        self.transport = HipTransport(
            on_hip=self._on_hip, on_esp=self._on_udp_esp, udp_port=options.udp_port
        )
        self.queues: dict[IPv6Address, _Queued] = {}
        self.sas: dict[IPv6Address, SecurityAssociation] = {}
        #: How each peer locator reached us last (raw or UDP), to answer the same way.
        self.carriers: dict[Locator, Carrier] = {}
        self.started_at = clock()
        self.established_at: dict[IPv6Address, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        #: One rtnetlink socket for every locator read and route lookup, kept open.
        self.route_requests = route_requests or RouteRequests()
        self.netlink_events: NetlinkEvents | None = None
        self._netlink_retry = 1.0
        self._netlink_reopen: asyncio.TimerHandle | None = None
        #: The locator check the events of this turn of the loop asked for.
        self._check_pending: asyncio.Handle | None = None
        #: Wait before a failed locator check runs again (doubles while it fails).
        self._locator_retry = LOCATOR_RETRY_FIRST
        #: When the first netlink event not yet answered arrived (for the debug log).
        self._locator_event_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()
        self.control = ControlServer(options.socket_path, self.handle_control)
        self._acquire_task: asyncio.Task[None] | None = None
        self._acquire_stream: LineStream | None = None
        self._unknown_spi_seen: dict[Locator, float] = {}
        self._route_wait_since: float | None = None
        #: Peers whose queued packets go out at the end of the current pump.
        self._to_flush: list[IPv6Address] = []
        #: Protocol events for ``hipctl events`` / ``wait-rebound``, and who waits.
        self.journal = EventJournal()
        #: Peers' last verified locators, tried before the hosts file after a restart.
        self.peer_memory = PeerMemory.load(options.state_dir)
        #: Peers whose current base exchange went to a remembered locator.
        self._tried_memory: dict[IPv6Address, Locator] = {}
        self._event_waiters: list[asyncio.Future[None]] = []
        self.wall_clock: Callable[[], float] = time.time

    # -- start and stop -----------------------------------------------------------------
    async def start(self) -> None:
        """Open everything, in an order that undoes cleanly if a step fails."""
        self._loop = asyncio.get_running_loop()
        # Before anything is set up: refuse when another hipd answers on our socket path.
        self.control.claim()
        if not self.locators:
            self.locators = self._read_locators()
        while not self.locators:
            # HIPHost needs an address to speak from; a guest may still be configuring.
            log.warning("no usable locator yet; waiting for an address to appear")
            await asyncio.sleep(1.0)
            self.locators = self._read_locators()
        self.host = HIPHost(self.identity, self.locators, config=self.config, now=self._now())
        choice = choose(self.options.data_plane)
        log.info("data plane: %s (%s)", choice.kind.value, choice.reason)
        if choice.kind is DataPlaneKind.KERNEL:
            from hip.dataplane.kernel import KernelDataPlane

            kernel = KernelDataPlane(self.hit, device=self.options.tun_name)
            kernel.setup()
            self.plane = kernel
            self.transport.kernel_esp_in_udp = True
            self._acquire_task = asyncio.create_task(self._watch_acquires())
        else:
            self.userspace = UserspaceDataPlane(
                self.hit, tun_name=self.options.tun_name, send_udp=self.transport.send_esp,
                on_no_association=self._on_no_association, on_received=self._on_esp_received,
                on_unknown_spi=self._on_unknown_spi, destination=self._esp_destination,
                clock=self.clock, on_resent=self._on_resent_after_move,
                resend=DEFAULT_RESEND if self.options.resend_after_move else NO_RESEND,
            )
            self.userspace.attach(self._loop)
            self.plane = self.userspace
        self.transport.open()
        self.transport.attach(self._loop)
        await self.control.start()
        # Always watch: `hipctl update-locators` with no addresses turns following back on.
        self._start_netlink_watch()
        log.info("hipd ready: HIT %s, locators %s, control socket %s", self.hit,
                 ", ".join(map(str, self.locators)) or "(none)", self.options.socket_path)

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT or :meth:`stop`."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        try:
            await self.start()
            await self._stopped.wait()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stopped.set()

    def close(self) -> None:
        """Release sockets, the TUN device and the control socket."""
        self._stopped.set()  # late netlink events must not start new work
        if self._acquire_task is not None:
            self._acquire_task.cancel()
        if self._acquire_stream is not None:
            self._acquire_stream.stop()
        for handle in (self._timer, self._check_pending, self._netlink_reopen):
            if handle is not None:
                handle.cancel()
        self._stop_netlink_watch()
        self.route_requests.close()
        self.control.close()
        self.transport.close()
        if self.plane is not None:
            self.plane.close()

    # -- the one path into the core ------------------------------------------------------
    def _now(self) -> float:
        return self.clock()

    def _on_hip(self, data: bytes, src: Locator, dst: Locator, carrier: Carrier) -> None:
        if self.host is None:
            return
        _remember(self.carriers, src, carrier)
        now = self._now()
        try:
            self.host.receive_packet(data, src, dst, now)
            # Under an I1 flood the core raises the puzzle difficulty; keep the peak.
            self.puzzle_peak = max(self.puzzle_peak, self.host.puzzle_difficulty(now))
        except Exception:  # a peer must never crash hipd: count it, log it as our bug
            self.counters["core-exception"] += 1
            log.exception("the HIP core raised on a packet from %s; dropped", src)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        if self.host is None:
            return
        try:
            self.host.handle_timer(self._now())
        except Exception:
            self.counters["core-exception"] += 1
            log.exception("the HIP core raised in handle_timer")
        self._pump()

    def _pump(self) -> None:
        """Act on the core's events, send what it wants sent, re-arm its timer.

        Events come first: a responder must have its SAs in place before its R2 leaves,
        or the initiator's first ESP packets (its queue, flushed when R2 arrives) can
        overtake a slow SA install (``ip xfrm`` takes most of a second in the QEMU lab)
        and be dropped.  Our own queued packets go last, after the R2, for the mirror
        reason: the initiator installs its inbound SA only when R2 arrives.
        """
        host = self.host
        if host is None:
            return
        self._to_flush = []
        while True:
            event = host.next_event()
            if event is None:
                break
            self._journal(event)
            try:
                self._on_event(event)
            except HIPError as exc:
                # The data plane refused (e.g. `ip xfrm` failed): keep serving the rest.
                self.counters["data-plane-error"] += 1
                log.error("cannot apply %s: %s", type(event).__name__, exc)
        for packet in host.packets_to_send():
            carrier = self.carriers.get(packet.dst, self.options.carrier)
            self.transport.send_hip(packet.data, packet.src, packet.dst, carrier)
        flush, self._to_flush = self._to_flush, []
        for peer_hit in flush:
            self._flush_queue(peer_hit)
        self._expire_queues()
        deadline = host.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._loop is not None:
            delay = max(0.0, deadline - self._now())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _journal(self, event: object) -> None:
        if self.journal.append(event, self.wall_clock()) is None:
            return
        waiters, self._event_waiters = self._event_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_events(self, args: dict[str, Any]) -> dict[str, Any]:
        """Journaled events after ``args["after"]`` (default: only events to come),
        of the ``names`` and ``peer`` asked for, waiting up to ``wait`` seconds for one."""
        after = args.get("after")
        after_id = self.journal.last_id if after is None else int(after)
        wait = float(args.get("wait", 0.0))
        if not 0.0 <= wait <= MAX_EVENT_WAIT:
            raise DaemonError(f"events: wait {wait!r} must be 0-{MAX_EVENT_WAIT:g} seconds")
        names = args.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DaemonError(f"events: names must be a list of event names, not {names!r}")
        peer = args.get("peer")
        peer_hit = str(IPv6Address(peer)) if peer else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            records, lost = self.journal.after(after_id, names=names, peer_hit=peer_hit)
            remaining = deadline - loop.time()
            if records or remaining <= 0:
                return {"events": [r.as_dict() for r in records], "lost": lost,
                        "last": self.journal.last_id}
            waiter: asyncio.Future[None] = loop.create_future()
            self._event_waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, remaining)

    def _on_event(self, event: object) -> None:
        if isinstance(event, SecurityAssociationsChanged):
            # The SAs' peer locator was verified (base exchange or return routability).
            # Only peers of the hosts file are remembered: those are the ones hipd looks
            # for, and a stranger's base exchanges cannot grow the file.
            self._tried_memory.pop(event.peer_hit, None)
            if (self.hosts.find(str(event.peer_hit)) is not None
                    and self.peer_memory.remember(event.peer_hit, event.peer_locator,
                                                  self.wall_clock())):
                log.info("remembered %s at %s", event.peer_hit, event.peer_locator)
            self._install(event)
        elif isinstance(event, AssociationEstablished):
            self.established_at[event.peer_hit] = self._now()
            log.info("association with %s established (%s)", event.peer_hit,
                     "initiator" if event.initiator else "responder")
        elif isinstance(event, AssociationClosed):
            log.info("association with %s closed: %s", event.peer_hit, event.reason.value)
            self.sas.pop(event.peer_hit, None)
            self.established_at.pop(event.peer_hit, None)
            if self.plane is not None:
                self.plane.remove(event.peer_hit)
        elif isinstance(event, AssociationFailed):
            log.warning("base exchange with %s failed: %s", event.peer_hit, event.reason)
            remembered = self._tried_memory.pop(event.peer_hit, None)
            if remembered is not None and self.peer_memory.forget(event.peer_hit):
                log.warning("forgot %s's remembered locator %s: no answer there; the hosts "
                            "file's is tried next", event.peer_hit, remembered)
            dropped = self.queues.pop(event.peer_hit, None)
            if dropped is not None:
                self.counters["queued-dropped-base-exchange-failed"] += len(dropped.packets)
        elif isinstance(event, PacketDropped):
            log.debug("core dropped a %s packet: %s", event.packet_type, event.reason)
        elif isinstance(event, Rebound):
            log.info("rebound with %s (%s): %s -> %s", event.peer_hit, event.mover.value,
                     event.local_locator, event.peer_locator)
        else:
            log.info("event: %s", event)

    def _install(self, event: SecurityAssociationsChanged) -> None:
        assert self.plane is not None
        carrier = self.carriers.get(event.peer_locator, self.options.carrier)
        sa = SecurityAssociation(
            own_hit=event.our_hit, peer_hit=event.peer_hit,
            spi_in=event.spi_in, spi_out=event.spi_out, suite_id=event.esp_transform,
            enc_key_in=event.enc_key_in, auth_key_in=event.auth_key_in,
            enc_key_out=event.enc_key_out, auth_key_out=event.auth_key_out,
            own_locator=event.local_locator, peer_locator=event.peer_locator,
            encapsulation=Encapsulation.UDP if carrier is Carrier.UDP else Encapsulation.RAW,
        )
        old = self.sas.get(event.peer_hit)
        if old == sa:
            # The core re-announces the SAs after every change of our locator set, even
            # when the locators they use stayed the same (an old address removed after
            # the move).  Moving kernel states costs two ``ip`` runs, seconds in a
            # starved guest, which the next UPDATE would wait for (issue 10, finding 2).
            log.debug("SAs with %s (%s): unchanged, %s -> %s", event.peer_hit,
                      event.reason.value, sa.own_locator, sa.peer_locator)
            return
        if (old is not None and (old.spi_in, old.spi_out) == (sa.spi_in, sa.spi_out)
                and old.encapsulation is sa.encapsulation):
            self.plane.update_locators(sa.peer_hit, sa.own_locator, sa.peer_locator)
        else:
            self.plane.install(sa)
        self.sas[event.peer_hit] = sa
        log.info("SAs with %s (%s): %s -> %s, SPI in %#x out %#x", event.peer_hit,
                 event.reason.value, sa.own_locator, sa.peer_locator, sa.spi_in, sa.spi_out)
        self._to_flush.append(event.peer_hit)

    # -- packets waiting for a base exchange ---------------------------------------------
    def _on_no_association(self, miss: NoAssociation) -> None:
        queue = self.queues.get(miss.peer_hit)
        if queue is None:
            if not self._start_base_exchange(miss.peer_hit):
                self.counters["no-locator-for-hit"] += 1
                return
            queue = self.queues[miss.peer_hit] = _Queued()
        if len(queue.packets) >= QUEUE_PACKETS:
            self.counters["queue-full"] += 1
            return
        queue.packets.append((self._now(), miss.packet))

    def _start_base_exchange(self, peer_hit: IPv6Address, locator: Locator | None = None) -> bool:
        host = self.host
        if host is None:
            return False
        candidates = [locator] if locator else self.peer_candidates(peer_hit)
        own_families = {type(loc) for loc in self.locators}
        usable = [c for c in candidates if type(c) in own_families] or candidates
        if not usable or not self.locators:
            log.warning("no locator for %s: add one with `hipctl peer add NAME %s ADDRESS`",
                        peer_hit, peer_hit)
            return False
        remembered = self.peer_memory.get(peer_hit)
        if locator is None and remembered is not None and usable[0] == remembered.locator:
            self._tried_memory[peer_hit] = usable[0]
            log.info("base exchange with %s at its last verified locator %s", peer_hit,
                     usable[0])
        try:
            host.connect(peer_hit.packed, usable[0], self._now())
        except HIPError as exc:
            # Already connecting or connected: the queue flushes when SAs arrive.
            log.debug("connect %s: %s", peer_hit, exc)
        self._pump()
        return True

    def peer_candidates(self, peer_hit: IPv6Address) -> list[Locator]:
        """Where to look for ``peer_hit``, best first: its last verified locator, then
        the hosts file's -- unless the hosts file was edited after that verification."""
        configured = list(self.hosts.locators_of(peer_hit))
        remembered = self.peer_memory.get(peer_hit)
        if remembered is None:
            return configured
        try:
            edited = (Path(self.options.config_dir) / "hosts").stat().st_mtime
        except OSError:
            edited = 0.0
        if edited > remembered.verified_at and configured:
            return configured + [x for x in [remembered.locator] if x not in configured]
        return [remembered.locator] + [x for x in configured if x != remembered.locator]

    def _flush_queue(self, peer_hit: IPv6Address) -> None:
        queue = self.queues.pop(peer_hit, None)
        if queue is None or self.userspace is None:
            return
        for _t, packet in queue.packets:
            if self.userspace.send_inner(packet):
                self.stats["queued-sent"] += 1

    def _expire_queues(self) -> None:
        now = self._now()
        for hit, queue in list(self.queues.items()):
            while queue.packets and now - queue.packets[0][0] > QUEUE_SECONDS:
                queue.packets.popleft()
                self.counters["queued-expired"] += 1
            if not queue.packets and hit not in self.sas:
                # Nothing waits any more; a new packet will start a new exchange.
                del self.queues[hit]

    def _on_esp_received(self, peer_hit: IPv6Address, nbytes: int) -> None:
        # ESP from the peer confirms R2-SENT and earns credit (RFC 7401 4.4.2, RFC 8046
        # 5.5).  Only the core's bookkeeping changes; nothing to send, so no pump.
        if self.host is None or self.host.association(peer_hit) is None:
            return
        try:
            self.host.data_received(peer_hit, nbytes, self._now())
        except HIPError:
            self.counters["esp-for-unknown-association"] += 1

    def _on_resent_after_move(self, peer_hit: IPv6Address, packets: int) -> None:
        self.stats["resent-after-move"] += packets
        log.info("re-sent %d TCP segment(s) to %s after the move: its TCP answers now, not "
                 "at its next backed-off retransmission", packets, peer_hit)

    def _esp_destination(self, peer_hit: IPv6Address, nbytes: int) -> Locator | None:
        # The core decides where data may go: the verified preferred locator, or a new
        # unverified one while credit lasts (RFC 8046 5.5).
        if self.host is None:
            return None
        try:
            return self.host.data_destination(peer_hit, nbytes, self._now())
        except HIPError:
            return None

    async def _watch_acquires(self) -> None:
        """Kernel data plane: turn XFRM ACQUIREs for unknown HITs into base exchanges."""
        from hip.dataplane.kernel import acquire_monitor_argv, parse_acquires

        self._acquire_stream = LineStream(acquire_monitor_argv())
        await self._acquire_stream.start()
        event: list[str] = []
        async for line in self._acquire_stream.lines():
            # Events are separated by blank lines; parse each one when it is complete.
            if line.strip():
                event.append(line)
                continue
            for hit in parse_acquires("".join(event)):
                if self._state_of(hit) in ("UNASSOCIATED", "CLOSED", "E-FAILED"):
                    self.stats["base-exchange-on-acquire"] += 1
                    if not self._start_base_exchange(hit):
                        self.counters["no-locator-for-hit"] += 1
            event.clear()

    def _on_unknown_spi(self, spi: int, src: Locator) -> None:
        # RFC 7401 4.5.4 (loss of state): a peer keeps sending on SAs we no longer have,
        # typically because hipd restarted.  If the hosts file says who sits at that
        # locator, run a new base exchange with it; at most once per UNKNOWN_SPI_HOLDOFF.
        now = self._now()
        if now - self._unknown_spi_seen.get(src, -UNKNOWN_SPI_HOLDOFF) < UNKNOWN_SPI_HOLDOFF:
            return
        _remember(self._unknown_spi_seen, src, now)
        known = [e.hit for e in self.hosts.entries if src in e.locators]
        known += [hit for hit in self.peer_memory.hits_at(src) if hit not in known]
        for hit in known:
            if self._state_of(hit) in ("UNASSOCIATED", "CLOSED", "E-FAILED"):
                log.info("ESP with unknown SPI %#x from %s: new base exchange with %s",
                         spi, src, hit)
                self.stats["base-exchange-on-unknown-spi"] += 1
                self._start_base_exchange(hit, src)

    def _on_udp_esp(self, data: bytes, src: Locator) -> None:
        if self.userspace is not None:
            self.userspace.receive_esp(data, src)
        else:
            self.counters["udp-esp-in-kernel-mode"] += 1

    # -- locators ------------------------------------------------------------------------
    def set_locators(self, locators: tuple[Locator, ...]) -> int:
        """Adopt ``locators`` and send UPDATE to every peer; return how many peers."""
        if not locators or locators == self.locators:
            return 0
        log.info("locators: %s -> %s", ", ".join(map(str, self.locators)) or "(none)",
                 ", ".join(map(str, locators)))
        self.locators = locators
        if self.host is None:
            return 0
        try:
            self.host.update_locators(locators, self._now())
        except HIPError as exc:
            log.warning("update_locators refused: %s", exc)
        self._pump()
        return len(self.sas)

    def _start_netlink_watch(self) -> None:
        """Follow address and route events on the event loop, from a socket read only
        when it is readable (no thread; see :mod:`hip.daemon.netlink` for why).  When
        the socket cannot be opened, the addresses are read at once and opening is
        retried, the wait doubling up to ``NETLINK_RETRY_MAX``."""
        loop = self._loop
        self._netlink_reopen = None
        if loop is None or self._stopped.is_set():
            return
        try:
            events = NetlinkEvents()
        except OSError as exc:
            delay = self._netlink_retry
            self._netlink_retry = min(2 * delay, NETLINK_RETRY_MAX)
            log.warning("cannot watch netlink (%s); re-reading the addresses, trying again "
                        "in %g s", exc, delay)
            self._on_locator_event()
            self._netlink_reopen = loop.call_later(delay, self._start_netlink_watch)
            return
        self._netlink_retry = 1.0
        self.netlink_events = events
        loop.add_reader(events.fileno(), self._on_netlink_readable)

    def _stop_netlink_watch(self) -> None:
        events, self.netlink_events = self.netlink_events, None
        if events is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(events.fileno())
        events.close()

    def _on_netlink_readable(self) -> None:
        events = self.netlink_events
        if events is None:
            return
        try:
            changed = events.drain()
        except OSError as exc:
            # Events may have been lost with the socket: look at the addresses anyway.
            log.warning("netlink watch failed (%s); re-reading the addresses, watching "
                        "again", exc)
            self._stop_netlink_watch()
            self._start_netlink_watch()
            changed = True
        if changed:
            self._on_locator_event()

    def _on_locator_event(self) -> None:
        if self._locator_event_at is None:
            self._locator_event_at = self._now()
        self._schedule_locator_check()

    def _schedule_locator_check(self) -> None:
        """Check the locators right after the current turn of the event loop.

        No fixed delay: a burst of events read in one turn leads to one check, and an
        event read later leads to another (a check costs two netlink requests).
        """
        if (self._loop is None or self.manual_locators or self._stopped.is_set()
                or self._check_pending is not None):
            return
        self._check_pending = self._loop.call_soon(self._run_locator_check)

    def _run_locator_check(self) -> None:
        """One locator check; if it fails, the next one is scheduled (issue 11, item 2:
        a check lost to EMFILE kept a moved host advertising its dead address)."""
        self._check_pending = None
        if self.manual_locators or self._stopped.is_set() or self._loop is None:
            return
        try:
            self._check_locators()
        except Exception as exc:
            delay = self._locator_retry
            self._locator_retry = min(2 * delay, LOCATOR_RETRY_MAX)
            if isinstance(exc, HIPError):
                log.warning("locator check failed (%s); trying again in %g s", exc, delay)
            else:
                log.exception("locator check failed; trying again in %g s", delay)
            self._check_pending = self._loop.call_later(delay, self._run_locator_check)
            return
        self._locator_retry = LOCATOR_RETRY_FIRST

    def _read_locators(self) -> tuple[Locator, ...]:
        return self.route_requests.locators(
            (*self.options.ignore_interfaces, self.options.tun_name))

    def _check_locators(self) -> int:
        """Re-read our addresses; on a change, UPDATE every peer (returns how many)."""
        started = self._now()
        current = self._read_locators()
        # Keep the order of addresses we already had; new ones go first, because a
        # new address after a move is the one that works.
        kept = [loc for loc in self.locators if loc in current]
        fresh = [loc for loc in current if loc not in kept]
        new = tuple(fresh + kept)
        if not new or new == self.locators:
            self._route_wait_since = None
            self._locator_event_at = None
            return 0
        if not self._peers_routable_from(new[0]):
            now = self._now()
            if self._route_wait_since is None:
                self._route_wait_since = now
            if now - self._route_wait_since < ROUTE_WAIT_MAX:
                # The next route event re-runs this check; the fallback ends the wait.
                assert self._loop is not None
                self._loop.call_later(ROUTE_WAIT_MAX, self._schedule_locator_check)
                return 0
            log.warning("no route to the peers from %s after %g s; announcing it anyway",
                        new[0], ROUTE_WAIT_MAX)
        self._route_wait_since = None
        updated = self.set_locators(new)
        self._log_locator_latency(started, updated)
        return updated

    def _log_locator_latency(self, check_started: float, updated: int) -> None:
        """Debug: how long from the netlink event to the UPDATEs sent (issue 10, finding
        2: seconds in a Xen guest under TCG, ~25 ms in namespaces), and this check's
        share of it (reading the addresses and the route lookups)."""
        event_at, self._locator_event_at = self._locator_event_at, None
        now = self._now()
        if event_at is None:
            return
        log.debug("locators changed: UPDATE sent to %d peer(s) %.1f ms after the netlink "
                  "event (the check took %.1f ms)", updated, 1000 * (now - event_at),
                  1000 * (now - check_started))

    def _peers_routable_from(self, src: Locator) -> bool:
        """True if every peer locator of ``src``'s family has a route from ``src``."""
        peers = [sa.peer_locator for sa in self.sas.values() if type(sa.peer_locator) is type(src)]
        return not peers or self.route_requests.routable(src, peers)

    # -- control commands ----------------------------------------------------------------
    async def handle_control(self, request: ControlRequest) -> object:
        """Carry out one hipctl command and return its JSON-ready result."""
        if request.command == "show":
            return self.show()
        if request.command == "update-locators":
            given = tuple(parse_locator(str(text)) for text in request.args.get("locators", []))
            if given:
                self.manual_locators = True
                n = self.set_locators(given)
            else:
                self.manual_locators = False
                n = self._check_locators()
            return {"locators": [str(x) for x in self.locators], "peers_updated": n}
        if request.command == "events":
            return await self.wait_events(request.args)
        if request.command == "reload-hosts":
            self.hosts = load_hosts(Path(self.options.config_dir) / "hosts")
            return {"peers": len(self.hosts.entries)}
        peer = IPv6Address(request.args["peer"])
        if request.command == "connect":
            loc = request.args.get("locator")
            if not self._start_base_exchange(peer, parse_locator(str(loc)) if loc else None):
                raise HIPError(f"no locator known for {peer}; give one or add it to hosts")
            return {"state": self._state_of(peer)}
        if request.command in ("close", "rekey"):
            assert self.host is not None
            if request.command == "close":
                self.host.close(peer.packed, self._now())
            else:
                self.host.rekey(peer.packed, self._now())
            self._pump()
            return {"state": self._state_of(peer)}
        raise HIPError(f"unhandled control command {request.command!r}")

    def _state_of(self, peer: IPv6Address) -> str:
        assoc = _associations(self.host).get(peer)
        return assoc.state.value if assoc is not None else "UNASSOCIATED"

    def show(self) -> dict[str, Any]:
        """The state document ``hipctl show`` renders."""
        plane_counters = self.plane.counters() if self.plane is not None else {}
        esp_peers: dict[str, Any] = dict(plane_counters.get("peers", {}))  # type: ignore[call-overload]
        associations = []
        names = {e.hit: e.name for e in self.hosts.entries}
        for peer, assoc in sorted(_associations(self.host).items()):
            locs = _peer_locator_items(assoc.peer_locators)
            sa = self.sas.get(peer)
            queue = self.queues.get(peer)
            associations.append({
                "peer_hit": str(peer), "name": names.get(peer), "state": assoc.state.value,
                "peer_locators": locs, "sa": sa.redacted() if sa else None,
                "esp": esp_peers.get(str(peer)),
                "queued_packets": len(queue.packets) if queue else 0,
            })
        dropped: Counter[str] = Counter()
        dropped.update({f"hip:{k}": v for k, v in _core_drops(self.host).items()})
        dropped.update({f"transport:{k}": v for k, v in self.transport.counters.items()
                        if not k.startswith(("sent-", "received-"))})
        dropped.update({f"esp:{k}": v
                        for k, v in dict(plane_counters.get("dropped", {})).items()})  # type: ignore[call-overload]
        dropped.update({f"hipd:{k}": v for k, v in self.counters.items()})
        return {
            "hit": str(self.hit),
            "data_plane": self.plane.kind if self.plane else None,
            "locators": [str(x) for x in self.locators],
            "associations": associations,
            "dropped": dict(dropped),
            "transport": dict(self.transport.counters),
            "hipd": dict(self.stats),
            "esp_sent_on_credit": plane_counters.get("sent_on_credit", {}),
            "esp_resent_after_move": plane_counters.get("resent_after_move", {}),
            "responder": {
                "r1_sent": self.host.r1_sent if self.host else 0,
                "puzzle_difficulty": (self.host.puzzle_difficulty(self._now())
                                      if self.host else None),
                "puzzle_difficulty_peak": self.puzzle_peak,
            },
            "uptime": round(self._now() - self.started_at, 3),
        }


#: Per-address memories (carrier, unknown-SPI hold-off) keep at most this many entries,
#: so packets from forged sources cannot grow them without bound.
ADDRESS_MEMORY = 4096


def _remember(table: dict[Locator, Any], key: Locator, value: Any) -> None:
    table.pop(key, None)
    table[key] = value  # re-inserted last: dicts keep insertion order, oldest first
    while len(table) > ADDRESS_MEMORY:
        del table[next(iter(table))]


# -- views of the core for `hipctl show` --------------------------------------------------
def _associations(host: HIPHost | None) -> dict[IPv6Address, Association]:
    if host is None:
        return {}
    return {IPv6Address(hit): assoc for hit, assoc in host.associations.items()}


def _core_drops(host: HIPHost | None) -> dict[str, int]:
    return dict(host.drops) if host is not None else {}


def _peer_locator_items(peer_set: PeerLocatorSet | None) -> list[dict[str, Any]]:
    if peer_set is None:
        return []
    return [{"address": str(e.address), "state": e.state.value, "preferred": e.preferred,
             "lifetime": e.lifetime} for e in peer_set.entries()]


def build_parser() -> argparse.ArgumentParser:
    """hipd's command line."""
    parser = argparse.ArgumentParser(prog="hipd", description="The HIP daemon (HIPv2 + RFC 8046).")
    parser.add_argument("--config-dir", default=keystore.DEFAULT_CONFIG_DIR,
                        help="host key and hosts file (default %(default)s)")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="control socket path")
    parser.add_argument("--data-plane", choices=[k.value for k in DataPlaneKind],
                        default="auto", help="ESP data plane (default: probe the kernel)")
    parser.add_argument("--udp", action="store_true",
                        help="send HIP and ESP in UDP port 10500 (RFC 5770) instead of raw IP")
    parser.add_argument("--udp-port", type=int, default=10500,
                        help="UDP port of HIP and ESP encapsulation, ours and the peers' "
                        "(default 10500; 0: no UDP)")
    parser.add_argument("--tun", default=DEFAULT_TUN_NAME, help="name of the HIT device")
    parser.add_argument("--locator", action="append", default=[], type=ip_address,
                        help="use this locator (repeat; default: every global address, "
                        "followed by netlink)")
    parser.add_argument("--ignore-interface", action="append", default=[],
                        help="addresses on this interface are not locators (repeat)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="where peers' last verified locators are kept across restarts "
                        "(default %(default)s)")
    parser.add_argument("--no-resend-after-move", dest="resend_after_move",
                        action="store_false",
                        help="userspace data plane: do not send again, after a move, the TCP "
                        "segments the peer may have missed (default: do)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``hipd``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr,
    )
    options = DaemonOptions(
        config_dir=args.config_dir, socket_path=args.socket,
        data_plane=DataPlaneKind(args.data_plane),
        carrier=Carrier.UDP if args.udp else Carrier.RAW, udp_port=args.udp_port,
        tun_name=args.tun, locators=tuple(args.locator),
        ignore_interfaces=tuple(args.ignore_interface), state_dir=args.state_dir,
        resend_after_move=args.resend_after_move,
    )
    try:
        identity = keystore.load_identity(args.config_dir)
        hosts = load_hosts(Path(args.config_dir) / "hosts")
        asyncio.run(Hipd(options, identity, hosts).run())
    except HIPError as exc:
        print(f"hipd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(0)


if __name__ == "__main__":
    main()


__all__ = ["DaemonOptions", "Hipd", "main"]
