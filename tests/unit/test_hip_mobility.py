"""RFC 8046 mobility and RFC 7402 rekeying between two in-memory HIP hosts."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from hip_network import Network, Sent

from hip.config import HIPConfig
from hip.events import (
    LocatorVerificationFailed,
    LocatorVerified,
    Mover,
    PeerLocatorsChanged,
    Rebound,
    SAChangeReason,
    SecurityAssociationsChanged,
    UpdateFailed,
)
from hip.mobility import CreditAccount, LocatorState, UpdateSequencer
from hip.packet import HIPPacket, PacketType, parse, serialize
from hip.params import (
    Ack,
    DiffieHellman,
    EchoRequestSigned,
    EchoResponseSigned,
    EspInfo,
    HipMac,
    HipSignature,
    LocatorSet,
    Seq,
)
from hip.states import State

pytestmark = pytest.mark.unit

A1, B1, A2, B2 = "192.0.2.1", "198.51.100.1", "203.0.113.7", "198.51.100.202"


def established(config: HIPConfig | None = None) -> Network:
    net = Network()
    a = net.add("a", A1, config=config)
    b = net.add("b", B1, config=config)
    a.connect(b.our_hit, B1, net.now)
    net.run()  # past R2-SENT's timeout: both ESTABLISHED
    assert a.association(b.our_hit).state is State.ESTABLISHED
    assert b.association(a.our_hit).state is State.ESTABLISHED
    return net


def latest_sa(net: Network, name: str) -> SecurityAssociationsChanged:
    return net.events_of(name, SecurityAssociationsChanged)[-1]


def test_one_end_moves_then_the_other() -> None:
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    mark = len(net.log)
    net.move("a", A2)
    # a uses its new locator at once.
    sa = latest_sa(net, "a")
    assert sa.reason is SAChangeReason.LOCAL_MOVED and sa.local_locator == ip_address(A2)

    # Step the wire by hand: deliver a's UPDATE only, then look at what b does.
    assert net.step()
    b_assoc = b.association(a.our_hit)
    entry = b_assoc.peer_locators.get(ip_address(A2))
    assert entry is not None and entry.state is LocatorState.UNVERIFIED and entry.preferred
    assert b_assoc.peer_locators.get(ip_address(A1)).state is LocatorState.DEPRECATED
    changed = net.events_of("b", PeerLocatorsChanged)
    assert changed and {loc.address for loc in changed[-1].locators} >= {ip_address(A2)}
    # Before return routability completes, b sends only the echo UPDATE to A2 ...
    to_new = [s for s in net.log[mark:] if s.sender == "b" and s.packet.dst == ip_address(A2)]
    assert [s.type for s in to_new] == [PacketType.UPDATE]
    echo = parse(to_new[0].packet.data, to_new[0].packet.src, to_new[0].packet.dst)
    assert echo.get(EchoRequestSigned) is not None and echo.get(Ack) is not None
    # ... and data only within the credit earned from a (RFC 8046 5.5).
    assert b.data_destination(a.our_hit, 1000, net.now) is None
    b.data_received(a.our_hit, 1500, net.now)
    assert b.data_destination(a.our_hit, 1000, net.now) == ip_address(A2)
    assert b.data_destination(a.our_hit, 1000, net.now) is None  # only 500 left
    # Control packets other than the echo UPDATE still go to the verified locator.
    assert b_assoc.peer_locator == ip_address(A1)

    net.run()
    assert b_assoc.peer_locators.get(ip_address(A2)).state is LocatorState.ACTIVE
    assert [e.locator for e in net.events_of("b", LocatorVerified)] == [ip_address(A2)]
    sa_b = latest_sa(net, "b")
    assert sa_b.reason is SAChangeReason.PEER_MOVED
    assert sa_b.peer_locator == ip_address(A2) and sa_b.peer_locators == (ip_address(A2),)
    assert b.data_destination(a.our_hit, 10**6, net.now) == ip_address(A2)
    # Nothing went to A2 from b before verification except UPDATEs.
    verified_at = next(i for i, s in enumerate(net.log) if s.sender == "a"
                       and s.type is PacketType.UPDATE
                       and parse(s.packet.data, s.packet.src, s.packet.dst)
                       .get(EchoResponseSigned) is not None)
    assert all(s.type is PacketType.UPDATE for s in net.log[mark:verified_at]
               if s.sender == "b" and s.packet.dst == ip_address(A2))
    # SPIs and keys did not change: a move is not a rekey.
    sa_a = latest_sa(net, "a")
    assert sa_a.spi_out == sa_b.spi_in and sa_a.enc_key_out == sa_b.enc_key_in

    # Now b moves; a verifies it.
    net.move("b", B2)
    net.run()
    a_assoc = a.association(b.our_hit)
    assert a_assoc.peer_locators.get(ip_address(B2)).state is LocatorState.ACTIVE
    sa_a = latest_sa(net, "a")
    assert sa_a.reason is SAChangeReason.PEER_MOVED
    assert sa_a.peer_locator == ip_address(B2) and sa_a.local_locator == ip_address(A2)
    sa_b = latest_sa(net, "b")
    assert sa_b.local_locator == ip_address(B2) and sa_b.peer_locator == ip_address(A2)
    assert not a.drops and not b.drops
    # The association still closes cleanly over the new locators.
    a.close(b.our_hit, net.now)
    net.run()
    closes = net.sent_by("a", PacketType.CLOSE)
    assert closes and closes[0].packet.dst == ip_address(B2)
    assert a.association(b.our_hit) is None


def _forged(sent: Sent, field: str) -> bytes:
    pkt = parse(sent.packet.data, sent.packet.src, sent.packet.dst)
    params = []
    for p in pkt.params:
        if field == "mac" and isinstance(p, HipMac):
            p = HipMac(bytes([p.hmac[0] ^ 0x80]) + p.hmac[1:])
        if field == "sigalg" and isinstance(p, HipSignature):
            p = HipSignature(p.algorithm ^ 0x0100, p.signature)
        if field == "signature" and isinstance(p, HipSignature):
            p = HipSignature(p.algorithm, p.signature[:-1] + bytes([p.signature[-1] ^ 1]))
        if field == "locator" and isinstance(p, LocatorSet):
            loc = p.locators[0]
            p = LocatorSet((type(loc)(loc.traffic_type, loc.locator_type, loc.preferred,
                                      loc.lifetime, ip_address("203.0.113.66"), loc.spi),))
        params.append(p)
    forged = HIPPacket(pkt.packet_type, pkt.sender_hit, pkt.receiver_hit, tuple(params))
    return serialize(forged, sent.packet.src, sent.packet.dst)


@pytest.mark.parametrize(("field", "reason"), [
    ("mac", "UPDATE bad HIP_MAC"),
    ("signature", "UPDATE bad HIP_SIGNATURE"),
    ("sigalg", "UPDATE bad HIP_SIGNATURE"),  # SIG alg is outside the signed bytes
    ("locator", "UPDATE bad HIP_MAC"),  # a changed LOCATOR_SET breaks the MAC
])
def test_forged_update_changes_nothing(field: str, reason: str) -> None:
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    net.policy = lambda sent, _i: [] if sent.type is PacketType.UPDATE else [0.0]
    net.move("a", A2)
    net.run(until=net.now + 0.1)
    update = net.sent_by("a", PacketType.UPDATE)[0]
    b_assoc = b.association(a.our_hit)
    before = (b_assoc.state, b_assoc.peer_locators.snapshot(), b_assoc.spi_out,
              b_assoc._updates.last_received)
    events_before = len(net.events_of("b", PeerLocatorsChanged))
    b.receive_packet(_forged(update, field), update.packet.src, update.packet.dst, net.now)
    assert b.drops[reason] == 1
    after = (b_assoc.state, b_assoc.peer_locators.snapshot(), b_assoc.spi_out,
             b_assoc._updates.last_received)
    assert after == before
    assert len(net.events_of("b", PeerLocatorsChanged)) == events_before
    assert not b.packets_to_send()  # not even an ACK


def test_update_retransmitted_until_acked() -> None:
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    start = net.now

    def b_unreachable_for_a_while(sent: Sent, _i: int) -> list[float]:
        # Everything b sends in the first 2.5 s is lost; a must keep retransmitting.
        return [] if sent.sender == "b" and sent.time - start < 2.5 else [0.0]

    net.policy = b_unreachable_for_a_while
    net.move("a", A2)
    net.run()
    ups = [s for s in net.sent_by("a", PacketType.UPDATE)
           if parse(s.packet.data, s.packet.src, s.packet.dst).get(LocatorSet) is not None]
    assert len(ups) == 3  # first try, two retransmissions; the third got its ACK
    assert [round(s.time - start, 6) for s in ups] == [0.0, 1.0, 3.0]
    # All copies carry the same SEQ; b processed it once and re-acknowledged duplicates.
    seqs = {parse(s.packet.data, s.packet.src, s.packet.dst).get(Seq).update_id for s in ups}
    assert len(seqs) == 1
    assert b.drops["UPDATE duplicate SEQ (re-acknowledged)"] == 2
    assert a.drops["UPDATE duplicate SEQ (re-acknowledged)"] >= 1  # b's echo retransmitted
    assert len(net.events_of("b", PeerLocatorsChanged)) == 1
    assert a.association(b.our_hit)._updates.outstanding is None
    assert [e.locator for e in net.events_of("b", LocatorVerified)] == [ip_address(A2)]


def test_update_never_acked_gives_up() -> None:
    cfg = HIPConfig(update_retries_max=2)
    net = established(cfg)
    a = net.hosts["a"]
    net.policy = lambda sent, _i: [] if sent.sender == "b" else [0.0]
    net.move("a", A2)
    net.run()
    assert len(net.sent_by("a", PacketType.UPDATE)) == 3
    assert len(net.events_of("a", UpdateFailed)) == 1
    assert a.association(net.hosts["b"].our_hit).state is State.ESTABLISHED


def test_return_routability_without_answer_fails_the_locator() -> None:
    cfg = HIPConfig(update_retries_max=1)
    net = established(cfg)
    b = net.hosts["b"]

    def lose_echo_responses(sent: Sent, _i: int) -> list[float]:
        if sent.sender == "a" and sent.type is PacketType.UPDATE:
            pkt = parse(sent.packet.data, sent.packet.src, sent.packet.dst)
            if pkt.get(EchoResponseSigned) is not None:
                return []
        return [0.0]

    net.policy = lose_echo_responses
    net.move("a", A2)
    net.run()
    failed = net.events_of("b", LocatorVerificationFailed)
    assert [e.locator for e in failed] == [ip_address(A2)]
    entry = b.association(net.hosts["a"].our_hit).peer_locators.get(ip_address(A2))
    assert entry.state is LocatorState.UNVERIFIED
    assert not net.events_of("b", LocatorVerified)


def test_rekey_gives_new_spis_and_keys() -> None:
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    old_a, old_b = latest_sa(net, "a"), latest_sa(net, "b")
    a.rekey(b.our_hit, net.now)
    net.run()
    new_a, new_b = latest_sa(net, "a"), latest_sa(net, "b")
    assert new_a.reason is new_b.reason is SAChangeReason.REKEYED
    assert new_a.spi_in != old_a.spi_in and new_a.spi_out != old_a.spi_out
    assert new_a.enc_key_out != old_a.enc_key_out and new_a.auth_key_in != old_a.auth_key_in
    assert new_a.spi_out == new_b.spi_in and new_a.spi_in == new_b.spi_out
    assert new_a.enc_key_out == new_b.enc_key_in and new_a.auth_key_out == new_b.auth_key_in
    assert new_a.enc_key_in == new_b.enc_key_out and new_a.auth_key_in == new_b.auth_key_out
    assert old_b.spi_in == old_a.spi_out
    # The rekey UPDATE carried ESP_INFO with the old and the new SPI (RFC 7402 5.1.1).
    first = net.sent_by("a", PacketType.UPDATE)[0]
    info = parse(first.packet.data, first.packet.src, first.packet.dst).get(EspInfo)
    assert info.old_spi == old_a.spi_in and info.new_spi == new_a.spi_in
    # A second rekey draws further along KEYMAT: different keys again.
    b.rekey(a.our_hit, net.now)
    net.run()
    third_a = latest_sa(net, "a")
    assert third_a.enc_key_out not in (old_a.enc_key_out, new_a.enc_key_out)
    assert third_a.spi_out == latest_sa(net, "b").spi_in
    assert not a.drops and not b.drops


def test_credit_ages_and_is_capped() -> None:
    credit = CreditAccount(limit=1000, aging_interval=1.0)
    credit.earn(5000, 0.0)
    assert credit.available(0.0) == 1000
    assert credit.available(1.0) == 500 and credit.available(2.5) == 250
    assert not credit.spend(300, 2.5) and credit.spend(250, 2.5)
    assert credit.available(2.5) == 0


def test_update_ids_compare_as_serial_numbers() -> None:
    seq = UpdateSequencer()
    assert seq.is_new(0)
    seq.last_received = 0xFFFFFFFF
    assert seq.is_new(0) and not seq.is_new(0xFFFFFFFE) and not seq.is_new(0xFFFFFFFF)


def test_rekey_after_keymat_runs_out_uses_a_new_diffie_hellman() -> None:
    net = Network()
    a = net.add("a", A1, kind="ed25519")
    b = net.add("b", B1, kind="ed25519")
    a.connect(b.our_hit, B1, net.now)
    net.run()
    keymat_before = a.association(b.our_hit)._crypto.keymat
    # cSHAKE128's RHASH is 32 bytes: HKDF gives 255 * 32 bytes of KEYMAT, 128 per rekey.
    for _ in range(64):
        a.rekey(b.our_hit, net.now)
        net.run()
    with_dh = [s for s in net.sent_by("a", PacketType.UPDATE)
               if parse(s.packet.data, s.packet.src, s.packet.dst).get(DiffieHellman)]
    assert len(with_dh) == 1
    info = parse(with_dh[0].packet.data, with_dh[0].packet.src,
                 with_dh[0].packet.dst).get(EspInfo)
    assert info.keymat_index == 0  # RFC 7402 6.9: new KEYMAT, drawn from its start
    assert a.association(b.our_hit)._crypto.keymat is not keymat_before
    sa_a, sa_b = latest_sa(net, "a"), latest_sa(net, "b")
    assert sa_a.reason is SAChangeReason.REKEYED
    assert sa_a.spi_out == sa_b.spi_in and sa_a.enc_key_out == sa_b.enc_key_in
    assert sa_a.auth_key_in == sa_b.auth_key_out
    assert len(net.events_of("a", SecurityAssociationsChanged)) == 1 + 64
    assert not a.drops and not b.drops


def test_second_move_supersedes_an_unacknowledged_first() -> None:
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    net.policy = lambda sent, _i: [] if sent.sender == "b" else [0.0]  # b's answers are lost
    net.move("a", A2)
    net.run(until=net.now + 0.5)
    net.policy = lambda sent, _i: [0.0]
    second_move = net.now
    net.move("a", "203.0.113.8")
    net.run()
    b_assoc = b.association(a.our_hit)
    assert b_assoc.peer_locators.get(ip_address("203.0.113.8")).state is LocatorState.ACTIVE
    assert b_assoc.peer_locators.get(ip_address(A2)).state is LocatorState.DEPRECATED
    assert latest_sa(net, "b").peer_locator == ip_address("203.0.113.8")
    # The first announcement is not retransmitted after the second move, and b stops
    # probing the withdrawn A2 at once instead of waiting for its retries to run out.
    from_a2 = [s for s in net.sent_by("a", PacketType.UPDATE) if s.packet.src == ip_address(A2)]
    assert len(from_a2) == 1 and from_a2[0].time < second_move
    verified = net.events_of("b", LocatorVerified)
    assert [e.locator for e in verified] == [ip_address("203.0.113.8")]
    echo_to_a2 = [s for s in net.sent_by("b", PacketType.UPDATE)
                  if s.packet.dst == ip_address(A2) and s.time >= second_move]
    assert not echo_to_a2
    assert not net.events_of("a", UpdateFailed)
    assert not net.events_of("b", LocatorVerificationFailed)


def test_preference_switch_between_verified_locators_needs_no_new_check() -> None:
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    net.owners[ip_address(A2)] = "a"  # a is multihomed: A1 and A2
    a.update_locators([A2, A1], net.now)
    net.run()
    b_assoc = b.association(a.our_hit)
    states = {e.address: e.state for e in b_assoc.peer_locators.entries()}
    assert states == {ip_address(A1): LocatorState.ACTIVE, ip_address(A2): LocatorState.ACTIVE}
    assert latest_sa(net, "b").peer_locator == ip_address(A2)
    echoes_before = len(net.events_of("b", LocatorVerified))
    a.update_locators([A1, A2], net.now)  # back to A1, which b verified long ago
    net.run()
    assert latest_sa(net, "b").reason is SAChangeReason.PEER_MOVED
    assert latest_sa(net, "b").peer_locator == ip_address(A1)
    assert len(net.events_of("b", LocatorVerified)) == echoes_before  # no new check
    assert set(latest_sa(net, "b").peer_locators) == {ip_address(A1), ip_address(A2)}


def test_simultaneous_rekey_converges() -> None:
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    old_a = latest_sa(net, "a")
    a.rekey(b.our_hit, net.now)
    b.rekey(a.our_hit, net.now)
    net.run()
    sa_a, sa_b = latest_sa(net, "a"), latest_sa(net, "b")
    assert sa_a.reason is sa_b.reason is SAChangeReason.REKEYED
    assert sa_a.spi_in != old_a.spi_in and sa_a.enc_key_out != old_a.enc_key_out
    assert sa_a.spi_out == sa_b.spi_in and sa_a.spi_in == sa_b.spi_out
    assert sa_a.enc_key_out == sa_b.enc_key_in and sa_a.auth_key_in == sa_b.auth_key_out
    for host, other in ((a, b), (b, a)):
        assoc = host.association(other.our_hit)
        assert assoc._rekey is None and assoc._updates.outstanding is None
    assert not net.events_of("a", UpdateFailed) and not net.events_of("b", UpdateFailed)
    # Still usable: one more rekey from either side.
    b.rekey(a.our_hit, net.now)
    net.run()
    assert latest_sa(net, "a").spi_out == latest_sa(net, "b").spi_in


def test_moving_during_the_base_exchange() -> None:
    """The Initiator moves while its I1 goes unanswered: the retransmission leaves from
    the new address, and the association is set up there."""
    net = Network()
    a = net.add("a", A1)
    b = net.add("b", B1)
    net.policy = lambda sent, _i: [] if sent.type is PacketType.R1 and sent.time < 0.5 else [0.0]
    a.connect(b.our_hit, B1, net.now)
    net.run(until=0.5)
    net.move("a", A2)
    net.policy = lambda sent, _i: [0.0]
    net.run()
    i1s = net.sent_by("a", PacketType.I1)
    assert [s.packet.src for s in i1s] == [ip_address(A1), ip_address(A2)]
    assert a.association(b.our_hit).state is State.ESTABLISHED
    sa_b = latest_sa(net, "b")
    assert sa_b.peer_locator == ip_address(A2) and latest_sa(net, "a").local_locator == (
        ip_address(A2))
    assert not a.drops and not b.drops


def test_combined_move_and_rekey_from_the_peer() -> None:
    """RFC 8046 3.2.2: one UPDATE carries LOCATOR_SET and a rekeying ESP_INFO.  We never
    send that combination, but a peer may: the receiver must answer the rekey and verify
    the new locator too."""
    from hip.association import _Rekey
    from hip.mobility import PendingUpdate, UpdatePurpose
    from hip.params import Locator

    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    x = a.association(b.our_hit)
    net.owners[ip_address(A2)] = "a"
    x.local_locators, x.local_locator = (ip_address(A2),), ip_address(A2)
    uid = x._updates.allocate()
    x._rekey = _Rekey(x._new_spi(), x._crypto.next_keymat_index)
    params = [Seq(uid), EspInfo(x._rekey.keymat_index, x.spi_in, x._rekey.new_spi_in),
              LocatorSet((Locator(0, 1, True, 600, ip_address(A2), x._rekey.new_spi_in),))]
    out = x._send(x._signed(PacketType.UPDATE, params), ip_address(B1), ip_address(A2))
    x._updates.outstanding = PendingUpdate(uid, UpdatePurpose.REKEY, out.data, out.src,
                                           out.dst, net.now + 1.0)
    net.run()
    y = b.association(a.our_hit)
    assert y.peer_locators.get(ip_address(A2)).state is LocatorState.ACTIVE
    assert latest_sa(net, "a").reason is SAChangeReason.REKEYED
    assert x.spi_out == y.spi_in and x.spi_in == y.spi_out
    assert x._crypto.esp_out_enc == y._crypto.esp_in_enc
    assert latest_sa(net, "b").peer_locator == ip_address(A2)
    assert not a.drops and not b.drops


# --- the locator state table (RFC 8046 5.2) ----------------------------------------------

def test_locator_transitions_table_is_complete_and_enforced() -> None:
    from hip.errors import StateTransitionError
    from hip.mobility import LOCATOR_TRANSITIONS, PeerLocatorEntry

    assert set(LOCATOR_TRANSITIONS) == set(LocatorState)
    addr = ip_address(A2)
    for old in LocatorState:
        for new in LocatorState:
            entry = PeerLocatorEntry(addr, old, nonce=b"n")
            if new in LOCATOR_TRANSITIONS[old]:
                entry.move_to(new)
                assert entry.state is new
            else:
                with pytest.raises(StateTransitionError, match=f"{old} -> {new}"):
                    entry.move_to(new)
                assert entry.state is old  # unchanged
    # The ones the protocol needs, and the ones it must never take.
    assert LocatorState.ACTIVE in LOCATOR_TRANSITIONS[LocatorState.UNVERIFIED]
    assert LocatorState.ACTIVE not in LOCATOR_TRANSITIONS[LocatorState.DEPRECATED]


def test_deprecated_locator_listed_again_is_verified_again() -> None:
    from hip.mobility import AnnouncedLocator, PeerLocatorSet

    a1, a2 = ip_address(A1), ip_address(A2)
    peers = PeerLocatorSet(a1)
    assert peers.apply_announcement([AnnouncedLocator(a2, True, 600)]) == [a2]
    assert peers.get(a1).state is LocatorState.DEPRECATED
    assert peers.apply_announcement([AnnouncedLocator(a2, True, 600)]) == [a2]  # no change
    peers.start_check(a2, b"nonce")
    assert peers.complete_check(b"nonce") == a2 and peers.get(a2).state is LocatorState.ACTIVE
    assert peers.apply_announcement([AnnouncedLocator(a1, True, 600)]) == [a1]
    assert peers.get(a1).state is LocatorState.UNVERIFIED
    assert peers.get(a2).state is LocatorState.DEPRECATED


def test_peer_locator_event_state_is_the_enum_and_prints_as_its_name() -> None:
    import json

    net = established()
    net.move("a", A2)
    net.run()
    (changed, *_rest) = net.events_of("b", PeerLocatorsChanged)
    states = {loc.address: loc.state for loc in changed.locators}
    assert states[ip_address(A2)] is LocatorState.UNVERIFIED
    assert str(states[ip_address(A1)]) == "DEPRECATED" == states[ip_address(A1)]
    assert json.dumps([loc.state for loc in changed.locators]) == '["DEPRECATED", "UNVERIFIED"]'


def test_mover_sends_no_echo_request_the_peer_does() -> None:
    """RFC 8046 3.2.1 (documented in docs/hip.md, RFC 8046 coverage): the mover's UPDATE
    has LOCATOR_SET and SEQ only; the peer sends ECHO_REQUEST_SIGNED to the new locator
    and the mover answers it with ECHO_RESPONSE_SIGNED."""
    net = established()
    mark = len(net.log)
    net.move("a", A2)
    net.run()
    updates = [(s.sender, parse(s.packet.data, s.packet.src, s.packet.dst), s.packet.dst)
               for s in net.log[mark:] if s.type is PacketType.UPDATE]
    first_sender, first, _dst = updates[0]
    assert first_sender == "a"
    assert first.get(LocatorSet) is not None and first.get(Seq) is not None
    assert first.get(EchoRequestSigned) is None
    requests = [(who, dst) for who, pkt, dst in updates if pkt.get(EchoRequestSigned)]
    assert requests == [("b", ip_address(A2))]
    responses = [who for who, pkt, _dst in updates if pkt.get(EchoResponseSigned)]
    assert responses == ["a"]


def _rebound_after(net: Network, name: str, mark: int) -> list[Rebound]:
    return [e for e in net.events[name][mark:] if isinstance(e, Rebound)]


def test_rebound_reported_to_both_ends_once_the_move_is_taken_in() -> None:
    net = established()
    b = net.hosts["b"]
    assert not net.events_of("a", Rebound) and not net.events_of("b", Rebound)
    net.move("a", A2)
    assert not net.events_of("a", Rebound)
    assert net.step()  # a's UPDATE reaches b; b sends ACK + echo request to A2
    assert not net.events_of("a", Rebound) and not net.events_of("b", Rebound)
    assert net.step()  # a gets the ACK with the echo request and answers it
    (mine,) = net.events_of("a", Rebound)
    assert mine.mover is Mover.LOCAL and mine.local_locator == ip_address(A2)
    assert mine.peer_locator == ip_address(B1) and mine.peer_hit == ip_address(b.our_hit)
    assert not net.events_of("b", Rebound)  # b has not seen the echo answer yet
    net.run()
    (theirs,) = net.events_of("b", Rebound)
    assert theirs.mover is Mover.PEER and theirs.peer_locator == ip_address(A2)
    assert len(net.events_of("a", Rebound)) == 1  # once per move


def test_no_rebound_while_the_announcement_is_unacknowledged() -> None:
    net = established(HIPConfig(update_retries_max=2))
    net.policy = lambda sent, _i: [] if sent.sender == "b" else [0.0]  # b's answers lost
    net.move("a", A2)
    net.run()
    assert net.events_of("a", UpdateFailed)
    assert not net.events_of("a", Rebound)


def test_rebound_when_the_ack_and_the_echo_request_come_apart() -> None:
    """The ACK alone does not finish a move to a locator the peer has not verified;
    the echo request that follows does."""
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    b.rekey(a.our_hit, net.now)  # b's outstanding rekey UPDATE makes it ACK separately
    net.move("a", A2)
    net.run()
    rebound = net.events_of("a", Rebound)
    assert [e.local_locator for e in rebound] == [ip_address(A2)]
    index = net.events["a"].index(rebound[0])
    assert any(isinstance(e, SecurityAssociationsChanged) for e in net.events["a"][:index])
    assert b.association(a.our_hit).peer_locators.get(ip_address(A2)).state \
        is LocatorState.ACTIVE


def test_rebound_without_a_check_when_the_peer_verified_the_locator_before() -> None:
    net = established()
    a = net.hosts["a"]
    net.owners[ip_address(A2)] = "a"
    a.update_locators([A2, A1], net.now)
    net.run()
    mark_a, mark_b = len(net.events["a"]), len(net.events["b"])
    a.update_locators([A1, A2], net.now)  # back to A1, verified at the base exchange
    net.run()
    assert [e.local_locator for e in _rebound_after(net, "a", mark_a)] == [ip_address(A1)]
    assert [e.mover for e in _rebound_after(net, "b", mark_b)] == [Mover.PEER]


def test_replayed_updates_are_re_acknowledged_within_a_budget() -> None:
    # Issue 11, item 6: every replayed copy of a valid UPDATE made the receiver send its
    # last reply again, and the other end process that reply: 30k replays cost both
    # peers seconds of CPU.  A lost reply still gets its retransmission answered.
    net = established()
    a, b = net.hosts["a"], net.hosts["b"]
    net.move("a", A2)
    net.run()
    update = next(s.packet for s in net.sent_by("a", PacketType.UPDATE)
                  if parse(s.packet.data, s.packet.src, s.packet.dst).get(LocatorSet))
    b.packets_to_send()
    burst, rate = b.config.reack_burst, b.config.reack_rate
    for _ in range(100):
        b.receive_packet(update.data, update.src, update.dst, net.now)
    assert len(b.packets_to_send()) == burst
    assert b.drops["UPDATE duplicate SEQ (re-acknowledgement rate limit)"] == 100 - burst
    for _ in range(100):  # one second later: what the bucket refilled, no more
        b.receive_packet(update.data, update.src, update.dst, net.now + 1.0)
    assert len(b.packets_to_send()) == min(burst, int(rate))
    assert b.association(a.our_hit).state is State.ESTABLISHED
