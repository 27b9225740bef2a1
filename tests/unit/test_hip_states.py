"""The HIP association transition table (RFC 7401 section 4.4) and its rendering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hip.config import ConfigError, HIPConfig
from hip.errors import HIPError, StateTransitionError
from hip.states import (
    TRANSITIONS,
    State,
    StateMachine,
    Trigger,
    allows,
    render_ascii,
    render_mermaid,
    transitions,
)

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hip.md"


def test_base_exchange_paths_follow_the_rfc() -> None:
    initiator = StateMachine()
    assert initiator.apply(Trigger.CONNECT) is State.I1_SENT
    assert initiator.apply(Trigger.RECV_R1) is State.I2_SENT
    assert initiator.apply(Trigger.RECV_R2) is State.ESTABLISHED
    responder = StateMachine()
    assert responder.apply(Trigger.RECV_I2) is State.R2_SENT
    assert responder.apply(Trigger.CONFIRM_TIMEOUT) is State.ESTABLISHED


def test_close_paths() -> None:
    closer = StateMachine(State.ESTABLISHED)
    assert closer.apply(Trigger.CLOSE) is State.CLOSING
    assert closer.apply(Trigger.RECV_CLOSE_ACK) is State.UNASSOCIATED
    peer = StateMachine(State.ESTABLISHED)
    assert peer.apply(Trigger.RECV_CLOSE) is State.CLOSED
    assert peer.apply(Trigger.EXPIRE) is State.UNASSOCIATED


def test_retries_exhausted_leads_to_e_failed_in_the_base_exchange() -> None:
    for state in (State.I1_SENT, State.I2_SENT):
        assert TRANSITIONS[(state, Trigger.RETRIES_EXHAUSTED)] is State.E_FAILED


def test_illegal_transition_raises_and_leaves_state_unchanged() -> None:
    machine = StateMachine(State.I1_SENT)
    with pytest.raises(StateTransitionError) as info:
        machine.apply(Trigger.RECV_R2)
    assert machine.state is State.I1_SENT
    # The message names the state, the trigger and what would have been legal.
    assert "I1-SENT" in str(info.value) and "'R2'" in str(info.value)
    assert "R1" in str(info.value)
    assert isinstance(info.value, HIPError)


def test_every_state_can_be_left_or_is_terminal_by_design() -> None:
    sources = {s for (s, _t) in TRANSITIONS}
    assert sources == set(State)
    # Every state is reachable from UNASSOCIATED.
    reached = {State.UNASSOCIATED}
    frontier = [State.UNASSOCIATED]
    while frontier:
        s = frontier.pop()
        for (src, _t), dst in TRANSITIONS.items():
            if src is s and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached == set(State)


def test_allows_matches_table() -> None:
    for state in State:
        for trigger in Trigger:
            assert allows(state, trigger) == ((state, trigger) in TRANSITIONS)
    assert len(transitions()) == len(TRANSITIONS)


def test_mermaid_has_one_edge_per_source_target_pair() -> None:
    text = render_mermaid()
    edges = re.findall(r"^    (\w+) --> (\w+): (.*)$", text, re.M)
    pairs = {(s.name, t.name) for (s, _tr), t in TRANSITIONS.items()}
    assert {(a, b) for a, b, _ in edges if a != "[*]"} == pairs
    labelled = sum(len(label.split(", ")) for _a, _b, label in edges)
    assert labelled == len(TRANSITIONS)


def test_ascii_table_lists_every_row() -> None:
    lines = render_ascii().splitlines()
    assert len(lines) == 2 + len(TRANSITIONS)
    assert lines[0].split() == ["state", "trigger", "next", "state"]


def test_docs_diagram_is_the_generated_one() -> None:
    if not DOCS.exists():
        pytest.fail(f"{DOCS} is missing; it must hold the diagram from render_mermaid()")
    text = DOCS.read_text()
    match = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert match, "docs/hip.md has no ```mermaid block"
    assert match.group(1) == render_mermaid(), (
        "docs/hip.md's state diagram differs from hip.states.render_mermaid(); regenerate it "
        "with: python -c 'from hip.states import render_mermaid; print(render_mermaid())'"
    )


def test_config_defaults_and_refusals() -> None:
    cfg = HIPConfig()
    assert cfg.dh_groups[0] == 7 and cfg.ciphers[0] == 4 and cfg.esp_transforms[0] == 9
    assert 1 not in cfg.offered_ciphers()
    assert HIPConfig(allow_null_cipher=True).offered_ciphers()[-1] == 1
    with pytest.raises(ConfigError, match="NULL"):
        HIPConfig(ciphers=(4, 1))
    with pytest.raises(ConfigError, match="dh_groups"):
        HIPConfig(dh_groups=(99,))
    with pytest.raises(ConfigError, match="retransmit_initial"):
        HIPConfig(retransmit_initial=0)
    assert [cfg.retransmit_timeout(n) for n in range(6)] == [1, 2, 4, 8, 16, 16]


# --- every row of the table is real behaviour ---------------------------------------------


def _scenarios() -> None:
    """Drive real hosts through every row of TRANSITIONS (see the test below)."""
    from hip_network import Network, Sent

    from hip.packet import PacketType

    def pair(**cfg: object) -> Network:
        net = Network()
        net.add("a", "192.0.2.1", config=HIPConfig(**cfg))  # type: ignore[arg-type]
        net.add("b", "192.0.2.2", config=HIPConfig(**cfg))  # type: ignore[arg-type]
        return net

    def lose_once(*types: PacketType):  # type: ignore[no-untyped-def]
        lost: set[PacketType] = set()

        def policy(sent: Sent, _i: int) -> list[float]:
            if sent.type in types and sent.type not in lost:
                lost.add(sent.type)
                return []
            return [0.0]
        return policy

    # Losses, duplicates, replays, data, an UPDATE while R2-SENT, CLOSE with a lost ACK.
    net = pair()
    a, b = net.hosts["a"], net.hosts["b"]
    net.policy = lose_once(PacketType.I1, PacketType.I2, PacketType.CLOSE_ACK)
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=net.now + 3.5)  # I1 and I2 each re-sent once
    i1 = net.sent_by("a", PacketType.I1)[-1].packet
    i2 = net.sent_by("a", PacketType.I2)[-1].packet
    b.receive_packet(i1.data, i1.src, i1.dst, net.now)  # R2-SENT: I1
    b.receive_packet(i2.data, i2.src, i2.dst, net.now)  # R2-SENT: duplicate I2
    b.data_received(a.our_hit, 100, net.now)  # R2-SENT: data
    b.data_received(a.our_hit, 100, net.now)  # ESTABLISHED: data
    b.receive_packet(i1.data, i1.src, i1.dst, net.now)  # ESTABLISHED: I1
    net.run()
    a.close(b.our_hit, net.now)  # CLOSE_ACK lost: CLOSING re-sends, CLOSED answers again
    net.run(until=net.now + 1.5)
    b.receive_packet(i1.data, i1.src, i1.dst, net.now)  # CLOSED: I1
    a.connect(b.our_hit, "192.0.2.2", net.now)  # UNASSOCIATED again; b gets I2 in CLOSED
    net.run(until=net.now + 0.5)
    net.move("a", "192.0.2.11")  # b is R2-SENT: the UPDATE confirms it
    net.run()
    b.close(a.our_hit, net.now)
    net.run(until=net.now + 0.5)
    a.connect(b.our_hit, "192.0.2.2", net.now)  # CLOSED -> I1-SENT
    net.run()

    # No answers: E-FAILED, then connect again from E-FAILED; CLOSE without CLOSE_ACK.
    net = pair(i1_retries_max=1, i2_retries_max=1, close_retries_max=1)
    a, b = net.hosts["a"], net.hosts["b"]
    a.connect(b.our_hit, "192.0.2.99", net.now)
    net.run(until=net.now + 5)
    a.connect(b.our_hit, "192.0.2.99", net.now)  # E-FAILED -> I1-SENT
    net.run()  # fails and expires
    net.policy = lambda sent, _i: [] if sent.type is PacketType.R2 else [0.0]
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=net.now + 5)  # I2-SENT retries run out
    net.policy = lambda sent, _i: [0.0]
    net.run()
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run()
    net.policy = lambda sent, _i: [] if sent.sender == "b" else [0.0]
    a.close(b.our_hit, net.now)
    net.run()  # CLOSING retries run out
    net.policy = lambda sent, _i: [0.0]

    # Abort during the base exchange; CLOSE to R2-SENT and from R2-SENT; CLOSE in I2-SENT.
    net = pair()
    a, b = net.hosts["a"], net.hosts["b"]
    a.connect(b.our_hit, "192.0.2.99", net.now)
    a.close(b.our_hit, net.now)  # I1-SENT -> UNASSOCIATED
    net.policy = lambda sent, _i: [] if sent.type is PacketType.R2 else [0.0]
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=net.now + 0.5)
    a.close(b.our_hit, net.now)  # I2-SENT -> UNASSOCIATED
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=net.now + 0.5)  # b answers the new I2 in R2-SENT; R2 lost again
    b.close(a.our_hit, net.now)  # R2-SENT -> CLOSING; a gets CLOSE in I2-SENT
    net.policy = lambda sent, _i: [0.0]
    net.run()
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=net.now + 0.5)
    a.close(b.our_hit, net.now)  # b gets CLOSE in R2-SENT
    net.run()

    # Simultaneous opens: plain, and with crossing I2s (both sides in I2-SENT).
    net = pair()
    a, b = net.hosts["a"], net.hosts["b"]
    a.connect(b.our_hit, "192.0.2.2", net.now)
    b.connect(a.our_hit, "192.0.2.1", net.now)
    net.run()
    net = Network()
    for name in ("a", "b"):
        net.add(name, "192.0.2.1" if name == "a" else "192.0.2.2")
    big, small = ((net.hosts["a"], net.hosts["b"]) if net.hosts["a"].our_hit
                  > net.hosts["b"].our_hit else (net.hosts["b"], net.hosts["a"]))
    big_addr, small_addr = big.locators[0], small.locators[0]

    def deliver(host: object, ptype: PacketType) -> None:
        sender = small if host is big else big
        for pkt in sender.packets_to_send():
            assert packet_type_of(pkt.data) is ptype, (packet_type_of(pkt.data), ptype)
            host.receive_packet(pkt.data, pkt.src, pkt.dst, 0.0)  # type: ignore[attr-defined]

    def packet_type_of(data: bytes) -> PacketType:
        return PacketType(data[2] & 0x7F)

    big.connect(small.our_hit, small_addr, 0.0)
    deliver(small, PacketType.I1)  # small, still UNASSOCIATED, answers statelessly
    small.connect(big.our_hit, big_addr, 0.0)
    for pkt in small.packets_to_send():  # R1 to big, then small's I1
        big.receive_packet(pkt.data, pkt.src, pkt.dst, 0.0)  # big: I2-SENT, then I1 there
    out_big = big.packets_to_send()  # big's I2, then big's R1
    for pkt in reversed(out_big):  # small gets R1 first (-> I2-SENT), then big's I2
        small.receive_packet(pkt.data, pkt.src, pkt.dst, 0.0)  # small drops it: smaller HIT
    deliver(big, PacketType.I2)  # big processes small's I2 in I2-SENT
    deliver(small, PacketType.R2)
    assert small.association(big.our_hit).state is State.ESTABLISHED
    assert big.association(small.our_hit).state is State.R2_SENT

    # A peer that lost its state: I2 in ESTABLISHED; a peer reconnecting while CLOSING.
    net = pair()
    a, b = net.hosts["a"], net.hosts["b"]
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run()
    from hip.host import HIPHost
    from hip.random import SeededRandom

    fresh_b = HIPHost(b.identity, ["192.0.2.2"], rng=SeededRandom(b"fresh"), now=net.now)
    net.hosts["b"] = fresh_b
    fresh_b.connect(a.our_hit, "192.0.2.1", net.now)
    net.run()
    net.policy = lambda sent, _i: [] if sent.type is PacketType.CLOSE else [0.0]
    a.close(fresh_b.our_hit, net.now)  # a: CLOSING; b never hears of it
    net.hosts["b"] = HIPHost(b.identity, ["192.0.2.2"], rng=SeededRandom(b"again"),
                             now=net.now)
    net.hosts["b"].connect(a.our_hit, "192.0.2.1", net.now)  # a gets I1, then I2, in CLOSING
    net.run(until=net.now + 0.5)
    net.policy = lambda sent, _i: [0.0]
    net.run()

    # Simultaneous close; connect again while still CLOSING.
    net = pair()
    a, b = net.hosts["a"], net.hosts["b"]
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run()
    a.close(b.our_hit, net.now)
    b.close(a.our_hit, net.now)
    net.run()
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run()
    a.close(b.our_hit, net.now)
    a.connect(b.our_hit, "192.0.2.2", net.now)  # CLOSING -> I1-SENT
    net.run()

    # A crossing exchange after an abort: R2 in R2-SENT (see test_hip_association).
    from test_hip_association import crossing_exchange_after_an_abort

    crossing_exchange_after_an_abort()

    # The idle timeout closes an ESTABLISHED association.
    net = pair(idle_timeout=30.0)
    a, b = net.hosts["a"], net.hosts["b"]
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run()

    # A newer R1 while in I2-SENT (the Responder started a new R1 generation).
    net = pair()
    a, b = net.hosts["a"], net.hosts["b"]
    net.policy = lose_once(PacketType.I2)
    a.connect(b.our_hit, "192.0.2.2", net.now)
    net.run(until=net.now + 0.5)
    b.precompute_r1(net.now + 1000)
    first_i1 = net.sent_by("a", PacketType.I1)[0].packet
    b.receive_packet(first_i1.data, first_i1.src, first_i1.dst, net.now + 1000)
    net.run()


def test_every_transition_is_exercised_by_real_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """No row of TRANSITIONS is dead: real hosts exchanging real packets take each one."""
    taken: set[tuple[State, Trigger]] = set()
    original = StateMachine.apply

    def recording(self: StateMachine, trigger: Trigger) -> State:
        before = self.state
        result = original(self, trigger)
        taken.add((before, trigger))
        return result

    monkeypatch.setattr(StateMachine, "apply", recording)
    _scenarios()
    missing = sorted(f"{s.value} --{t.value}-->" for (s, t) in set(TRANSITIONS) - taken)
    assert not missing, f"transitions never taken: {missing}"
