r"""The autograd Function of training-mode batch norm (+ activation), built on the primitives.

:class:`BatchNormTrain` computes ``y = act(BN(x))`` with batch statistics on the backend the
dispatch chose for the call, and its backward is the closed form (:mod:`bnlab.functional`'s
docstring, docs/backward.md) on the backend :func:`~bnlab.core.dispatch.select_backward` chooses.
It saves ``x`` (or, for in-place activated BN, ``y``) and the (C,) statistics: the pre-activation
and the activation's derivative are recomputed in the backward, so a fused BN + activation keeps
half the bytes of the two torch layers.

**In-place activated BN** (Rota Bulò, Porzi & Kontschieder, CVPR 2018): with ``save_output`` the
*output* is saved and ``x = (act^-1(y) - beta) / (gamma * invstd) + mean`` is recovered in the
backward; it needs an invertible activation and every gamma != 0 (the layer checks).

**Double backward**: under grad mode the backward runs on the reference backend with the batch
statistics recomputed from the saved ``x``, so the closed form is differentiated in torch ops.

**Eval mode** under autograd is :class:`BatchNormEval`: the fast backend's output, so the values
have the same bits with grad mode on or off, and the closed-form backward in torch operations
(double backward differentiates the reference's operations).

Written in the ``setup_context`` style, so torch.func transforms and torch.compile can trace it
(they get the reference backend). Its vmap rule folds the vmapped dimension into the channels, so
under ``torch.vmap`` alone the kernels still run, each member with its own statistics. **Forward-mode AD** (``jvp``) is
:class:`BatchNormTrainJvp`, the Function every call uses except under torch.compile, whose tracer
refuses Functions with a custom jvp: compiled code gets :class:`BatchNormTrain`.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from ..activations import activation_grad, invert
from . import dispatch
from . import math as M
from .backends import Backend, Running

__all__ = ["BatchNormTrain", "BatchNormTrainJvp", "BatchNormEval", "apply_train"]


def input_from_output(y: Tensor, weight, bias, mean, var, eps: float, act: str, slope: float) -> Tensor:
    """In-place ABN: x = (act^-1(y) - beta) / (gamma * invstd) + mean."""
    shape = M.channel_shape(y)
    z = invert(y.to(mean.dtype), act, slope)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(scale.dtype)
    if bias is not None:
        z = z - bias.to(z.dtype).view(shape)
    return (z / scale.view(shape) + mean.view(shape)).to(y.dtype)


class BatchNormTrain(torch.autograd.Function):
    """``(y, mean, var)`` of ``act(BN(x))``; only ``y`` is differentiable.

    Inputs: ``x, weight, bias`` (weight, bias None allowed), ``mean, var`` (None: computed from the
    batch; given: Batch Renorm's statistics, computed once by the layer), then the non-tensor
    settings ``eps, act, slope, backend, running, save_output``. ``running`` (a
    :class:`~bnlab.core.backends.Running` or None) is applied inside the forward's pass, for
    backends that fuse it.
    """

    generate_vmap_rule = False  # the vmap rule below

    @staticmethod
    def forward(
        x,
        weight,
        bias,
        mean,
        var,
        eps: float,
        act: str,
        slope: float,
        backend: Backend,
        running: Running | None,
        save_output: bool,
    ):
        if mean is None:
            return backend.forward(x, weight, bias, eps, act, slope, running)
        y = backend.normalize(x, mean, var, weight, bias, eps, act, slope)
        if running is not None:
            backend.update_running_stats(running.mean, running.var, mean, var, running.count, running.momentum)
        return y, mean.view_as(mean), var.view_as(var)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, _, _, eps, act, slope, backend, _, save_output = inputs
        y, mean, var = output
        ctx.mark_non_differentiable(mean, var)
        ctx.save_for_backward(y if save_output else x, weight, bias, mean, var)
        ctx.config = (eps, act, slope, backend, save_output)

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        saved, weight, bias, mean, var = ctx.saved_tensors
        eps, act, slope, backend, save_output = ctx.config
        if save_output:
            if torch.is_grad_enabled():
                raise RuntimeError("double backward is not supported by BatchNormAct with save_output=True")
            x = input_from_output(saved, weight, bias, mean, var, eps, act, slope)
        else:
            x = saved
        backend = dispatch.select_backward(backend, dy, x)
        if torch.is_grad_enabled():
            # Double backward: the statistics must be differentiable functions of x, so recompute
            # them from the saved input instead of using the detached forward values.
            mean, var = M.batch_stats(x)
        dx, dweight, dbias = backend.backward(dy, x, weight, bias, mean, var, eps, act, slope, ctx.needs_input_grad[:3])
        return dx, dweight, dbias, None, None, None, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, mean, var, eps, act, slope, backend, running, save_output):
        """torch.vmap's rule: the vmapped dimension folds into the channels, ``(k, N, C, *)`` ->
        ``(N, k*C, *)``, so each of the k members keeps exactly its own per-channel statistics and
        the call runs on the backend the dispatch picks for the folded tensors (the fast kernels
        when vmap is the only transform). Outputs ``(y, mean, var)`` batched in dim 0."""
        assert running is None, "a traced call updates its running statistics outside the Function"
        k = info.batch_size
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(k, *x.shape)
        n, c, rest = x.shape[1], x.shape[2], x.shape[3:]
        xf = x.movedim(0, 1).reshape(n, k * c, *rest)  # (N, k*C, *)

        def fold(t, dim):  # (C,) per member -> (k*C,)
            if t is None:
                return None
            t = t.movedim(dim, 0) if dim is not None else t.expand(k, *t.shape)
            return t.reshape(k * c)

        weight, bias, mean, var = (fold(t, d) for t, d in zip((weight, bias, mean, var), in_dims[1:5]))
        folded = dispatch.select(xf, weight, bias)
        y, mean, var = apply_train(xf, weight, bias, mean, var, eps, act, slope, folded, None, save_output)
        y = y.view(n, k, c, *rest).movedim(1, 0)  # (k, N, C, *)
        return (y, mean.view(k, c), var.view(k, c)), (0, 0, 0)


class BatchNormTrainJvp(BatchNormTrain):
    """:class:`BatchNormTrain` with forward-mode AD (``torch.autograd.forward_ad``, ``torch.func.jvp``)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        BatchNormTrain.setup_context(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], inputs[2], output[1], output[2])
        ctx.batch_stats = inputs[3] is None  # the statistics are functions of x (else given constants)

    @staticmethod
    def jvp(ctx, dx, dweight, dbias, _dmean, _dvar, *_):
        """Forward-mode derivative, in torch operations on the saved tensors (any backend's forward):
        with xhat = (x - mean) * invstd over the batch, dxhat = invstd * (dx - E[dx] - xhat * E[dx * xhat])
        (only invstd * dx for given statistics), dz = w * dxhat + dw * xhat + db, dy = act'(z) * dz."""
        x, weight, bias, mean, var = ctx.saved_tensors
        eps, act, slope, _, _ = ctx.config
        shape = M.channel_shape(x)
        dims = M.reduce_dims(x)
        acc = mean.dtype
        invstd = torch.rsqrt(var + eps).view(shape)
        xhat = (x.to(acc) - mean.view(shape)) * invstd
        dz = torch.zeros_like(xhat)
        if dx is not None:
            dxa = dx.to(acc)
            if ctx.batch_stats:
                dxa = dxa - dxa.mean(dims, keepdim=True) - xhat * (dxa * xhat).mean(dims, keepdim=True)
            dz = dxa * invstd * (1.0 if weight is None else weight.to(acc).view(shape))
        if dweight is not None:
            dz = dz + xhat * dweight.to(acc).view(shape)
        if dbias is not None:
            dz = dz + dbias.to(acc).view(shape)
        if act != "identity":
            z = xhat * (1.0 if weight is None else weight.to(acc).view(shape))
            z = z if bias is None else z + bias.to(acc).view(shape)
            dz = activation_grad(dz, z, act, slope)
        return dz.to(x.dtype), None, None


# torch.autograd.Function.apply binds its arguments with inspect.signature on every call (about
# 15 us, more than a small batch's whole normalization). The C-level apply underneath does the
# same work without it; it is used when no tracer is active (the dispatch said so), where the
# standard apply (which tracers need) runs instead.
_base_apply = super(torch.autograd.Function, BatchNormTrain).apply
_base_apply_jvp = super(torch.autograd.Function, BatchNormTrainJvp).apply


def apply_train(
    x: Tensor,
    weight,
    bias,
    mean,
    var,
    eps: float,
    act: str,
    slope: float,
    backend: Backend,
    running: Running | None,
    save_output: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``BatchNormTrainJvp.apply`` with the arguments above, minus the signature binding when
    untraced; :class:`BatchNormTrain` (no jvp) under torch.compile, and untraced outside a
    forward-AD dual level (``torch.autograd.forward_ad.dual_level``, which every tangent needs)."""
    if not backend.traced:
        # Outside a dual level no tensor has a tangent, so the jvp class's extra saving (about 2 us
        # a call) is skipped; torch.func.jvp runs traced (the dispatch's rule 2), below.
        apply = _base_apply_jvp if _forward_ad._current_level >= 0 else _base_apply
    else:
        apply = BatchNormTrain.apply if torch.compiler.is_compiling() else BatchNormTrainJvp.apply
    return apply(x, weight, bias, mean, var, eps, act, slope, backend, running, save_output)


class BatchNormEval(torch.autograd.Function):
    """``act(x * scale + shift)`` with the running statistics, from a fast backend's kernel, for a
    forward that autograd records.

    The output is the backend's, bit for bit what the same call gives under ``no_grad``. The
    backward is eval-mode BN's closed form in torch operations (:func:`_eval_grads`: an affine map
    of ``x`` with constant statistics). Under grad mode (double backward) it recomputes the
    reference's eval (``Reference.eval`` in :mod:`bnlab.core.backends.reference`) from the saved
    tensors, in their graph, and differentiates that.
    Inputs: ``x, running_mean, running_var, weight, bias`` (weight, bias None allowed), then
    ``eps, act, slope, backend``.
    """

    @staticmethod
    def forward(x, running_mean, running_var, weight, bias, eps: float, act: str, slope: float, backend: Backend):
        return backend.eval(x, running_mean, running_var, weight, bias, eps, act, slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, running_mean, running_var, weight, bias, eps, act, slope, _ = inputs
        ctx.save_for_backward(x, running_mean, running_var, weight, bias)
        ctx.config = (eps, act, slope)

    @staticmethod
    def backward(ctx, dy):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        if torch.is_grad_enabled():  # double backward: differentiate the reference in the saved tensors' graph
            wanted = [i for i, need in enumerate(needs) if need]
            with torch.enable_grad():
                y = dispatch.REFERENCE.eval(*saved, *ctx.config)
                grads = torch.autograd.grad(y, [saved[i] for i in wanted], dy, create_graph=True)
            out = [None] * 9
            for i, g in zip(wanted, grads):
                out[i] = g
            return tuple(out)
        return (*_eval_grads(dy, *saved, *ctx.config, needs), None, None, None, None)


def _eval_grads(dy, x, running_mean, running_var, weight, bias, eps: float, act: str, slope: float, needs):
    """The gradients of ``act(x * scale + shift)`` (eval-mode BN) in closed form, each None where not
    needed: with ``invstd = 1/sqrt(running_var + eps)``, ``scale = weight * invstd`` and ``g = dy *
    act'(z)``: ``dx = g * scale``, ``dweight = sum(g * (x - running_mean)) * invstd``, ``dbias =
    sum(g)``, ``drunning_mean = -sum(g) * scale``, ``drunning_var = -sum(g * (x - running_mean)) *
    weight * invstd^3 / 2`` (sums over every dim but the channels)."""
    acc = M.acc_dtype(x.dtype)
    shape = M.channel_shape(x)
    dims = M.reduce_dims(x)
    invstd = torch.rsqrt(running_var.to(acc) + eps)
    scale = invstd if weight is None else invstd * weight.to(acc)
    g = dy
    if act != "identity":
        g = activation_grad(dy, M.eval_normalize(x, running_mean, running_var, weight, bias, eps), act, slope)
    g = g.to(acc)
    dx = (g * scale.view(shape)).to(x.dtype) if needs[0] else None
    sum_g = g.sum(dims) if needs[1] or needs[2] or needs[3] or needs[4] else None
    sum_gxmu = None
    if needs[2] or needs[3]:  # sum(g * x) - running_mean * sum(g): what autograd of x * scale + shift forms
        sum_gxmu = (g * x.to(acc)).sum(dims) - running_mean.to(acc) * sum_g
    # each is None only where no output below needs it
    sum_g, sum_gxmu = cast(Tensor, sum_g), cast(Tensor, sum_gxmu)
    drm = (-sum_g * scale).to(running_mean.dtype) if needs[1] else None
    drv = None
    if needs[2]:
        drv = (-0.5 * sum_gxmu * invstd**3 * (1.0 if weight is None else weight.to(acc))).to(running_var.dtype)
    dw = (sum_gxmu * invstd).to(weight.dtype) if needs[3] else None
    db = sum_g.to(bias.dtype) if needs[4] else None
    return dx, drm, drv, dw, db
