"""The package's import graph: layers without cycles, and a core free of frameworks.

Every ``import`` and ``from ... import`` in llc's modules counts, wherever it stands: at the
top, inside a function (a lazy import), or under ``if TYPE_CHECKING:``. A cycle hidden by a
lazy import is still a cycle: it ties the modules into one layer that cannot be read,
tested or changed alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "equinox", "tensorflow", "keras")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / "llc").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    for path in sorted((ROOT / "backends").rglob("*.py")):
        parts = ("llc", "backends", *path.relative_to(ROOT / "backends").with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The llc modules ``name`` imports, lazy and TYPE_CHECKING imports included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
                elif target in modules:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    described = [" ↔ ".join(cycle) + ": " + "; ".join(
        f"{member} → {sorted(graph[member] & set(cycle))}" for member in cycle)
        for cycle in cycles]
    assert not cycles, "\n".join(described)


def test_the_cycle_finder_finds_a_lazy_cycle() -> None:
    """The checker itself: a cycle through a function-level import is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = "def f():\n    from .result import LLCResult\n"
    path = ROOT / "tests" / "_lazy_import_probe.py"
    try:
        path.write_text(source, encoding="utf-8")
        modules = {"llc.plots": path, "llc.result": path}
        assert _imports("llc.plots", path, modules) == {"llc.result"}
    finally:
        path.unlink()


def test_the_core_imports_no_framework() -> None:
    """``llc/`` never imports a deep-learning framework (the adapters in backends/ do)."""
    offenders = []
    for path in sorted((ROOT / "llc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names
                          if name.split(".")[0] in FRAMEWORKS]
    assert not offenders, offenders


#: What the engine and the samplers may import: the layers below them.
BELOW_THE_ENGINE = {"llc._backend", "llc._bias", "llc._data", "llc._errors", "llc._rng",
                    "llc._tree", "llc._validate", "llc.posterior"}


def test_the_engine_and_the_samplers_import_only_below_them() -> None:
    """``llc._engine`` (plan, programs, vectorized block, runner, warm-up tuner) and
    ``llc.samplers`` know nothing of results, diagnostics or the public API."""
    graph = _graph()
    offenders = []
    for name, imported in graph.items():
        if name.startswith("llc.samplers"):
            allowed = BELOW_THE_ENGINE | {m for m in graph if m.startswith("llc.samplers")}
        elif name.startswith("llc._engine"):
            allowed = BELOW_THE_ENGINE | {m for m in graph if m.startswith(("llc.samplers",
                                                                              "llc._engine"))}
        else:
            continue
        offenders += [f"{name} → {other}" for other in sorted(imported - allowed)]
    assert not offenders, offenders
    assert "llc._engine.runner" in graph and "llc.samplers.sgld" in graph
    assert "llc.backends.tensorflow.keras" in graph  # the adapters' subpackages are parsed
