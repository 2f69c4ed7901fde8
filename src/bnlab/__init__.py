"""bnlab: batch normalization for PyTorch from first principles.

``bnlab.core`` is the batch-norm engine (the math, the fast and reference backends, the dispatch),
``bnlab.functional`` its ``torch.nn.functional``-style interface, ``bnlab.nn`` the layers,
``bnlab.surgery`` the tools for existing models (``bnlab.convert``, ``bnlab.fold``, ``bnlab.precise_bn``,
``bnlab.ExactBNAccumulation``, ``bnlab.doctor``), ``bnlab.adaptation`` adapts BN to shifted data
(``bnlab.adapt``: AdaBN, test-time batch statistics, TENT). These need torch, numpy and numba only;
the lab (``bnlab.experiments``, ``bnlab.report``, sweeps on a Dask cluster) needs
``pip install "bnlab[lab]"``.
"""

from . import adaptation, functional, nn, surgery
from .adaptation import adapt
from .surgery import ExactBNAccumulation, convert, doctor, fold, precise_bn

__version__ = "0.1.0"
__all__ = [
    "functional",
    "nn",
    "surgery",
    "convert",
    "fold",
    "precise_bn",
    "ExactBNAccumulation",
    "doctor",
    "adaptation",
    "adapt",
    "__version__",
]
