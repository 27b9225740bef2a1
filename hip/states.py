"""HIP association states and the one table of their transitions (RFC 7401 section 4.4).

The association in :mod:`hip.association` never assigns its state directly: it asks
:class:`StateMachine` to apply a :class:`Trigger`, and the machine looks the pair
``(state, trigger)`` up in :data:`TRANSITIONS`.  A pair that is not in the table is an
illegal transition: :class:`hip.errors.StateTransitionError` is raised and the state is
left as it was.  The receive path asks :func:`allows` first, so that a peer's packet which
does not fit the current state becomes a counted drop, never an exception.

Triggers name *accepted* inputs: "RECV_I2" means an I2 that passed every check.  A
packet that fails its checks changes nothing and is not a trigger at all, which is how
RFC 7401's "if fail, stay at <state>" rows are expressed.

The documentation's state diagram (docs/hip.md) is drawn from this table by
:func:`render_mermaid`; a unit test keeps the two equal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hip.errors import StateTransitionError


class State(enum.Enum):
    """The states of a HIP association (RFC 7401 section 4.4.1)."""

    UNASSOCIATED = "UNASSOCIATED"
    I1_SENT = "I1-SENT"
    I2_SENT = "I2-SENT"
    R2_SENT = "R2-SENT"
    ESTABLISHED = "ESTABLISHED"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    E_FAILED = "E-FAILED"


class Trigger(enum.Enum):
    """An accepted input that may move an association to another state."""

    #: The user asked for an association (``connect``): an I1 is sent.
    CONNECT = "connect"
    #: An I1 arrived and we answer it with an R1 (the answer itself is stateless).
    RECV_I1 = "I1"
    #: A valid R1 arrived; an I2 is sent.
    RECV_R1 = "R1"
    #: A valid I2 arrived; an R2 is sent.
    RECV_I2 = "I2"
    #: A valid R2 arrived.
    RECV_R2 = "R2"
    #: A valid UPDATE arrived.
    RECV_UPDATE = "UPDATE"
    #: The data plane saw ESP traffic on the new security association.
    RECV_DATA = "data"
    #: A valid CLOSE arrived; a CLOSE_ACK is sent.
    RECV_CLOSE = "CLOSE"
    #: A valid CLOSE_ACK answering our CLOSE arrived.
    RECV_CLOSE_ACK = "CLOSE_ACK"
    #: The user asked to close; a CLOSE is sent.
    CLOSE = "close"
    #: A retransmission timer fired and retries remain: the last packet is sent again.
    RETRANSMIT = "retransmit"
    #: A retransmission timer fired and no retries remain.
    RETRIES_EXHAUSTED = "retries exhausted"
    #: R2-SENT waited long enough without traffic (RFC 7401 4.4.2: move to ESTABLISHED).
    CONFIRM_TIMEOUT = "confirm timeout"
    #: CLOSED or E-FAILED lingered long enough; the state can be discarded.
    EXPIRE = "expire"
    #: ESTABLISHED saw no traffic for the idle timeout (UAL): a CLOSE is sent.
    IDLE_TIMEOUT = "idle timeout"


@dataclass(frozen=True)
class Transition:
    """One row of the table: in ``state``, ``trigger`` leads to ``target``."""

    state: State
    trigger: Trigger
    target: State


S = State
T = Trigger

#: Every legal transition of a HIP association.  Rows follow RFC 7401 section 4.4.2
#: state by state.  The simultaneous base exchange (4.4.2 / 6.7 / 6.10) is resolved
#: before a trigger is applied: the host with the larger HIT acts as Responder, so an I1
#: or I2 that the comparison says to drop never becomes a trigger.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    # UNASSOCIATED: "receive I1, send R1, stay" is done by the stateless host with no
    # association at all; an association object in this state exists only while a
    # received I2 is being processed.
    (S.UNASSOCIATED, T.CONNECT): S.I1_SENT,
    (S.UNASSOCIATED, T.RECV_I2): S.R2_SENT,
    # I1-SENT
    (S.I1_SENT, T.RECV_I1): S.I1_SENT,
    (S.I1_SENT, T.RECV_R1): S.I2_SENT,
    (S.I1_SENT, T.RECV_I2): S.R2_SENT,
    (S.I1_SENT, T.RETRANSMIT): S.I1_SENT,
    (S.I1_SENT, T.RETRIES_EXHAUSTED): S.E_FAILED,
    (S.I1_SENT, T.CLOSE): S.UNASSOCIATED,
    # I2-SENT
    (S.I2_SENT, T.RECV_I1): S.I2_SENT,
    (S.I2_SENT, T.RECV_R1): S.I2_SENT,
    (S.I2_SENT, T.RECV_I2): S.R2_SENT,
    (S.I2_SENT, T.RECV_R2): S.ESTABLISHED,
    (S.I2_SENT, T.RECV_CLOSE): S.CLOSED,
    (S.I2_SENT, T.RETRANSMIT): S.I2_SENT,
    (S.I2_SENT, T.RETRIES_EXHAUSTED): S.E_FAILED,
    (S.I2_SENT, T.CLOSE): S.UNASSOCIATED,
    # R2-SENT
    (S.R2_SENT, T.RECV_I1): S.R2_SENT,
    (S.R2_SENT, T.RECV_I2): S.R2_SENT,
    # R2 in R2-SENT: the peer answered our own I2 of a crossing exchange after all (it
    # had abandoned its I2, which we answered); we follow the peer's choice.
    (S.R2_SENT, T.RECV_R2): S.ESTABLISHED,
    (S.R2_SENT, T.RECV_UPDATE): S.ESTABLISHED,
    (S.R2_SENT, T.RECV_DATA): S.ESTABLISHED,
    (S.R2_SENT, T.RECV_CLOSE): S.CLOSED,
    (S.R2_SENT, T.CONFIRM_TIMEOUT): S.ESTABLISHED,
    (S.R2_SENT, T.CLOSE): S.CLOSING,
    # ESTABLISHED
    (S.ESTABLISHED, T.RECV_I1): S.ESTABLISHED,
    (S.ESTABLISHED, T.RECV_I2): S.R2_SENT,
    (S.ESTABLISHED, T.RECV_UPDATE): S.ESTABLISHED,
    (S.ESTABLISHED, T.RECV_DATA): S.ESTABLISHED,
    (S.ESTABLISHED, T.RECV_CLOSE): S.CLOSED,
    (S.ESTABLISHED, T.CLOSE): S.CLOSING,
    (S.ESTABLISHED, T.IDLE_TIMEOUT): S.CLOSING,
    # CLOSING
    (S.CLOSING, T.CONNECT): S.I1_SENT,
    (S.CLOSING, T.RECV_I1): S.CLOSING,
    (S.CLOSING, T.RECV_I2): S.R2_SENT,
    (S.CLOSING, T.RECV_CLOSE): S.CLOSED,
    (S.CLOSING, T.RECV_CLOSE_ACK): S.UNASSOCIATED,
    (S.CLOSING, T.RETRANSMIT): S.CLOSING,
    (S.CLOSING, T.RETRIES_EXHAUSTED): S.UNASSOCIATED,
    # CLOSED
    (S.CLOSED, T.CONNECT): S.I1_SENT,
    (S.CLOSED, T.RECV_I1): S.CLOSED,
    (S.CLOSED, T.RECV_I2): S.R2_SENT,
    (S.CLOSED, T.RECV_CLOSE): S.CLOSED,
    (S.CLOSED, T.EXPIRE): S.UNASSOCIATED,
    # E-FAILED
    (S.E_FAILED, T.CONNECT): S.I1_SENT,
    (S.E_FAILED, T.EXPIRE): S.UNASSOCIATED,
}

del S, T


def transitions() -> list[Transition]:
    """Return the table as a list of :class:`Transition` records, in table order."""
    return [Transition(s, t, target) for (s, t), target in TRANSITIONS.items()]


def allows(state: State, trigger: Trigger) -> bool:
    """Whether ``trigger`` is legal in ``state``."""
    return (state, trigger) in TRANSITIONS


class StateMachine:
    """Holds one association's state and changes it only through :data:`TRANSITIONS`."""

    def __init__(self, state: State = State.UNASSOCIATED) -> None:
        self._state = state

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    def apply(self, trigger: Trigger) -> State:
        """Move along the table and return the new state.

        Raises :class:`StateTransitionError` (state unchanged) when the table has no row
        for the current state and ``trigger``.
        """
        try:
            target = TRANSITIONS[(self._state, trigger)]
        except KeyError:
            legal = sorted(t.value for (s, t) in TRANSITIONS if s is self._state)
            raise StateTransitionError(
                f"no transition from {self._state.value} on {trigger.value!r}; "
                f"legal here: {', '.join(legal)}"
            ) from None
        self._state = target
        return target


def _node(state: State) -> str:
    # Mermaid node ids may not contain '-'.
    return state.name


def render_mermaid() -> str:
    """Render :data:`TRANSITIONS` as a Mermaid ``stateDiagram-v2`` (one edge per target).

    Triggers sharing the same source and target are joined on one edge label, so the
    drawing stays readable; the order of edges follows the table.
    """
    edges: dict[tuple[State, State], list[str]] = {}
    for (state, trigger), target in TRANSITIONS.items():
        edges.setdefault((state, target), []).append(trigger.value)
    lines = ["stateDiagram-v2"]
    for state in State:
        lines.append(f"    {_node(state)}: {state.value}")
    lines.append(f"    [*] --> {_node(State.UNASSOCIATED)}")
    for (state, target), labels in edges.items():
        lines.append(f"    {_node(state)} --> {_node(target)}: {', '.join(labels)}")
    return "\n".join(lines) + "\n"


def render_ascii() -> str:
    """Render :data:`TRANSITIONS` as a plain-text table (state, trigger, next state)."""
    header = ("state", "trigger", "next state")
    rows = [(s.value, t.value, target.value) for (s, t), target in TRANSITIONS.items()]
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(3)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"
