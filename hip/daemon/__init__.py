"""hipd: the asyncio shell that runs the sans-I/O HIP core on a real host.

Everything here does I/O, and nothing of the protocol is decided here:

* :mod:`hip.daemon.hipd` -- :class:`~hip.daemon.hipd.Hipd`, which feeds packets, timer
  expiries and hipctl commands to :class:`hip.host.HIPHost` and acts on what it returns;
  hipd's command line;
* :mod:`hip.daemon.transport` -- the HIP sockets (raw IP protocol 139, UDP 10500);
* :mod:`hip.daemon.netlink` -- our addresses (the locators) and routes, and their events;
* :mod:`hip.daemon.control` -- the hipctl <-> hipd protocol over a Unix socket, and
  :mod:`hip.daemon.control_server`, hipd's end of it;
* :mod:`hip.daemon.eventlog` -- the journal of protocol events hipctl reads;
* :mod:`hip.daemon.peer_memory` -- peers' last verified locators, kept across restarts.

The ESP data planes are :mod:`hip.dataplane`.  This ``__init__`` imports nothing, so
that hipctl (which needs only the control protocol) does not load the daemon.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """``hipd``: the console script and ``python -m hip.daemon`` (see :mod:`hip.daemon.hipd`)."""
    from hip.daemon.hipd import main as hipd_main

    hipd_main(argv)


__all__ = ["main"]
