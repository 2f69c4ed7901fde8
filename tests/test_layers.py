"""The engine's layers import downward only (bnlab.core's docstring states the order).

Read from the source with ``ast``: every ``import`` / ``from ... import`` of a bnlab module must name
a module of a lower layer, or one of the same package on the same layer (the backends share their
interface module; the layers share their base class). No cycles, no upward imports.
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
    "bnlab.kernels": 0,  # the compiled kernels: a leaf library
    "bnlab.activations": 0,
    "bnlab.core.math": 0,
    "bnlab.core.checks": 0,
    "bnlab.core.backends": 1,
    "bnlab.core.dispatch": 2,
    "bnlab.core.autograd": 3,
    "bnlab.core.ops": 4,
    "bnlab.core.sync": 4,
    "bnlab.functional": 5,
    "bnlab.nn": 5,
}


def layer_of(module: str) -> tuple[str, int] | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
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
        if layer_of(name):
            yield name, path


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_each_module_imports_only_lower_layers(module, path):
    prefix, layer = layer_of(module)
    for target in bnlab_imports(path, module):
        found = layer_of(target)
        assert found is not None, f"{module} imports {target}, which is above the engine (not in LAYERS)"
        target_prefix, target_layer = found
        same_package = target_prefix == prefix
        assert target_layer < layer or same_package, (
            f"{module} (layer {layer}) imports {target} (layer {target_layer}): imports go downward only"
        )


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
