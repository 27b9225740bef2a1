"""Xen adapters any xenwam command can use: ``xl``, xenstore, and commands on another dom0.

Laid out like :mod:`xenwam.drbd`: :mod:`~xenwam.xen.xl` builds argv lists and parses xl's
output (tested on captured real output in ``tests/data/xen/``), :mod:`~xenwam.xen.xenstore`
is the xenstore client (pyxs first, the ``xenstore-*`` tools otherwise), and
:mod:`~xenwam.xen.remote` runs argv lists on the other dom0 over ssh, as ``xl migrate``
itself reaches it.  Nothing here imports the lab.
"""
