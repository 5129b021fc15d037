"""The package's shape, measured with ``ast``: the sizes the project holds itself to and an
import graph without cycles, between modules and between packages (docs/architecture.md, "Where
changes go")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "budgetplan"
LIMITS = {"module": 400, "class": 200, "function": 60}


def _modules() -> tuple[dict[str, ast.Module], dict[str, int]]:
    trees, lines = {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = path.read_text()
        trees[name], lines[name] = ast.parse(text, str(path)), len(text.splitlines())
    return trees, lines


MODULES, LINES = _modules()


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The package's modules that ``name`` imports anywhere: at the top, in functions, under
    ``TYPE_CHECKING``; ``from package import module`` counts as the module."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target != "budgetplan":
                found.add(target)
    return found


GRAPH = {name: _imports(name, tree) for name, tree in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph``, as the nodes along it, or ``None``."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_itself_through_others():
    assert _cycle(GRAPH) is None


def test_no_package_imports_itself_through_others():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module)
        )
    assert _cycle(packages) is None


def test_the_plan_format_imports_nothing_from_the_planner():
    plan = {t for module, targets in GRAPH.items() if module.startswith("budgetplan.plan.") for t in targets}
    assert not {t for t in plan if t.startswith("budgetplan.planning")}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_sizes(name):
    tree = MODULES[name]
    over = [f"module {LINES[name]} lines"] if LINES[name] > LIMITS["module"] else []
    for node in ast.walk(tree):
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if size > LIMITS[kind]:
                over.append(f"{kind} {node.name} {size} lines (at most {LIMITS[kind]})")
    assert not over, over
