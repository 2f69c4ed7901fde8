"""Model surgery: tools for models that already exist.

* :func:`convert` -- swap every BN layer for another kind (bnlab, torch, groupnorm, ...);
* :func:`fold` -- fold eval-mode BN into the preceding convolution / linear layer;
* :func:`precise_bn` -- exact population statistics over a data set (Wu & Johnson 2021);
* :class:`ExactBNAccumulation` -- running statistics of the full effective batch under gradient
  accumulation;
* :mod:`.interop` -- BN state to and from Keras and Flax conventions (:mod:`.conventions` holds the
  momentum and variance conversions);
* :func:`doctor` -- find BN hazards in a model.
"""

from .accumulate import ExactBNAccumulation
from .convert import TARGETS, convert, register_source, register_target
from .doctor import doctor
from .fold import fold
from .precise_bn import precise_bn

__all__ = [
    "convert",
    "register_source",
    "register_target",
    "TARGETS",
    "fold",
    "precise_bn",
    "ExactBNAccumulation",
    "doctor",
]
