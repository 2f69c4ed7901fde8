"""bnlab: batch normalization for PyTorch from first principles.

``bnlab.functional`` holds the math, ``bnlab.nn`` the layers, ``bnlab.surgery`` the tools for
existing models (``bnlab.convert``, ``bnlab.fold``, ``bnlab.precise_bn``,
``bnlab.ExactBNAccumulation``, ``bnlab.doctor``). These need torch, numpy and numba only; the lab
(``bnlab.experiments``, ``bnlab.report``, sweeps on a Dask cluster) needs ``pip install "bnlab[lab]"``.
"""

import sys as _sys


def _import_numba_without_scipy() -> None:
    """Import numba without letting it import scipy.

    ``import numba`` imports scipy whenever scipy is installed, only to check its version; in an
    environment with the lab installed, every process that uses the layers would then load scipy
    (and start its OpenBLAS threads). bnlab's kernels use nothing of scipy, so scipy is hidden
    for that one import and left importable afterwards.
    """
    if "numba" in _sys.modules or "scipy" in _sys.modules:
        return
    _sys.modules["scipy"] = None  # makes `import scipy` raise ImportError, which numba tolerates
    try:
        import numba  # noqa: F401
    finally:
        if _sys.modules.get("scipy", 0) is None:
            del _sys.modules["scipy"]


_import_numba_without_scipy()

from . import functional, nn, surgery  # noqa: E402
from .surgery import ExactBNAccumulation, convert, doctor, fold, precise_bn  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "functional", "nn", "surgery", "convert", "fold", "precise_bn", "ExactBNAccumulation", "doctor", "__version__",
]
