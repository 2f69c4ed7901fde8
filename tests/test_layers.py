"""bnlab's layers import downward only (bnlab.core's docstring states the engine's order).

Read from the source with ``ast``: every ``import`` / ``from ... import`` of a bnlab module, at the
top of a file or inside a function, must name a module of a lower layer, or one of the same package
on the same layer (the backends share their interface module; the layers share their base class).
And no module imports itself back through others: no import circles anywhere in the package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import bnlab

ROOT = Path(bnlab.__file__).parent

# module (or package prefix) -> layer, bottom first
LAYERS = {
    "bnlab.core": 0,  # the package's __init__, which imports nothing
    "bnlab.kernels": 0,  # the compiled kernels: a leaf library
    "bnlab.activations": 0,
    "bnlab.core.math": 0,
    "bnlab.core.checks": 0,
    "bnlab.core.backends": 1,
    "bnlab.core.dispatch": 2,
    "bnlab.core.autograd": 3,
    "bnlab.core.ops": 4,
    "bnlab.core.fused": 4,  # batch_norm_add_act: an op beside ops, on the dispatch and its backends
    "bnlab.core.sync": 4,
    "bnlab.functional": 5,
    "bnlab.nn": 5,
    # the library above the engine, then the lab
    "bnlab.extras": 0,  # which lab modules need the lab's extras: imports nothing of bnlab
    "bnlab.scratch": 0,  # batch norm written in plain torch, the independent reference
    "bnlab.data": 0,
    "bnlab.surgery": 6,
    "bnlab.models": 6,
    "bnlab.check": 6,
    "bnlab.adaptation": 7,
    "bnlab": 8,  # the package's __init__ only (see layer_of)
    "bnlab.report.progress": 9,  # the progress display the experiments' CLI shares with the report
    "bnlab.train": 9,
    "bnlab.demos": 9,
    "bnlab.experiments": 10,
    "bnlab.bench": 10,
    "bnlab.report": 11,
    "bnlab.cli": 12,
    "bnlab.__main__": 13,
}


def layer_of(module: str) -> tuple[str, int] | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or (prefix != "bnlab" and module.startswith(prefix + ".")):
            return prefix, LAYERS[prefix]
    return None


def is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def bnlab_imports(path: Path, module: str) -> list[str]:
    """The bnlab modules ``path`` imports, resolved to absolute names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("bnlab")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("bnlab"):
                continue
            # "from .core import ops" names a module; "from .core.math import x" names x in a module
            found += [f"{target}.{a.name}" if is_module(f"{target}.{a.name}") else target for a in node.names]
    return found


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, path


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_each_module_imports_only_lower_layers(module, path):
    assert layer_of(module) is not None, f"{module} has no layer: give it one in LAYERS"
    prefix, layer = layer_of(module)
    for target in bnlab_imports(path, module):
        found = layer_of(target)
        assert found is not None, f"{module} imports {target}, which has no layer (not in LAYERS)"
        target_prefix, target_layer = found
        same_package = target_prefix == prefix
        assert target_layer < layer or same_package, (
            f"{module} (layer {layer}) imports {target} (layer {target_layer}): imports go downward only"
        )


def _circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, list[str]]:
    """module -> the bnlab modules it imports anywhere in its file (lazy imports in functions too)."""
    modules = dict(_modules())
    return {m: sorted({t for t in bnlab_imports(p, m) if t in modules and t != m}) for m, p in modules.items()}


def test_no_import_circles_anywhere_in_the_package():
    circles = _circles(import_graph())
    assert circles == [], "import circles (each a set of modules that import each other): " + "; ".join(
        " <-> ".join(c) for c in circles
    )


def test_the_import_graph_sees_imports_inside_functions():
    """A lazy import counts: bnlab.data.builtin imports its loaders inside ``load``."""
    graph = import_graph()
    assert {"bnlab.data.mnist1d", "bnlab.data.cifar"} <= set(graph["bnlab.data.builtin"])
    assert _circles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_the_layer_table_covers_the_engine():
    engine = [m for m, _ in _modules()]
    for name in (
        "bnlab.core.math",
        "bnlab.core.backends.numba_cpu",
        "bnlab.core.backends.reference",
        "bnlab.core.dispatch",
        "bnlab.core.autograd",
        "bnlab.core.ops",
        "bnlab.core.sync",
        "bnlab.functional",
        "bnlab.nn.sync_batchnorm",
        "bnlab.kernels.numba_cpu",
    ):
        assert name in engine


def test_the_math_layer_runs_without_loading_the_kernels():
    code = (
        "import sys, json, torch; import bnlab; from bnlab.core import math as M; "
        "M.batch_stats(torch.randn(4, 3)); "
        "print(json.dumps('numba' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False
