r"""MaskedBatchNorm1d: batch norm over padded sequences, with statistics over the valid positions only.

Padding a batch of sequences to a common length L adds values that are not data; plain BN counts
them in its statistics (and so depends on how much padding a batch happens to have). With a
boolean mask (N, L), True at valid positions, the statistics of channel c are taken over the
:math:`K` valid positions only:

.. math::
    \mu_c = \frac{1}{K}\sum_{(n,l)\,\text{valid}} x_{n,c,l}, \qquad
    \sigma_c^2 = \frac{1}{K}\sum_{(n,l)\,\text{valid}} (x_{n,c,l} - \mu_c)^2

as in PowerNorm's and fairseq's masked BN for transformers (Shen et al., "PowerNorm: Rethinking
Batch Normalization in Transformers", ICML 2020). The conventions are BN's: biased variance to
normalize, the unbiased one (K/(K-1)) in the running variance, momentum the weight of the new batch.

The valid positions are gathered into a (K, C) batch and normalized by the BN core (so the values,
gradients and running statistics are *exactly* BN's on the unpadded elements), then scattered back.

**Padded outputs are 0**, in training and eval, and the gradient reaching padded inputs is 0:
padding neither influences nor receives anything. ``mask=None`` means every position is valid
(plain BatchNorm1d).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .batchnorm import _BatchNorm, layer_forward

__all__ = ["MaskedBatchNorm1d"]


class MaskedBatchNorm1d(_BatchNorm, nn.BatchNorm1d):
    """Batch norm over (N, C, L) input with a (N, L) bool mask of valid positions.

    See :mod:`bnlab.nn.masked` for the math. Same constructor as :class:`bnlab.nn.BatchNorm1d`.

    Args:
        num_features, eps, momentum, affine, track_running_stats, bias: as
            :class:`bnlab.nn.BatchNorm1d` (momentum is the weight of the new batch; default 0.1).

    Shape:
        - Input: (N, C, L); mask: (N, L), ``torch.bool``, True where the position is valid
        - Output: (N, C, L), zero at padded positions

    Examples::

        >>> m = bnlab.nn.MaskedBatchNorm1d(64)
        >>> lengths = torch.tensor([7, 3])
        >>> mask = torch.arange(7) < lengths[:, None]    # (2, 7)
        >>> y = m(torch.randn(2, 64, 7), mask)
    """

    _not_scriptable = "its forward takes a mask"

    _input_dims = (3,)

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return layer_forward(self, input, mask)

    def _forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return super()._forward(input)
        self._check_input(input)
        self._check_mask(input, mask)
        factor = self._momentum_factor()
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        pass_buffers = not self.training or self.track_running_stats
        valid = input.transpose(1, 2)[mask]  # (K, C), as statistics_input gives
        if use_batch_stats and valid.shape[0] <= 1:
            raise ValueError(
                f"expected more than 1 valid position per channel when training (got {valid.shape[0]} "
                f"in a mask of shape {tuple(mask.shape)})"
            )
        y_valid = self._normalize(
            valid,
            self.running_mean if pass_buffers else None,
            self.running_var if pass_buffers else None,
            use_batch_stats,
            factor,
        )
        out = input.new_zeros(input.shape)  # (N, C, L): padded positions stay 0
        out.transpose(1, 2)[mask] = y_valid
        return out

    def statistics_input(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        """The valid positions as a (K, C) batch (the input itself without a mask): what the
        statistics are taken over, for tools that re-estimate them (see the base class)."""
        if mask is None:
            return input
        self._check_input(input)
        self._check_mask(input, mask)
        return input.transpose(1, 2)[mask]  # (K, C)

    @staticmethod
    def _check_mask(input: Tensor, mask: Tensor) -> None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"expected mask to be a torch.Tensor (got {type(mask).__name__})")
        if mask.dtype != torch.bool:
            raise TypeError(f"expected a torch.bool mask (got {mask.dtype})")
        want = (input.shape[0], input.shape[2])
        if tuple(mask.shape) != want:
            raise ValueError(
                f"expected mask of shape (N, L) = {want} for input of shape {tuple(input.shape)} "
                f"(got mask of shape {tuple(mask.shape)})"
            )
