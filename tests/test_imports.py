"""The package's imports point one way: no module imports, even for types only, a module that
imports it back (a newcomer reads the code from the bottom up)."""

from __future__ import annotations

import ast
from pathlib import Path

import swarm

ROOT = Path(swarm.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.append(submodule if submodule in modules else node.module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        current, trail = stack.pop()
        for target in graph[current]:
            if target == start:
                return [*trail, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*trail, target]))
    return None


def test_no_import_circle() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its submodules is not a circle a reader walks.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(f"{t}.")}
    circles = [c for name in sorted(graph) if (c := _cycle_through(graph, name))]
    assert not circles, " ; ".join(" -> ".join(c) for c in circles[:5])


def test_the_daemon_is_imported_by_nothing_it_runs() -> None:
    graph = _graph()
    assert {name for name, targets in graph.items() if "swarm.daemon" in targets} <= {
        "swarm.cli",
        "swarm.cli_demo",
    }
