"""No import cycles inside `smart_r1/`: data flows one way between modules.

Every `import` / `from ... import` of a `smart_r1` module counts, wherever it is written:
module level, inside a function (a "lazy" import is still a dependency) and under
`if TYPE_CHECKING:`. One kind of edge is left out: a package's `__init__` importing its own
submodules (re-exports, or registering the parts of a registry such as
`smart_r1.data.synth.layouts`), since the submodules importing the package's shared names is
the registry pattern, not two modules needing each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "smart_r1"


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """`a.b.c` -> the longest prefix that is a module (`from a.b import c` may name a function)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the smart_r1 modules it imports (anywhere in the file)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                if t.split(".")[0] != PACKAGE:
                    continue
                dep = _resolve(t, modules)
                if dep is None or dep == name:
                    continue
                if is_package and dep.startswith(name + "."):
                    continue  # a package's __init__ importing its own parts (see the module docstring)
                deps.add(dep)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_lazy_and_type_checking_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from smart_r1.sub import x\n")
    (pkg / "sub" / "x.py").write_text("def f():\n    from smart_r1.y import g\n")
    (pkg / "y.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from smart_r1.sub.x import f\n")
    graph = import_graph(tmp_path)
    assert graph["smart_r1.sub"] == set()  # a package importing its own parts does not count
    assert graph["smart_r1.sub.x"] == {"smart_r1.y"}
    assert graph["smart_r1.y"] == {"smart_r1.sub.x"}
    assert find_cycles(graph) == [["smart_r1.sub.x", "smart_r1.y"]]


@pytest.fixture(scope="module")
def library_graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_import_cycles_in_the_library(library_graph):
    cycles = find_cycles(library_graph)
    assert not cycles, "import cycles in smart_r1/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_geometry_depends_on_nothing_in_tokens(library_graph):
    deps = library_graph["smart_r1.tokens.geometry"]
    assert not {d for d in deps if d.startswith("smart_r1.tokens")}, deps
