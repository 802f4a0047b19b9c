"""The package's shape: no folder named like build output, and imports that flow one way (no circle among
spurbench's modules, imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import spurbench

PACKAGE = Path(spurbench.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: spurbench modules it imports}, from every import statement in the file (top level or not)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = (
                    ".".join(package[: len(package) - node.level + 1] + [node.module or ""])
                    if node.level
                    else node.module or ""
                )
                base = base.rstrip(".")
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    # evaluate/entry.py imports shift inside a function; the CLI registry names modules as strings (not imports)
    assert "spurbench.evaluate.shift" in graph["spurbench.evaluate.entry"]
    assert "spurbench.evaluate.predict" in graph["spurbench.evaluate.entry"]


def test_no_import_cycles_among_spurbench_modules():
    cycles = find_cycles(import_graph())
    assert cycles == [], "modules that import each other (move what both need to a lower module): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_package_folder_named_like_build_output():
    named = [p for p in PACKAGE.rglob("*") if p.is_dir() and p.name in {"build", "dist"}]
    assert named == []


def test_nothing_below_the_building_side_imports_it():
    # spurbench.generate (the building side) sits on top: detection, the dataset contract, the evaluating side and
    # the shared modules never import it (the tiny test models live in spurbench.tiny_models, below both)
    graph = import_graph()
    upward = {m: sorted(t for t in ts if t.startswith("spurbench.generate")) for m, ts in graph.items()}
    upward = {m: ts for m, ts in upward.items() if ts and not m.startswith("spurbench.generate")}
    assert upward == {}, f"modules below spurbench.generate that import it: {upward}"


def test_the_tiny_models_import_nothing_of_spurbench():
    assert import_graph()["spurbench.tiny_models"] == set()
