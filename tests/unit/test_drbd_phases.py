"""The phases table: legal steps only, real operations, and the doc drawn from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenwam.drbd import phases
from xenwam.drbd.device import DrbdDevice
from xenwam.drbd.phases import Lifecycle, Phase, Step
from xenwam.errors import DrbdError

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"


def test_every_operation_is_a_device_method() -> None:
    for t in phases.TRANSITIONS:
        for op in t.operations:
            assert callable(getattr(DrbdDevice, op, None)), f"{t.step}: {op}"


def test_table_has_no_duplicate_and_every_phase_is_reachable() -> None:
    keys = [(t.source, t.step) for t in phases.TRANSITIONS]
    assert len(keys) == len(set(keys))
    reached = {Phase.DEFINED} | {t.target for t in phases.TRANSITIONS}
    assert reached == set(Phase)


def test_a_migration_walks_the_table() -> None:
    life = Lifecycle()
    for step in (Step.BRING_UP, Step.SEED, Step.CATCH_UP, Step.HANDOVER, Step.HOTPLUG_ADD,
                 Step.HOTPLUG_REMOVE, Step.BACK_TO_BULK):
        life.apply(step)
    assert life.phase is Phase.REPLICATING
    assert [t.step for t in life.history][-1] is Step.BACK_TO_BULK


def test_illegal_step_raises_and_keeps_phase() -> None:
    life = Lifecycle(phase=Phase.REPLICATING)
    with pytest.raises(DrbdError, match="'hotplug-add' is not allowed in phase 'replicating'"):
        life.apply(Step.HOTPLUG_ADD)
    assert life.phase is Phase.REPLICATING


def test_apply_calls_the_operations_and_moves_only_on_success() -> None:
    class Dev:
        def __init__(self, fail: bool) -> None:
            self.fail = fail
            self.called: list[str] = []

        def to_handover(self) -> None:
            self.called.append("to_handover")
            if self.fail:
                raise DrbdError("peer gone")

    life = Lifecycle(phase=Phase.SYNCED)
    bad = Dev(fail=True)
    with pytest.raises(DrbdError):
        life.apply(Step.HANDOVER, bad)  # type: ignore[arg-type]
    assert life.phase is Phase.SYNCED
    good = Dev(fail=False)
    assert life.apply(Step.HANDOVER, good) is Phase.HANDOVER  # type: ignore[arg-type]
    assert good.called == ["to_handover"]


def test_storage_doc_diagram_matches_the_table() -> None:
    text = DOC.read_text()
    assert phases.render_doc_block() in text, (
        "docs/storage.md is out of date: run `python -m xenwam.drbd.phases docs/storage.md`")


def test_every_phase_can_reach_down_and_finalize_runs_twice() -> None:
    reaches_down = {Phase.DOWN}
    changed = True
    while changed:
        changed = False
        for t in phases.TRANSITIONS:
            if t.target in reaches_down and t.source not in reaches_down:
                reaches_down.add(t.source)
                changed = True
    assert reaches_down == set(Phase)

    life = Lifecycle(Phase.MIGRATED)
    assert life.apply(Step.BACK_TO_BULK) is Phase.REPLICATING
    assert life.apply(Step.BACK_TO_BULK) is Phase.REPLICATING
