"""The rooms of the house (DESIGN.md §4, STYLE.md "Rooms"), checked on the source itself.

- ``agent/probes/`` and ``agent/transport/`` (the one HTTP client that probes and sinks share)
  are the only agent-side code that imports ``requests`` (and its ``urllib3``), ``paramiko``,
  ``psutil`` or ``paho``: library exceptions become ``ProbeError`` there and nowhere else.
  The simulator and the tests are the outside world and may use them.
- Imports run one way: ``diagnostics`` imports none of agent, rma, simulator; ``rma`` imports
  neither agent nor simulator; ``simulator`` imports none of agent, diagnostics, rma.

Imports are read from the syntax tree, so ``import requests``, ``from requests import x``,
``from .. import agent``, imports under ``if TYPE_CHECKING:`` or inside a function, and
``importlib.import_module("psutil")`` with a literal name all count; a comment or a string
that merely mentions a library does not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "diagnostics", "rma", "simulator")
IO_LIBRARIES = frozenset({"requests", "urllib3", "paramiko", "psutil", "paho"})
IO_ROOMS = ("agent.probes", "agent.transport")
AGENT_SIDE = ("agent", "diagnostics", "rma")
FORBIDDEN = {
    "diagnostics": frozenset({"agent", "rma", "simulator"}),
    "rma": frozenset({"agent", "simulator"}),
    "simulator": frozenset({"agent", "diagnostics", "rma"}),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # ``from agent import probes`` names a module too
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            if node.args and isinstance(node.args[0], ast.Constant):
                if isinstance(node.args[0].value, str):
                    yield node.lineno, node.args[0].value


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def top(name: str) -> str:
    return name.split(".", 1)[0]


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def source_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if "__pycache__" not in p.parts]


def all_imports() -> Iterator[tuple[str, int, str]]:
    """(module, line, imported) for every import in the four packages."""
    for path in source_files():
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        for line, name in imports(source, module, is_package=path.name == "__init__.py"):
            yield module, line, name


def io_violations() -> list[str]:
    return sorted(
        f"{module}:{line} imports {name}"
        for module, line, name in all_imports()
        if top(module) in AGENT_SIDE
        and not any(inside(module, room) for room in IO_ROOMS)
        and top(name) in IO_LIBRARIES
    )


def direction_violations(package: str) -> list[str]:
    return sorted(
        f"{module}:{line} imports {name}"
        for module, line, name in all_imports()
        if top(module) == package and top(name) in FORBIDDEN[package]
    )


# --- the walker itself


def test_the_walker_sees_every_form_of_import() -> None:
    source = """
import requests.adapters
from paho.mqtt import client
from . import model
from ..agent import probes
from .. import rma
import importlib
if TYPE_CHECKING:
    from agent.config import Config
def later():
    import psutil
    return importlib.import_module("paramiko")
# import urllib3 -- a comment
text = "import simulator"
"""
    found = {name for _, name in imports(source, "diagnostics.checks.offline")}
    assert {
        "requests.adapters",
        "paho.mqtt",
        "diagnostics.checks.model",
        "diagnostics.agent.probes",
        "diagnostics.rma",
        "agent.config",
        "psutil",
        "paramiko",
    } <= found
    assert not {n for n in found if top(n) in ("urllib3", "simulator")}
    pkg = {name for _, name in imports("from . import ssh", "agent.probes", is_package=True)}
    assert "agent.probes.ssh" in pkg


def test_the_walker_reads_the_real_tree() -> None:
    found = {(module, top(name)) for module, _, name in all_imports()}
    # the sanctioned uses, so an empty walk cannot pass the tests below
    assert ("agent.transport.http", "requests") in found
    assert ("agent.probes.ssh", "paramiko") in found
    assert ("agent.delivery.sinks.rt", "agent") in found
    assert ("rma.tickets", "diagnostics") in found
    assert len({module for module, _ in found}) > 40


# --- the rules


def test_only_agent_probes_imports_the_io_libraries() -> None:
    assert io_violations() == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package: str) -> None:
    assert direction_violations(package) == []


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, within the four packages.

    An import of a package itself (its ``__init__``) is no edge: Python runs a package's
    ``__init__`` before any of its modules anyway, and ``from simulator import formats``
    names the module ``simulator.formats``, which is an edge of its own."""
    modules = {module_name(p) for p in source_files() if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, _, name in all_imports():
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if module in modules and name and name != module:
            graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets, as the path that closes it."""
    state: dict[str, str] = {}
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        path.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                found.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other, path)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_the_cycle_finder() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    graph = import_graph()
    assert "rma.report" in graph["rma.bundle"] and "rma" not in graph["rma.bundle"]


def test_no_import_cycles() -> None:
    """DESIGN.md §4: no import cycles, typing-only imports included (``rma.report`` once
    imported ``rma.bundle`` for its types while ``rma.bundle`` imported ``rma.report``)."""
    assert cycles(import_graph()) == []
