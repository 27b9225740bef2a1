"""The phases of one ``xenwam migrate``: one transitions table (STYLE rule 2).

Each row names the step, where the guest runs while it happens, and the per-resource DRBD
steps (:mod:`xenwam.drbd.phases`) it carries out, so a migration drives every resource's
:class:`~xenwam.drbd.phases.Lifecycle` through that table and an illegal DRBD step is
refused there too.  Every phase before the guest has moved has an ``abort`` row back to a
running guest on the source; after the move, ``abort`` rolls forward to ``finalize``
(the guest already runs on the destination: going back would be a second migration).
``docs/migrate.md`` draws its diagram from :func:`render_mermaid`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from xenwam.docblock import replace_block
from xenwam.drbd.phases import Step as DrbdStep
from xenwam.errors import MigrationError


class Phase(enum.Enum):
    """Where a migration stands."""

    PLAN = "plan"
    PREPARE = "prepare"
    SEED = "seed"
    CATCH_UP = "catch-up"
    HANDOVER = "handover"
    MEMORY = "memory"
    REBIND = "rebind"
    FINALIZE = "finalize"
    DONE = "done"
    ABORTING = "aborting"
    ABORTED = "aborted"


class Action(enum.Enum):
    """What moves a migration from one phase to the next."""

    START = "start"
    SEED = "seed"
    SKIP_SEED = "skip-seed"
    CATCH_UP = "catch-up"
    HANDOVER = "handover"
    MIGRATE_MEMORY = "migrate-memory"
    REBIND = "rebind"
    FINALIZE = "finalize"
    FINISH = "finish"
    ABORT = "abort"
    ABORTED = "aborted"


#: Where the running guest is while a phase runs.
SOURCE, DESTINATION, MOVING = "source", "destination", "moving"


@dataclass(frozen=True)
class Transition:
    """One row: from a phase, an action, to a phase, and what it does."""

    source: Phase
    action: Action
    target: Phase
    guest: str
    drbd: tuple[DrbdStep, ...]
    what: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(Phase.PLAN, Action.START, Phase.PREPARE, SOURCE, (),
               "both hosts checked; destination copies provisioned, resources defined"),
    Transition(Phase.PREPARE, Action.SEED, Phase.SEED, SOURCE, (),
               "non-zero blocks of the live disk streamed to the new copy, compressed"),
    Transition(Phase.PREPARE, Action.SKIP_SEED, Phase.CATCH_UP, SOURCE,
               (DrbdStep.BRING_UP, DrbdStep.CHECKSUM_SYNC),
               "the pair exists from an earlier trip: connect and resync what changed"),
    Transition(Phase.SEED, Action.CATCH_UP, Phase.CATCH_UP, SOURCE,
               (DrbdStep.BRING_UP, DrbdStep.CHECKSUM_SYNC),
               "pair connected; checksum resync fixes what the fuzzy seed copy missed"),
    Transition(Phase.CATCH_UP, Action.HANDOVER, Phase.HANDOVER, SOURCE,
               (DrbdStep.CATCH_UP, DrbdStep.HANDOVER, DrbdStep.HOTPLUG_ADD),
               "in sync: protocol C, two primaries, online verify, destination promoted"),
    Transition(Phase.HANDOVER, Action.MIGRATE_MEMORY, Phase.MEMORY, MOVING, (),
               "xl migrate -p over xenwam's transport; the guest arrives paused"),
    Transition(Phase.MEMORY, Action.REBIND, Phase.REBIND, DESTINATION,
               (DrbdStep.HOTPLUG_REMOVE,),
               "source copy gone (its disk demoted); new network written to xenstore; "
               "unpaused"),
    Transition(Phase.REBIND, Action.FINALIZE, Phase.FINALIZE, DESTINATION,
               (DrbdStep.BACK_TO_BULK,),
               "back to protocol A, destination the only primary; the old host stays a "
               "peer for the return trip"),
    Transition(Phase.FINALIZE, Action.FINISH, Phase.DONE, DESTINATION, (), "report written"),
    # Aborts: before the move, back to the source.
    *(Transition(p, Action.ABORT, Phase.ABORTING, SOURCE, (),
                 "give up: guest stays on the source")
      for p in (Phase.PLAN, Phase.PREPARE, Phase.SEED, Phase.CATCH_UP, Phase.HANDOVER,
                Phase.MEMORY)),
    Transition(Phase.ABORTING, Action.ABORTED, Phase.ABORTED, SOURCE, (),
               "destination copy demoted and removed, source resource as before"),
    # Aborting twice (a second --recover) finds everything already put back.
    Transition(Phase.ABORTING, Action.ABORT, Phase.ABORTING, SOURCE, (),
               "abort repeated after a crash: every cleanup step is idempotent"),
    # After the move, "abort" means "finish putting the guest right where it is".
    Transition(Phase.REBIND, Action.ABORT, Phase.FINALIZE, DESTINATION, (),
               "the guest already runs on the destination: roll forward"),
    Transition(Phase.FINALIZE, Action.ABORT, Phase.FINALIZE, DESTINATION, (),
               "finalize repeated: idempotent"),
    Transition(Phase.FINALIZE, Action.FINALIZE, Phase.FINALIZE, DESTINATION, (),
               "finalize repeated after a crash: idempotent"),
)

_TABLE = {(t.source, t.action): t for t in TRANSITIONS}
#: Phases in which the migration has ended.
TERMINAL = frozenset({Phase.DONE, Phase.ABORTED})


@dataclass
class MigrationState:
    """A migration's phase, moved only along :data:`TRANSITIONS`."""

    phase: Phase = Phase.PLAN
    history: list[Transition] = field(default_factory=list)

    def row(self, action: Action) -> Transition:
        """The row for ``action`` from the current phase; :class:`MigrationError` if none."""
        row = _TABLE.get((self.phase, action))
        if row is None:
            allowed = ", ".join(t.action.value for t in TRANSITIONS if t.source is self.phase)
            raise MigrationError(f"{action.value!r} is not allowed in phase "
                                 f"{self.phase.value!r} (allowed: {allowed or 'none'})")
        return row

    def apply(self, action: Action) -> Transition:
        """Move along the row for ``action``; the phase is unchanged if there is none."""
        row = self.row(action)
        self.phase = row.target
        self.history.append(row)
        return row


def render_mermaid() -> str:
    """The state diagram of :data:`TRANSITIONS` as a Mermaid block body."""
    lines = ["stateDiagram-v2", f"    [*] --> {Phase.PLAN.name}"]
    for t in TRANSITIONS:
        lines.append(f"    {t.source.name} --> {t.target.name}: {t.action.value}")
    lines += [f"    {Phase.DONE.name} --> [*]", f"    {Phase.ABORTED.name} --> [*]"]
    return "\n".join(lines)


def render_table() -> str:
    """The transitions as a Markdown table."""
    rows = ["| from | action | to | guest runs on | DRBD steps | what happens |",
            "|---|---|---|---|---|---|"]
    for t in TRANSITIONS:
        steps = ", ".join(f"`{s.value}`" for s in t.drbd) or "-"
        rows.append(f"| {t.source.name} | {t.action.value} | {t.target.name} | {t.guest} "
                    f"| {steps} | {t.what} |")
    return "\n".join(rows)


BEGIN_MARKER = "<!-- generated from xenwam/migrate/phases.py: begin -->"
END_MARKER = "<!-- generated from xenwam/migrate/phases.py: end -->"


def render_doc_block() -> str:
    """The generated part of ``docs/migrate.md``, markers included."""
    return "\n".join([BEGIN_MARKER, "```mermaid", render_mermaid(), "```", "",
                      render_table(), END_MARKER])


def update_doc(text: str) -> str:
    """``text`` with its generated block replaced by the current one."""
    return replace_block(text, BEGIN_MARKER, END_MARKER, render_doc_block())


if __name__ == "__main__":
    import sys
    from pathlib import Path

    doc = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/migrate.md")
    doc.write_text(update_doc(doc.read_text()))
