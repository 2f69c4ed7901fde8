"""bnlab: batch normalization for PyTorch from first principles.

``bnlab.functional`` holds the math, ``bnlab.nn`` the layers.
"""

from . import functional, nn

__version__ = "0.1.0"
__all__ = ["functional", "nn", "__version__"]
