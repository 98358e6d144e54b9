"""The core's modules import each other without a circle: each part of the
engine imports the context and the leaf modules it uses, never the engine
nor another part that imports it back (imports under TYPE_CHECKING, which
never run, are left out)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "sbc" / "core"


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            for child in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, child, None)
                if isinstance(inner, list):
                    visit([n for n in inner if isinstance(n, ast.stmt)])

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in CORE.glob("*.py") if p.stem != "__init__"}
    return {name: _runtime_imports(path) & set(modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_no_import_circle_among_core_modules() -> None:
    assert _cycle(_graph()) is None


def test_the_engine_parts_import_neither_the_engine_nor_each_other_back() -> None:
    graph = _graph()
    for part in ("public", "backend", "failover", "context", "callstate"):
        assert "engine" not in graph[part], part
    assert "public" not in graph["backend"] and "backend" not in graph["public"]
    assert not graph["failover"] & {"public", "backend"}


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
