"""One HIP association with one peer: the RFC 7401 base exchange, UPDATE, NOTIFY, CLOSE,
and RFC 8046 mobility, with no I/O.

Inputs: packets already parsed by :class:`hip.host.HIPHost` (``receive(...)``), timer
expiries (``handle_timer(now)``) and user calls (``connect``, ``update_locators``,
``rekey``, ``close``), each with the time passed in.  Outputs go to an :class:`Outbox`
shared with the host: packets to send with their locators, events, and counters of
every dropped packet by reason.  State changes go through :mod:`hip.states` only.

A peer's packet that fails a check is dropped and counted, and changes nothing: every
check (MAC, signature, puzzle, negotiation) runs before any state is touched.  Misuse of
the API by the caller (e.g. ``close`` on an association that never started) raises.
"""

from __future__ import annotations

import hmac as _hmac
from collections import deque
from dataclasses import dataclass
from ipaddress import IPv6Address

from hip import crypto
from hip.config import HIPConfig
from hip.errors import CryptoError, HIPError, ProtocolError
from hip.events import (
    Address,
    AnyEvent,
    AssociationClosed,
    AssociationEstablished,
    AssociationFailed,
    CloseReason,
    LocatorVerificationFailed,
    LocatorVerified,
    Mover,
    NotifyReceived,
    PeerLocatorsChanged,
    Rebound,
    SAChangeReason,
    SecurityAssociationsChanged,
    UpdateFailed,
)
from hip.identity import HostIdentity, PublicHostIdentity
from hip.mobility import (
    AnnouncedLocator,
    CreditAccount,
    LocatorState,
    PeerLocatorSet,
    PendingUpdate,
    UpdatePurpose,
    UpdateSequencer,
)
from hip.outbox import Outbox, OutgoingPacket
from hip.packet import HIPPacket, PacketType, integrity_bytes, parse, serialize
from hip.params import (
    Ack,
    DHGroupList,
    DiffieHellman,
    EchoRequestSigned,
    EchoRequestUnsigned,
    EchoResponseSigned,
    EchoResponseUnsigned,
    Encrypted,
    EspInfo,
    EspTransform,
    HipCipher,
    HipMac,
    HipMac2,
    HipSignature,
    HipSignature2,
    HostId,
    Locator,
    LocatorSet,
    LocatorType,
    Notification,
    NotifyType,
    Param,
    ParamType,
    Puzzle,
    R1Counter,
    Seq,
    Solution,
    TrafficType,
    TransportFormat,
    TransportFormatList,
    decode_params,
    encode_param,
)
from hip.puzzle import solve_puzzle
from hip.random import RandomSource
from hip.ratelimit import TokenBucket
from hip.states import State, StateMachine, Trigger, allows

#: Lowest SPI we hand out: 1-255 are reserved by IANA (RFC 4303 section 2.1).
MIN_SPI = 256


@dataclass(frozen=True)
class ResponderOffer:
    """What our R1 offered, rebuilt by the stateless host when a valid I2 arrives."""

    dh_key: crypto.DHKeyPair
    random_i: bytes
    ciphers: tuple[int, ...]
    esp_transforms: tuple[int, ...]


@dataclass
class _Retransmit:
    """The one base-exchange or CLOSE packet being retransmitted."""

    packet: OutgoingPacket
    deadline: float
    max_retries: int
    retries: int = 0


@dataclass
class _Crypto:
    """Negotiated algorithms and keys of an association."""

    rhash: str
    cipher_id: int
    esp_transform: int
    keymat: crypto.Keymat
    hip_out_enc: bytes
    hip_out_mac: bytes
    hip_in_enc: bytes
    hip_in_mac: bytes
    esp_out_enc: bytes
    esp_out_auth: bytes
    esp_in_enc: bytes
    esp_in_auth: bytes
    #: Where the base exchange's ESP keys start (ESP_INFO Keymat Index in I2/R2).
    esp_keymat_index: int
    #: First KEYMAT byte not yet used for keys (where a rekey draws next).
    next_keymat_index: int
    #: Inputs kept for a rekey with a new Diffie-Hellman exchange (RFC 7402 6.9): the
    #: new KEYMAT uses the new Kij with the base exchange's HITs, #I and #J.
    dh_group: int
    hit_i: bytes
    hit_r: bytes
    random_i: bytes
    random_j: bytes

    def keymat_with(self, kij: bytes) -> crypto.Keymat:
        """A fresh KEYMAT from a new shared secret ``kij``."""
        return crypto.Keymat(self.rhash, kij, self.hit_i, self.hit_r, self.random_i,
                             self.random_j)

    def esp_keys_length(self) -> int:
        """Bytes of KEYMAT one draw of ESP keys consumes."""
        suite = crypto.ESP_SUITES[crypto.EspTransform(self.esp_transform)]
        return 2 * (suite.enc_key_len + suite.auth_key_len)


@dataclass
class _Rekey:
    """A rekey in progress (RFC 7402 section 6.9)."""

    new_spi_in: int
    keymat_index: int
    #: The peer's new inbound SPI, from its ESP_INFO (request or reply).
    peer_new_spi: int | None = None
    #: Our own ESP_INFO (request or reply) has been acknowledged.
    own_acked: bool = False
    #: Set when this rekey runs a new Diffie-Hellman exchange (KEYMAT ran out).
    dh: crypto.DHKeyPair | None = None
    keymat: crypto.Keymat | None = None


@dataclass(frozen=True)
class _AbandonedInitiator:
    """Our keys and inbound SPI of a crossing exchange we gave up as Initiator."""

    keys: _Crypto
    spi_in: int


@dataclass(frozen=True)
class _QueuedUpdate:
    """An UPDATE with SEQ waiting for the previous one's ACK (RFC 7401 6.12)."""

    purpose: UpdatePurpose
    #: For ECHO: the peer locator to verify.
    locator: Address | None = None


def _sorted(params: list[Param]) -> tuple[Param, ...]:
    # Parameters must be in ascending type order (RFC 7401 5.2.1); sort is stable.
    return tuple(sorted(params, key=lambda p: p.param_type))


class Association:
    """The state of our HIP association with one peer (identified by its HIT)."""

    def __init__(
        self,
        identity: HostIdentity,
        peer_hit: bytes,
        *,
        local_locators: tuple[Address, ...],
        config: HIPConfig,
        rng: RandomSource,
        outbox: Outbox | None = None,
    ) -> None:
        if not local_locators:
            raise ProtocolError("an association needs at least one local locator")
        self.identity = identity
        self.our_hit: bytes = identity.hit
        self.peer_hit: bytes = bytes(peer_hit)
        if self.our_hit == self.peer_hit:
            raise ProtocolError(f"peer HIT {IPv6Address(self.peer_hit)} is our own HIT")
        self.config = config
        self.rng = rng
        self.outbox = outbox if outbox is not None else Outbox()
        self._machine = StateMachine()
        self.local_locators: tuple[Address, ...] = tuple(local_locators)
        self.local_locator: Address = local_locators[0]
        #: Peer address used during the base exchange; after it, ``peer_locators``.
        self._peer_addr: Address | None = None
        self.peer_locators: PeerLocatorSet | None = None
        self.peer_identity: PublicHostIdentity | None = None
        self._peer_host_id: HostId | None = None
        self.initiator = False
        self._crypto: _Crypto | None = None
        self.spi_in = 0
        self.spi_out = 0
        self._retransmit: _Retransmit | None = None
        self._state_deadline: float | None = None
        #: Last sign of life from the peer (for the idle timeout).
        self._last_activity = 0.0
        self._close_reason = CloseReason.LOCAL_CLOSE
        #: The peer sent an I1 after this session was set up (a restart, not a race).
        self._fresh_i1 = False
        #: R1_COUNTER of the I2 this session was set up with, as Responder.
        self._accepted_i2_counter: int | None = None
        #: Our own keys and SPI of a crossing exchange we gave up as Initiator.
        self._abandoned_initiator: _AbandonedInitiator | None = None
        self._updates = UpdateSequencer()
        #: Re-acknowledgements of replayed UPDATEs we may still send (HIPConfig.reack_*).
        self._reack_budget = TokenBucket(self.config.reack_rate, self.config.reack_burst,
                                         float(self.config.reack_burst), 0.0)
        #: Our locators the peer has verified (answered its echo request there, or the
        #: base exchange ran there); the peer forgets those we stop announcing.
        self._verified_by_peer: set[Address] = set()
        #: After our move: whether the peer acknowledged the announcing UPDATE; None
        #: when no move of ours waits for its Rebound.
        self._move_acked: bool | None = None
        self._update_queue: deque[_QueuedUpdate] = deque()
        self._rekey: _Rekey | None = None
        self._credit = CreditAccount(config.credit_limit, config.credit_aging_interval)
        # Base exchange memory, for duplicate and late packets.
        self._r1_counter: int | None = None
        #: DH public value and #J of the I2 this session was set up with, as Responder.
        #: Kept for the whole session (``_reset_session`` leaves it) so a replay of that
        #: I2 is recognised in every state.
        self._i2_fingerprint: bytes | None = None
        self._r2_packet: OutgoingPacket | None = None
        self._close_nonce: bytes | None = None

    # --- introspection ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The RFC 7401 state of this association."""
        return self._machine.state

    @property
    def peer_locator(self) -> Address | None:
        """Where HIP control packets for the peer go now."""
        if self.peer_locators is not None:
            return self.peer_locators.control_locator()
        return self._peer_addr

    def get_timer(self) -> float | None:
        """The earliest time ``handle_timer`` must be called, or None."""
        times = [t for t in (
            self._retransmit.deadline if self._retransmit else None,
            self._updates.outstanding.deadline if self._updates.outstanding else None,
            self._state_deadline,
            self._idle_deadline(),
        ) if t is not None]
        return min(times) if times else None

    def _idle_deadline(self) -> float | None:
        if self.config.idle_timeout is None or self.state is not State.ESTABLISHED:
            return None
        return self._last_activity + self.config.idle_timeout

    # --- small helpers ---------------------------------------------------------------

    def _apply(self, trigger: Trigger) -> State:
        return self._machine.apply(trigger)

    def _event_ids(self) -> tuple[IPv6Address, IPv6Address]:
        return IPv6Address(self.our_hit), IPv6Address(self.peer_hit)

    def _emit(self, event: AnyEvent) -> None:
        self.outbox.events.append(event)

    def _drop(self, reason: str, packet: HIPPacket | None = None) -> None:
        self.outbox.drop(reason, packet.packet_type.name if packet else None, self.peer_hit)

    def _new_spi(self) -> int:
        while True:
            spi = int.from_bytes(self.rng.bytes(4), "big")
            if spi >= MIN_SPI and spi not in (self.spi_in, self.spi_out):
                return spi

    def _packet(self, packet_type: PacketType, params: list[Param]) -> HIPPacket:
        return HIPPacket(packet_type, self.our_hit, self.peer_hit, _sorted(params))

    def _with_mac(self, packet: HIPPacket, *, mac2_host_id: HostId | None = None) -> HIPPacket:
        assert self._crypto is not None
        if mac2_host_id is not None:
            covered = integrity_bytes(packet, ParamType.HIP_MAC_2, extra_params=(mac2_host_id,))
            mac: Param = HipMac2(crypto.hmac_digest(self._crypto.rhash, self._crypto.hip_out_mac,
                                                    covered))
        else:
            covered = integrity_bytes(packet, ParamType.HIP_MAC)
            mac = HipMac(crypto.hmac_digest(self._crypto.rhash, self._crypto.hip_out_mac, covered))
        return HIPPacket(packet.packet_type, packet.sender_hit, packet.receiver_hit,
                         _sorted([*packet.params, mac]))

    def _with_signature(self, packet: HIPPacket) -> HIPPacket:
        signature = self.identity.sign(integrity_bytes(packet, ParamType.HIP_SIGNATURE))
        sig = HipSignature(self.identity.public.signature_algorithm, signature)
        return HIPPacket(packet.packet_type, packet.sender_hit, packet.receiver_hit,
                         _sorted([*packet.params, sig]))

    def _signed(self, packet_type: PacketType, params: list[Param], *, mac: bool = True
                ) -> HIPPacket:
        packet = self._packet(packet_type, params)
        if mac:
            packet = self._with_mac(packet)
        return self._with_signature(packet)

    def _send(self, packet: HIPPacket, dst: Address, src: Address | None = None
              ) -> OutgoingPacket:
        src = self.local_locator if src is None else src
        if type(src) is not type(dst):
            # No locator of ours in the peer's address family: it cannot be reached now.
            self.outbox.drops["unsendable: no local locator in the peer's address family"] += 1
            return OutgoingPacket(b"", src, dst)
        out = OutgoingPacket(serialize(packet, src, dst), src, dst)
        self.outbox.packets.append(out)
        return out

    def _resend(self, out: OutgoingPacket) -> None:
        self.outbox.packets.append(out)

    def _mac_ok(self, packet: HIPPacket) -> bool:
        if self._crypto is None:
            return False
        mac = packet.get(HipMac)
        if mac is None:
            return False
        expected = crypto.hmac_digest(self._crypto.rhash, self._crypto.hip_in_mac,
                                      integrity_bytes(packet, ParamType.HIP_MAC))
        return _hmac.compare_digest(expected, mac.hmac)

    def _signature_ok(self, packet: HIPPacket, identity: PublicHostIdentity | None = None
                      ) -> bool:
        identity = identity or self.peer_identity
        sig = packet.get(HipSignature)
        if identity is None or sig is None:
            return False
        # The SIG alg field is outside what the signature covers: it must name the HI's
        # algorithm (RFC 7401 5.2.14), or a changed field would go unnoticed.
        if sig.algorithm != identity.signature_algorithm:
            return False
        return identity.verify(sig.signature, integrity_bytes(packet, ParamType.HIP_SIGNATURE))

    def _start_retransmit(self, out: OutgoingPacket, now: float, max_retries: int) -> None:
        self._retransmit = _Retransmit(out, now + self.config.retransmit_timeout(0), max_retries)

    def _local_for(self, peer: Address) -> Address:
        # Keep the address family of the peer's locator: a v4 peer needs a v4 source.
        if type(self.local_locator) is type(peer):
            return self.local_locator
        for loc in self.local_locators:
            if type(loc) is type(peer):
                return loc
        return self.local_locator

    # --- the base exchange: initiator ------------------------------------------------

    def _reset_session(self) -> None:
        # A new base exchange starts a new session: nothing of an earlier one (SPIs,
        # UPDATE sequence numbers, a rekey, queued UPDATEs, locators) carries over.
        self._crypto = None
        self.spi_in = self.spi_out = 0
        self.peer_locators = None
        self._updates = UpdateSequencer()
        #: Re-acknowledgements of replayed UPDATEs we may still send (HIPConfig.reack_*).
        self._reack_budget = TokenBucket(self.config.reack_rate, self.config.reack_burst,
                                         float(self.config.reack_burst), 0.0)
        self._update_queue.clear()
        self._rekey = None
        self._close_nonce = None
        self._r1_counter = None
        self._fresh_i1 = False
        self._accepted_i2_counter = None
        self._abandoned_initiator = None

    def connect(self, peer_locator: Address, now: float) -> None:
        """Start the base exchange by sending I1 to ``peer_locator`` (RFC 7401 6.6)."""
        self._apply(Trigger.CONNECT)  # raises StateTransitionError when misused
        self._reset_session()
        self.initiator = True
        self._peer_addr = peer_locator
        self._state_deadline = None
        i1 = self._packet(PacketType.I1, [DHGroupList(tuple(self.config.dh_groups))])
        out = self._send(i1, peer_locator, self._local_for(peer_locator))
        self._start_retransmit(out, now, self.config.i1_retries_max)

    def i1_answered(self) -> None:
        """The host answered the peer's I1 with an R1 on this association's behalf.

        R1 comes from the stateless Responder; the state does not change (RFC 7401 4.4.2
        "send R1 and stay"), but the transition is still taken through the table.
        """
        self._apply(Trigger.RECV_I1)
        if self.state is State.ESTABLISHED:
            self._fresh_i1 = True

    def _decode_host_id(self, param: HostId | None, expected_hit: bytes
                        ) -> PublicHostIdentity | None:
        if param is None:
            return None
        try:
            public = PublicHostIdentity.decode(param.hi_algorithm, param.host_identity)
        except HIPError:
            return None
        return public if public.hit == expected_hit else None

    def receive_r1(self, packet: HIPPacket, src: Address, dst: Address, now: float) -> None:
        """Process an R1 (RFC 7401 6.8); on success send I2 and move to I2-SENT."""
        state = self.state
        counter = packet.get(R1Counter)
        if state is State.I2_SENT:
            # A later R1 (larger counter) may replace the one we answered (RFC 7401 6.8).
            if counter is None or self._r1_counter is None or counter.counter <= self._r1_counter:
                self._drop("R1 in I2-SENT without a newer R1_COUNTER", packet)
                return
        elif state is not State.I1_SENT:
            self._drop(f"R1 unexpected in state {state.value}", packet)
            return
        puzzle = packet.get(Puzzle)
        dh = packet.get(DiffieHellman)
        ciphers = packet.get(HipCipher)
        groups = packet.get(DHGroupList)
        transforms = packet.get(EspTransform)
        formats = packet.get(TransportFormatList)
        if None in (puzzle, dh, ciphers, groups, transforms, formats, packet.get(HipSignature2)):
            self._drop("R1 lacks a mandatory parameter", packet)
            return
        assert puzzle and dh and ciphers and groups and transforms and formats
        host_id = packet.get(HostId)
        peer = self._decode_host_id(host_id, packet.sender_hit)
        if peer is None or host_id is None:
            self._drop("R1 HOST_ID missing, undecodable or not matching the sender HIT", packet)
            return
        sig2 = packet.get(HipSignature2)
        assert sig2 is not None
        if sig2.algorithm != peer.signature_algorithm or not peer.verify(
                sig2.signature, integrity_bytes(packet, ParamType.HIP_SIGNATURE_2)):
            self._drop("R1 bad HIP_SIGNATURE_2", packet)
            return
        # Downgrade protection (RFC 7401 6.8): the group must be the first one of the
        # Responder's (signed) DH_GROUP_LIST that our I1's DH_GROUP_LIST contained, i.e.
        # the Responder's best choice among ours (5.2.6).  Anything else means our I1's
        # list was tampered with on the way.
        best = next((g for g in groups.group_ids if g in self.config.dh_groups), None)
        if best is None or dh.group_id != best:
            self._drop("R1 DH group is not the Responder's best choice among our "
                       "DH_GROUP_LIST", packet)
            return
        cipher = next((c for c in ciphers.cipher_ids if c in self.config.offered_ciphers()), None)
        if cipher is None:
            self._notify(NotifyType.NO_HIP_PROPOSAL_CHOSEN, b"", src, dst)
            self._drop("R1 offers no acceptable HIP cipher", packet)
            return
        esp = next((t for t in transforms.suite_ids if t in self.config.esp_transforms), None)
        if esp is None or int(TransportFormat.ESP) not in formats.format_types:
            self._notify(NotifyType.NO_ESP_PROPOSAL_CHOSEN, b"", src, dst)
            self._drop("R1 offers no acceptable ESP transform", packet)
            return
        if puzzle.k > self.config.puzzle_solve_max:
            # Solving costs 2^K hashes: refuse rather than spin (the R1 is genuine, but
            # the Responder is asking more than we are willing to pay).
            self._drop("R1 puzzle harder than puzzle_solve_max", packet)
            return
        rhash = peer.rhash_name  # the Responder's HIT suite selects RHASH (RFC 7401 6.5)
        try:
            solution_j = solve_puzzle(rhash, puzzle.random_i, self.our_hit, packet.sender_hit,
                                      puzzle.k, self.rng)
            my_dh = crypto.generate_dh(dh.group_id, self.rng)
            kij = my_dh.shared_secret(dh.public_value)
        except CryptoError:
            self._drop("R1 puzzle or DH public value unusable", packet)
            return
        keys = self._derive(rhash, kij, self.our_hit, packet.sender_hit, puzzle.random_i,
                            solution_j, cipher, esp, dh.group_id)
        # All checks passed: commit.
        self._crypto = keys
        self.peer_identity = peer
        self._peer_host_id = host_id
        self._r1_counter = counter.counter if counter else None
        self._peer_addr = src
        self.local_locator = dst
        if self.spi_in == 0:
            self.spi_in = self._new_spi()
        params: list[Param] = [
            EspInfo(keys.esp_keymat_index, 0, self.spi_in),
            Solution(puzzle.k, puzzle.opaque, puzzle.random_i, solution_j),
            DiffieHellman(dh.group_id, my_dh.public_bytes()),
            HipCipher((cipher,)),
            EspTransform((esp,)),
            TransportFormatList((int(TransportFormat.ESP),)),
        ]
        if counter is not None:
            params.append(R1Counter(counter.counter))
        # Echo what the Responder asked us to echo (RFC 7401 5.2.20-5.2.23, 6.8): the
        # signed one under our signature, the unsigned one after it.
        for req in packet.get_all(EchoRequestSigned):
            params.append(EchoResponseSigned(req.opaque))
        for ureq in packet.get_all(EchoRequestUnsigned):
            params.append(EchoResponseUnsigned(ureq.opaque))
        own_host_id = host_id_param(self.identity.public)
        if cipher == crypto.HipCipherId.NULL_ENCRYPT:
            params.append(own_host_id)
        else:
            plain = _encode_param_bytes(own_host_id)
            params.append(Encrypted(crypto.encrypt_encrypted_param(
                cipher, keys.hip_out_enc, plain, self.rng)))
        i2 = self._signed(PacketType.I2, params)
        self._apply(Trigger.RECV_R1)
        out = self._send(i2, src, dst)
        self._start_retransmit(out, now, self.config.i2_retries_max)

    def _derive(self, rhash: str, kij: bytes, hit_i: bytes, hit_r: bytes, random_i: bytes,
                random_j: bytes, cipher: int, esp: int, dh_group: int) -> _Crypto:
        keymat = crypto.Keymat(rhash, kij, hit_i, hit_r, random_i, random_j)
        material = crypto.draw_keys(keymat, cipher, hit_i, hit_r, esp)
        host = material.for_host(self.our_hit, self.peer_hit)
        result = _Crypto(
            rhash=rhash, cipher_id=cipher, esp_transform=esp, keymat=keymat,
            hip_out_enc=host.hip_out_enc, hip_out_mac=host.hip_out_integ,
            hip_in_enc=host.hip_in_enc, hip_in_mac=host.hip_in_integ,
            esp_out_enc=host.esp_out_enc, esp_out_auth=host.esp_out_auth,
            esp_in_enc=host.esp_in_enc, esp_in_auth=host.esp_in_auth,
            esp_keymat_index=material.esp_keymat_index,
            next_keymat_index=material.next_keymat_index,
            dh_group=dh_group, hit_i=hit_i, hit_r=hit_r, random_i=random_i, random_j=random_j,
        )
        return result

    def receive_r2(self, packet: HIPPacket, src: Address, dst: Address, now: float) -> None:
        """Process an R2 (RFC 7401 6.11): verify HIP_MAC_2 and signature; ESTABLISHED."""
        adopting = self.state is State.R2_SENT and self._abandoned_initiator is not None
        if self.state is not State.I2_SENT and not adopting:
            self._drop(f"R2 unexpected in state {self.state.value}", packet)
            return
        keys = self._crypto
        if adopting:
            # We answered the peer's I2 of a crossing exchange, but the peer took ours
            # (it had given its own up): follow it, or the two ends keep different keys.
            assert self._abandoned_initiator is not None
            keys, spi_in = self._abandoned_initiator.keys, self._abandoned_initiator.spi_in
        assert keys is not None and self._peer_host_id is not None
        mac2 = packet.get(HipMac2)
        info = packet.get(EspInfo)
        if mac2 is None or info is None:
            self._drop("R2 lacks HIP_MAC_2 or ESP_INFO", packet)
            return
        covered = integrity_bytes(packet, ParamType.HIP_MAC_2, extra_params=(self._peer_host_id,))
        expected = crypto.hmac_digest(keys.rhash, keys.hip_in_mac, covered)
        if not _hmac.compare_digest(expected, mac2.hmac):
            self._drop("R2 bad HIP_MAC_2", packet)
            return
        if not self._signature_ok(packet):
            self._drop("R2 bad HIP_SIGNATURE", packet)
            return
        if info.new_spi < MIN_SPI:
            self._drop("R2 ESP_INFO carries a reserved SPI", packet)
            return
        if adopting:
            self._reset_session()
            self._crypto, self.spi_in, self.initiator = keys, spi_in, True
            self._state_deadline = None
        self.spi_out = info.new_spi
        self._apply(Trigger.RECV_R2)
        self._retransmit = None
        self.peer_locators = PeerLocatorSet(src)
        self.local_locator = dst
        self._established(now)

    def _established(self, now: float) -> None:
        self._last_activity = now
        self._verified_by_peer = {self.local_locator}
        our, peer = self._event_ids()
        assert self.peer_locator is not None
        self._emit(AssociationEstablished(our, peer, self.initiator, self.peer_locator,
                                          self.local_locator))
        self._emit_sa(SAChangeReason.ESTABLISHED)

    def _emit_sa(self, reason: SAChangeReason) -> None:
        assert self._crypto is not None and self.peer_locators is not None
        c = self._crypto
        our, peer = self._event_ids()
        self._emit(SecurityAssociationsChanged(
            our, peer, reason, c.esp_transform, self.spi_in, self.spi_out,
            c.esp_in_enc, c.esp_in_auth, c.esp_out_enc, c.esp_out_auth,
            self.local_locator, self.peer_locators.control_locator(),
            self.local_locators, self.peer_locators.active_addresses(),
        ))

    # --- the base exchange: responder ------------------------------------------------

    @staticmethod
    def _i2_fingerprint_of(packet: HIPPacket) -> bytes:
        return i2_fingerprint(packet)

    def resend_r2_if_duplicate(self, packet: HIPPacket) -> bool:
        """An I2 we already answered, in R2-SENT: send the same R2 again (RFC 7401 4.4.2).

        Returns True when the I2 was such a duplicate.
        """
        if (self.state is State.R2_SENT and self._r2_packet is not None
                and self._i2_fingerprint_of(packet) == self._i2_fingerprint):
            self._apply(Trigger.RECV_I2)  # R2-SENT -> R2-SENT
            self._resend(self._r2_packet)
            self.outbox.drops["I2 duplicate (R2 re-sent)"] += 1
            return True
        return False

    def receive_i2(self, packet: HIPPacket, src: Address, dst: Address, now: float,
                   offer: ResponderOffer) -> bool:
        """Process an I2 whose puzzle the host already verified (RFC 7401 6.10).

        Returns True when the I2 was accepted (an R2 was sent).
        """
        state = self.state
        dh = packet.get(DiffieHellman)
        solution = packet.get(Solution)
        if not allows(state, Trigger.RECV_I2):
            self._drop(f"I2 unexpected in state {state.value}", packet)
            return False
        if (self._i2_fingerprint is not None
                and self._i2_fingerprint_of(packet) == self._i2_fingerprint):
            # The I2 this session was set up with, seen again (R2-SENT duplicates were
            # answered before this point).  A genuine restart by the peer always carries
            # a new Diffie-Hellman value, so this is a captured I2 being replayed: after
            # any spoofed I1 it would otherwise reset an established session.
            self._drop("I2 replay", packet)
            return False
        if state is State.I2_SENT and self.our_hit < self.peer_hit:
            # Simultaneous base exchange: the larger HIT is Responder (RFC 7401 6.10).
            self._drop("I2 in I2-SENT, the peer's larger HIT makes it the Responder", packet)
            return False
        # RFC 7401 4.4.2 lets an I2 replace an ESTABLISHED or R2-SENT association (the
        # peer lost its state).  A late I2 of a simultaneous exchange that the peer has
        # itself abandoned looks the same and would leave the two ends with different
        # keys, so: in ESTABLISHED only after the peer started anew with an I1, and in
        # R2-SENT only for an R1 at least as new as the one this session answered.
        if state is State.ESTABLISHED and not self._fresh_i1:
            self._drop("I2 in ESTABLISHED without a new I1 (late I2 of an earlier exchange)",
                       packet)
            return False
        counter = packet.get(R1Counter)
        if (state is State.R2_SENT and self._accepted_i2_counter is not None
                and (counter is None or counter.counter < self._accepted_i2_counter)):
            self._drop("I2 in R2-SENT answers an older R1 than this session's", packet)
            return False
        ciphers = packet.get(HipCipher)
        transforms = packet.get(EspTransform)
        info = packet.get(EspInfo)
        if None in (dh, solution, ciphers, transforms, info, packet.get(HipMac),
                    packet.get(HipSignature)):
            self._drop("I2 lacks a mandatory parameter", packet)
            return False
        assert dh and solution and ciphers and transforms and info
        if len(ciphers.cipher_ids) != 1 or ciphers.cipher_ids[0] not in offer.ciphers:
            self._drop("I2 chose a HIP cipher we did not offer", packet)
            return False
        if len(transforms.suite_ids) != 1 or transforms.suite_ids[0] not in offer.esp_transforms:
            self._drop("I2 chose an ESP transform we did not offer", packet)
            return False
        if dh.group_id != offer.dh_key.group:
            self._drop("I2 DH group differs from our R1", packet)
            return False
        cipher, esp = ciphers.cipher_ids[0], transforms.suite_ids[0]
        try:
            kij = offer.dh_key.shared_secret(dh.public_value)
        except CryptoError:
            self._drop("I2 DH public value invalid", packet)
            return False
        keys = self._derive(self.identity.public.rhash_name, kij, packet.sender_hit, self.our_hit,
                            solution.random_i, solution.solution_j, cipher, esp,
                            dh.group_id)
        host_id = packet.get(HostId)
        encrypted = packet.get(Encrypted)
        if host_id is None and encrypted is not None:
            try:
                plain = crypto.decrypt_encrypted_param(cipher, keys.hip_in_enc, encrypted.payload)
                host_id = _decode_host_id_bytes(plain)
            except HIPError:
                self._drop("I2 ENCRYPTED does not decrypt to a HOST_ID", packet)
                return False
        peer = self._decode_host_id(host_id, packet.sender_hit)
        if peer is None or host_id is None:
            self._drop("I2 HOST_ID missing, undecodable or not matching the sender HIT", packet)
            return False
        expected = crypto.hmac_digest(keys.rhash, keys.hip_in_mac,
                                      integrity_bytes(packet, ParamType.HIP_MAC))
        mac = packet.get(HipMac)
        assert mac is not None
        if not _hmac.compare_digest(expected, mac.hmac):
            self._drop("I2 bad HIP_MAC", packet)
            return False
        if not self._signature_ok(packet, peer):
            self._drop("I2 bad HIP_SIGNATURE", packet)
            return False
        if info.new_spi < MIN_SPI:
            self._drop("I2 ESP_INFO carries a reserved SPI", packet)
            return False
        # All checks passed: commit (a previous association's keys are replaced).
        abandoned = (_AbandonedInitiator(self._crypto, self.spi_in)
                     if state is State.I2_SENT and self._crypto is not None else None)
        self._apply(Trigger.RECV_I2)
        self._reset_session()
        self._abandoned_initiator = abandoned
        self.initiator = False
        self._retransmit = None
        self._crypto = keys
        self.peer_identity = peer
        self._peer_host_id = host_id
        self.spi_out = info.new_spi
        self.spi_in = self._new_spi()
        self._peer_addr = src
        self.local_locator = dst
        self.peer_locators = PeerLocatorSet(src)
        own_host_id = host_id_param(self.identity.public)
        r2 = self._packet(PacketType.R2, [EspInfo(keys.esp_keymat_index, 0, self.spi_in)])
        r2 = self._with_mac(r2, mac2_host_id=own_host_id)
        r2 = self._with_signature(r2)
        self._r2_packet = self._send(r2, src, dst)
        self._i2_fingerprint = self._i2_fingerprint_of(packet)
        self._accepted_i2_counter = counter.counter if counter is not None else None
        self._state_deadline = now + self.config.r2_sent_timeout
        self._established(now)
        return True

    # --- timers ----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``: retransmissions, R2-SENT confirmation, expiry."""
        rt = self._retransmit
        if rt is not None and now >= rt.deadline:
            if rt.retries < rt.max_retries:
                rt.retries += 1
                rt.deadline = now + self.config.retransmit_timeout(rt.retries)
                self._apply(Trigger.RETRANSMIT)
                self._resend(rt.packet)
            else:
                self._retransmit = None
                before = self.state
                after = self._apply(Trigger.RETRIES_EXHAUSTED)
                our, peer = self._event_ids()
                if after is State.E_FAILED:
                    what = "I1" if before is State.I1_SENT else "I2"
                    self._emit(AssociationFailed(
                        our, peer, f"no answer to {what} after {rt.max_retries} retries"))
                    self._state_deadline = now + self.config.closed_linger
                else:
                    self._emit(AssociationClosed(our, peer, CloseReason.CLOSE_TIMEOUT))
        pending = self._updates.outstanding
        if pending is not None and now >= pending.deadline:
            self._update_timeout(pending, now)
        idle = self._idle_deadline()
        if idle is not None and now >= idle:
            self._close(now, Trigger.IDLE_TIMEOUT, CloseReason.IDLE)
        if self._state_deadline is not None and now >= self._state_deadline:
            self._state_deadline = None
            if self.state is State.R2_SENT:
                self._apply(Trigger.CONFIRM_TIMEOUT)
            elif self.state in (State.CLOSED, State.E_FAILED):
                self._apply(Trigger.EXPIRE)

    def _update_timeout(self, pending: PendingUpdate, now: float) -> None:
        if pending.retries < self.config.update_retries_max:
            pending.retries += 1
            pending.deadline = now + self.config.retransmit_timeout(pending.retries)
            self._resend(OutgoingPacket(pending.data, pending.src, pending.dst))
            return
        self._updates.outstanding = None
        our, peer = self._event_ids()
        if pending.purpose is UpdatePurpose.ECHO and pending.locator is not None:
            assert self.peer_locators is not None
            self.peer_locators.fail_check(pending.locator)
            self._emit(LocatorVerificationFailed(our, peer, pending.locator))
        else:
            if pending.purpose in (UpdatePurpose.REKEY, UpdatePurpose.REKEY_REPLY):
                self._rekey = None
            self._emit(UpdateFailed(our, peer, f"UPDATE ({pending.purpose.value}) "
                                    f"unacknowledged after {pending.retries} retries"))
        self._send_queued(now)

    # --- data plane hooks (credit-based authorization) --------------------------------

    def data_received(self, nbytes: int, now: float) -> None:
        """The data plane received ``nbytes`` of ESP from the peer on this association.

        Confirms R2-SENT (RFC 7401 4.4.2) and earns credit (RFC 8046 5.5).
        """
        if self.state is State.R2_SENT:
            self._state_deadline = None
        if allows(self.state, Trigger.RECV_DATA):
            self._apply(Trigger.RECV_DATA)
            self._last_activity = now
        self._credit.earn(nbytes, now)

    def data_destination(self, nbytes: int, now: float) -> Address | None:
        """Where the data plane may send ``nbytes`` now, or None (buffer or drop them).

        The preferred peer locator once verified; while it is UNVERIFIED, only as long
        as credit lasts (RFC 8046 5.5); otherwise nothing may be sent.
        """
        if self.peer_locators is None or self.state not in (State.ESTABLISHED, State.R2_SENT):
            return None
        preferred = self.peer_locators.preferred()
        if preferred.state is LocatorState.ACTIVE:
            return preferred.address
        if preferred.state is LocatorState.UNVERIFIED and self._credit.spend(nbytes, now):
            return preferred.address
        return None

    # --- NOTIFY ----------------------------------------------------------------------

    def _notify(self, notify_type: NotifyType, data: bytes, dst: Address, src: Address) -> None:
        packet = self._packet(PacketType.NOTIFY, [Notification(int(notify_type), data)])
        self._send(self._with_signature(packet), dst, src)

    def receive_notify(self, packet: HIPPacket, src: Address, dst: Address, now: float) -> None:
        """Report a NOTIFY as an event; its signature is checked when the peer HI is known."""
        notes = packet.get_all(Notification)
        if not notes:
            self._drop("NOTIFY without NOTIFICATION", packet)
            return
        authenticated = False
        if self.peer_identity is not None:
            if not self._signature_ok(packet):
                self._drop("NOTIFY bad HIP_SIGNATURE", packet)
                return
            authenticated = True
        our, peer = self._event_ids()
        for note in notes:
            self._emit(NotifyReceived(our, peer, note.notify_type, note.data, authenticated))

    # --- CLOSE -----------------------------------------------------------------------

    def close(self, now: float) -> None:
        """Close the association (RFC 7401 6.14): CLOSE, retransmitted until CLOSE_ACK."""
        state = self.state
        if state in (State.I1_SENT, State.I2_SENT):
            self._apply(Trigger.CLOSE)
            self._retransmit = None
            our, peer = self._event_ids()
            self._emit(AssociationClosed(our, peer, CloseReason.ABORTED))
            return
        self._close(now, Trigger.CLOSE, CloseReason.LOCAL_CLOSE)

    def _close(self, now: float, trigger: Trigger, reason: CloseReason) -> None:
        self._apply(trigger)  # raises StateTransitionError when not allowed
        self._close_reason = reason
        self._state_deadline = None
        self._updates.outstanding = None
        self._update_queue.clear()
        nonce = self.rng.bytes(self.config.echo_nonce_length)
        self._close_nonce = nonce
        close = self._signed(PacketType.CLOSE, [EchoRequestSigned(nonce)])
        dst = self.peer_locator
        assert dst is not None
        out = self._send(close, dst)
        self._start_retransmit(out, now, self.config.close_retries_max)

    def receive_close(self, packet: HIPPacket, src: Address, dst: Address, now: float) -> None:
        """Answer a CLOSE with CLOSE_ACK and move to CLOSED (RFC 7401 6.15)."""
        state = self.state
        if not allows(state, Trigger.RECV_CLOSE) or self._crypto is None:
            self._drop(f"CLOSE unexpected in state {state.value}", packet)
            return
        echo = packet.get(EchoRequestSigned)
        if echo is None:
            self._drop("CLOSE without ECHO_REQUEST_SIGNED", packet)
            return
        if not self._mac_ok(packet):
            self._drop("CLOSE bad HIP_MAC", packet)
            return
        if not self._signature_ok(packet):
            self._drop("CLOSE bad HIP_SIGNATURE", packet)
            return
        self._apply(Trigger.RECV_CLOSE)
        ack = self._signed(PacketType.CLOSE_ACK, [EchoResponseSigned(echo.opaque)])
        self._send(ack, src, dst)
        if state is not State.CLOSED:
            self._retransmit = None
            self._updates.outstanding = None
            self._update_queue.clear()
            self._state_deadline = now + self.config.closed_linger
            our, peer = self._event_ids()
            self._emit(AssociationClosed(our, peer, CloseReason.PEER_CLOSE))

    def receive_close_ack(self, packet: HIPPacket, src: Address, dst: Address, now: float
                          ) -> None:
        """A CLOSE_ACK echoing our CLOSE's nonce ends the association (RFC 7401 6.16)."""
        if self.state is not State.CLOSING:
            self._drop(f"CLOSE_ACK unexpected in state {self.state.value}", packet)
            return
        echo = packet.get(EchoResponseSigned)
        if echo is None or self._close_nonce is None or echo.opaque != self._close_nonce:
            self._drop("CLOSE_ACK does not echo our CLOSE nonce", packet)
            return
        if not self._mac_ok(packet):
            self._drop("CLOSE_ACK bad HIP_MAC", packet)
            return
        if not self._signature_ok(packet):
            self._drop("CLOSE_ACK bad HIP_SIGNATURE", packet)
            return
        self._apply(Trigger.RECV_CLOSE_ACK)
        self._retransmit = None
        our, peer = self._event_ids()
        self._emit(AssociationClosed(our, peer, self._close_reason))

    # --- UPDATE: mobility and rekeying ------------------------------------------------

    def _require_established(self, what: str) -> None:
        if self.state not in (State.ESTABLISHED, State.R2_SENT) or self._crypto is None:
            raise ProtocolError(
                f"cannot {what} with {IPv6Address(self.peer_hit)}: association is "
                f"{self.state.value}; wait for AssociationEstablished"
            )

    def update_locators(self, locators: tuple[Address, ...], now: float) -> None:
        """Our locators changed: announce them with UPDATE/LOCATOR_SET (RFC 8046 3.2.1).

        The first locator is the preferred one and becomes our source address at once.
        """
        if not locators:
            raise ProtocolError("update_locators needs at least one locator; got none")
        self.local_locators = tuple(locators)
        self.local_locator = locators[0]
        # A packet being retransmitted (I1, I2, CLOSE, an UPDATE) must leave from an
        # address we still have, or its answer would go to the old one.
        if self._retransmit is not None:
            self._retransmit.packet = self._readdressed(self._retransmit.packet)
        pending = self._updates.outstanding
        if pending is not None:
            moved = self._readdressed(OutgoingPacket(pending.data, pending.src, pending.dst))
            pending.data, pending.src = moved.data, moved.src
        if self._updates.last_reply is not None:
            self._updates.last_reply = self._readdressed(self._updates.last_reply)
        if self.state not in (State.ESTABLISHED, State.R2_SENT) or self._crypto is None:
            return  # nothing to announce yet; later packets simply use the new source
        self._emit_sa(SAChangeReason.LOCAL_MOVED)
        self._move_acked = False
        self._queue_update(UpdatePurpose.LOCATORS, None, now)

    def _maybe_rebound(self) -> None:
        """Report our move complete once the peer acknowledged it and has verified (or
        is being answered for) our preferred locator."""
        if self._move_acked and self.local_locator in self._verified_by_peer:
            self._move_acked = None
            assert self.peer_locators is not None
            our, peer = self._event_ids()
            self._emit(Rebound(our, peer, Mover.LOCAL, self.local_locator,
                               self.peer_locators.control_locator()))

    def _emit_peer_rebound(self) -> None:
        assert self.peer_locators is not None
        our, peer = self._event_ids()
        self._emit(Rebound(our, peer, Mover.PEER, self.local_locator,
                           self.peer_locators.control_locator()))

    def _readdressed(self, out: OutgoingPacket) -> OutgoingPacket:
        src = self._local_for(out.dst)
        if src == out.src or type(src) is not type(out.dst):
            return out
        # MACs and signatures do not cover the locators; only the checksum changes.
        return OutgoingPacket(serialize(parse(out.data, out.src, out.dst), src, out.dst),
                              src, out.dst)

    def rekey(self, now: float) -> None:
        """Start a rekey: UPDATE with ESP_INFO carrying a new SPI (RFC 7402 6.9)."""
        self._require_established("rekey")
        if self._rekey is not None or _QueuedUpdate(UpdatePurpose.REKEY) in self._update_queue:
            raise ProtocolError(
                f"a rekey with {IPv6Address(self.peer_hit)} is already in progress; wait "
                "for SecurityAssociationsChanged(reason=REKEYED)"
            )
        self._queue_update(UpdatePurpose.REKEY, None, now)

    def _queue_update(self, purpose: UpdatePurpose, locator: Address | None, now: float) -> None:
        if purpose is UpdatePurpose.LOCATORS:
            # A newer announcement supersedes an older one, sent or not: the older one
            # may name (and come from) an address we no longer have.
            self._update_queue = deque(q for q in self._update_queue
                                       if q.purpose is not UpdatePurpose.LOCATORS)
            pending = self._updates.outstanding
            if pending is not None and pending.purpose is UpdatePurpose.LOCATORS:
                self._updates.outstanding = None
        self._update_queue.append(_QueuedUpdate(purpose, locator))
        self._send_queued(now)

    def _send_queued(self, now: float) -> None:
        # At most one UPDATE with an unacknowledged SEQ (RFC 7401 6.12).
        while self._updates.outstanding is None and self._update_queue:
            queued = self._update_queue.popleft()
            purpose, locator = queued.purpose, queued.locator
            if purpose is UpdatePurpose.REKEY_REPLY and self._rekey is None:
                continue  # that rekey already completed or failed
            if purpose is UpdatePurpose.REKEY and self._rekey is not None:
                continue  # a rekey the peer started meanwhile gives new keys already
            self._send_update_with_seq(purpose, locator, now, ack=None)

    def _esp_info_unchanged(self) -> EspInfo:
        assert self._crypto is not None
        return EspInfo(self._crypto.next_keymat_index, self.spi_in, self.spi_in)

    def _send_update_with_seq(self, purpose: UpdatePurpose, locator: Address | None,
                              now: float, ack: int | None) -> None:
        assert self._crypto is not None and self.peer_locators is not None
        uid = self._updates.allocate()
        params: list[Param] = [Seq(uid)]
        dst = self.peer_locators.control_locator()
        if ack is not None:
            params.append(Ack((ack,)))
        if purpose is UpdatePurpose.LOCATORS:
            params.append(self._esp_info_unchanged())
            params.append(LocatorSet(tuple(
                Locator(int(TrafficType.BOTH), int(LocatorType.ESP_SPI_IPV6), i == 0,
                        self.config.locator_lifetime, addr, self.spi_in)
                for i, addr in enumerate(self.local_locators))))
        elif purpose is UpdatePurpose.ECHO:
            assert locator is not None
            nonce = self.rng.bytes(self.config.echo_nonce_length)
            self.peer_locators.start_check(locator, nonce)
            params.append(self._esp_info_unchanged())
            params.append(EchoRequestSigned(nonce))
            dst = locator  # the return routability check goes to the new locator itself
        elif purpose is UpdatePurpose.REKEY:
            c = self._crypto
            if c.next_keymat_index + c.esp_keys_length() > c.keymat.max_length:
                # KEYMAT is used up: rekey with a new DH exchange, Keymat Index 0.
                fresh = crypto.generate_dh(c.dh_group, self.rng)
                self._rekey = _Rekey(self._new_spi(), 0, dh=fresh)
                params.append(DiffieHellman(c.dh_group, fresh.public_bytes()))
            else:
                self._rekey = _Rekey(self._new_spi(), c.next_keymat_index)
            params.append(EspInfo(self._rekey.keymat_index, self.spi_in,
                                  self._rekey.new_spi_in))
        elif purpose is UpdatePurpose.REKEY_REPLY:
            assert self._rekey is not None
            if self._rekey.dh is not None:
                params.append(DiffieHellman(self._crypto.dh_group,
                                            self._rekey.dh.public_bytes()))
            params.append(EspInfo(self._rekey.keymat_index, self.spi_in, self._rekey.new_spi_in))
        packet = self._signed(PacketType.UPDATE, params)
        src = self._local_for(dst)
        out = self._send(packet, dst, src)
        self._updates.outstanding = PendingUpdate(
            uid, purpose, out.data, out.src, out.dst,
            now + self.config.retransmit_timeout(0), locator=locator)
        if ack is not None:
            self._updates.last_reply = out

    def _send_ack(self, update_id: int, dst: Address, extra: list[Param]) -> None:
        packet = self._signed(PacketType.UPDATE, [Ack((update_id,)), *extra])
        out = self._send(packet, dst, self._local_for(dst))
        self._updates.last_reply = out

    def receive_update(self, packet: HIPPacket, src: Address, dst: Address, now: float) -> None:
        """Process an UPDATE (RFC 7401 6.12, RFC 7402 6.9, RFC 8046 5.3)."""
        state = self.state
        if not allows(state, Trigger.RECV_UPDATE) or self._crypto is None:
            self._drop(f"UPDATE unexpected in state {state.value}", packet)
            return
        if not self._mac_ok(packet):
            self._drop("UPDATE bad HIP_MAC", packet)
            return
        if not self._signature_ok(packet):
            self._drop("UPDATE bad HIP_SIGNATURE", packet)
            return
        seq = packet.get(Seq)
        if seq is not None and not self._updates.is_new(seq.update_id):
            # A retransmission: our answer was lost; send it again (RFC 7401 6.12.1) --
            # within a budget, since a replayed copy passes every check just as well.
            if self._updates.last_reply is None or self._reack_budget.take(now):
                if self._updates.last_reply is not None:
                    self._resend(self._updates.last_reply)
                self.outbox.drops["UPDATE duplicate SEQ (re-acknowledged)"] += 1
            else:
                self.outbox.drops["UPDATE duplicate SEQ (re-acknowledgement rate limit)"] += 1
            return
        # A new DH value (rekey after KEYMAT ran out) is checked before anything changes.
        peer_dh = packet.get(DiffieHellman)
        own_dh: crypto.DHKeyPair | None = None
        new_keymat: crypto.Keymat | None = None
        if peer_dh is not None:
            if peer_dh.group_id != self._crypto.dh_group:
                self._drop("UPDATE DIFFIE_HELLMAN of another group than the base exchange",
                           packet)
                return
            own_dh = (self._rekey.dh if self._rekey is not None and self._rekey.dh is not None
                      else crypto.generate_dh(peer_dh.group_id, self.rng))
            try:
                new_keymat = self._crypto.keymat_with(own_dh.shared_secret(peer_dh.public_value))
            except CryptoError:
                self._drop("UPDATE DIFFIE_HELLMAN public value invalid", packet)
                return
        self._apply(Trigger.RECV_UPDATE)
        self._last_activity = now
        if state is State.R2_SENT:
            self._state_deadline = None
        assert self.peer_locators is not None
        # ACK first: it may complete our own rekey or locator announcement.
        ack = packet.get(Ack)
        acked = self._updates.acknowledge(ack.update_ids) if ack else None
        esp_info = packet.get(EspInfo)
        echo_resp = packet.get(EchoResponseSigned)
        if echo_resp is not None:
            verified = self.peer_locators.complete_check(echo_resp.opaque)
            if verified is not None:
                our, peer = self._event_ids()
                self._emit(LocatorVerified(our, peer, verified))
                self._emit_sa(SAChangeReason.PEER_MOVED)
                if verified == self.peer_locators.preferred().address:
                    self._emit_peer_rebound()
        if acked is not None and acked.purpose is UpdatePurpose.LOCATORS:
            # The peer took in our LOCATOR_SET and deprecated what it no longer lists.
            self._verified_by_peer &= set(self.local_locators)
            if self._move_acked is False:
                self._move_acked = True
        if (acked is not None and self._rekey is not None
                and acked.purpose in (UpdatePurpose.REKEY, UpdatePurpose.REKEY_REPLY)):
            self._rekey.own_acked = True
        if seq is None:
            self._maybe_rebound()
            self._maybe_finish_rekey()
            self._send_queued(now)
            return
        self._updates.last_received = seq.update_id
        locator_set = packet.get(LocatorSet)
        # A rekey is symmetric (RFC 7402 6.9): each end sends one ESP_INFO with its new
        # SPI and gets it acknowledged.  An ESP_INFO with a new SPI is the peer's part of
        # the rekey in progress, or, when none is, a request that we must answer.
        rekey_request = False
        if esp_info is not None and esp_info.old_spi != esp_info.new_spi:
            if self._rekey is None:
                rekey_request = True
                if new_keymat is not None:
                    self._rekey = _Rekey(self._new_spi(), 0, dh=own_dh, keymat=new_keymat)
                else:
                    index = max(esp_info.keymat_index, self._crypto.next_keymat_index)
                    self._rekey = _Rekey(self._new_spi(), index)
                self._rekey.peer_new_spi = esp_info.new_spi
            elif self._rekey.peer_new_spi is None:
                if self._rekey.dh is not None and new_keymat is None:
                    self._drop("UPDATE answers our DH rekey without DIFFIE_HELLMAN", packet)
                    self._rekey = None
                else:
                    self._rekey.peer_new_spi = esp_info.new_spi
                    if new_keymat is not None:
                        self._rekey.keymat = new_keymat
        echo_req = packet.get(EchoRequestSigned)
        reply_extra: list[Param] = []
        if echo_req is not None:
            reply_extra.append(EchoResponseSigned(echo_req.opaque))
            # The check was sent to the locator it verifies (RFC 8046 3.2.1).
            self._verified_by_peer.add(dst)
        self._maybe_rebound()
        to_check: list[Address] = []
        if locator_set is not None:
            announced = [AnnouncedLocator(loc.address, loc.preferred, loc.lifetime)
                         for loc in locator_set.locators]
            control_before = self.peer_locators.control_locator()
            to_check = self.peer_locators.apply_announcement(announced)
            pending = self._updates.outstanding
            if (pending is not None and pending.purpose is UpdatePurpose.ECHO
                    and pending.locator is not None):
                checked = self.peer_locators.get(pending.locator)
                if checked is None or checked.state is not LocatorState.UNVERIFIED:
                    # The locator being verified was withdrawn: stop probing it.
                    self._updates.outstanding = None
            our, peer = self._event_ids()
            self._emit(PeerLocatorsChanged(our, peer, self.peer_locators.snapshot()))
            if self.peer_locators.control_locator() != control_before:
                # The peer now prefers a locator that was verified before: traffic moves
                # at once, no return routability needed (RFC 8046 5.2).
                self._emit_sa(SAChangeReason.PEER_MOVED)
                self._emit_peer_rebound()
        self._maybe_finish_rekey()
        # One answer carries the ACK: our rekey reply, or the first return routability
        # check, or else a plain ACK (with any echo response); the rest is queued.
        if rekey_request and self._updates.outstanding is None and not reply_extra:
            self._send_update_with_seq(UpdatePurpose.REKEY_REPLY, None, now, ack=seq.update_id)
            for extra in to_check:
                self._update_queue.append(_QueuedUpdate(UpdatePurpose.ECHO, extra))
        elif (to_check and not rekey_request and self._updates.outstanding is None
              and not reply_extra):
            # Return routability (RFC 8046 3.2.1): SEQ, ACK and ECHO_REQUEST_SIGNED in one
            # UPDATE sent to the new locator itself.
            self._send_update_with_seq(UpdatePurpose.ECHO, to_check[0], now, ack=seq.update_id)
            for extra in to_check[1:]:
                self._update_queue.append(_QueuedUpdate(UpdatePurpose.ECHO, extra))
        else:
            self._send_ack(seq.update_id, src, reply_extra)
            if rekey_request:
                self._update_queue.append(_QueuedUpdate(UpdatePurpose.REKEY_REPLY))
            for extra in to_check:
                self._update_queue.append(_QueuedUpdate(UpdatePurpose.ECHO, extra))
        self._send_queued(now)

    def _maybe_finish_rekey(self) -> None:
        # Switch once both halves are done: the peer's new SPI is known and ours is ACKed.
        rk = self._rekey
        if rk is not None and rk.own_acked and rk.peer_new_spi is not None:
            self._finish_rekey()

    def _finish_rekey(self) -> None:
        assert self._rekey is not None and self._crypto is not None
        rk = self._rekey
        assert rk.peer_new_spi is not None
        if rk.keymat is not None:
            self._crypto.keymat = rk.keymat  # new DH: the new KEYMAT replaces the old one
        keys = crypto.draw_esp_keys(self._crypto.keymat, self._crypto.esp_transform,
                                    rk.keymat_index)
        mine = keys.for_host(self.our_hit, self.peer_hit)
        c = self._crypto
        c.esp_out_enc, c.esp_out_auth = mine.out_enc, mine.out_auth
        c.esp_in_enc, c.esp_in_auth = mine.in_enc, mine.in_auth
        c.next_keymat_index = keys.next_keymat_index
        self.spi_in = rk.new_spi_in
        self.spi_out = rk.peer_new_spi
        self._rekey = None
        self._emit_sa(SAChangeReason.REKEYED)


def i2_fingerprint(packet: HIPPacket) -> bytes:
    """What makes an I2 unique: the Initiator's DH public value and puzzle solution #J.

    A genuine new I2 always has a new DH value, so an I2 with a fingerprint seen before
    is a duplicate (answered in R2-SENT) or a replay (dropped).
    """
    dh = packet.get(DiffieHellman)
    solution = packet.get(Solution)
    return (dh.public_value if dh else b"") + (solution.solution_j if solution else b"")


def host_id_param(public: PublicHostIdentity) -> HostId:
    """The HOST_ID parameter carrying ``public`` (RFC 7401 5.2.9), without a domain id."""
    return HostId(hi_algorithm=int(public.algorithm), host_identity=public.encoded)


def _encode_param_bytes(param: Param) -> bytes:
    return encode_param(param)


def _decode_host_id_bytes(data: bytes) -> HostId:
    params = decode_params(data)
    if len(params) != 1 or not isinstance(params[0], HostId):
        raise ProtocolError("ENCRYPTED must hold exactly one HOST_ID parameter")
    return params[0]
