"""Small measured demonstrations the report shows next to the experiments: seconds, not sweeps.

* :mod:`.parity` -- the from-scratch module (:mod:`bnlab.scratch`) against ``torch.nn.BatchNorm2d``;
* :mod:`.pitfalls` -- the train/eval pitfalls on a trained MNIST-1D CNN: forgetting ``model.eval()``,
  a batch of one, a small last batch, momentum conventions across frameworks, fine-tuning with BN;
* :mod:`.diagnostics` -- a saturating tanh network with and without BN: activations per layer,
  their saturation, gradient-to-data ratios.

:func:`run` measures them all and returns one JSON-able dict (results.json's "demos").
"""

from __future__ import annotations

import time
from typing import Any


def run() -> dict[str, Any]:
    """Every demo, measured now (CPU, seeded, one thread: these models are too small to gain from
    more, and a second thread spins against other processes on a shared machine):
    {"parity", "pitfalls", "diagnostics", "seconds"}."""
    import torch

    from . import diagnostics, parity, pitfalls

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        out: dict[str, Any] = {"parity": parity.run(), "pitfalls": pitfalls.run(), "diagnostics": diagnostics.run()}
        out["seconds"] = round(time.perf_counter() - start, 2)
    finally:
        torch.set_num_threads(threads)
    return out
