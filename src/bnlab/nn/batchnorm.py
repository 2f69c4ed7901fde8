"""Drop-in BatchNorm1d/2d/3d: torch.nn's classes, with bnlab's engine in the forward.

Each layer *is* a ``torch.nn.BatchNorm1d/2d/3d`` (a subclass, as timm's ``BatchNormAct2d`` is), so
every tool that looks for batch norm with ``isinstance(m, torch.nn.modules.batchnorm._BatchNorm)``
finds it: ``torch.optim.swa_utils.update_bn``, timm's ``freeze_batch_norm_2d``, torch's
``SyncBatchNorm.convert_sync_batchnorm``, ``torch.func.replace_all_batch_norm_modules_``. torch's
base class owns the parameters, buffers, ``reset_parameters``, ``extra_repr`` and state-dict
versioning; bnlab's base replaces only the forward, which checks its input once and calls the
engine's training or eval operation (:mod:`bnlab.core.ops`). torch's forward (``F.batch_norm``) is
never called.

**Tracers.** The forward is one call of :func:`layer_forward`, which takes part in
``__torch_function__`` dispatch: ``torch.fx.symbolic_trace`` (and torchvision's
``create_feature_extractor``) record each layer as one ``call_function`` node of it, which runs the
layer -- its mode, momentum and buffers at run time -- when the traced module runs.

**TorchScript.** ``torch.jit.script`` compiles :meth:`_BatchNorm._script_forward` instead of the
eager path: the same checks, momentum logic and math (:mod:`bnlab.core.math`, the reference's torch
operations -- never torch's ``batch_norm``; the compiled kernels are not TorchScript), so a scripted
layer computes what the eager one computes, updates the running statistics and saves and loads
with ``torch.jit.save``. Variants whose training differs from plain BN (ghost, renorm, masked,
sync) refuse to be scripted with a TypeError rather than script as plain BN; frozen layers
script their eval map (:mod:`bnlab.nn.frozen`).

**Deployment graphs.** Under ``torch.export`` (``torch.compiler.is_exporting()``) the layers whose
math is plain batch norm (those TorchScript compiles: not ghost, renorm, masked or sync) record
torch's standard ``batch_norm`` operator, followed by what comes after the normalization (a fused
activation): quantization's and deployment's graph passes recognize batch norm only as torch's
(:mod:`bnlab.nn.export_graph` says which and why). The layer itself, in eager mode, under
torch.compile and in the kernels, runs bnlab's math.

**Hyperparameters** are checked when a forward uses them, as torch does: ``eps`` must be positive in
training and non-negative in eval (torch's errors and wording). bnlab is stricter in one place:
``momentum`` outside [0, 1] in training is a ValueError (torch extrapolates the running average,
which then diverges). numpy scalars are accepted wherever torch accepts them.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function_unary

from ..core import checks, ops
from ..core import math as M
from .export_graph import recorded_as, standard_forward, torch_class
from .nonfinite_guard import enable

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LazyBatchNorm1d",
    "LazyBatchNorm2d",
    "LazyBatchNorm3d",
    "_BatchNorm",
    "layer_forward",
    "refuse_fx_quantization",
]


def layer_forward(module: _BatchNorm, input: Tensor, *args) -> Tensor:
    """The forward of bnlab's batch-norm layer ``module`` on ``input`` (extra arguments: a masked
    layer's mask). A function of its own so that tracers that work by ``__torch_function__``
    (torch.fx) record one node per layer (module docstring)."""
    if has_torch_function_unary(input):
        refuse_fx_quantization(module, input)
        return handle_torch_function(layer_forward, (input,), module, input, *args)
    return module._forward(input, *args)


def refuse_fx_quantization(module: nn.Module, input) -> None:
    """A TypeError when torch's FX quantization traces ``module`` (``prepare_fx``, ``prepare_qat_fx``,
    ``fuse_fx``): its patterns match torch's batch-norm classes by exact type, so bnlab's layer would
    be left unfused, in float between quantize/dequantize pairs -- a quantized model that differs
    from torch's without an error."""
    tracer = getattr(input, "tracer", None)
    if tracer is not None and type(tracer).__module__.startswith("torch.ao.quantization"):
        raise TypeError(
            f"FX quantization matches torch's batch-norm classes only and would leave {type(module).__name__} "
            f"unfused: call bnlab.convert(model, 'torch') before prepare_fx / prepare_qat_fx"
        )


def script_check_input(input: Tensor, dims: list[int], num_features: int) -> None:
    """The input checks of a scripted layer (TorchScript), in the eager checks' words
    (``_BatchNorm._check_input_dim``, :func:`bnlab.core.checks.check_input`)."""
    if input.dim() not in dims:
        want = " or ".join([str(d) + "D" for d in dims])
        raise ValueError(f"expected {want} input (got {input.dim()}D input)")
    if input.shape[1] != num_features:
        raise ValueError(
            f"expected input with {num_features} channels in dim 1 "
            f"(got {input.shape[1]} channels, input shape {input.shape})"
        )


class _BatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""Common base of bnlab's batch-norm layers (see :class:`BatchNorm2d` for the full docs).

    A subclass of torch's ``_BatchNorm`` with torch's constructor, attributes and state. Subclasses
    set ``_input_dims`` (the accepted ``input.dim()`` values) and may override ``_normalize``
    to change how a batch is normalized while keeping the buffers, the momentum logic and
    checkpoint compatibility of this class.
    """

    nonfinite_batches_skipped: int = 0  # counted by the opt-in guard, see skip_nonfinite_updates
    _input_dims: tuple[int, ...] = ()
    __constants__ = nn.modules.batchnorm._BatchNorm.__constants__ + ["_input_dims"]
    # None: torch.jit.script compiles _script_forward; else why this class cannot be scripted
    _not_scriptable: str | None = None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        # torch takes any int (a negative one fails in torch.empty); 0 is a lazy layer's placeholder
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral) or num_features < 0:
            raise ValueError(f"expected num_features to be a non-negative int (got {num_features!r})")
        super().__init__(
            int(num_features),
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
            bias=bias,
        )

    def skip_nonfinite_updates(self, enabled: bool = True) -> _BatchNorm:
        """Off by default. When on, a training batch that would make the running statistics
        non-finite (NaN/Inf in the batch) is not counted: the buffers keep their previous values,
        ``nonfinite_batches_skipped`` counts such batches and a RuntimeWarning says so. Costs one
        host sync per training forward. See :mod:`bnlab.nn.nonfinite`. Returns ``self``."""
        enable(self, enabled)
        return self

    def statistics_input(self, input: Tensor, *args, **kwargs) -> Tensor:
        """The values this layer's batch statistics are taken over, for the arguments of one forward:
        a tensor with the channels in dim 1, statistics per channel over every other dim.

        Tools that re-estimate or record statistics from a forward pre-hook (``bnlab.precise_bn``,
        ``bnlab.adapt``, ``ExactBNAccumulation``, ``bnlab.doctor``) read this instead of the raw
        input, so a layer that leaves values out (a masked layer's padding) tells them which ones
        count. Here: the input itself."""
        return input

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in self._input_dims:
            want = " or ".join(f"{d}D" for d in self._input_dims)
            raise ValueError(f"expected {want} input (got {input.dim()}D input)")

    def _momentum_factor(self) -> float | Tensor:
        """The weight of this batch in the running average, advancing num_batches_tracked.

        momentum=None is the cumulative moving average, 1/num_batches_tracked; it stays a tensor so
        no host sync (and no graph break under torch.compile) is needed.
        """
        momentum = self.momentum
        factor: float | Tensor = 0.0 if momentum is None else momentum
        if self.training and self.track_running_stats:
            nbt = self.num_batches_tracked
            if nbt is not None:
                nbt.add_(1)
                if momentum is None:
                    rm = self.running_mean
                    factor = nbt.to(M.acc_dtype(torch.float32 if rm is None else rm.dtype)).reciprocal()
        return factor

    def _check_input(self, input: Tensor) -> None:
        """The checks of a forward's input and hyperparameters, run once per call. The per-channel
        tensors are checked where the engine inspects them anyway (:mod:`bnlab.core.dispatch`)."""
        self._check_input_dim(input)
        checks.check_input(input, self.num_features)
        checks.check_eps(self.eps, self.training)
        if self.training:
            checks.check_momentum(self.momentum)

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles this branch only
            return self._script_forward(input)
        if has_torch_function_unary(input):  # as layer_forward, without its frame
            refuse_fx_quantization(self, input)
            return handle_torch_function(layer_forward, (input,), self, input)
        return self._forward(input)

    def _forward(self, input: Tensor) -> Tensor:
        if self._not_scriptable is None and torch.compiler.is_exporting():
            return self._exported_forward(input)
        self._check_input(input)
        factor = self._momentum_factor()
        running_mean, running_var = self.running_mean, self.running_var  # read once (module attribute lookups)
        if self.training:
            # Buffers are passed only when they are to be updated (training with tracking on) or used (eval).
            if not self.track_running_stats:
                running_mean = running_var = None
            use_batch_stats = True
        else:  # batch statistics in eval when there are no buffers to use
            use_batch_stats = running_mean is None and running_var is None
        return self._normalize(input, running_mean, running_var, use_batch_stats, factor)

    def _exported_forward(self, input: Tensor) -> Tensor:
        """What ``torch.export`` records for this layer: torch's standard batch-norm operator, then
        what follows the normalization (module docstring, *Deployment graphs*)."""
        self._check_input(input)
        with recorded_as(self, torch_class(self)):  # for quantizers that match torch's class by name
            y = standard_forward(self, input)
        return self._exported_activation(y)

    def _exported_activation(self, y: Tensor) -> Tensor:
        """What :meth:`_exported_forward` records after the normalization."""
        return self._script_activation(y)

    def _normalize(
        self,
        input: Tensor,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        use_batch_stats: bool,
        momentum: float | Tensor,
    ) -> Tensor:
        """Normalize ``input`` with batch statistics (updating the buffers given) or the buffers."""
        if use_batch_stats:
            checks.check_batch_size(input)
            return ops.train(input, self.weight, self.bias, running_mean, running_var, momentum, self.eps)[0]
        assert running_mean is not None and running_var is not None  # no batch statistics: the buffers exist
        return ops.evaluate(input, running_mean, running_var, self.weight, self.bias, self.eps)

    # --- TorchScript ---------------------------------------------------------------------------

    def __prepare_scriptable__(self) -> _BatchNorm:
        """Called by ``torch.jit.script`` before compiling: refuse what a scripted layer cannot do."""
        if self._not_scriptable is not None:
            raise TypeError(
                f"torch.jit.script: {type(self).__name__} cannot be scripted ({self._not_scriptable}); "
                f"bnlab.convert(model, 'bnlab') gives plain batch norm, which can"
            )
        if "_nonfinite_handles" in self.__dict__:
            raise TypeError(
                f"torch.jit.script: {type(self).__name__} has the non-finite guard on, which runs "
                f"Python hooks; turn it off first (layer.skip_nonfinite_updates(False))"
            )
        # TorchScript constants must be Python floats (numpy scalars are accepted in eager mode)
        self.eps = float(self.eps)
        if self.momentum is not None and not isinstance(self.momentum, float):
            self.momentum = float(self.momentum)
        return self

    def _script_forward(self, input: Tensor) -> Tensor:
        """The forward under ``torch.jit.script`` (module docstring): the eager forward's checks,
        momentum logic and math, in TorchScript-compatible torch operations."""
        script_check_input(input, list(self._input_dims), self.num_features)
        checks.check_eps_value(self.eps, self.training)
        momentum = self.momentum
        if self.training and momentum is not None:
            checks.check_momentum_value(momentum)
        factor = self._momentum_factor()
        running_mean, running_var = self.running_mean, self.running_var
        if self.training or (running_mean is None and running_var is None):
            checks.check_batch_size(input)
            mean, var = M.batch_stats(input)
            y = M.normalize(input, mean, torch.rsqrt(var + self.eps), self.weight, self.bias)
            if self.training and self.track_running_stats:
                M.update_running_stats(
                    running_mean, running_var, mean.detach(), var.detach(), M.count_per_channel(input), factor
                )
        elif running_mean is not None and running_var is not None:
            y = M.eval_normalize(input, running_mean, running_var, self.weight, self.bias, self.eps)
        else:
            raise ValueError("expected both running_mean and running_var in eval mode (got one of them None)")
        return M.output_layout(self._script_activation(y), input)

    def _script_activation(self, y: Tensor) -> Tensor:
        """What follows the normalization in :meth:`_script_forward` and :meth:`_exported_forward`
        (an activation, for BN + act)."""
        return y


_DOC = r"""Applies Batch Normalization over a {input_desc} input.

    Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
    Covariate Shift", 2015 (https://arxiv.org/abs/1502.03167).

    .. math::
        y = \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} \cdot \gamma + \beta

    The mean and standard deviation are computed per channel over {over}. :math:`\gamma` and
    :math:`\beta` are learnable vectors of shape (C,) (ones and zeros at first). In training the
    *biased* batch variance normalizes; the running variance accumulates the *unbiased* one. In
    eval the running statistics are used (batch statistics if ``track_running_stats=False``).

    .. note::
        momentum follows PyTorch's convention: the weight of the new batch,
        :math:`\hat{{x}}_{{new}} = (1 - \text{{momentum}}) \hat{{x}} + \text{{momentum}} \cdot x_t`.
        Keras' and Flax's momentum (0.99) is the decay of the old value instead.

    Args:
        num_features: number of channels C.
        eps: added to the variance for numerical stability; must be > 0. Default: 1e-5
        momentum: weight of the new batch in the running statistics, in [0, 1], or ``None`` for a
            cumulative moving average. Default: 0.1
        affine: learnable :math:`\gamma` (and :math:`\beta`). Default: ``True``
        track_running_stats: keep running statistics for eval; if ``False`` batch statistics are
            always used and the buffers are ``None``. Default: ``True``
        bias: with ``affine``, also learn :math:`\beta`. Default: ``True``

    Shape:
        - Input: {shape}
        - Output: same shape, dtype and memory format as the input

    Examples::

        >>> m = bnlab.nn.{name}(100)
        >>> output = m(torch.randn({example}))
    """


class BatchNorm1d(_BatchNorm, nn.BatchNorm1d):
    _input_dims = (2, 3)


class BatchNorm2d(_BatchNorm, nn.BatchNorm2d):
    _input_dims = (4,)


class BatchNorm3d(_BatchNorm, nn.BatchNorm3d):
    _input_dims = (5,)


class _LazyBatchNorm(nn.modules.batchnorm._LazyNormBase):
    """torch's lazy machinery (``num_features`` from the first input's dim 1, then the class becomes
    ``cls_to_become``) over bnlab's layer."""


class LazyBatchNorm1d(_LazyBatchNorm, BatchNorm1d):
    """:class:`BatchNorm1d` with ``num_features`` inferred from the first input (torch's
    ``LazyBatchNorm1d``; becomes a :class:`BatchNorm1d`)."""

    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyBatchNorm, BatchNorm2d):
    """:class:`BatchNorm2d` with ``num_features`` inferred from the first input (becomes one)."""

    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyBatchNorm, BatchNorm3d):
    """:class:`BatchNorm3d` with ``num_features`` inferred from the first input (becomes one)."""

    cls_to_become = BatchNorm3d


BatchNorm1d.__doc__ = _DOC.format(
    input_desc="2D or 3D",
    over="N (and L)",
    shape=":math:`(N, C)` or :math:`(N, C, L)`",
    name="BatchNorm1d",
    example="20, 100",
)
BatchNorm2d.__doc__ = _DOC.format(
    input_desc="4D", over="N, H, W", shape=":math:`(N, C, H, W)`", name="BatchNorm2d", example="20, 100, 35, 45"
)
BatchNorm3d.__doc__ = _DOC.format(
    input_desc="5D",
    over="N, D, H, W",
    shape=":math:`(N, C, D, H, W)`",
    name="BatchNorm3d",
    example="20, 100, 35, 45, 10",
)
