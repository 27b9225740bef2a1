"""What a xenwam guest carries besides ``hip``: the agent that applies the network dom0
hands it through xenstore after a migration, and the definition of those xenstore keys.

It never imports ``xenwam`` (dom0's package); ``xenwam`` imports :mod:`xenwam_guest.layout`
so that dom0's writer and the guest's reader share one definition.
"""
