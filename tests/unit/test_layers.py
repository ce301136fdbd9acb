"""The layout is a map: pure code stays pure, tools stay at the edge, and no import goes round in a circle.

`make lint` runs the import-linter contract of pyproject.toml; these tests keep that contract honest
(every pure package is under it) and check what it cannot: the number of loose modules and cycles.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EDGE = {"tools"}
"""The one part of pipeline/ that may talk to Kafka or start the runtime in agents/."""


def pure_contract() -> dict[str, object]:
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["name"].startswith("pure code")]
    return contract


def test_every_pure_package_is_under_the_layer_contract() -> None:
    children = {p.stem for p in (REPO / "pipeline").iterdir() if p.name != "__init__.py"}
    children = {c for c in children if not c.startswith("__")}
    pure = {f"pipeline.{c}" for c in children - EDGE} | {"schemas"}
    contract = pure_contract()
    assert pure == set(contract["source_modules"]), "list every pipeline/ package but tools/ in the contract"
    assert {"faust", "aiokafka", "aiohttp", "agents"} <= set(contract["forbidden_modules"])


def test_at_most_ten_loose_modules_remain_in_pipeline() -> None:
    loose = sorted(p.name for p in (REPO / "pipeline").glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 10, loose


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_import_cycle_not_even_for_type_checking() -> None:
    graph = grimp.build_graph("pipeline", "agents", "schemas", cache_dir=None)
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c", "d"):
        graph.add_module(name)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    graph.add_import(importer="c", imported="a")
    graph.add_import(importer="c", imported="d")
    assert cycles(graph) == [["a", "b", "c"]]
