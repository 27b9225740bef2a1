"""DRBD replication of a guest's disk across a wide-area link.

The package follows the build / run / parse split: :mod:`~xenwam.drbd.resource` holds the
resource model and renders ``/etc/drbd.d/xenwam-<name>.res``; :mod:`~xenwam.drbd.cmdgen`
builds argv lists; :mod:`~xenwam.drbd.info` parses what DRBD prints; :mod:`~xenwam.drbd.device`
drives a resource through its lifecycle with an injected runner; :mod:`~xenwam.drbd.seed`
copies only the used blocks of a disk to a fresh peer; :mod:`~xenwam.drbd.phases` holds the
table of a resource's phases during a migration.
"""
