"""What the optional ``lab`` extra brings, and the message when it is missing.

``pip install bnlab`` installs the library (layers, functional, kernels, surgery: torch, numpy,
numba); ``pip install "bnlab[lab]"`` adds what the experiments, the report and distributed sweeps
import. Those modules import their dependencies where they use them, so the library never loads
them; a lab command run without them ends in :func:`missing_lab_module`'s one line.
"""

from __future__ import annotations

# top-level module -> the distribution the lab extra installs for it
LAB_MODULES = {
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "mnist1d": "mnist1d",
    "dask": "dask[distributed]",
    "distributed": "dask[distributed]",
}
INSTALL_HINT = 'pip install "bnlab[lab]"'


def missing_lab_module(error: BaseException) -> str | None:
    """The message for an ImportError of a lab dependency, or None for any other error."""
    if not isinstance(error, ImportError):
        return None
    top = (error.name or "").partition(".")[0]
    if top not in LAB_MODULES:
        return None
    return (
        f"this needs {LAB_MODULES[top]} (module {top!r} is not installed), which comes with bnlab's lab "
        f"extra: {INSTALL_HINT}"
    )
