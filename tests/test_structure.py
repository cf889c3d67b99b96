"""The package's import graph flows one way: no circles, the search never imports the
report, and the leaves stay leaves. Read from the source (every import, lazy ones too)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autopeft"


def import_graph() -> dict[str, set[str]]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f

    def resolve(target: str) -> str | None:
        parts = target.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                     if ".".join(parts[:i]) in mods), None)

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autopeft"):
                targets = [resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.startswith("autopeft")]
            edges[m] |= {t for t in targets if t and t != m}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                found.append(sorted([v, *comp]))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_the_search_does_not_import_the_report() -> None:
    edges = import_graph()
    up = {(m, t) for m, ts in edges.items() if m.startswith("autopeft.search")
          for t in ts if t.startswith("autopeft.report")}
    assert not up


def test_leaves_import_only_leaves() -> None:
    edges = import_graph()
    leaves = {"autopeft.errors", "autopeft.pareto", "autopeft.contract", "autopeft.protocols"}
    for leaf in leaves:
        assert edges[leaf] <= leaves, f"{leaf} imports {edges[leaf] - leaves}"
    # the read model of results and the plan: leaves but for these
    assert edges["autopeft.results"] <= {"autopeft.pareto"}
    assert edges["autopeft.search.plan"] <= {"autopeft.errors", "autopeft.search.losscheck"}
    assert edges["autopeft.search.losscheck"] == set()  # plain arithmetic on losses


def test_the_package_offers_every_api_function() -> None:
    """``import autopeft`` serves the library API lazily: the same names as ``autopeft.api``
    (plus ``UserError``), each one resolving."""
    import autopeft
    from autopeft import api

    assert set(autopeft.__all__) == set(api.__all__) | {"UserError"}
    for name in autopeft.__all__:
        assert getattr(autopeft, name) is not None


def test_the_benchmarks_import_only_names_the_package_has() -> None:
    """bench/ is not run in CI: a rename in the package must not leave it broken unseen."""
    import importlib

    missing = []
    for script in sorted((PACKAGE.parent / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autopeft"):
                module = importlib.import_module(node.module)
                missing += [f"{script.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert missing == []
