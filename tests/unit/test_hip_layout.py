"""The ``hip`` package's layout (STYLE.md 15, issue 10 item 2), checked on its imports.

Guests carry ``hip`` alone, so it holds no benchmarks or test helpers and never imports
``xenwam`` or ``hipbench``; the sans-I/O protocol core imports none of hipd's shell
(sockets, netlink, control socket, data planes); and no two modules import each other,
directly or around a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HIP = ROOT / "hip"
#: The protocol core: packets, timers and user calls in; packets, timers, events out.
CORE = ("association", "config", "crypto", "errors", "events", "host", "identity", "keccak",
        "mobility", "orchid", "outbox", "packet", "params", "puzzle", "random", "ratelimit",
        "states")
#: What the core must not import: hipd's shell and the means of I/O it uses.
SHELL = ("hip.daemon", "hip.dataplane", "hip.runner", "hip.ctl", "hip.keystore", "hip.hosts",
         "socket", "asyncio", "subprocess", "threading", "selectors", "pyroute2")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in HIP.rglob("*.py")}
    return {name: (_imports(path) & modules.keys()) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import loop of ``graph`` (depth-first search), or [] when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return []
        path.append(module)
        for imported in sorted(graph[module]):
            if loop := visit(imported):
                return loop
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        if loop := visit(module):
            return loop
    return []


def test_hip_has_no_import_cycle() -> None:
    assert _cycle(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_the_protocol_core_imports_nothing_of_the_shell() -> None:
    offenders = {
        module: sorted(i for i in _imports(HIP / f"{module}.py")
                       if any(i == s or i.startswith(s + ".") for s in SHELL))
        for module in CORE
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_guests_carry_no_benchmarks_or_test_helpers() -> None:
    names = sorted(str(p.relative_to(HIP)) for p in HIP.rglob("*.py"))
    assert [n for n in names if "bench" in n or "pcap" in n] == []
    foreign = {
        _module_name(p): sorted(i for i in _imports(p)
                                if i.split(".")[0] in ("xenwam", "hipbench", "hip_pcap"))
        for p in HIP.rglob("*.py")
    }
    assert {m: i for m, i in foreign.items() if i} == {}
