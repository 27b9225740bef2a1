"""``xenwam migrate``: the orchestrated wide-area live migration (disk and memory).

:mod:`~xenwam.migrate.phases` holds the one transitions table, :mod:`~xenwam.migrate.plan`
the pure checks made before anything changes, :mod:`~xenwam.migrate.events` the event
model and journal, :mod:`~xenwam.migrate.orchestrator` the phases themselves, and
:mod:`~xenwam.migrate.cli` the command.
"""
