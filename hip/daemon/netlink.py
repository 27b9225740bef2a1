"""hipd's view of this host's addresses and routes, over netlink.

Our locators are the host's usable addresses; hipd reads them at start, whenever an
address or route event arrives, and on ``hipctl update-locators``.  A new address is
announced only once the peers are routable from it (:func:`routable`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from ipaddress import IPv6Address, ip_address
from typing import Any

from hip.dataplane import Locator
from hip.orchid import ORCHID_PREFIX

log = logging.getLogger("hipd")

#: Address flags from linux/if_addr.h.
_IFA_F_TENTATIVE = 0x40
_IFA_F_DEPRECATED = 0x20
_LOCATOR_EVENTS = ("RTM_NEWADDR", "RTM_DELADDR", "RTM_NEWROUTE", "RTM_DELROUTE")


def usable_locator(address: Locator, label: str, ignored: tuple[str, ...]) -> bool:
    """True for addresses that can be locators: global unicast, not a HIT, not ours."""
    if label in ignored:
        return False
    if address.is_loopback or address.is_link_local or address.is_multicast:
        return False
    return not (isinstance(address, IPv6Address) and address in ORCHID_PREFIX)


def read_locators(ignored: tuple[str, ...]) -> tuple[Locator, ...]:
    """Every usable address of this host (IPv4 first, then IPv6), read over netlink.

    Blocking (pyroute2's synchronous API): hipd calls it in a worker thread.
    """
    from pyroute2 import IPRoute

    found: list[Locator] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            text = msg.get_attr("IFA_ADDRESS")
            if text is None:
                continue
            address = ip_address(text)
            flags = msg.get_attr("IFA_FLAGS") or msg.get("flags", 0)
            # Tentative (DAD running) and deprecated addresses cannot be used yet.
            if flags & (_IFA_F_TENTATIVE | _IFA_F_DEPRECATED):
                continue
            if usable_locator(address, names.get(msg["index"], ""), ignored):
                found.append(address)
    found.sort(key=lambda a: (a.version, a.packed))
    return tuple(found)


def routable(src: Locator, peers: list[Locator]) -> bool:
    """True if the kernel has a route from ``src`` to every one of ``peers`` (blocking)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        for peer in peers:
            try:
                ipr.route("get", dst=str(peer), src=str(src))
            except NetlinkError:
                return False
    return True


#: Longest wait before reopening a netlink socket that failed (the wait doubles from 1 s).
NETLINK_RETRY_MAX = 30.0


def watch_netlink(
    on_event: Callable[[], None],
    *,
    open_netlink: Callable[[], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Call ``on_event`` for every address or route change, forever (thread target).

    A failure while reading (ENOBUFS when a burst of events overflowed the socket buffer,
    or a message this pyroute2 cannot parse) must not end the thread, or hipd would stop
    following moves without a word: it is logged, ``on_event`` runs once because events
    may have been lost (hipd re-reads the addresses anyway), and a new socket is opened.
    ``open_netlink`` makes the bound socket (default: pyroute2's ``IPRoute``).
    """
    if open_netlink is None:
        from pyroute2 import IPRoute

        open_netlink = IPRoute
    delay = 1.0
    while True:
        try:
            with open_netlink() as ipr:
                ipr.bind()
                while True:
                    for msg in ipr.get():
                        delay = 1.0
                        if msg.get("event") in _LOCATOR_EVENTS:
                            on_event()
        except Exception as exc:
            log.warning("netlink watch failed (%s: %s); re-reading the addresses, "
                        "watching again in %g s", type(exc).__name__, exc, delay)
            on_event()
            sleep(delay)
            delay = min(2 * delay, NETLINK_RETRY_MAX)


__all__ = ["read_locators", "routable", "usable_locator", "watch_netlink"]
