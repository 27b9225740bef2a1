"""A HIP host: our Host Identity, the stateless Responder, and all our associations.

:class:`HIPHost` is the sans-I/O object a driver (hipd, a test, the benchmark) feeds:

* inputs -- ``receive_packet(data, src, dst, now)``, ``handle_timer(now)`` and the user
  calls ``connect``, ``update_locators``, ``rekey``, ``close``;
* outputs -- ``packets_to_send()``, ``get_timer()``, ``next_event()``, and ``drops``
  (a counter of every discarded packet by reason).

The Responder keeps no state for an I1 (RFC 7401 4.1.1, 6.9): R1s are pre-signed per
"R1 generation" (its DH keys, a secret, and the R1_COUNTER), and the puzzle's #I is an
HMAC of the generation secret over both HITs and #K, so a returning I2 can be checked
against the R1 it answers without remembering it.  An association is created only when
an I2 passes the puzzle, DH, MAC and signature checks.  Under an I1 flood the puzzle
difficulty #K rises by one bit per doubling of the I1 rate above the threshold.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv6Address, ip_address

from hip import crypto
from hip.association import (
    Association,
    ResponderOffer,
    host_id_param,
    i2_fingerprint,
)
from hip.config import HIPConfig
from hip.errors import HIPError, ParseError, ProtocolError
from hip.events import Address, AnyEvent
from hip.identity import HostIdentity, hit_suite_list_id
from hip.outbox import Outbox, OutgoingPacket
from hip.packet import (
    HIPPacket,
    PacketType,
    integrity_bytes,
    parse,
    peek_packet_type,
    serialize,
)
from hip.params import (
    DHGroupList,
    DiffieHellman,
    EspTransform,
    HipCipher,
    HipSignature,
    HipSignature2,
    HitSuiteList,
    Notification,
    NotifyType,
    Param,
    ParamType,
    Puzzle,
    R1Counter,
    Solution,
    TransportFormat,
    TransportFormatList,
    UnsupportedCriticalParam,
)
from hip.puzzle import verify_solution
from hip.random import RandomSource, default_random
from hip.ratelimit import TokenBucket
from hip.states import State, Trigger, allows

#: HIT suites we accept from peers, announced in R1's HIT_SUITE_LIST (RFC 7401 5.2.10).
ACCEPTED_HIT_SUITES = (1, 2, 5)
#: How many R1 generations are honoured: the current one and the one before it.
GENERATIONS_KEPT = 2


def _address(value: Address | str) -> Address:
    return value if not isinstance(value, str) else ip_address(value)


def _hit(value: bytes | IPv6Address | str) -> bytes:
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, IPv6Address):
        raw = value.packed
    else:
        raw = IPv6Address(value).packed
    if len(raw) != 16:
        raise ProtocolError(f"a HIT is 16 bytes, got {len(raw)}: {raw.hex()!r}")
    return raw


@dataclass
class _Generation:
    """One R1 generation: DH keys, puzzle secret and pre-signed R1 templates."""

    counter: int
    secret: bytes
    created: float
    dh_keys: dict[int, crypto.DHKeyPair] = field(default_factory=dict)
    #: (DH group, #K) -> R1 signed with zero Receiver's HIT and zero #I/Opaque.
    templates: dict[tuple[int, int], HIPPacket] = field(default_factory=dict)
    #: Fingerprints of the I2s accepted against this generation's R1s.  Only I2s of an
    #: honoured generation are processed, so this remembers every I2 that could still
    #: be replayed, even one of a session that was since replaced or closed.
    accepted_i2: set[bytes] = field(default_factory=set)


#: Source addresses whose I1 budget the host remembers; spoofed sources beyond this
#: only make it forget the oldest (each gets a fresh burst, as if never seen).
I1_SOURCES = 4096


class HIPHost:
    """Our side of every HIP association, behind one sans-I/O interface."""

    def __init__(
        self,
        identity: HostIdentity,
        locators: tuple[Address | str, ...] | list[Address | str],
        *,
        config: HIPConfig | None = None,
        rng: RandomSource | None = None,
        now: float = 0.0,
    ) -> None:
        if not locators:
            raise ProtocolError("a HIP host needs at least one locator (its IP address)")
        self.identity = identity
        self.our_hit = identity.hit
        self.config = config or HIPConfig()
        self.rng = default_random(rng)
        self.locators: tuple[Address, ...] = tuple(_address(a) for a in locators)
        self.outbox = Outbox()
        self.associations: dict[bytes, Association] = {}
        self._rhash = identity.public.rhash_name
        self._host_id = host_id_param(identity.public)
        self._generations: list[_Generation] = []
        self._r1_counter = 0
        self._new_generation(now)
        # I1 rate: counts in the current and the previous window.
        self._window_start = now
        self._window_count = 0
        self._previous_count = 0
        #: I1s answered (statelessly) since start; for the benchmark and tests.
        self.r1_sent = 0
        self._notify_budget = TokenBucket(self.config.notify_rate, self.config.notify_burst,
                                          float(self.config.notify_burst), now)
        #: I1 budget per source address (oldest first; at most I1_SOURCES kept).
        self._i1_sources: dict[Address, TokenBucket] = {}

    # --- outputs ---------------------------------------------------------------------

    @property
    def drops(self) -> Counter[str]:
        """Dropped packets by reason (peer errors never raise; they are counted here)."""
        return self.outbox.drops

    def packets_to_send(self) -> list[OutgoingPacket]:
        """Take every packet queued for sending."""
        out, self.outbox.packets = self.outbox.packets, []
        return out

    def next_event(self) -> AnyEvent | None:
        """The next event, or None when there is none."""
        return self.outbox.events.popleft() if self.outbox.events else None

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called, or None."""
        times = [t for a in self.associations.values() if (t := a.get_timer()) is not None]
        return min(times) if times else None

    def association(self, peer_hit: bytes | IPv6Address | str) -> Association | None:
        """Our association with ``peer_hit``, if any."""
        return self.associations.get(_hit(peer_hit))

    # --- user calls ------------------------------------------------------------------

    def connect(self, peer_hit: bytes | IPv6Address | str, peer_locator: Address | str,
                now: float) -> Association:
        """Start a base exchange with ``peer_hit`` at ``peer_locator`` (sends I1)."""
        hit = _hit(peer_hit)
        assoc = self.associations.get(hit)
        if assoc is None:
            assoc = Association(self.identity, hit, local_locators=self.locators,
                                config=self.config, rng=self.rng, outbox=self.outbox)
            self.associations[hit] = assoc
        assoc.connect(_address(peer_locator), now)
        return assoc

    def update_locators(self, locators: tuple[Address | str, ...] | list[Address | str],
                        now: float) -> None:
        """Our addresses changed (first preferred): tell every established peer (RFC 8046)."""
        if not locators:
            raise ProtocolError("update_locators needs at least one locator; got none")
        self.locators = tuple(_address(a) for a in locators)
        for assoc in list(self.associations.values()):
            assoc.update_locators(self.locators, now)

    def close(self, peer_hit: bytes | IPv6Address | str, now: float) -> None:
        """Close the association with ``peer_hit`` (CLOSE / CLOSE_ACK)."""
        self._require(peer_hit).close(now)
        self._reap()

    def rekey(self, peer_hit: bytes | IPv6Address | str, now: float) -> None:
        """Rekey the ESP security associations with ``peer_hit`` (new SPIs and keys)."""
        self._require(peer_hit).rekey(now)

    def data_received(self, peer_hit: bytes | IPv6Address | str, nbytes: int, now: float
                      ) -> None:
        """The data plane received ESP from ``peer_hit`` (confirms R2-SENT, earns credit)."""
        self._require(peer_hit).data_received(nbytes, now)

    def data_destination(self, peer_hit: bytes | IPv6Address | str, nbytes: int, now: float
                         ) -> Address | None:
        """Where ``nbytes`` of data for ``peer_hit`` may go now (RFC 8046 credit), or None."""
        return self._require(peer_hit).data_destination(nbytes, now)

    def _require(self, peer_hit: bytes | IPv6Address | str) -> Association:
        assoc = self.associations.get(_hit(peer_hit))
        if assoc is None:
            raise ProtocolError(
                f"no association with {IPv6Address(_hit(peer_hit))}; connect() first"
            )
        return assoc

    # --- timers ----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Run every association timer due at ``now``."""
        for assoc in list(self.associations.values()):
            timer = assoc.get_timer()
            if timer is not None and timer <= now:
                assoc.handle_timer(now)
        self._reap()

    def _reap(self) -> None:
        # An association back in UNASSOCIATED holds nothing worth keeping.
        for hit, assoc in list(self.associations.items()):
            if assoc.state is State.UNASSOCIATED:
                del self.associations[hit]

    # --- puzzle difficulty -----------------------------------------------------------

    def _count_i1(self, now: float) -> None:
        window = self.config.i1_rate_window
        if now - self._window_start >= window:
            elapsed = int((now - self._window_start) / window)
            self._previous_count = self._window_count if elapsed == 1 else 0
            self._window_count = 0
            self._window_start += elapsed * window
        self._window_count += 1

    def puzzle_difficulty(self, now: float) -> int:
        """#K for the next R1: the base, plus one bit per doubling above the I1 threshold."""
        cfg = self.config
        if now - self._window_start >= 2 * cfg.i1_rate_window:
            rate = 0
        elif now - self._window_start >= cfg.i1_rate_window:
            rate = self._window_count
        else:
            rate = max(self._window_count, self._previous_count)
        k = cfg.puzzle_difficulty
        if cfg.i1_rate_threshold and rate > cfg.i1_rate_threshold:
            k += 1 + int(math.log2(rate / cfg.i1_rate_threshold))
        return min(k, cfg.puzzle_difficulty_max)

    # --- R1 generations --------------------------------------------------------------

    def _new_generation(self, now: float) -> _Generation:
        self._r1_counter += 1
        gen = _Generation(self._r1_counter, self.rng.bytes(32), now)
        self._generations.append(gen)
        del self._generations[:-GENERATIONS_KEPT]
        return gen

    def _current_generation(self, now: float) -> _Generation:
        gen = self._generations[-1]
        if now - gen.created >= self.config.r1_generation_lifetime:
            gen = self._new_generation(now)
        return gen

    def _generation(self, counter: int | None) -> _Generation | None:
        if counter is None:
            return self._generations[-1]
        for gen in self._generations:
            if gen.counter == counter:
                return gen
        return None

    def _puzzle_i(self, gen: _Generation, hit_i: bytes, k: int) -> bytes:
        # Stateless #I (RFC 7401 4.1.1): binds the Initiator's HIT, ours and #K, so an
        # I2 cannot claim an easier puzzle than the R1 it answers.
        return crypto.hmac_digest(self._rhash, gen.secret, hit_i + self.our_hit + bytes([k]))

    def _dh_key(self, gen: _Generation, group: int) -> crypto.DHKeyPair:
        key = gen.dh_keys.get(group)
        if key is None:
            key = crypto.generate_dh(group, self.rng)
            gen.dh_keys[group] = key
        return key

    def _r1_template(self, gen: _Generation, group: int, k: int) -> HIPPacket:
        template = gen.templates.get((group, k))
        if template is not None:
            return template
        cfg = self.config
        params: list[Param] = [
            R1Counter(gen.counter),
            Puzzle(k, cfg.puzzle_lifetime_exponent, bytes(2),
                   bytes(crypto.rhash_len(self._rhash))),
            DiffieHellman(group, self._dh_key(gen, group).public_bytes()),
            HipCipher(tuple(cfg.offered_ciphers())),
            self._host_id,
            HitSuiteList(tuple(hit_suite_list_id(s) for s in ACCEPTED_HIT_SUITES)),
            DHGroupList(tuple(cfg.dh_groups)),
            TransportFormatList((int(TransportFormat.ESP),)),
            EspTransform(tuple(cfg.esp_transforms)),
        ]
        params.sort(key=lambda p: p.param_type)
        unsigned = HIPPacket(PacketType.R1, self.our_hit, bytes(16), tuple(params))
        signature = self.identity.sign(integrity_bytes(unsigned, ParamType.HIP_SIGNATURE_2))
        sig = HipSignature2(self.identity.public.signature_algorithm, signature)
        template = HIPPacket(PacketType.R1, self.our_hit, bytes(16), (*unsigned.params, sig))
        gen.templates[(group, k)] = template
        return template

    def precompute_r1(self, now: float) -> None:
        """Sign this generation's R1s for every configured DH group at the current #K."""
        gen = self._current_generation(now)
        for group in self.config.dh_groups:
            self._r1_template(gen, group, self.puzzle_difficulty(now))

    # --- receive path ----------------------------------------------------------------

    def receive_packet(self, data: bytes, src: Address | str, dst: Address | str,
                       now: float) -> None:
        """Process one received HIP datagram from ``src`` to ``dst``.

        Never raises for anything the peer sent: malformed or unwanted packets are
        dropped and counted in :attr:`drops`, or answered with a NOTIFY.
        """
        src_addr, dst_addr = _address(src), _address(dst)
        if peek_packet_type(data) == PacketType.I1 and not self._i1_allowed(src_addr, now):
            # Counted towards the I1 rate (the puzzle still hardens under a flood), but
            # neither parsed nor answered: a flood from one host costs next to nothing.
            self._count_i1(now)
            self.outbox.drops["I1 rate limit (per source)"] += 1
            return
        try:
            packet = parse(data, src_addr, dst_addr)
        except UnsupportedCriticalParam as exc:
            self.outbox.drop("unsupported critical parameter")
            if isinstance(exc.packet, HIPPacket):
                self._notify_unsupported(exc.packet, exc.param_type, dst_addr, now)
            return
        except ParseError:
            self.outbox.drop("malformed packet")
            return
        try:
            self._dispatch(packet, src_addr, dst_addr, now)
        except HIPError as exc:
            # A peer's packet that trips a check deeper down (e.g. a malformed key)
            # is still only a drop.
            self.outbox.drop(f"{packet.packet_type.name} rejected: {type(exc).__name__}",
                             packet.packet_type.name, packet.sender_hit)
        self._reap()

    def _i1_allowed(self, src: Address, now: float) -> bool:
        """Spend one of ``src``'s I1 tokens (HIPConfig.i1_source_*), if it has one left."""
        bucket = self._i1_sources.pop(src, None)
        if bucket is None:
            burst = self.config.i1_source_burst
            bucket = TokenBucket(self.config.i1_source_rate, burst, float(burst), now)
        self._i1_sources[src] = bucket  # re-inserted last: the oldest go first
        while len(self._i1_sources) > I1_SOURCES:
            del self._i1_sources[next(iter(self._i1_sources))]
        return bucket.take(now)

    def _notify_unsupported(self, packet: HIPPacket, param_type: int, dst: Address,
                            now: float) -> None:
        # The NOTIFY is signed, and the packet's source address is spoofable: answering
        # everyone would let a flood of forged packets spend a signature each and reflect
        # NOTIFYs at any address, bypassing the stateless Responder.  So: only a peer we
        # hold an association with is answered, at the locator we know for it (not the
        # packet's source), and no faster than the token bucket allows.
        if packet.sender_hit == self.our_hit or packet.receiver_hit != self.our_hit:
            return
        assoc = self.associations.get(packet.sender_hit)
        to = assoc.peer_locator if assoc is not None else None
        if assoc is None or to is None:
            self.outbox.drop("NOTIFY not sent: no association with the sender",
                             packet.packet_type.name, packet.sender_hit)
            return
        if type(to) is not type(dst):
            dst = next((a for a in self.locators if type(a) is type(to)), dst)
            if type(to) is not type(dst):
                self.outbox.drop("NOTIFY not sent: no local locator in the peer's family",
                                 packet.packet_type.name, packet.sender_hit)
                return
        if not self._notify_budget.take(now):
            self.outbox.drop("NOTIFY not sent: rate limit",
                             packet.packet_type.name, packet.sender_hit)
            return
        notify = HIPPacket(PacketType.NOTIFY, self.our_hit, packet.sender_hit, (
            Notification(int(NotifyType.UNSUPPORTED_CRITICAL_PARAMETER_TYPE),
                         param_type.to_bytes(2, "big")),
        ))
        sig = HipSignature(self.identity.public.signature_algorithm,
                           self.identity.sign(integrity_bytes(notify, ParamType.HIP_SIGNATURE)))
        notify = HIPPacket(PacketType.NOTIFY, self.our_hit, packet.sender_hit,
                           (*notify.params, sig))
        self.outbox.packets.append(OutgoingPacket(serialize(notify, dst, to), dst, to))

    def _dispatch(self, packet: HIPPacket, src: Address, dst: Address, now: float) -> None:
        ptype = packet.packet_type
        if packet.sender_hit == self.our_hit:
            self.outbox.drop("packet claims our own HIT as sender", ptype.name)
            return
        if packet.receiver_hit != self.our_hit:
            reason = ("opportunistic mode (null receiver HIT) not supported"
                      if packet.receiver_hit == bytes(16) else "receiver HIT is not ours")
            self.outbox.drop(reason, ptype.name, packet.sender_hit)
            return
        assoc = self.associations.get(packet.sender_hit)
        if ptype is PacketType.I1:
            self._on_i1(packet, src, dst, now, assoc)
        elif ptype is PacketType.I2:
            self._on_i2(packet, src, dst, now, assoc)
        elif assoc is None:
            self.outbox.drop(f"{ptype.name} without an association", ptype.name,
                             packet.sender_hit)
        elif ptype is PacketType.R1:
            assoc.receive_r1(packet, src, dst, now)
        elif ptype is PacketType.R2:
            assoc.receive_r2(packet, src, dst, now)
        elif ptype is PacketType.UPDATE:
            assoc.receive_update(packet, src, dst, now)
        elif ptype is PacketType.NOTIFY:
            assoc.receive_notify(packet, src, dst, now)
        elif ptype is PacketType.CLOSE:
            assoc.receive_close(packet, src, dst, now)
        elif ptype is PacketType.CLOSE_ACK:
            assoc.receive_close_ack(packet, src, dst, now)

    def _on_i1(self, packet: HIPPacket, src: Address, dst: Address, now: float,
               assoc: Association | None) -> None:
        """Answer an I1 with a pre-signed R1, keeping no state (RFC 7401 6.7)."""
        if assoc is not None and assoc.state is State.I1_SENT and self.our_hit < packet.sender_hit:
            # Simultaneous base exchange: the larger HIT answers (RFC 7401 4.4.2, 6.7).
            self.outbox.drop("I1 in I1-SENT, the peer's larger HIT makes it the Responder",
                             "I1", packet.sender_hit)
            return
        self._count_i1(now)
        offered = packet.get(DHGroupList)
        ids = offered.group_ids if offered else ()
        # RFC 7401 5.2.6: the DH_GROUP_LIST lets the Responder pick the group preferred by
        # itself and supported by the Initiator, so: the first of OUR list that the I1
        # offers.  The Initiator checks exactly that against the list in our R1 (6.8).
        # With none in common, our own first choice (the Initiator will then give up).
        group = next((g for g in self.config.dh_groups if g in ids), self.config.dh_groups[0])
        gen = self._current_generation(now)
        k = self.puzzle_difficulty(now)
        template = self._r1_template(gen, group, k)
        puzzle = Puzzle(k, self.config.puzzle_lifetime_exponent, bytes(2),
                        self._puzzle_i(gen, packet.sender_hit, k))
        params = tuple(puzzle if isinstance(p, Puzzle) else p for p in template.params)
        r1 = HIPPacket(PacketType.R1, self.our_hit, packet.sender_hit, params)
        self.outbox.packets.append(OutgoingPacket(serialize(r1, dst, src), dst, src))
        self.r1_sent += 1
        if assoc is not None and allows(assoc.state, Trigger.RECV_I1):
            assoc.i1_answered()

    def _on_i2(self, packet: HIPPacket, src: Address, dst: Address, now: float,
               assoc: Association | None) -> None:
        """Check an I2 against the R1 generation it answers; create the association."""
        if assoc is not None and assoc.resend_r2_if_duplicate(packet):
            return
        counter = packet.get(R1Counter)
        gen = self._generation(counter.counter if counter else None)
        oldest = now - GENERATIONS_KEPT * self.config.r1_generation_lifetime
        if gen is not None and gen.created < oldest:
            gen = None  # even without newer I1s, an R1 is honoured for two lifetimes at most
        if gen is None:
            self.outbox.drop("I2 answers an R1 generation we no longer honour", "I2",
                             packet.sender_hit)
            return
        solution = packet.get(Solution)
        dh = packet.get(DiffieHellman)
        if solution is None or dh is None:
            self.outbox.drop("I2 lacks SOLUTION or DIFFIE_HELLMAN", "I2", packet.sender_hit)
            return
        expected_i = self._puzzle_i(gen, packet.sender_hit, solution.k)
        if (solution.k < self.config.puzzle_difficulty or solution.random_i != expected_i
                or not verify_solution(self._rhash, solution.random_i, packet.sender_hit,
                                       self.our_hit, solution.k, solution.solution_j)):
            self.outbox.drop("I2 puzzle solution invalid", "I2", packet.sender_hit)
            return
        if dh.group_id not in self.config.dh_groups:
            self.outbox.drop("I2 DH group not offered", "I2", packet.sender_hit)
            return
        fingerprint = i2_fingerprint(packet)
        if fingerprint in gen.accepted_i2:
            # Accepted once already (duplicates in R2-SENT were answered above): a
            # captured I2 replayed, perhaps after a spoofed I1, must not reset anything.
            self.outbox.drop("I2 replay", "I2", packet.sender_hit)
            return
        offer = ResponderOffer(self._dh_key(gen, dh.group_id), solution.random_i,
                               tuple(self.config.offered_ciphers()),
                               tuple(self.config.esp_transforms))
        if assoc is None:
            fresh = Association(self.identity, packet.sender_hit, local_locators=self.locators,
                                config=self.config, rng=self.rng, outbox=self.outbox)
            accepted = fresh.receive_i2(packet, src, dst, now, offer)
            if accepted:
                self.associations[packet.sender_hit] = fresh
        else:
            accepted = assoc.receive_i2(packet, src, dst, now, offer)
        if accepted:
            gen.accepted_i2.add(fingerprint)
