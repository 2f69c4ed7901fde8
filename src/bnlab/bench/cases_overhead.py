"""Bench rows for the cost of a call itself: ``overhead_*`` and ``lab_cnn_step``.

* ``overhead_train_fwd``, ``overhead_train_fwd_bwd``, ``overhead_eval`` -- BatchNorm2d on a
  (2, 8, 2, 2) input, where the arithmetic is negligible: the time is what a call costs in Python,
  autograd and dispatch (microseconds per call in both columns).
* ``lab_cnn_step`` -- one SGD step (forward, backward, update) of the lab's MNIST-1D CNN at batch 100
  on one thread (``bnlab train``'s setting), with torch's BatchNorm1d ("torch" column) and bnlab's
  (``--norm torch_bn`` vs ``--norm bn``); its batch norms see (100, 25, 19), (100, 25, 10) and
  (100, 25, 5). Synthetic input of MNIST-1D's shape, so no data set is loaded.

No byte model describes these (``passes`` 0): read their ratio and microseconds.
"""

from __future__ import annotations

from typing import Any

import torch

from .cases_bn import _eval, _train_fwd, _train_fwd_bwd
from .registry import Case, register

OVERHEAD_SHAPE = (2, 8, 2, 2)
_FIXED: dict[str, Any] = dict(dims=(2,), layouts=("nchw",), float32_only=True, shapes=(OVERHEAD_SHAPE,))

register("overhead_train_fwd", passes=0, **_FIXED)(_train_fwd)
register("overhead_train_fwd_bwd", passes=0, **_FIXED)(_train_fwd_bwd)
register("overhead_eval", passes=0, **_FIXED)(_eval)

LAB_THREADS = 1


def _lab_step(norm: str):
    """One training step of the lab's CNN with ``norm``, run on LAB_THREADS threads."""
    import torch.nn.functional as F

    from .. import models

    torch.manual_seed(0)
    model = models.build("cnn", norm=norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(1000, 40, generator=gen), torch.randint(0, 10, (1000,), generator=gen)
    state = {"i": 0}

    def step():
        before = torch.get_num_threads()
        torch.set_num_threads(LAB_THREADS)
        try:
            i = state["i"] = (state["i"] + 1) % 10
            loss = F.cross_entropy(model(x[i * 100 : i * 100 + 100]), y[i * 100 : i * 100 + 100])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finally:
            torch.set_num_threads(before)

    return step


@register("lab_cnn_step", passes=0, dims=(1,), layouts=("nchw",), float32_only=True, shapes=((100, 25, 20),))
def _lab_cnn_step(case: Case):
    return _lab_step("torch_bn"), _lab_step("bn"), "fast", {"threads": LAB_THREADS}
