"""The userspace ESP data plane: a TUN device carrying HITs, ESP done in Python.

Applications address peers by HIT.  The TUN device holds our own HIT and the route to
the ORCHID prefix ``2001:20::/28``, so every packet to a HIT arrives here as an inner IPv6
packet; :class:`EspEngine` (sans-I/O) finds the peer's SA and turns it into ESP, which
:class:`UserspaceDataPlane` sends over raw IP protocol 50 or UDP port 10500.  Inbound ESP
goes the other way and is written to the TUN device.  This is the data plane that runs
when the kernel lacks ESP or BEET (see :mod:`hip.dataplane.probe`).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from hip.dataplane import (
    HIT_PREFIX,
    Encapsulation,
    Locator,
    SecurityAssociation,
)
from hip.dataplane.esp import InboundSA, OutboundSA, suite_by_id
from hip.dataplane.resend import DEFAULT_RESEND, ResendBounds, ResendBuffer
from hip.errors import DataPlaneError
from hip.orchid import ORCHID_PREFIX
from hip.runner import Runner, default_runner

log = logging.getLogger(__name__)

#: ioctl number of TUNSETIFF (``_IOW('T', 202, int)``) and its flags, from linux/if_tun.h.
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: The ``struct ifreq`` TUNSETIFF takes: name[16], flags (short), padding.
IFREQ = struct.Struct("16sH22x")
#: MTU of the TUN device: 1500 minus the outer IPv6 header (40), UDP (8), ESP header (8),
#: IV (16), worst-case padding and trailer (17) and ICV (16), rounded down.
DEFAULT_MTU = 1380
DEFAULT_TUN_NAME = "hip0"
IPPROTO_ESP = 50


@dataclass(frozen=True)
class EspDatagram:
    """One ESP packet ready to leave: its bytes and where they go."""

    data: bytes
    src: Locator
    dst: Locator
    encapsulation: Encapsulation


@dataclass(frozen=True)
class NoAssociation:
    """An inner packet to a HIT we have no SA with: hipd queues it and starts a base exchange."""

    peer_hit: IPv6Address
    packet: bytes


@dataclass
class _Peer:
    sa: SecurityAssociation
    outbound: OutboundSA
    own_locator: Locator
    peer_locator: Locator
    #: What was sent since the peer was last heard from, to send again after a move.
    sent: ResendBuffer


@dataclass
class EspEngine:
    """Sans-I/O SA table: inner packets to ESP datagrams and back.

    Inbound SAs are found by SPI alone, whatever the outer source address: a peer that
    moved keeps sending on the same SA, and only the ICV decides (RFC 7402 section 3).

    When either end's locator changes, the TCP segments sent since the peer was last
    heard from are encapsulated again (new sequence numbers) and returned by
    :meth:`update_locators` for sending: the peer's TCP answers them at once instead of
    after a backed-off retransmission timeout (:mod:`hip.dataplane.resend`).
    """

    random: Callable[[int], bytes] = os.urandom
    #: Asked per packet where it may go (RFC 8046 5.5 credit-based authorization lets a
    #: peer's new, still unverified locator be used a little); ``None`` from it, or no
    #: callback, means the locator of the last SA event.
    destination: Callable[[IPv6Address, int], Locator | None] | None = None
    peers: dict[IPv6Address, _Peer] = field(default_factory=dict)
    inbound: dict[int, InboundSA] = field(default_factory=dict)
    #: Inbound SPIs per peer, newest last; one older generation is kept across a rekey
    #: so packets already in flight on the old SA are not lost.
    spis_by_peer: dict[IPv6Address, list[int]] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    #: Packets sent to a peer's unverified new locator on credit, per peer HIT.
    moved_early: Counter[str] = field(default_factory=Counter)
    #: Monotonic seconds: when packets were sent, when peers were last heard from.
    clock: Callable[[], float] = time.monotonic
    #: What is kept per peer to send again after a move (``NO_RESEND``: nothing).
    resend: ResendBounds = DEFAULT_RESEND
    #: Packets sent again after a locator change, per peer HIT.
    resent_after_move: Counter[str] = field(default_factory=Counter)

    def install(self, sa: SecurityAssociation) -> list[EspDatagram]:
        """Install or rekey both directions of ``sa``.

        A re-install between other locators than before is a move as well: what the
        peer may have missed is returned, to be sent (see :meth:`update_locators`).
        """
        suite = suite_by_id(sa.suite_id)
        outbound = OutboundSA(
            sa.spi_out, suite, sa.enc_key_out, sa.auth_key_out, sa.own_hit, sa.peer_hit,
            random=self.random,
        )
        inbound = InboundSA(
            sa.spi_in, suite, sa.enc_key_in, sa.auth_key_in, sa.peer_hit, sa.own_hit
        )
        previous = self.peers.get(sa.peer_hit)
        if previous is not None and previous.outbound.spi == sa.spi_out:
            # The same SA again (its encapsulation changed): its sequence numbers go
            # on, a number is never sent twice under one SPI.
            outbound.seq, outbound.counters = previous.outbound.seq, previous.outbound.counters
        if (kept := self.inbound.get(sa.spi_in)) is not None:
            # Likewise its replay window: a fresh one would accept old packets again.
            inbound.window, inbound.counters = kept.window, kept.counters
        sent = previous.sent if previous is not None else ResendBuffer(self.resend)
        entry = _Peer(sa, outbound, sa.own_locator, sa.peer_locator, sent)
        self.peers[sa.peer_hit] = entry
        spis = [s for s in self.spis_by_peer.get(sa.peer_hit, []) if s != sa.spi_in]
        spis.append(sa.spi_in)
        while len(spis) > 2:
            self.inbound.pop(spis.pop(0), None)
        self.spis_by_peer[sa.peer_hit] = spis
        self.inbound[sa.spi_in] = inbound
        if previous is None or (previous.own_locator, previous.peer_locator) == (
                sa.own_locator, sa.peer_locator):
            return []
        return self._resend(entry)

    def update_locators(
        self, peer_hit: IPv6Address, own: Locator, peer: Locator
    ) -> list[EspDatagram]:
        """Send future packets for ``peer_hit`` between the new locators.

        If either locator changed, return the inner packets sent since the peer was
        last heard from (at most ``resend.max_age`` seconds old, at most
        ``resend.packets`` of them, in their original order) encapsulated again with
        new sequence numbers, for the caller to send now.
        """
        entry = self.peers.get(peer_hit)
        if entry is None:
            raise DataPlaneError(f"no SA with {peer_hit} to move to {own} -> {peer}")
        if (entry.own_locator, entry.peer_locator) == (own, peer):
            return []
        entry.own_locator, entry.peer_locator = own, peer
        return self._resend(entry)

    def _resend(self, entry: _Peer) -> list[EspDatagram]:
        out = []
        for inner in entry.sent.take(self.clock()):
            datagram = self._seal(entry, inner)
            if datagram is not None:
                out.append(datagram)
        if out:
            self.resent_after_move[str(entry.sa.peer_hit)] += len(out)
        return out

    def remove(self, peer_hit: IPv6Address) -> None:
        """Forget every SA with ``peer_hit``."""
        self.peers.pop(peer_hit, None)
        for spi in self.spis_by_peer.pop(peer_hit, []):
            self.inbound.pop(spi, None)

    def encapsulate(self, inner: bytes) -> EspDatagram | NoAssociation | None:
        """Turn an inner packet read from the TUN device into ESP, or say why not."""
        if len(inner) < 40 or inner[0] >> 4 != 6:
            self.dropped["not-ipv6"] += 1
            return None
        dst = IPv6Address(inner[24:40])
        entry = self.peers.get(dst)
        if entry is None:
            if not dst.is_multicast and dst in ORCHID_PREFIX:
                return NoAssociation(dst, inner)
            self.dropped["not-a-hit"] += 1  # e.g. router solicitations the kernel sends
            return None
        datagram = self._seal(entry, inner)
        if datagram is not None:
            entry.sent.record(inner, self.clock())
        return datagram

    def _seal(self, entry: _Peer, inner: bytes) -> EspDatagram | None:
        """Encrypt ``inner`` with the next sequence number and pick its destination."""
        try:
            data = entry.outbound.encrypt(inner)
        except DataPlaneError as exc:
            log.debug("outbound packet dropped: %s", exc)
            self.dropped["outbound-refused"] += 1
            return None
        outer_dst = entry.peer_locator
        if self.destination is not None:
            granted = self.destination(entry.sa.peer_hit, len(data))
            if granted is not None and granted != outer_dst:
                self.moved_early[str(entry.sa.peer_hit)] += 1
                outer_dst = granted
        return EspDatagram(data, entry.own_locator, outer_dst, entry.sa.encapsulation)

    def decapsulate(self, data: bytes, src: Locator | None = None) -> bytes | None:
        """Return the inner packet carried by the ESP payload ``data``, or ``None``.

        A packet that authenticates, from the peer locator we send to (or from an
        unknown ``src``), counts as hearing from the peer: what was sent before it is
        not sent again after a move.  One from another locator does not: the peer may
        have moved, and our packets to its old locator may all have been lost.
        """
        if len(data) < 8:
            self.dropped["truncated"] += 1
            return None
        spi = int.from_bytes(data[:4], "big")
        sa = self.inbound.get(spi)
        if sa is None:
            self.dropped["unknown-spi"] += 1
            return None
        inner = sa.decrypt(data)
        if inner is not None:
            entry = self.peers.get(sa.src_hit)
            if entry is not None and (src is None or src == entry.peer_locator):
                entry.sent.heard(self.clock())
        return inner

    def counters(self) -> dict[str, object]:
        """Per-SA packets, bytes and drops, plus drops before any SA was found."""
        per_peer: dict[str, object] = {}
        for hit, entry in self.peers.items():
            inbound = [self.inbound[s].counters.as_dict() for s in self.spis_by_peer.get(hit, [])
                       if s in self.inbound]
            per_peer[str(hit)] = {
                "sent": entry.outbound.counters.as_dict(),
                "received": inbound,
                "own_locator": str(entry.own_locator),
                "peer_locator": str(entry.peer_locator),
            }
        return {"dropped": dict(self.dropped), "peers": per_peer,
                "sent_on_credit": dict(self.moved_early),
                "resent_after_move": dict(self.resent_after_move)}


class TunDevice:
    """A Linux TUN device (no packet information header) holding our HIT."""

    def __init__(self, name: str = DEFAULT_TUN_NAME) -> None:
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            raise DataPlaneError(
                f"cannot open /dev/net/tun: {exc.strerror}; load the tun module "
                "(`modprobe tun`) and run hipd as root"
            ) from exc
        try:
            ifr = fcntl.ioctl(self.fd, TUNSETIFF, IFREQ.pack(name.encode(), IFF_TUN | IFF_NO_PI))
        except OSError as exc:
            os.close(self.fd)
            raise DataPlaneError(f"cannot create TUN device {name!r}: {exc.strerror}") from exc
        self.name = IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()

    def configure(self, own_hit: IPv6Address, mtu: int, runner: Runner) -> None:
        """Give the device our HIT, bring it up, and route the ORCHID prefix into it."""
        runner.run(["ip", "link", "set", "dev", self.name, "mtu", str(mtu), "up"])
        # nodad: the HIT is ours by cryptography, duplicate address detection only delays.
        runner.run(["ip", "-6", "addr", "replace", f"{own_hit}/128", "dev", self.name, "nodad"])
        runner.run(["ip", "-6", "route", "replace", HIT_PREFIX, "dev", self.name])

    def read(self) -> bytes | None:
        """One packet, or ``None`` when nothing is waiting."""
        try:
            return os.read(self.fd, 65535)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        """Hand an inner packet to the kernel as if it had arrived on the device."""
        os.write(self.fd, packet)

    def close(self) -> None:
        """Close the device; the kernel deletes it with its address and route."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class UserspaceDataPlane:
    """The userspace data plane's I/O: TUN device, raw ESP sockets, asyncio readers.

    ``send_udp(data, src, dst)`` sends an ESP payload over the shared UDP port (owned by
    the HIP transport); UDP-encapsulated ESP that the transport receives comes back in
    through :meth:`receive_esp`.  ``on_no_association`` gets packets to HITs without SA.
    ``on_resent(peer_hit, n)`` is told when a move made ``n`` packets go out again
    (``resend`` bounds what is kept for that; ``NO_RESEND`` turns it off).
    """

    kind = "userspace"

    def __init__(
        self,
        own_hit: IPv6Address,
        *,
        tun_name: str = DEFAULT_TUN_NAME,
        mtu: int = DEFAULT_MTU,
        runner: Runner = default_runner,
        send_udp: Callable[[bytes, Locator, Locator], None] | None = None,
        on_no_association: Callable[[NoAssociation], None] | None = None,
        on_received: Callable[[IPv6Address, int], None] | None = None,
        on_unknown_spi: Callable[[int, Locator], None] | None = None,
        destination: Callable[[IPv6Address, int], Locator | None] | None = None,
        random: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.monotonic,
        resend: ResendBounds = DEFAULT_RESEND,
        on_resent: Callable[[IPv6Address, int], None] | None = None,
    ) -> None:
        self.own_hit = own_hit
        self.engine = EspEngine(random=random, destination=destination, clock=clock,
                                resend=resend)
        self.on_resent = on_resent
        self.send_udp = send_udp
        self.on_no_association = on_no_association
        self.on_received = on_received
        self.on_unknown_spi = on_unknown_spi
        self.tun = TunDevice(tun_name)
        self.io_errors: Counter[str] = Counter()
        self.raw4: socket.socket | None = None
        self.raw6: socket.socket | None = None
        try:
            self.tun.configure(own_hit, mtu, runner)
            self.raw4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
            self.raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_ESP)
            for sock in (self.raw4, self.raw6):
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except Exception:
            self.close()
            raise
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- DataPlane interface -------------------------------------------------------------
    def install(self, sa: SecurityAssociation) -> None:
        """Install or rekey ``sa``."""
        self._resend(sa.peer_hit, self.engine.install(sa))

    def update_locators(self, peer_hit: IPv6Address, own: Locator, peer: Locator) -> None:
        """Move ``peer_hit``'s SAs to new outer addresses, and send again at once what
        the peer may have missed (the engine says what)."""
        self._resend(peer_hit, self.engine.update_locators(peer_hit, own, peer))

    def remove(self, peer_hit: IPv6Address) -> None:
        """Forget ``peer_hit``'s SAs."""
        self.engine.remove(peer_hit)

    def counters(self) -> dict[str, object]:
        """Engine counters plus socket errors."""
        return {**self.engine.counters(), "io_errors": dict(self.io_errors)}

    def close(self) -> None:
        """Stop reading, close the sockets and the TUN device."""
        if self._loop is not None:
            for fd in (self.tun.fd, *(s.fileno() for s in (self.raw4, self.raw6) if s)):
                if fd >= 0:
                    self._loop.remove_reader(fd)
            self._loop = None
        for sock in (self.raw4, self.raw6):
            if sock is not None:
                sock.close()
        self.tun.close()

    # -- I/O -----------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading the TUN device and the raw ESP sockets on ``loop``."""
        self._loop = loop
        if self.raw4 is None or self.raw6 is None or self.tun.fd < 0:
            raise DataPlaneError("the userspace data plane is closed; start a new one to attach")
        loop.add_reader(self.tun.fd, self._on_tun)
        loop.add_reader(self.raw4.fileno(), self._on_raw, self.raw4, True)
        loop.add_reader(self.raw6.fileno(), self._on_raw, self.raw6, False)

    def send_inner(self, inner: bytes) -> bool:
        """Encrypt and send one inner packet; False if it has no SA (it is not kept)."""
        result = self.engine.encapsulate(inner)
        if isinstance(result, EspDatagram):
            self._send(result)
            return True
        return False

    def receive_esp(self, data: bytes, src: Locator | None = None) -> None:
        """Decrypt an ESP payload (raw or from UDP) and write the inner packet to TUN."""
        if (self.on_unknown_spi is not None and src is not None and len(data) >= 8
                and int.from_bytes(data[:4], "big") not in self.engine.inbound):
            # A peer that still holds SAs we lost (we restarted): let hipd react.
            self.on_unknown_spi(int.from_bytes(data[:4], "big"), src)
        inner = self.engine.decapsulate(data, src)
        if inner is not None:
            try:
                self.tun.write(inner)
            except OSError as exc:
                self.io_errors[f"tun-write-{errno.errorcode.get(exc.errno or 0, 'E?')}"] += 1
            if self.on_received is not None:
                # The rebuilt inner header's source is the peer's HIT (bytes 8-24).
                self.on_received(IPv6Address(inner[8:24]), len(inner))

    def _on_tun(self) -> None:
        # Drain a bounded batch so one busy flow cannot starve the control plane.
        for _ in range(64):
            inner = self.tun.read()
            if inner is None:
                return
            result = self.engine.encapsulate(inner)
            if isinstance(result, EspDatagram):
                self._send(result)
            elif isinstance(result, NoAssociation) and self.on_no_association is not None:
                self.on_no_association(result)

    def _on_raw(self, sock: socket.socket, has_ip_header: bool) -> None:
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as exc:
                self.io_errors[f"recv-{errno.errorcode.get(exc.errno or 0, 'E?')}"] += 1
                return
            if has_ip_header:
                # IPv4 raw sockets deliver the IP header too; its length is in the IHL.
                if not data:
                    continue
                data = data[(data[0] & 0x0F) * 4 :]
            try:
                src: Locator | None = ip_address(addr[0].split("%")[0])
            except ValueError:
                src = None
            self.receive_esp(data, src)

    def _resend(self, peer_hit: IPv6Address, packets: list[EspDatagram]) -> None:
        for packet in packets:
            self._send(packet)
        if packets and self.on_resent is not None:
            self.on_resent(peer_hit, len(packets))

    def _send(self, packet: EspDatagram) -> None:
        try:
            refused = send_datagram(packet, self.raw4, self.raw6, self.send_udp)
        except OSError as exc:
            # A locator that just vanished (the host is moving) fails here until UPDATE
            # completes; TCP retransmits, so count and carry on.
            self.io_errors[f"send-{errno.errorcode.get(exc.errno or 0, 'E?')}"] += 1
            return
        if refused is not None:
            self.engine.dropped[refused] += 1


def send_datagram(
    packet: EspDatagram,
    raw4: socket.socket | None,
    raw6: socket.socket | None,
    send_udp: Callable[[bytes, Locator, Locator], None] | None,
) -> str | None:
    """Send ``packet`` the way its SA says; return ``None``, or why it could not go.

    A missing way out (no UDP transport for a UDP-encapsulated SA, a raw socket already
    closed) is a drop reason to count, not an exception: the send path runs inside the
    event loop's readers, where nothing may escape.  ``OSError`` from the socket does
    propagate; the caller counts it as an I/O error.
    """
    if packet.encapsulation is Encapsulation.UDP:
        if send_udp is None:
            return "no-udp-transport"
        send_udp(packet.data, packet.src, packet.dst)
        return None
    sock = raw4 if isinstance(packet.dst, IPv4Address) else raw6
    if sock is None or sock.fileno() < 0:
        return f"no-raw-socket-ipv{packet.dst.version}"
    sock.sendto(packet.data, (str(packet.dst), 0))
    return None


@dataclass(frozen=True)
class StaticKeys:
    """The SPI and keys of one direction of a manually keyed SA (see :func:`static_sa`)."""

    spi: int
    enc_key: bytes
    auth_key: bytes


def static_sa(
    own_hit: IPv6Address,
    peer_hit: IPv6Address,
    own_locator: Locator,
    peer_locator: Locator,
    secret: str,
    *,
    suite_id: int = 9,
    encapsulation: Encapsulation = Encapsulation.RAW,
) -> SecurityAssociation:
    """A manually keyed SA pair for testing the data plane without HIP.

    Both ends derive the same keys from ``secret``; SPIs and key order are chosen by the
    HITs so the two sides agree on which direction is which.
    """
    suite = suite_by_id(suite_id)

    def derive(label: str, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{secret}|{label}|{len(out)}".encode()).digest()
        return out[:n]

    def keys(src: IPv6Address, dst: IPv6Address) -> StaticKeys:
        label = f"{src}>{dst}"
        return StaticKeys(
            spi=0x100 + int.from_bytes(derive(label + "spi", 3), "big"),
            enc_key=derive(label + "enc", suite.enc_key_len),
            auth_key=derive(label + "auth", suite.auth_key_len),
        )

    out, into = keys(own_hit, peer_hit), keys(peer_hit, own_hit)
    return SecurityAssociation(
        own_hit=own_hit, peer_hit=peer_hit, spi_in=into.spi, spi_out=out.spi,
        suite_id=suite_id, enc_key_in=into.enc_key, auth_key_in=into.auth_key,
        enc_key_out=out.enc_key, auth_key_out=out.auth_key,
        own_locator=own_locator, peer_locator=peer_locator, encapsulation=encapsulation,
    )


def _static_main(argv: list[str] | None = None) -> int:
    """``python -m hip.dataplane.userspace``: a manually keyed tunnel, for debugging."""
    parser = argparse.ArgumentParser(
        prog="python -m hip.dataplane.userspace",
        description="Run the userspace ESP data plane with static keys (no HIP), "
        "e.g. to ping a peer's HIT across two namespaces.",
    )
    parser.add_argument("--own-hit", required=True, type=IPv6Address)
    parser.add_argument("--peer-hit", required=True, type=IPv6Address)
    parser.add_argument("--own-locator", required=True, type=ip_address)
    parser.add_argument("--peer-locator", required=True, type=ip_address)
    parser.add_argument("--secret", required=True, help="shared string both ends derive keys from")
    parser.add_argument("--tun", default=DEFAULT_TUN_NAME)
    parser.add_argument("--udp", action="store_true", help="ESP in UDP port 10500 (RFC 5770)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Imported here: the transport is only needed by this debugging entry point.
    from hip.daemon.transport import HipTransport

    transport = HipTransport(on_hip=lambda *_: None, raw=False)
    plane = UserspaceDataPlane(args.own_hit, tun_name=args.tun, send_udp=transport.send_esp)
    transport.on_esp = plane.receive_esp
    encapsulation = Encapsulation.UDP if args.udp else Encapsulation.RAW
    plane.install(
        static_sa(args.own_hit, args.peer_hit, args.own_locator, args.peer_locator, args.secret,
                  encapsulation=encapsulation)
    )
    loop = asyncio.new_event_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, loop.stop)
    try:
        if args.udp:
            transport.open()
            transport.attach(loop)
        plane.attach(loop)
        log.info("ready: %s -> %s over %s", args.own_hit, args.peer_hit, encapsulation.value)
        loop.run_forever()
    finally:
        log.info("counters: %s", json.dumps(plane.counters(), sort_keys=True))
        plane.close()
        transport.close()
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_static_main())
