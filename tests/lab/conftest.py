"""The session's QEMU Xen lab, brought up once per layout and always taken down.

Lab tests ask for ``lab`` and either use it directly as a :class:`~xenwam.lab.Lab`
(``lab.exec("a", [...])``: the lab that is up, booting the default ``wan`` layout if
none is) or call ``lab.use(Layout.LAN)`` for a given layout: the first call of a layout
boots the two hosts (stopping a lab of the other layout first), later calls reuse it.
Tests of the lan layout carry the ``lan`` marker and run after all others (see
``pytest_collection_modifyitems`` below), so the session boots each layout once; tests
that do not care about the layout run in the wan layout.
The run directory is private to the session; the build cache is the user's
(``~/.cache/xenwam/lab`` or ``$XENWAM_LAB_CACHE``), so the first run builds it cold.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from xenwam.errors import HostCheckError
from xenwam.lab import Artifacts, Builder, Lab, LabConfig, Layout, Shaping
from xenwam.lab.build import check_build_tools
from xenwam.lab.config import default_cache_dir, source_tree
from xenwam.netns import check_netns_support
from xenwam.runner import CommandResult

#: The WAN layout's link is shaped so the netem path is exercised; kept mild so the
#: baseline migration stays well inside CI's time.
WAN_SHAPING = Shaping.parse("20ms", "100mbit", "0")


def _why_no_lab() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, taps, debootstrap)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing, so QEMU cannot make the link taps"
    try:
        check_netns_support()
    except HostCheckError as exc:
        return f"the lab needs network namespaces: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Lab tests of the lan layout (marker ``lan``) run last, in file order, whatever
    file they are in: the session then boots the wan layout once and the lan layout once."""
    items.sort(key=lambda item: item.get_closest_marker("lan") is not None)


@dataclass
class LabSession:
    """Hands out the running lab for a layout, booting it when the layout changes."""

    run_dir: Path
    artifacts: Artifacts
    lab: Lab = field(init=False)
    layout: Layout | None = None
    #: Every QEMU pid the session saw, so the last test can check they are gone.
    qemu_pids: set[int] = field(default_factory=set)
    #: Why bringing a layout up failed: later tests fail at once instead of each
    #: waiting out the boot timeout again.
    failures: dict[Layout, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lab = Lab(self.run_dir, progress=lambda msg: print(f"[lab] {msg}", flush=True))

    def use(self, layout: Layout) -> Lab:
        """The lab, up in ``layout``."""
        if layout in self.failures:
            pytest.fail(f"the {layout.value} lab did not come up earlier in this session: "
                        f"{self.failures[layout]}")
        if self.layout is not layout:
            if self.layout is not None:
                self.lab.down()
            self.layout = None
            shaping = WAN_SHAPING if layout is Layout.WAN else Shaping()
            try:
                self.lab.up(LabConfig(run_dir=self.run_dir, layout=layout, shaping=shaping,
                                      source_dir=source_tree()), self.artifacts)
            except Exception as exc:
                self.failures[layout] = str(exc)
                raise
            self.layout = layout
            for host in ("a", "b"):
                pid = self.lab.qemu_pid(host)
                if pid is not None:
                    self.qemu_pids.add(pid)
        return self.lab

    def current(self) -> Lab:
        """The lab that is up, booting the default (wan) layout if none is."""
        return self.lab if self.layout is not None else self.use(Layout.WAN)

    def exec(self, host: str, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        """Run ``argv`` in ``host``'s dom0 (see :meth:`Lab.exec`)."""
        return self.current().exec(host, argv, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Everything else a test may want from a Lab (xl_list, create_guest, ...).
        if name.startswith("_") or name in ("lab", "layout"):
            raise AttributeError(name)
        return getattr(self.current(), name)

    def down(self) -> None:
        """Stop whatever is up."""
        self.lab.down()
        self.layout = None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """The session's lab (see the module docstring)."""
    reason = _why_no_lab()
    if reason:
        pytest.skip(f"QEMU Xen lab unavailable: {reason}")
    check_build_tools()
    artifacts = Builder(default_cache_dir(),
                        progress=lambda msg: print(f"[lab build] {msg}", flush=True)).build()
    session = LabSession(tmp_path_factory.mktemp("lab"), artifacts)
    try:
        yield session
    finally:
        session.down()


#: The link of the migration tests: 40 ms / 50 mbit, a WAN a guest can outrun.
MIGRATION_SHAPING = Shaping.parse("40ms", "50mbit", "0")


@pytest.fixture()
def wan40(lab: Any) -> Any:
    """The lab's link at 40 ms / 50 mbit for this test (site files to match)."""
    state = lab.load_state()
    config = state.config()
    for host in ("a", "b"):
        lab.apply_shaping(host, MIGRATION_SHAPING)
        lab.install_xenwam(host, replace(config, shaping=MIGRATION_SHAPING))
    yield lab
    for host in ("a", "b"):
        lab.apply_shaping(host, config.shaping)
        lab.install_xenwam(host, config)
