"""The stateless Responder of :class:`hip.host.HIPHost`: I1 floods, puzzle difficulty,
R1 generations, and drops counted by reason."""

from __future__ import annotations

from ipaddress import IPv6Address, ip_address

import pytest
from hip_network import Network, Sent, packet_type
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hip.config import HIPConfig
from hip.host import HIPHost
from hip.identity import HostIdentity
from hip.orchid import make_orchid
from hip.packet import HIPPacket, PacketType, checksum, parse, serialize
from hip.params import DHGroupList, HipSignature2, Puzzle, R1Counter, Solution
from hip.random import SeededRandom
from hip.states import State

pytestmark = pytest.mark.unit

R_ADDR = ip_address("192.0.2.2")


def responder(config: HIPConfig | None = None) -> HIPHost:
    rng = SeededRandom(b"responder")
    return HIPHost(HostIdentity.generate("ecdsa-p256", rng), [R_ADDR],
                   config=config or HIPConfig(), rng=rng)


def i1_from(index: int, host: HIPHost) -> tuple[bytes, object]:
    """An I1 from a made-up Initiator HIT number ``index`` at its own address."""
    hit = make_orchid(2, index.to_bytes(8, "big"), "sha384")
    src = ip_address(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
    i1 = HIPPacket(PacketType.I1, hit, host.our_hit, (DHGroupList((7, 12, 8)),))
    return serialize(i1, src, R_ADDR), src


def test_i1_flood_creates_no_state_and_raises_the_puzzle() -> None:
    cfg = HIPConfig(puzzle_difficulty=1, i1_rate_threshold=50, i1_rate_window=1.0)
    host = responder(cfg)
    ks: list[int] = []
    for n in range(800):
        data, src = i1_from(n, host)
        now = n * 0.001  # 1000 I1s per second
        host.receive_packet(data, src, R_ADDR, now)
        (out,) = host.packets_to_send()
        r1 = parse(out.data, out.src, out.dst)
        assert r1.packet_type is PacketType.R1 and r1.receiver_hit == data[8:24]
        ks.append(r1.get(Puzzle).k)
    assert not host.associations  # stateless: no association for any I1
    assert host.r1_sent == 800
    assert ks[0] == 1
    assert ks[-1] > ks[0] and ks == sorted(ks)  # rises with the rate, never falls mid-flood
    # 800 I1s within one window against a threshold of 50: 16 times over, so the base
    # (1), one bit for exceeding the threshold, and one per doubling beyond it (4).
    assert ks[-1] == 1 + 1 + 4
    assert ks[49] == 1 and ks[50] == 2
    # The flood is over: difficulty decays back to the base.
    assert host.puzzle_difficulty(10.0) == 1
    assert not any(host.drops.values())


def test_i1s_from_one_source_beyond_its_budget_are_dropped_unparsed() -> None:
    # Issue 11, item 1: an I1 flood from one host took the time peers' UPDATEs need.
    host = responder()
    burst, rate = host.config.i1_source_burst, host.config.i1_source_rate
    data, src = i1_from(1, host)
    for _ in range(200):
        host.receive_packet(data, src, R_ADDR, 5.0)
    assert host.r1_sent == burst == len(host.packets_to_send())
    assert host.drops["I1 rate limit (per source)"] == 200 - burst
    # Other sources keep their own budgets, and the flood still hardens the puzzle.
    for n in range(2, 60):
        other, other_src = i1_from(n, host)
        host.receive_packet(other, other_src, R_ADDR, 5.0)
    assert host.r1_sent == burst + 58
    assert host.puzzle_difficulty(5.0) > host.config.puzzle_difficulty
    # A second later the source has earned ``rate`` more answers, no more.
    host.packets_to_send()
    for _ in range(200):
        host.receive_packet(data, src, R_ADDR, 6.0)
    assert len(host.packets_to_send()) == int(rate)
    # Garbage that only looks like an I1 by its type byte is throttled too, never parsed.
    junk = bytes([59, 4, 1, 0x21]) + bytes(36)
    host.receive_packet(junk, src, R_ADDR, 6.0)
    assert host.drops["malformed packet"] == 0


def test_r1_is_signed_once_per_generation_and_verifies() -> None:
    host = responder()
    peer = HostIdentity.generate("ed25519", SeededRandom(b"peer"))
    i1 = HIPPacket(PacketType.I1, peer.hit, host.our_hit, (DHGroupList((12, 7)),))
    src = ip_address("192.0.2.1")
    host.receive_packet(serialize(i1, src, R_ADDR), src, R_ADDR, 0.0)
    host.receive_packet(serialize(i1, src, R_ADDR), src, R_ADDR, 0.5)
    first, second = (parse(p.data, p.src, p.dst) for p in host.packets_to_send())
    # Our own first group that the Initiator offers is chosen (RFC 7401 5.2.6): the
    # default list prefers 7 (P-256) to 12, whatever the Initiator's order.
    from hip.params import DiffieHellman

    assert host.config.dh_groups.index(7) < host.config.dh_groups.index(12)
    assert first.get(DiffieHellman).group_id == 7
    # The same I1 gets the same #I (stateless, derived), the same pre-computed signature.
    assert first.get(Puzzle).random_i == second.get(Puzzle).random_i
    assert first.get(HipSignature2) == second.get(HipSignature2)
    from hip.packet import integrity_bytes
    from hip.params import ParamType

    assert host.identity.public.verify(first.get(HipSignature2).signature,
                                       integrity_bytes(first, ParamType.HIP_SIGNATURE_2))


def _solve_i2_after(rotations: int) -> tuple[Network, int]:
    """a gets an R1, then b's R1 generation rotates ``rotations`` times before the I2."""
    cfg = HIPConfig(r1_generation_lifetime=10.0)
    net = Network()
    a = net.add("a", "192.0.2.1", config=cfg)
    b = net.add("b", "192.0.2.2", config=cfg)
    held: list = []

    def hold_i2(sent, _i):  # type: ignore[no-untyped-def]
        if sent.type is PacketType.I2 and not held:
            held.append(sent)
            return []
        return [0.0]

    net.policy = hold_i2
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=0.5)
    for step in range(rotations):
        b.precompute_r1(net.now + 10.0 * (step + 1))
    net.now += 10.0 * rotations + 0.1
    i2 = held[0].packet
    b.receive_packet(i2.data, i2.src, i2.dst, net.now)
    return net, parse(i2.data, i2.src, i2.dst).get(R1Counter).counter


def test_i2_for_previous_generation_is_accepted() -> None:
    net, _counter = _solve_i2_after(1)
    b, a = net.hosts["b"], net.hosts["a"]
    assert b.association(a.our_hit).state is State.R2_SENT
    assert [packet_type(p.data) for p in b.packets_to_send()] == [PacketType.R2]


def test_i2_for_expired_generation_is_dropped() -> None:
    net, _counter = _solve_i2_after(2)
    b, a = net.hosts["b"], net.hosts["a"]
    assert b.association(a.our_hit) is None
    assert b.drops["I2 answers an R1 generation we no longer honour"] == 1


def test_i2_with_wrong_solution_or_easier_puzzle_is_dropped() -> None:
    cfg = HIPConfig(puzzle_difficulty=4)
    net = Network()
    a = net.add("a", "192.0.2.1", config=cfg)
    b = net.add("b", "192.0.2.2", config=cfg)
    net.policy = lambda sent, _i: [] if sent.type is PacketType.I2 else [0.0]
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=0.5)
    sent = net.sent_by("a", PacketType.I2)[0].packet
    i2 = parse(sent.data, sent.src, sent.dst)
    sol = i2.get(Solution)
    for forged_solution in (
        Solution(sol.k, sol.opaque, sol.random_i, bytes(len(sol.solution_j))),  # wrong J
        Solution(0, sol.opaque, sol.random_i, sol.solution_j),  # claims an easier #K
    ):
        params = tuple(forged_solution if p is sol else p for p in i2.params)
        forged = HIPPacket(i2.packet_type, i2.sender_hit, i2.receiver_hit, params)
        b.receive_packet(serialize(forged, sent.src, sent.dst), sent.src, sent.dst, net.now)
    assert b.drops["I2 puzzle solution invalid"] == 2
    assert b.association(a.our_hit) is None and not b.packets_to_send()


def test_packets_not_for_us_are_counted_by_reason() -> None:
    host = responder()
    other = HostIdentity.generate("ecdsa-p256", SeededRandom(b"other")).hit
    src = ip_address("192.0.2.1")
    for receiver, ptype in ((other, PacketType.I1), (bytes(16), PacketType.I1),
                            (host.our_hit, PacketType.R2), (host.our_hit, PacketType.UPDATE)):
        sender = HostIdentity.generate("ed25519", SeededRandom(b"s")).hit
        pkt = HIPPacket(ptype, sender, receiver, ())
        host.receive_packet(serialize(pkt, src, R_ADDR), src, R_ADDR, 0.0)
    assert host.drops == {
        "receiver HIT is not ours": 1,
        "opportunistic mode (null receiver HIT) not supported": 1,
        "R2 without an association": 1,
        "UPDATE without an association": 1,
    }
    assert not host.packets_to_send()


IDENTITIES = {name: HostIdentity.generate("ecdsa-p256", SeededRandom(name.encode()))
              for name in ("a", "b")}


def _life() -> list[Sent]:
    """Every datagram of a whole association life: exchange, move, rekey, CLOSE.

    The hosts have the identities of the fuzzed pair below but draw their DH keys, SPIs
    and nonces from other seeds: the recorded packets are genuine, signed by the right
    keys, yet belong to another session, as a replaying attacker's would.
    """
    net = Network()
    a = net.add("a", "192.0.2.1", identity=IDENTITIES["a"], seed=b"recorded a")
    b = net.add("b", "192.0.2.2", identity=IDENTITIES["b"], seed=b"recorded b")
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run()
    net.move("a", "192.0.2.11")
    net.run()
    a.rekey(b.our_hit, net.now)
    net.run()
    a.close(b.our_hit, net.now)
    net.run()
    return list(net.log)


LIFE = _life()


@given(which=st.integers(0, len(LIFE) - 1),
       flips=st.lists(st.tuples(st.integers(0, 4096), st.integers(1, 255)), min_size=1,
                      max_size=4))
@settings(max_examples=150, deadline=None)
def test_mutated_real_packets_never_raise_and_change_nothing(
        which: int, flips: list[tuple[int, int]]) -> None:
    """Bit-flipped copies of real packets of another session between the same two
    identities (checksum made valid again, so they reach the protocol logic) are dropped
    or answered, never raised, and leave an established association as it was."""
    original = LIFE[which].packet
    data = bytearray(original.data)
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    data[4:6] = b"\x00\x00"
    data[4:6] = checksum(bytes(data), original.src, original.dst).to_bytes(2, "big")
    assume(bytes(data) != original.data)
    net = Network()
    a = net.add("a", "192.0.2.1", identity=IDENTITIES["a"])
    b = net.add("b", "192.0.2.2", identity=IDENTITIES["b"])
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run()
    before = {name: (h.association(other.our_hit).state, h.association(other.our_hit).spi_in,
                     h.association(other.our_hit).peer_locator)
              for name, h, other in (("a", a, b), ("b", b, a))}
    for host in (a, b):
        host.receive_packet(bytes(data), original.src, original.dst, net.now)
        host.handle_timer(net.now)
    after = {name: (h.association(other.our_hit).state, h.association(other.our_hit).spi_in,
                    h.association(other.our_hit).peer_locator)
             for name, h, other in (("a", a, b), ("b", b, a))}
    assert after == before


def test_i2_long_after_its_r1_is_dropped_even_without_new_i1s() -> None:
    net, _counter = _solve_i2_after(0)  # no rotation: the generation just grew old
    b, a = net.hosts["b"], net.hosts["a"]
    assert b.association(a.our_hit).state is State.R2_SENT  # 0.1 s late: fine
    late = Network()
    a2 = late.add("a", "192.0.2.1")
    b2 = late.add("b", "192.0.2.2")
    late.policy = lambda sent, _i: [] if sent.type is PacketType.I2 else [0.0]
    a2.connect(b2.our_hit, "192.0.2.2", late.now)
    late.run(until=0.5)
    i2 = late.sent_by("a", PacketType.I2)[0].packet
    b2.receive_packet(i2.data, i2.src, i2.dst, 2 * HIPConfig().r1_generation_lifetime + 1)
    assert b2.drops["I2 answers an R1 generation we no longer honour"] == 1
    assert b2.association(a2.our_hit) is None


def test_one_host_many_peers() -> None:
    """One HIPHost keeps separate associations, demultiplexed by HIT, and a move updates
    every peer."""
    net = Network()
    a = net.add("a", "192.0.2.1")
    peers = {name: net.add(name, f"192.0.2.{n}") for n, name in ((2, "b"), (3, "c"),
                                                                 (4, "d"))}
    for peer in peers.values():
        a.connect(peer.our_hit, peer.locators[0], net.now)
    net.run()
    assert {IPv6Address(h) for h in a.associations} == {
        IPv6Address(p.our_hit) for p in peers.values()}
    net.move("a", "203.0.113.5")
    net.run()
    for name, peer in peers.items():
        assoc = peer.association(a.our_hit)
        assert assoc.state is State.ESTABLISHED
        assert assoc.peer_locator == ip_address("203.0.113.5"), name
    a.rekey(peers["b"].our_hit, net.now)
    a.close(peers["c"].our_hit, net.now)
    net.run()
    assert a.association(peers["c"].our_hit) is None
    assert a.association(peers["b"].our_hit).state is State.ESTABLISHED
    assert a.association(peers["d"].our_hit).state is State.ESTABLISHED
    for name in ("b", "d"):
        mine = a.association(peers[name].our_hit)
        theirs = peers[name].association(a.our_hit)
        assert mine.spi_out == theirs.spi_in and mine.spi_in == theirs.spi_out
    assert not a.drops and not any(p.drops for p in peers.values())
