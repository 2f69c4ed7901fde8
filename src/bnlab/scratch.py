"""Batch norm written out in plain PyTorch, to read: what ``torch.nn.BatchNorm2d`` computes and stores.

A teaching copy, complete but deliberately self-contained: bnlab's own layers (:mod:`bnlab.nn`)
run the math of :mod:`bnlab.functional` with fast kernels. tests/test_scratch.py checks this class
against ``torch.nn.BatchNorm2d`` (outputs, gradients, running statistics, evaluation), and the
report shows the class exactly as it is here.
"""

import torch
from torch import nn


class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum  # PyTorch's convention: the weight of the NEW batch (Keras: 0.99 = decay)
        # gamma and beta: one learned scale and shift per channel, shape (C,); start as the identity
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        # running averages for evaluation: buffers (saved in the state_dict, never trained)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):  # x: (N, C, H, W)
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        if self.training:
            m = x.numel() // x.shape[1]  # values per channel: N * H * W
            if m < 2:
                raise ValueError(f"expected more than 1 value per channel when training (got {m})")
            mean = x.mean(dim=(0, 2, 3))  # (C,)
            var = x.var(dim=(0, 2, 3), unbiased=False)  # (C,) biased: what the batch is normalized with
            with torch.no_grad():  # the running averages are bookkeeping, not part of the graph
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                # ... of the UNBIASED variance, m / (m - 1) times the biased one
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * m / (m - 1))
                self.num_batches_tracked += 1
        else:  # evaluation: the running averages, so one example's output does not depend on the others
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return self.weight[None, :, None, None] * x_hat + self.bias[None, :, None, None]  # (N, C, H, W)
