r"""Training-mode batch norm over the global batch of a process group, built on the primitives.

Per rank p with m_p values per channel (m_p may be 0)::

    (mean_p, var_p) = stats(x_p)                 local statistics (the fast kernels where they apply)
    all_gather (m_p, mean_p, M2_p) -> (P, 2C+1)  one collective
    (m, mean, M2) = Chan's combination of the P rows   (bnlab.core.math.combine_moments)
    y = normalize(x_p, mean, M2/m)

Backward: ``backward_reduce`` gives the local ``sum(dy)`` and ``sum(dy * (x - mean))``; one
all_reduce sums them over ranks; ``backward_elemt`` gives ``dx`` from the global sums divided by
the global m. The weight/bias gradients returned are the *local* ones, as in torch: data-parallel
gradient averaging (DDP) sums them, and the sum over ranks is the gradient of single-process BN on
the concatenated batch. The per-rank count travels as a float in the statistics' dtype: exact up
to 2^24 values per channel per rank in float32.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import dispatch
from . import math as M
from .backends import Backend

__all__ = ["sync_train"]


class SyncBatchNormTrain(torch.autograd.Function):
    """Returns (y, mean, biased var, global count); only y is differentiable."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight,
        bias,
        running_mean,
        running_var,
        momentum,
        eps: float,
        process_group,
        world_size: int,
        backend: Backend,
    ):
        count = M.count_per_channel(x)
        mean, var = backend.stats(x)  # an empty slice: the reference's zeros
        acc = mean.dtype
        local = torch.cat([torch.tensor([float(count)], dtype=acc, device=x.device), mean, var * count])  # (2C+1,)
        gathered = torch.empty(world_size, local.numel(), dtype=acc, device=local.device)
        dist.all_gather(list(gathered.unbind(0)), local, group=process_group)
        c = x.shape[1]
        total, mean, m2 = M.combine_moments(gathered[:, 0], gathered[:, 1 : c + 1], gathered[:, c + 1 :])
        if total.item() <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {int(total.item())} "
                f"over all {world_size} processes (local input size {tuple(x.shape)})"
            )
        var = m2 / total
        y = backend.normalize(x, mean, var, weight, bias, eps, "identity", 0.0)
        if running_mean is not None or running_var is not None:
            # before the tensors are saved, where checkpointing's recompute still runs it (torch's
            # SyncBatchNorm updates inside its forward too; see the reference backend's docstring)
            backend.update_running_stats(running_mean, running_var, mean, var, int(total.item()), momentum)
        ctx.save_for_backward(x, weight, bias, mean, var, total)
        ctx.config = (eps, process_group, backend)
        ctx.mark_non_differentiable(mean, var, total)
        return y, mean, var, total

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, _dmean, _dvar, _dtotal):
        x, weight, bias, mean, var, total = ctx.saved_tensors
        eps, process_group, backend = ctx.config
        backend = dispatch.select_backward(backend, dy, x)
        sum_dy, sum_dy_xmu = backend.backward_reduce(dy, x, weight, bias, mean, var, eps, "identity", 0.0)
        invstd = torch.rsqrt(var + eps)
        dweight, dbias = M.param_grads(sum_dy, sum_dy_xmu, invstd, weight, bias)  # local, as torch
        dx = None
        if ctx.needs_input_grad[0]:
            # Every rank must join this collective, including those with an empty slice.
            sums = torch.cat([sum_dy, sum_dy_xmu])  # (2C,)
            dist.all_reduce(sums, group=process_group)
            g_dy, g_dy_xmu = sums.chunk(2)
            dx = backend.backward_elemt(
                dy, x, weight, bias, mean, var, eps, "identity", 0.0, g_dy / total, g_dy_xmu / total
            )
        return (
            dx,
            dweight if ctx.needs_input_grad[1] else None,
            dbias if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def sync_train(
    x: Tensor, weight, bias, running_mean, running_var, momentum, eps: float, process_group, world_size: int
) -> Tensor:
    """Training-mode batch norm with the statistics of the whole group; updates the running
    statistics (when given) with the global batch's. Arguments checked by the caller."""
    backend = dispatch.select(x, weight, bias, running_mean, running_var)
    return SyncBatchNormTrain.apply(
        x, weight, bias, running_mean, running_var, momentum, eps, process_group, world_size, backend
    )[0]
