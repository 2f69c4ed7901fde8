"""Drop-in BatchNorm1d/2d/3d: torch.nn's constructor, names, state_dict and behaviour.

One base class owns parameters, buffers, ``reset_parameters``, ``extra_repr`` and state-dict
versioning; the 1d/2d/3d classes differ only in the number of dimensions they accept. A forward
checks its input once and calls the engine's training or eval operation (:mod:`bnlab.core.ops`),
which runs the batch-norm primitives on the backend the dispatch picks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import checks, ops
from ..core.math import acc_dtype

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "_BatchNorm"]


class _BatchNorm(nn.Module):
    r"""Common base of bnlab's batch-norm layers (see :class:`BatchNorm2d` for the full docs).

    Subclasses set ``_input_dims`` (the accepted ``input.dim()`` values) and may override
    :meth:`_normalize` to change how a batch is normalized while keeping the buffers, the momentum
    logic and checkpoint compatibility of this class.
    """

    _version = 2  # version 2 added num_batches_tracked, as in torch
    nonfinite_batches_skipped: int = 0  # counted by the opt-in guard, see skip_nonfinite_updates
    _input_dims: tuple[int, ...] = ()
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine"]

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
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"expected num_features to be a positive int (got {num_features!r})")
        checks.check_hyperparameters(eps, momentum)
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )

    def skip_nonfinite_updates(self, enabled: bool = True) -> "_BatchNorm":
        """Off by default. When on, a training batch that would make the running statistics
        non-finite (NaN/Inf in the batch) is not counted: the buffers keep their previous values,
        ``nonfinite_batches_skipped`` counts such batches and a RuntimeWarning says so. Costs one
        host sync per training forward. See :mod:`bnlab.nn.nonfinite`. Returns ``self``."""
        from .nonfinite import enable

        enable(self, enabled)
        return self

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in self._input_dims:
            want = " or ".join(f"{d}D" for d in self._input_dims)
            raise ValueError(f"expected {want} input (got {input.dim()}D input)")

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            # Checkpoints older than version 2 have no num_batches_tracked: start it at 0 as torch does.
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                nbt = self.num_batches_tracked
                keep = nbt is not None and nbt.device != torch.device("meta")
                state_dict[key] = nbt if keep else torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _momentum_factor(self) -> float | Tensor:
        """The weight of this batch in the running average, advancing num_batches_tracked.

        momentum=None is the cumulative moving average, 1/num_batches_tracked; it stays a tensor so
        no host sync (and no graph break under torch.compile) is needed.
        """
        factor: float | Tensor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                nbt = self.num_batches_tracked.to(acc_dtype(self.running_mean.dtype))
                factor = nbt.reciprocal()
        return factor

    def _check_input(self, input: Tensor) -> None:
        """Every check of a forward's input, run once per call (nothing below checks again)."""
        self._check_input_dim(input)
        checks.check_input(input, self.num_features)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)
        factor = self._momentum_factor()
        # Batch statistics in training, and in eval when there are no buffers to use.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # Buffers are passed only when they are to be updated (training with tracking on) or used (eval).
        pass_buffers = not self.training or self.track_running_stats
        return self._normalize(
            input,
            self.running_mean if pass_buffers else None,
            self.running_var if pass_buffers else None,
            use_batch_stats,
            factor,
        )

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
        return ops.evaluate(input, running_mean, running_var, self.weight, self.bias, self.eps)


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


class BatchNorm1d(_BatchNorm):
    _input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _input_dims = (4,)


class BatchNorm3d(_BatchNorm):
    _input_dims = (5,)


BatchNorm1d.__doc__ = _DOC.format(
    input_desc="2D or 3D", over="N (and L)", shape=":math:`(N, C)` or :math:`(N, C, L)`",
    name="BatchNorm1d", example="20, 100",
)
BatchNorm2d.__doc__ = _DOC.format(
    input_desc="4D", over="N, H, W", shape=":math:`(N, C, H, W)`", name="BatchNorm2d", example="20, 100, 35, 45"
)
BatchNorm3d.__doc__ = _DOC.format(
    input_desc="5D", over="N, D, H, W", shape=":math:`(N, C, D, H, W)`", name="BatchNorm3d",
    example="20, 100, 35, 45, 10",
)
