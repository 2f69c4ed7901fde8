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

**The class recorded with the operator.** Some quantizers find batch norm by the *module class*
each node records, not by the operator: torchao's ``X86InductorQuantizer`` annotates conv-BN(-ReLU)
patterns given as ``[torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]`` and, in a default
(non-strict) export, reads the innermost class of each node's ``nn_module_stack`` as a string,
compared for equality -- a subclass (bnlab's, or timm's ``BatchNormAct2d``) is not recognized and
the observers land elsewhere (the quantized output differed from torch's model by ~1e-2). The
operator recorded is torch's, so :func:`recorded_as` also records torch's class name for it (and,
for a fused activation, torch's activation module: :data:`TORCH_ACTIVATIONS`), while the export
traces that one call; the module, its attributes and its other nodes are untouched. A strict
(dynamo) export records class objects in ``source_fn_stack``; the quantizer matches bnlab's layers
there through the functional ``batch_norm``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

__all__ = ["standard_forward", "torch_class", "recorded_as"]

#: bnlab's activation names (:mod:`bnlab.activations`) -> the torch module recorded for them in an export
TORCH_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU}


def standard_forward(module: nn.modules.batchnorm._BatchNorm, input: Tensor) -> Tensor:
    """torch's batch-norm forward of ``module`` on ``input``, for the export graph (module docstring)."""
    return nn.modules.batchnorm._BatchNorm.forward(module, input)


def torch_class(module: nn.Module) -> type:
    """The torch.nn batch-norm class ``module`` derives from (``torch.nn.BatchNorm2d`` for bnlab's 2d layers)."""
    return next(c for c in type(module).__mro__ if c.__module__ == nn.BatchNorm2d.__module__)


@contextlib.contextmanager
def recorded_as(module: nn.Module, cls: type) -> Iterator[None]:
    """While exporting: the nodes traced inside record ``cls``'s name as ``module``'s class (module docstring).

    The tracer keeps ``type(module)`` and writes its ``__module__.__qualname__`` into each node it
    creates, so the names are swapped for the duration of the block and restored after it."""
    own = type(module)
    saved = own.__module__, own.__qualname__
    own.__module__, own.__qualname__ = cls.__module__, cls.__qualname__
    try:
        yield
    finally:
        own.__module__, own.__qualname__ = saved
