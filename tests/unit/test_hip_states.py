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
