"""A resource's phases during a wide-area migration: one transitions table.

The table is the single source of truth: :class:`Lifecycle` refuses any step it does not
list, each step names the :class:`~xenwam.drbd.device.DrbdDevice` operations that carry it
out, and ``docs/storage.md`` draws its diagram from :func:`render_mermaid` (a unit test
checks the document matches).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from xenwam.docblock import replace_block
from xenwam.drbd.device import DrbdDevice
from xenwam.errors import DrbdError


class Phase(enum.Enum):
    """Where a resource stands, seen from both hosts at once."""

    DEFINED = "defined"
    CONNECTED = "connected"
    REPLICATING = "replicating"
    SYNCED = "synced"
    HANDOVER = "handover"
    DUAL_PRIMARY = "dual_primary"
    MIGRATED = "migrated"
    DOWN = "down"


class Step(enum.Enum):
    """What moves a resource from one phase to the next."""

    BRING_UP = "bring-up"
    SEED = "seed"
    FULL_SYNC = "full-sync"
    CHECKSUM_SYNC = "checksum-sync"
    CATCH_UP = "catch-up"
    HANDOVER = "handover"
    HOTPLUG_ADD = "hotplug-add"
    HOTPLUG_REMOVE = "hotplug-remove"
    BACK_TO_BULK = "back-to-bulk"
    ABORT = "abort"
    TEARDOWN = "teardown"


@dataclass(frozen=True)
class Transition:
    """One row of the table: the step, where it runs, and the operations it calls."""

    source: Phase
    step: Step
    target: Phase
    where: str
    operations: tuple[str, ...]
    why: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(Phase.DEFINED, Step.BRING_UP, Phase.CONNECTED, "both hosts",
               ("create_md", "up", "wait_connected"),
               "fresh metadata on both disks; the pair connects, both Inconsistent"),
    Transition(Phase.CONNECTED, Step.SEED, Phase.REPLICATING, "source to destination",
               ("skip_initial_sync",),
               "non-zero blocks streamed out of band and verified, then the bitmap is "
               "cleared: no full sync"),
    Transition(Phase.CONNECTED, Step.FULL_SYNC, Phase.REPLICATING, "source",
               ("promote",),
               "without seeding: the source is forced Primary and DRBD copies every block"),
    Transition(Phase.CONNECTED, Step.CHECKSUM_SYNC, Phase.REPLICATING, "source",
               ("adjust",),
               "a live disk seeded out of band: the source's existing data meets a new "
               "peer; DRBD compares checksums of every block and sends only those that differ"),
    Transition(Phase.REPLICATING, Step.CATCH_UP, Phase.SYNCED, "either host",
               ("wait_for_sync",),
               "protocol A with pull-ahead until nothing is out of sync"),
    Transition(Phase.SYNCED, Step.HANDOVER, Phase.HANDOVER, "either host",
               ("to_handover",),
               "live switch to protocol C with allow-two-primaries"),
    Transition(Phase.HANDOVER, Step.HOTPLUG_ADD, Phase.DUAL_PRIMARY, "destination",
               ("promote",),
               "block-xenwam add inside the downtime window"),
    Transition(Phase.DUAL_PRIMARY, Step.HOTPLUG_REMOVE, Phase.MIGRATED, "source",
               ("demote",),
               "block-xenwam remove when the source domain is destroyed"),
    Transition(Phase.MIGRATED, Step.BACK_TO_BULK, Phase.REPLICATING, "either host",
               ("to_bulk",),
               "back to protocol A; the destination is now the only Primary"),
    Transition(Phase.HANDOVER, Step.ABORT, Phase.REPLICATING, "either host",
               ("to_bulk",),
               "migration abandoned before the destination opened the disk"),
    Transition(Phase.DUAL_PRIMARY, Step.ABORT, Phase.REPLICATING, "destination",
               ("demote", "to_bulk"),
               "migration failed after the destination opened the disk"),
    Transition(Phase.REPLICATING, Step.TEARDOWN, Phase.DOWN, "both hosts",
               ("teardown",), "replication no longer wanted"),
    Transition(Phase.SYNCED, Step.TEARDOWN, Phase.DOWN, "both hosts",
               ("teardown",), "replication no longer wanted"),
    # Every phase has a way back to a consistent place (STYLE rule 9): a seed or a full
    # sync that failed leaves the source's disk as it was, so tearing down is safe.
    Transition(Phase.DEFINED, Step.TEARDOWN, Phase.DOWN, "both hosts",
               ("teardown",), "the pair never came up"),
    Transition(Phase.CONNECTED, Step.TEARDOWN, Phase.DOWN, "both hosts",
               ("teardown",), "seeding or full sync failed or was abandoned"),
    Transition(Phase.MIGRATED, Step.TEARDOWN, Phase.DOWN, "both hosts",
               ("teardown",), "the guest stays on the destination without replication"),
    # A second remove (libxl may run the hook twice) finds the resource already demoted.
    Transition(Phase.MIGRATED, Step.HOTPLUG_REMOVE, Phase.MIGRATED, "source",
               ("demote",), "hotplug remove repeated: demote is idempotent"),
    # Finalize can run twice: a second back-to-bulk finds protocol A already in place.
    Transition(Phase.REPLICATING, Step.BACK_TO_BULK, Phase.REPLICATING, "either host",
               ("to_bulk",), "finalize repeated after a crash: to_bulk is idempotent"),
)

_TABLE = {(t.source, t.step): t for t in TRANSITIONS}


@dataclass
class Lifecycle:
    """The phase of one resource, moved only along :data:`TRANSITIONS`."""

    phase: Phase = Phase.DEFINED
    history: list[Transition] = field(default_factory=list)

    def transition(self, step: Step) -> Transition:
        """The row for ``step`` from the current phase; raise if there is none."""
        row = _TABLE.get((self.phase, step))
        if row is None:
            allowed = ", ".join(t.step.value for t in TRANSITIONS if t.source is self.phase)
            raise DrbdError(
                f"step {step.value!r} is not allowed in phase {self.phase.value!r}; "
                f"allowed: {allowed or 'none'}"
            )
        return row

    def apply(self, step: Step, device: DrbdDevice | None = None) -> Phase:
        """Run ``step``'s operations on ``device`` (if given) and move to the next phase.

        The phase changes only after every operation succeeded.
        """
        row = self.transition(step)
        if device is not None:
            for name in row.operations:
                getattr(device, name)()
        self.phase = row.target
        self.history.append(row)
        return self.phase


def render_mermaid() -> str:
    """The state diagram of :data:`TRANSITIONS` as a Mermaid block body."""
    lines = ["stateDiagram-v2", f"    [*] --> {Phase.DEFINED.name}"]
    for t in TRANSITIONS:
        lines.append(f"    {t.source.name} --> {t.target.name}: {t.step.value}")
    lines.append(f"    {Phase.DOWN.name} --> [*]")
    return "\n".join(lines)


def render_table() -> str:
    """The transitions as a Markdown table."""
    rows = ["| from | step | to | runs on | operations | why |",
            "|---|---|---|---|---|---|"]
    for t in TRANSITIONS:
        ops = ", ".join(f"`{op}`" for op in t.operations)
        rows.append(f"| {t.source.name} | {t.step.value} | {t.target.name} | {t.where} "
                    f"| {ops} | {t.why} |")
    return "\n".join(rows)


BEGIN_MARKER = "<!-- generated from xenwam/drbd/phases.py: begin -->"
END_MARKER = "<!-- generated from xenwam/drbd/phases.py: end -->"


def render_doc_block() -> str:
    """The generated part of ``docs/storage.md``, markers included."""
    return "\n".join([BEGIN_MARKER, "```mermaid", render_mermaid(), "```", "",
                      render_table(), END_MARKER])


def update_doc(text: str) -> str:
    """``text`` with its generated block replaced by the current one."""
    return replace_block(text, BEGIN_MARKER, END_MARKER, render_doc_block())


if __name__ == "__main__":
    import sys
    from pathlib import Path

    doc = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/storage.md")
    doc.write_text(update_doc(doc.read_text()))
