"""Test tiers and shared fixtures.

Every test carries exactly one tier marker (registered in pyproject.toml):
``unit`` (no root, seconds), ``netns`` (root and network namespaces), ``lab`` (the QEMU
Xen lab).  A test without one fails collection, so no test can hide outside a tier.
A missing privilege or kernel feature skips with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from xenwam.errors import HostCheckError
from xenwam.netns import NetnsSet, check_netns_support

TIERS = ("unit", "netns", "lab")

# No per-example deadline: speed is measured by benchmarks, never asserted by a test, and
# a loaded machine (a lab booting beside the unit tier) made examples miss the 200 ms
# default.
settings.register_profile("xenwam", deadline=None)
settings.load_profile("xenwam")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    bad = []
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if len(tiers) != 1:
            bad.append(f"{item.nodeid} has {tiers or 'no tier'}")
    if bad:
        raise pytest.UsageError(
            "every test needs exactly one tier marker of " + ", ".join(TIERS) + ":\n  "
            + "\n  ".join(bad)
        )


_netns_checked: list[str | None] = []


@pytest.fixture
def netns() -> Iterator[NetnsSet]:
    """A factory of throwaway network namespaces, all removed when the test ends.

    ``a = netns.add("a")`` makes a namespace; ``netns.link(a, b)`` joins two with veth.
    """
    if not _netns_checked:
        try:
            check_netns_support()
            _netns_checked.append(None)
        except HostCheckError as exc:
            _netns_checked.append(str(exc))
    if _netns_checked[0] is not None:
        pytest.skip(f"network namespaces unavailable: {_netns_checked[0]}")
    nsset = NetnsSet(prefix="xwt")
    try:
        yield nsset
    finally:
        nsset.close()
