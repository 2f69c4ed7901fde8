r"""FrozenBatchNorm: batch norm reduced to its eval-mode affine map, with nothing to train or update.

.. math::
    y = \frac{x - \mu_{run}}{\sqrt{\sigma^2_{run} + \epsilon}} \gamma + \beta

The layer used when fine-tuning detectors with small per-device batches (He et al., "Mask R-CNN",
2017; torchvision.ops.FrozenBatchNorm2d; Detectron2): the statistics of the pre-trained model are
kept, as are :math:`\gamma, \beta`. All four are *buffers* (no parameters: an optimizer sees
nothing; ``train()`` changes nothing), so the output is BN's eval output in every mode. Gradients
still flow to the input.

It loads a BatchNorm state_dict (torch's or bnlab's): ``num_batches_tracked`` is accepted and
dropped. ``from_batchnorm`` (a class method of each) builds one from a layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import checks, ops
from ..core import math as M
from .batchnorm import _BatchNorm, script_check_input
from .swap import swap

__all__ = ["FrozenBatchNorm1d", "FrozenBatchNorm2d", "FrozenBatchNorm3d"]


class _FrozenBatchNorm(nn.Module):
    _input_dims: tuple[int, ...] = ()
    __constants__ = ["_input_dims", "num_features", "eps"]  # noqa: RUF012 -- TorchScript's own convention

    def __init__(self, num_features: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"expected num_features to be a positive int (got {num_features!r})")
        checks.check_eps(eps, training=False)
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = float(eps)  # a Python float (numpy scalars too): a TorchScript constant
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    _check_input_dim = _BatchNorm._check_input_dim  # shared: it reads _input_dims only

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)  # a BatchNorm checkpoint's counter
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript: the eval math in torch operations (see bnlab.nn.batchnorm)
            script_check_input(input, list(self._input_dims), self.num_features)
            y = M.eval_normalize(input, self.running_mean, self.running_var, self.weight, self.bias, self.eps)
            return M.output_layout(y, input)
        self._check_input_dim(input)
        checks.check_input(input, self.num_features)
        return ops.evaluate(input, self.running_mean, self.running_var, self.weight, self.bias, self.eps)

    @classmethod
    def from_batchnorm(cls, bn: nn.Module) -> _FrozenBatchNorm:
        """``bn`` (bnlab or torch batch norm) frozen: its eval map, device and dtype.

        The frozen layer holds ``bn``'s own tensors (gamma and beta detached, as buffers), as every
        bnlab conversion does (:mod:`bnlab.nn.swap`); ``affine=False`` layers freeze with gamma = 1,
        beta = 0. Layers without running statistics have nothing to freeze and are refused.
        """
        if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
            raise ValueError(
                f"expected a batch-norm layer with running statistics (got {type(bn).__name__} "
                f"with track_running_stats=False or no buffers)"
            )
        return swap(bn, cls(bn.num_features, bn.eps, device="meta"))


class FrozenBatchNorm1d(_FrozenBatchNorm):
    """Frozen BN over (N, C) or (N, C, L) input (see :mod:`bnlab.nn.frozen`).

    Args:
        num_features: channels C.
        eps: added to the running variance; > 0. Default: 1e-5

    Examples::

        >>> frozen = bnlab.nn.FrozenBatchNorm1d.from_batchnorm(trained_bn)
    """

    _input_dims = (2, 3)


class FrozenBatchNorm2d(_FrozenBatchNorm):
    """Frozen BN over (N, C, H, W) input (see :class:`FrozenBatchNorm1d`, :mod:`bnlab.nn.frozen`)."""

    _input_dims = (4,)


class FrozenBatchNorm3d(_FrozenBatchNorm):
    """Frozen BN over (N, C, D, H, W) input (see :class:`FrozenBatchNorm1d`, :mod:`bnlab.nn.frozen`)."""

    _input_dims = (5,)
