r"""The primitives of batch norm, as one interface that every backend implements in full.

These are what every layer is built from (torch's SyncBatchNorm is built the same way from its
``batch_norm_stats`` / ``batch_norm_elemt`` / ``batch_norm_backward_reduce`` /
``batch_norm_backward_elemt``). Conventions as in :mod:`bnlab.core.math`: ``mean`` and ``var``
(the *biased* batch variance) are (C,) in the accumulation dtype (float32 for half-type input);
``act`` names a fused activation (:data:`bnlab.activations.ACTIVATIONS`; ``"identity"`` is plain
batch norm) with ``slope`` the negative slope of ``leaky_relu``; ``g = dy * act'(z)`` is the
gradient reaching the pre-activation ``z = (x - mean) / sqrt(var + eps) * weight + bias``.

========================  ==========================================================================
primitive                 result
========================  ==========================================================================
``forward``               ``(y, mean, var)``: statistics, ``y = act(z)``, and the running-statistics
                          update when ``running`` is given -- in one pass where the backend can
``stats``                 ``(mean, var)`` of the batch
``normalize``             ``y = act(z)`` with given statistics
``backward``              ``(dx, dweight, dbias)``, each None where ``needs`` says so or the parameter
                          is None: ``dbias = sum(g)``, ``dweight = invstd * sum(g * (x - mean))``,
                          ``dx = w * invstd * (g - sum(g)/m - (x - mean) * invstd^2 * sum(g*(x-mean))/m)``
``backward_reduce``       ``(sum(g), sum(g * (x - mean)))`` per channel
``backward_elemt``        ``dx`` from given means of those two sums (global ones, for SyncBatchNorm)
``eval``                  ``y = act(x * scale + shift)`` with the running statistics
``update_running_stats``  the running-average update in place (unbiased variance, PyTorch's momentum)
========================  ==========================================================================

Every primitive gives an answer for the tensors the dispatch hands it: there is no "cannot". What a
backend does not cover the dispatch sends elsewhere (:mod:`bnlab.core.dispatch`). A backend whose
``forward`` applies ``running`` inside its own pass sets ``fuses_update``; for the others the
caller updates with ``update_running_stats`` after the forward.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["Backend", "Running"]


class Running(NamedTuple):
    """A running-statistics update to apply with the forward's batch statistics."""

    mean: Tensor | None
    var: Tensor | None
    count: int  # type: ignore[assignment]  # values per channel in the batch (the m of M2/(m-1)); shadows tuple.count
    momentum: float | Tensor  # the weight of the new batch


class Backend:
    """The interface (see the module docstring for what each primitive returns)."""

    name = "abstract"
    fuses_update = False  # forward applies ``running`` in its own pass
    traced = False  # chosen because a tracer (torch.compile, jit, torch.func) is active

    def forward(
        self,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        act: str,
        slope: float,
        running: Running | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def normalize(
        self,
        x: Tensor,
        mean: Tensor,
        var: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        act: str,
        slope: float,
    ) -> Tensor:
        raise NotImplementedError

    def backward(
        self,
        dy: Tensor,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        var: Tensor,
        eps: float,
        act: str,
        slope: float,
        needs: tuple[bool, bool, bool],
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        raise NotImplementedError

    def backward_reduce(
        self,
        dy: Tensor,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        var: Tensor,
        eps: float,
        act: str,
        slope: float,
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def backward_elemt(
        self,
        dy: Tensor,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        var: Tensor,
        eps: float,
        act: str,
        slope: float,
        mean_g: Tensor,
        mean_gxmu: Tensor,
    ) -> Tensor:
        raise NotImplementedError

    def eval(
        self,
        x: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        act: str,
        slope: float,
    ) -> Tensor:
        raise NotImplementedError

    def update_running_stats(
        self,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        mean: Tensor,
        var: Tensor,
        count: int,
        momentum: float | Tensor,
    ) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<bnlab backend {self.name}{' (traced)' if self.traced else ''}>"
