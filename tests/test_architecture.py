"""The package's structure: no import circle, and no module imports from a higher layer.

The layers, lowest first (docs/architecture.md draws them): a module may import from its own layer
or below, never above. Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Top-level part of vqkit -> layer. Every module of the package must be listed (a new package
# must be placed in a layer deliberately).
LAYERS: dict[str, int] = {
    "_version": 0, "config": 0, "precision": 0, "distributed": 0, "metrics": 0, "data": 0, "visual": 0,
    "quantizers": 1, "networks": 1,
    "models": 2,
    "runs": 3,
    "training": 4, "priors": 4, "zoo": 4,
    "codec": 5, "tasks": 5,
    "pipeline": 6, "reports": 6,
    "cli": 7, "__main__": 7, "": 8,  # "" is the package facade, vqkit/__init__.py
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in (SRC / "vqkit").rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """vqkit modules that ``name`` imports (the most specific known module of each import)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("vqkit") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    assert top in LAYERS, f"{name}: place vqkit.{top} in a layer in tests/test_architecture.py"
    return LAYERS[top]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in sorted(graph().items())
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert upward == []


def test_the_checks_can_fail() -> None:
    """The checker itself: a planted circle and a planted upward import are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("vqkit.cli.train") > layer("vqkit.training.loop") > layer("vqkit.runs.run")
    with pytest.raises(AssertionError, match=r"place vqkit\.nowhere"):
        layer("vqkit.nowhere.module")


def test_the_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from vqkit.codec import entropy\n    from . import layout\n")
    known = {"vqkit.codec", "vqkit.codec.entropy", "vqkit.runs", "vqkit.runs.layout", "vqkit.runs.m"}
    assert imports_of("vqkit.runs.m", path, known) == {"vqkit.codec.entropy", "vqkit.runs.layout"}
