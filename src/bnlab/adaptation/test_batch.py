r"""Test-time batch statistics: BN layers normalize with the statistics of the batch they see.

Nado et al., "Evaluating Prediction-Time Batch Normalization for Robustness under Covariate
Shift", 2020 (https://arxiv.org/abs/2006.10963), and Schneider et al., "Improving robustness
against common corruptions by covariate shift adaptation", NeurIPS 2020
(https://arxiv.org/abs/2006.16971): under covariate shift, normalizing with the statistics of the
test batch itself -- as in training -- instead of the source (training) running statistics
recovers much of the lost accuracy. TENT's "norm" baseline is this.

Schneider et al. mix the two with a prior strength :math:`N` (a pseudo sample count for the
source statistics) for a batch of :math:`n` samples:

.. math::
    \bar\mu = \frac{N}{N+n}\,\mu_s + \frac{n}{N+n}\,\mu_t, \qquad
    \bar\sigma^2 = \frac{N}{N+n}\,\sigma_s^2 + \frac{n}{N+n}\,\sigma_t^2

with :math:`\mu_s, \sigma_s^2` the layer's running statistics and :math:`\mu_t, \sigma_t^2` the
batch's per-channel mean and *biased* variance (what BN training normalizes with), so ``prior=0``
is the batch alone and ``prior=inf`` the source statistics alone.

Two mechanisms, both leaving the stored statistics untouched:

* ``prior=None``: each BN layer runs its own training-mode normalization without tracking
  (``track_running_stats=False`` and the running buffers detached for the duration, as TENT's
  reference code does), in train and eval mode alike. Gradients flow through the batch statistics,
  exactly as in training; variants keep their training behaviour (ghost BN normalizes per ghost
  batch; SyncBatchNorm in training mode inside a process group uses the global batch).
* ``prior=N``: each BN layer runs in eval mode on the mixed statistics, which a forward pre-hook
  computes from the batch (no gradient through them; MaskedBatchNorm1d is not supported here).

Everything is restored on exit: buffers (the same tensor objects), ``track_running_stats``, modes,
hooks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import functional as F
from ..nn.masked import MaskedBatchNorm1d
from ..surgery._stats import layer_input, statistics_input
from ._layers import bn_layers

__all__ = ["TestBatchNorm", "mix_statistics"]


def mix_statistics(
    source_mean: Tensor, source_var: Tensor, batch_mean: Tensor, batch_var: Tensor, n: int, prior: float
) -> tuple[Tensor, Tensor]:
    """Schneider et al.'s mix: weight ``prior/(prior+n)`` on the source, ``n/(prior+n)`` on the batch."""
    w = 1.0 if math.isinf(prior) else prior / (prior + n)
    mean = w * source_mean.to(batch_mean.dtype) + (1 - w) * batch_mean
    var = w * source_var.to(batch_var.dtype) + (1 - w) * batch_var
    return mean, var


class TestBatchNorm:
    """Context manager: every BN layer of ``model`` normalizes with the current batch's statistics.

    Args:
        model: a model with torch or bnlab BN layers (1d/2d/3d, SyncBatchNorm, ghost, fused
            activation, masked; also after :func:`bnlab.convert`).
        prior: Schneider et al.'s prior strength ``N`` >= 0 (``float('inf')`` allowed). Default:
            ``None`` (the batch statistics alone, computed as in training).

    Example::

        with bnlab.adaptation.TestBatchNorm(model):      # or bnlab.adapt(model, method="test_batch")
            logits = model(x_target)                     # a batch of, say, 100 target samples

    Raises:
        ValueError: no BN layer (or only frozen ones), or a negative prior.
        TypeError: a Batch Renorm layer, or MaskedBatchNorm1d with a prior.
    """

    __test__ = False  # not a pytest class

    def __init__(self, model: nn.Module, prior: float | None = None) -> None:
        if prior is not None and (
            isinstance(prior, bool) or not isinstance(prior, (int, float)) or math.isnan(prior) or prior < 0
        ):
            raise ValueError(f"expected prior to be None or a number >= 0 (got {prior!r})")
        self.model, self.prior = model, prior
        self.layers = bn_layers(model, "test_batch")
        if prior is not None:
            masked = [n for n, m in self.layers if isinstance(m, MaskedBatchNorm1d)]
            if masked:
                raise TypeError(f"prior= is not supported for MaskedBatchNorm1d (at {masked[0]!r}); use prior=None")
        self._saved: list = []
        self._handles: list = []

    def __enter__(self) -> TestBatchNorm:
        if self._saved:
            raise RuntimeError("TestBatchNorm is already active (contexts do not nest)")
        for _, m in self.layers:
            self._saved.append(
                (m, m.training, m.track_running_stats, m._buffers.get("running_mean"), m._buffers.get("running_var"))
            )
        try:
            for _, m in self.layers:
                if self.prior is None or m.running_mean is None:
                    m.track_running_stats = False
                    m._buffers["running_mean"] = None  # batch statistics in train and eval mode
                    m._buffers["running_var"] = None
                else:
                    m.eval()
                    self._handles.append(m.register_forward_pre_hook(self._mix, with_kwargs=True))
                    self._handles.append(m.register_forward_hook(self._unmix))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for m, training, tracking, rm, rv in self._saved:
            m.train(training)
            m.track_running_stats = tracking
            m._buffers["running_mean"], m._buffers["running_var"] = rm, rv
            m.__dict__.pop("_bnlab_source", None)  # left by a forward that raised between the hooks
        self._saved = []

    def _mix(self, m: nn.Module, args: tuple, kwargs: dict) -> None:
        """Pre-hook: put the mixed statistics in place of the running ones for this forward (those of
        what the layer's statistics are taken over: a masked layer's valid positions)."""
        n = layer_input(m, args, kwargs).shape[0]
        with torch.no_grad():
            mean, var = F.batch_stats(statistics_input(m, args, kwargs).detach())
            assert self.prior is not None  # _mix runs only with a prior
            # a layer with a prior keeps running statistics (checked when the context starts)
            mean, var = mix_statistics(m.running_mean, m.running_var, mean, var, n, self.prior)  # type: ignore[arg-type]
        m._bnlab_source = (m._buffers["running_mean"], m._buffers["running_var"])  # type: ignore[assignment]  # plain attribute
        m._buffers["running_mean"] = mean.to(m.running_mean.dtype)  # type: ignore[arg-type]  # a BN buffer
        m._buffers["running_var"] = var.to(m.running_var.dtype)  # type: ignore[arg-type]  # a BN buffer

    @staticmethod
    def _unmix(m: nn.Module, args: tuple, output) -> None:
        m._buffers["running_mean"], m._buffers["running_var"] = m._bnlab_source  # type: ignore[misc]  # set by _mix
        del m._bnlab_source
