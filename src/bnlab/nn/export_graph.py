"""What ``torch.export`` records for bnlab's plain batch-norm layers: torch's batch-norm operator.

The graph passes that consume an exported model recognize batch norm by its operator,
``aten.batch_norm``: torchao's ``move_exported_model_to_eval`` (which rewrites the training-mode
operator into the eval one), the conv-BN fusion and folding of ``prepare_qat_pt2e`` /
``prepare_pt2e`` / ``convert_pt2e``, ONNX's BatchNormalization. bnlab's math written out in
elementwise operations matched none of them: an exported QAT model kept normalizing with batch
statistics after it was "moved to eval" and moved its running mean on every call, and BN was
never folded -- outputs that differ from torch's model without an error. So, while exporting
only, :func:`standard_forward` runs torch's own ``_BatchNorm.forward`` on the layer's parameters
and buffers, which records the operator with torch's momentum and ``num_batches_tracked`` logic.
The exported graph is a deployment artefact that torch's or another runtime executes; the layer
itself, in eager mode, under torch.compile and in the kernels, runs bnlab's math.

Not covered: quantizers that find batch norm by the *class name* recorded in each node's
``nn_module_stack`` (torchao's ``X86InductorQuantizer`` annotates conv-BN(-ReLU) patterns given as
``[torch.nn.Conv2d, torch.nn.BatchNorm2d, ...]``) do not recognize a subclass (bnlab's or timm's)
and place their observers elsewhere; convert to torch's classes before exporting for them
(``bnlab.convert(model, "torch")``; docs/guide/ecosystem.md has the table of flows).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["standard_forward"]


def standard_forward(module: nn.modules.batchnorm._BatchNorm, input: Tensor) -> Tensor:
    """torch's batch-norm forward of ``module`` on ``input``, for the export graph (module docstring)."""
    return nn.modules.batchnorm._BatchNorm.forward(module, input)
