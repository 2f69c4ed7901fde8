r"""Ghost batch normalization: batch statistics per small "ghost" batch inside a large batch.

Hoffer, Hubara & Soudry, "Train longer, generalize better: closing the generalization gap in large
batch training of neural networks", NeurIPS 2017 (https://arxiv.org/abs/1705.08741), Algorithm 1.

A batch of N samples is split into consecutive ghost batches of ``virtual_batch_size`` samples;
each is normalized with its *own* mean and biased variance, as plain BN would normalize it alone:

.. math::
    y_i = \frac{x_i - \mu_{g(i)}}{\sqrt{\sigma^2_{g(i)} + \epsilon}} \gamma + \beta

**Batches not divisible by the ghost size.** With ``G = max(1, N // virtual_batch_size)`` ghosts,
the first ``G - 1`` hold ``virtual_batch_size`` samples each and the last holds the rest,
``virtual_batch_size + N mod virtual_batch_size`` samples (all N if N < virtual_batch_size).
Folding the remainder into the last ghost, rather than making a ghost of the few left over, means
no ghost is ever smaller than ``virtual_batch_size`` (or N), so no ghost normalizes with the noisy
statistics of one or two samples. Example: N = 10, size 4 -> ghosts of 4 and 6.

**Running statistics.** Updated once per forward, with the statistics of the whole batch,
unbiased variance and PyTorch's momentum (the weight of the new batch) -- so ``momentum`` keeps
its per-step meaning and the population statistics are those plain BN would track on the same
batches. (Algorithm 1 of the paper instead applies the moving average once per ghost.) Eval uses
them like BN; with ``track_running_stats=False`` eval normalizes per ghost too. The whole batch's
statistics take one pass of their own (without autograd) *before* the ghosts are normalized: an
update after the normalization would come after the layer's last saved tensor, where activation
checkpointing's recompute stops (``torch.utils.checkpoint``'s early stop), so the recompute would
count the batch in ``num_batches_tracked`` without updating the statistics.

Vectorised: the equal-size ghosts are moved into the channel dimension, ``(G*v, C, *)`` ->
``(v, G*C, *)``, and normalized in one call of the BN core with the affine parameters tiled G times
(their gradients are summed back over the ghosts in a fixed tree of elementwise adds); at most one
more call handles an enlarged last ghost. There is no Python loop over ghosts in the forward.
Channels-last input (4D or 5D) is moved within its own memory, ``(G*v, *, C)`` -> ``(v, *, G*C)``,
so the output is channels-last as well.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import checks, ops
from ..core import math as M
from .batchnorm import _BatchNorm

__all__ = ["GhostBatchNorm1d", "GhostBatchNorm2d", "GhostBatchNorm3d"]


def ghost_sizes(n: int, virtual_batch_size: int) -> list[int]:
    """The ghost batch sizes for a batch of ``n`` samples (the rule in the module docstring)."""
    g = max(1, n // virtual_batch_size)
    return [virtual_batch_size] * (g - 1) + [n - (g - 1) * virtual_batch_size]


class _Tile(torch.autograd.Function):
    """``p.repeat(g)`` for the ghosts' affine parameters, whose backward sums the g gradients by
    elementwise adds of halves (a fixed tree), so a channel's gradient has the same bits at any
    position among the channels. ``repeat``'s own backward, ``sum(0)`` over (g, C), does not: its
    vectorized reduction sums the channels of its tail lanes in another order, which would make a
    seed's result depend on its slot among the k*C channels of a seed group (bnlab.train.grouped)."""

    generate_vmap_rule = True  # torch.func transforms run it per sample

    @staticmethod
    def forward(p: Tensor, g: int) -> Tensor:
        return p.repeat(g)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.g = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        rows = grad.reshape(ctx.g, -1)  # (G, C)
        while rows.shape[0] > 1:
            half = rows.shape[0] // 2
            summed = rows[:half] + rows[half : 2 * half]
            rows = torch.cat([summed, rows[2 * half :]]) if rows.shape[0] % 2 else summed
        return rows[0], None


class _GhostBatchNorm(_BatchNorm):
    _not_scriptable = "its statistics are per ghost batch"

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int):
            raise TypeError(f"expected an int virtual_batch_size (got {type(virtual_batch_size).__name__})")
        if virtual_batch_size <= 0:
            raise ValueError(f"expected virtual_batch_size > 0 (got {virtual_batch_size})")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.virtual_batch_size = virtual_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum) -> Tensor:
        if not use_batch_stats:
            return super()._normalize(input, running_mean, running_var, use_batch_stats, momentum)
        v = self.virtual_batch_size
        sizes = ghost_sizes(input.shape[0], v)
        n_equal = len(sizes) - 1 if sizes[-1] != v else len(sizes)  # ghosts of exactly v samples
        if running_mean is not None or running_var is not None:
            with torch.no_grad():
                mean, var = ops.stats(input)
            ops.update_running_stats(running_mean, running_var, mean, var, M.count_per_channel(input), momentum)
        parts = []  # the outputs of the equal ghosts, then of an enlarged last ghost
        if n_equal:
            parts.append(self._equal_ghosts(input[: n_equal * v], n_equal))
        if n_equal < len(sizes):
            last = input[n_equal * v :]
            checks.check_batch_size(last)
            parts.append(ops.train(last, self.weight, self.bias, None, None, 0.0, self.eps)[0])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _equal_ghosts(self, x: Tensor, g: int) -> Tensor:
        """Normalize ``g`` ghosts of equal size in one call: ghosts become channel groups."""
        n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
        v = n // g
        # Channels-last memory (N, *, C) stays channels-last: the ghosts move next to the channels
        # there, so the core gets the layout it was given and the output keeps the input's (a
        # contiguous output would make the next elementwise layer and its backward mix layouts).
        last = x.dim() in (4, 5) and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()
        if last:
            xl = x.movedim(1, -1).reshape(g, v, *spatial, c)  # (G, v, *, C), a view
            xg = xl.movedim(0, -2).reshape(v, *spatial, g * c).movedim(-1, 1)  # (v, G*C, *) channels-last
        else:
            xg = x.reshape(g, v, c, *spatial).transpose(0, 1).reshape(v, g * c, *spatial)  # (v, G*C, *)
        checks.check_batch_size(xg)
        weight = None if self.weight is None else _Tile.apply(self.weight, g)
        bias = None if self.bias is None else _Tile.apply(self.bias, g)
        yg = ops.train(xg, weight, bias, None, None, 0.0, self.eps)[0]
        if last:
            yl = yg.movedim(1, -1).reshape(v, *spatial, g, c).movedim(-2, 0)  # (G, v, *, C)
            return yl.reshape(n, *spatial, c).movedim(-1, 1)  # (N, C, *) channels-last
        return yg.reshape(v, g, c, *spatial).transpose(0, 1).reshape(n, c, *spatial)  # (N, C, *)


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    """Ghost BN over (N, C) or (N, C, L) input; see :mod:`bnlab.nn.ghost` for the math and rules.

    Args:
        num_features: channels C.
        virtual_batch_size: samples per ghost batch, > 0.
        eps, momentum, affine, track_running_stats, bias: as :class:`bnlab.nn.BatchNorm1d`
            (momentum is the weight of the new batch; default 0.1; eps default 1e-5).

    Examples::

        >>> m = bnlab.nn.GhostBatchNorm1d(100, virtual_batch_size=32)
        >>> y = m(torch.randn(256, 100))   # 8 ghosts of 32
    """

    _input_dims = (2, 3)


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    """Ghost BN over (N, C, H, W) input; see :class:`GhostBatchNorm1d` and :mod:`bnlab.nn.ghost`."""

    _input_dims = (4,)


class GhostBatchNorm3d(_GhostBatchNorm, nn.BatchNorm3d):
    """Ghost BN over (N, C, D, H, W) input; see :class:`GhostBatchNorm1d` and :mod:`bnlab.nn.ghost`."""

    _input_dims = (5,)
