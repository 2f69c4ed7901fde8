"""The modules whose ``__all__`` is bnlab's public API, read by the site's build (docs/conf.py) and by
tests/test_docs_site.py: every name they export must be in the API reference, with a docstring.

``bnlab.kernels`` (the compiled numba kernels) and ``bnlab.core.backends.numba_cpu`` are not here:
they are the engine's implementation, reached through :mod:`bnlab.core.dispatch`, and documented in
the reference's engine page as modules, not name by name.
"""

from __future__ import annotations

import importlib

PUBLIC_MODULES = [
    "bnlab",
    "bnlab.functional",
    "bnlab.nn",
    "bnlab.nn.batchnorm",
    "bnlab.nn.renorm",
    "bnlab.nn.swap",
    "bnlab.nn.torch_fusion",
    "bnlab.nn.export_graph",
    "bnlab.surgery",
    "bnlab.surgery.conventions",
    "bnlab.surgery.convert",
    "bnlab.surgery.doctor",
    "bnlab.surgery.fold",
    "bnlab.surgery.fuse_act",
    "bnlab.surgery.graph",
    "bnlab.surgery.interop",
    "bnlab.surgery.norm_act",
    "bnlab.surgery.sources",
    "bnlab.adaptation",
    "bnlab.adaptation.stats",
    "bnlab.data",
    "bnlab.data.corruptions",
    "bnlab.models",
    "bnlab.train",
    "bnlab.train.store",
    "bnlab.train.seeds",
    "bnlab.train.views",
    "bnlab.train.grouped",
    "bnlab.experiments",
    "bnlab.report",
    "bnlab.core.math",
    "bnlab.core.checks",
    "bnlab.core.dispatch",
    "bnlab.core.ops",
    "bnlab.core.autograd",
    "bnlab.core.fused",
    "bnlab.core.sync",
    "bnlab.core.backends",
    "bnlab.core.backends.triton_gpu",
]


def public_names() -> list[tuple[str, str]]:
    """(module, name) for every name in every public module's ``__all__``."""
    out = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        out += [(module_name, name) for name in module.__all__ if name != "__version__"]
    return out
