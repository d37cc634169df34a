"""The package's import structure, read statically from its source (``ast``, nothing imported): no import cycle
between its modules, no module importing a command-line entry point, and only one top-level name (``sim_eval``),
so an install puts no generic package (``policies``, ``checkpoints``) into site-packages."""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sim_eval"
# thin command-line entry points: they import the package, nothing imports them
ENTRY_POINTS = {f"sim_eval.{n}" for n in ("__main__", "record", "export", "train", "report", "calibrate", "merge")}
# the package's layers, top first: a module imports only from its own layer or those below (docs/architecture.md)
LAYERS = [
    ["__main__", "record", "export", "train", "report", "calibrate", "merge"],
    ["preflight", "callbacks"],
    ["demos", "training"],
    ["runtime"],
    ["analysis"],
    ["records"],
    ["config"],
    ["envs"],
    ["policies"],
    ["checkpoints"],
]
# top-level names this project once installed beside sim_eval
RETIRED = {"policies", "checkpoints"}


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of the package ``name`` imports, at the top or inside a function (a lazy import is still an edge:
    it only hides a cycle until the function runs). ``from a import b`` is an edge to ``a.b`` when that is a module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        for target in targets:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = itertools.count()

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges)))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_an_entry_point():
    offenders = sorted((name, target) for name, deps in graph().items() for target in deps & ENTRY_POINTS)
    assert offenders == []


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next((k for k, names in enumerate(LAYERS) if part in names), len(LAYERS))  # sim_eval/__init__: bottom


def test_imports_go_down_the_layers():
    assert {m.split(".")[1] for m in modules() if "." in m} <= {n for names in LAYERS for n in names}
    upward = sorted((name, target) for name, deps in graph().items() for target in deps if layer(target) < layer(name))
    assert upward == []


def test_one_top_level_name():
    retired = []
    repo = PACKAGE.parent
    for path in [*PACKAGE.rglob("*.py"), *(repo / "tests").glob("*.py"), *(repo / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            retired += [(str(path), n) for n in names if n.split(".")[0] in RETIRED]
    assert retired == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "sim_eval"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from sim_eval.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import a\nfrom ..train import main\n")
    (pkg / "train.py").write_text("")
    known = modules(pkg)
    edges = {name: imports(name, path, known) for name, path in known.items()}
    assert edges["sim_eval.sub.a"] == {"sim_eval.sub.b"}
    assert edges["sim_eval.sub.b"] == {"sim_eval.sub.a", "sim_eval.train"}
    assert cycles(edges) == [["sim_eval.sub.a", "sim_eval.sub.b"]]
