"""Real models for the ecosystem tests: torchvision and timm, random weights, nothing downloaded.

torchvision's wheel from PyPI is built against CUDA torch: its compiled operators cannot load with
the CPU torch pinned here, and its import then fails registering fakes for ``torchvision::nms``
and ``torchvision::qnms``. :func:`import_torchvision` defines those two operator schemas (no
kernels) when they are missing, which is all the import needs; the models, ``ops.FrozenBatchNorm2d``
and the feature extractor are plain Python. Calling ``torchvision.ops.nms`` would still fail.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch

_schemas = []


def import_torchvision():
    """torchvision, importable with the CPU torch (module docstring); skips the test if it is absent."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is a test dependency (pip install -e .[test])")
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err) and "torchvision::qnms" not in str(err):
            raise
    lib = torch.library.Library("torchvision", "DEF")  # kept alive: the schemas live as long as it does
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _schemas.append(lib)
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half-initialised modules
    return importlib.import_module("torchvision")


def import_timm():
    import_torchvision()  # timm imports torchvision's transforms
    return pytest.importorskip("timm")
