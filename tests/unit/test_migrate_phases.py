"""The migration's phase table: aborts, refusals, and the DRBD steps it drives."""

from __future__ import annotations

import pytest

from xenwam.drbd.phases import Lifecycle
from xenwam.drbd.phases import Phase as DrbdPhase
from xenwam.errors import MigrationError
from xenwam.migrate.phases import (
    SOURCE,
    TERMINAL,
    TRANSITIONS,
    Action,
    MigrationState,
    Phase,
    render_mermaid,
    render_table,
)

pytestmark = pytest.mark.unit

FORWARD = (Action.START, Action.SEED, Action.CATCH_UP, Action.HANDOVER,
           Action.MIGRATE_MEMORY, Action.REBIND, Action.FINALIZE, Action.FINISH)
RETURN_TRIP = (Action.START, Action.SKIP_SEED, Action.HANDOVER, Action.MIGRATE_MEMORY,
               Action.REBIND, Action.FINALIZE, Action.FINISH)
BEFORE_MEMORY = (Phase.PLAN, Phase.PREPARE, Phase.SEED, Phase.CATCH_UP, Phase.HANDOVER)


def test_one_row_per_phase_and_action() -> None:
    keys = [(t.source, t.action) for t in TRANSITIONS]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("phase", BEFORE_MEMORY)
def test_every_phase_before_memory_aborts_to_the_source(phase: Phase) -> None:
    state = MigrationState(phase=phase)
    row = state.apply(Action.ABORT)
    assert row.target is Phase.ABORTING and row.guest == SOURCE
    assert state.phase is Phase.ABORTING
    state.apply(Action.ABORT)  # a second abort (a second --recover) is harmless
    state.apply(Action.ABORTED)
    assert state.phase is Phase.ABORTED and state.phase in TERMINAL


@pytest.mark.parametrize("phase", [Phase.REBIND, Phase.FINALIZE])
def test_abort_after_the_move_rolls_forward(phase: Phase) -> None:
    state = MigrationState(phase=phase)
    assert state.apply(Action.ABORT).target is Phase.FINALIZE
    state.apply(Action.FINALIZE)  # finalize runs twice
    state.apply(Action.FINISH)
    assert state.phase is Phase.DONE


def test_every_non_terminal_phase_has_a_way_on_and_terminals_have_none() -> None:
    for phase in Phase:
        rows = [t for t in TRANSITIONS if t.source is phase]
        assert bool(rows) is (phase not in TERMINAL), phase


@pytest.mark.parametrize(("phase", "action"), [
    (Phase.PLAN, Action.SEED),
    (Phase.PLAN, Action.FINISH),
    (Phase.SEED, Action.MIGRATE_MEMORY),
    (Phase.HANDOVER, Action.REBIND),
    (Phase.DONE, Action.ABORT),
    (Phase.ABORTED, Action.START),
    (Phase.ABORTING, Action.FINISH),
])
def test_an_illegal_action_raises_and_leaves_the_phase(phase: Phase, action: Action) -> None:
    state = MigrationState(phase=phase)
    with pytest.raises(MigrationError, match=f"{action.value!r} is not allowed in phase "
                                             f"{phase.value!r}"):
        state.apply(action)
    assert state.phase is phase
    assert state.history == []


def _walk(actions: tuple[Action, ...]) -> tuple[MigrationState, Lifecycle]:
    state, disk = MigrationState(), Lifecycle()
    for action in actions:
        row = state.row(action)
        for step in row.drbd:
            disk.apply(step)  # raises DrbdError on a step the DRBD table does not allow
        state.apply(action)
    return state, disk


def test_the_forward_path_drives_drbd_only_through_legal_steps() -> None:
    state, disk = _walk(FORWARD)
    assert state.phase is Phase.DONE
    assert [h.action for h in state.history] == list(FORWARD)
    # Back to protocol A with the old host a peer: ready for the return trip.
    assert disk.phase is DrbdPhase.REPLICATING
    assert [h.step for h in disk.history] == [s for a in FORWARD for s in
                                              next(t.drbd for t in state.history
                                                   if t.action is a)]


def test_the_return_trip_drives_drbd_only_through_legal_steps() -> None:
    state, disk = _walk(RETURN_TRIP)
    assert state.phase is Phase.DONE and disk.phase is DrbdPhase.REPLICATING


def test_mermaid_mentions_every_phase_and_action() -> None:
    diagram = render_mermaid()
    assert diagram.startswith("stateDiagram-v2")
    for phase in Phase:
        assert phase.name in diagram
    for t in TRANSITIONS:
        assert f"{t.source.name} --> {t.target.name}: {t.action.value}" in diagram


def test_table_has_a_row_per_transition() -> None:
    assert len(render_table().splitlines()) == 2 + len(TRANSITIONS)


def test_docs_draw_the_migration_diagram_from_the_table() -> None:
    from pathlib import Path

    from xenwam.migrate.phases import update_doc

    doc = Path(__file__).resolve().parents[2] / "docs" / "migrate.md"
    text = doc.read_text()
    assert update_doc(text) == text, "run `python3 -m xenwam.migrate.phases docs/migrate.md`"
