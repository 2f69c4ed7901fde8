"""The page's questions: each with its short answer from this run, what the sources say, the evidence
(the claims whose results answer it), explanatory blocks and the code to use.

:data:`QUESTIONS` is the one list the page is built from, in order: the short answers at the top
and the sections below both come from it. Adding a question is one entry::

    Question("new-data", "My model does worse on new data: can batch norm help?", ("C13", "C14"),
             answer=my_answer_function)  # answer(ev: answers.Evidence) -> answers.Answer

``sources``, ``blocks``, ``code`` and ``extra`` (a function of the Evidence returning more of the
section, rendered from a template of its own with :func:`.markup.render`, e.g. the
internal-covariate-shift explainer; a plain string would be escaped like any text) are optional.

Text is plain: the renderer escapes it, and only `backticks` become inline code.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from markupsafe import Markup

from .. import functional
from . import answers, from_scratch, ics
from .answers import Answer, Evidence


@dataclasses.dataclass(frozen=True)
class Code:
    """A code block. ``requires`` lists the dotted bnlab names it uses (the tests run a Python
    block once all of them exist)."""

    text: str
    language: str = "python"
    requires: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Block:
    """An explanatory block: ``kind`` is "p" (paragraph), "math" (preformatted formula) or "list"."""

    kind: str
    text: str | tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Question:
    slug: str  # the section's anchor
    title: str
    claims: tuple[str, ...]  # ids of the claims whose results are the evidence
    answer: Callable[[Evidence], Answer]  # the short answer, from this run's results
    sources: str = ""  # what the published sources say
    blocks: tuple[Block, ...] = ()
    code: tuple[Code, ...] = ()
    extra: Callable[[Evidence], Markup] | None = None  # more of the section (markup.render)


def backward_from_functional() -> tuple[str, str]:
    """The closed-form backward as bnlab.functional's docstring states it: (lead-in, formulas).

    Read from the docstring so the page shows the same formula the code documents.
    """
    doc = functional.__doc__ or ""
    match = re.search(r"\n(The backward,.*?)::\n\n((?:    [^\n]*\n|\n)+)", doc, re.S)
    if match is None:
        raise RuntimeError("bnlab.functional's docstring no longer states the backward ('The backward, ...::')")
    lead = " ".join(match.group(1).split()).replace("``", "`")  # reST literals -> the page's inline code
    formulas = "\n".join(line[4:] for line in match.group(2).strip("\n").splitlines())
    return lead, formulas


_MODEL_CODE = Code(
    """\
import torch
from torch import nn
import bnlab

# conv -> BN -> ReLU; no conv bias: BN's mean subtraction would cancel it
model = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1, bias=False),
    bnlab.nn.BatchNorm2d(32),   # statistics per channel over N x H x W
    nn.ReLU(),
    nn.Conv2d(32, 64, 3, padding=1, bias=False),
    bnlab.nn.BatchNorm2d(64),
    nn.ReLU(),
)
y = model(torch.randn(8, 3, 32, 32))  # training: batch statistics
model.eval()
y = model(torch.randn(1, 3, 32, 32))  # evaluation: the running averages
""",
    requires=("bnlab.nn.BatchNorm2d",),
)

_PARITY_CODE = Code(
    """\
import torch
import bnlab

# Same signature, defaults and state_dict as torch.nn.BatchNorm2d
ours, ref = bnlab.nn.BatchNorm2d(8), torch.nn.BatchNorm2d(8)
ref.load_state_dict(ours.state_dict())

x = torch.randn(16, 8, 5, 5)
assert torch.allclose(ours(x), ref(x), atol=1e-5)
# running_var holds the unbiased variance; momentum 0.1 weights the new batch
assert torch.allclose(ours.running_var, ref.running_var)

# The functional form has torch.nn.functional.batch_norm's semantics
rm, rv = torch.zeros(8), torch.ones(8)
y = bnlab.functional.batch_norm(x, rm, rv, training=True, momentum=0.1)
""",
    requires=("bnlab.nn.BatchNorm2d", "bnlab.functional.batch_norm"),
)

_IDENTITY_CODE = Code(
    """\
import torch
import bnlab

bn = bnlab.nn.BatchNorm2d(16)
assert bn.weight.shape == bn.bias.shape == (16,)  # one gamma, one beta per channel

x = torch.randn(32, 16, 8, 8) * 3 + 5
mean = x.mean(dim=(0, 2, 3))
var = x.var(dim=(0, 2, 3), unbiased=False)  # training uses the biased variance
with torch.no_grad():
    bn.weight.copy_(torch.sqrt(var + bn.eps))  # gamma = sqrt(Var[x] + eps)
    bn.bias.copy_(mean)                        # beta  = E[x]
assert torch.allclose(bn(x), x, atol=1e-4)     # BN is now the identity
""",
    requires=("bnlab.nn.BatchNorm2d",),
)

_PLACEMENT_CODE = Code(
    """\
from torch import nn
import bnlab

# The BN paper: normalize the pre-activation
before = nn.Sequential(nn.Conv2d(16, 32, 3, bias=False),
                       bnlab.nn.BatchNorm2d(32), nn.ReLU())
# The alternative: normalize the activation's output
after = nn.Sequential(nn.Conv2d(16, 32, 3),
                      nn.ReLU(), bnlab.nn.BatchNorm2d(32))
""",
    requires=("bnlab.nn.BatchNorm2d",),
)

_SPEED_CODE = Code(
    """\
import torch
from torch import nn
import bnlab

model = nn.Sequential(nn.Linear(40, 100, bias=False), bnlab.nn.BatchNorm1d(100),
                      nn.Sigmoid(), nn.Linear(100, 10))
# With BN the same network tolerates larger steps (the C3 sweep finds how large)
opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
""",
    requires=("bnlab.nn.BatchNorm1d",),
)

_ALTERNATIVES_CODE = Code(
    """\
import torch
from torch import nn
import bnlab

# No batch statistics at all
gn = nn.GroupNorm(num_groups=8, num_channels=64)
# Small or non-i.i.d. batches: correct the batch statistics toward the population's
brn = bnlab.nn.BatchRenorm2d(64, r_max=3.0, d_max=5.0)
# Large batches: normalize small ghost batches inside them
ghost = bnlab.nn.GhostBatchNorm2d(64, virtual_batch_size=32)

# Before evaluation: exact population statistics, weights frozen
model = nn.Sequential(nn.Conv2d(3, 64, 3, bias=False), bnlab.nn.BatchNorm2d(64))
batches = [torch.randn(8, 3, 16, 16) for _ in range(4)]
bnlab.precise_bn(model, batches)
""",
    requires=("bnlab.nn.BatchRenorm2d", "bnlab.nn.GhostBatchNorm2d", "bnlab.nn.BatchNorm2d", "bnlab.precise_bn"),
)

_ADAPT_CODE = Code(
    """\
import torch
from torch import nn
import bnlab

model = nn.Sequential(nn.Conv1d(1, 8, 3), bnlab.nn.BatchNorm1d(8), nn.ReLU(),
                      nn.Flatten(), nn.Linear(8 * 38, 10))   # trained on the old data
new_batches = [torch.randn(32, 1, 40) * 2 + 1 for _ in range(4)]   # unlabeled data of the new domain

result = bnlab.adapt(model, new_batches, method="stats")   # AdaBN: BN's statistics from the new data
model.eval()
logits = model(new_batches[0])
result.restore(model)                                       # back to the old statistics
""",
    requires=("bnlab.nn.BatchNorm1d", "bnlab.adapt"),
)

_GAMMA_BETA_CODE = Code(
    """\
import torch
from torch import nn
import bnlab

model = nn.Sequential(
    nn.Conv1d(1, 25, 5, stride=2, padding=1, bias=False),  # (N,1,40) -> (N,25,19)
    bnlab.nn.BatchNorm1d(25),
    nn.ReLU(), nn.Flatten(), nn.Linear(25 * 19, 10),
)
# Freeze everything at its random initialization except BN's gamma and beta
for module in model.modules():
    for p in module.parameters(recurse=False):
        p.requires_grad_(isinstance(module, bnlab.nn.BatchNorm1d))
trainable = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.Adam(trainable, lr=1e-2)
""",
    requires=("bnlab.nn.BatchNorm1d",),
)


def _math_blocks() -> tuple[Block, ...]:
    lead, backward = backward_from_functional()
    return (
        Block(
            "math",
            "μ  = (1/m) Σ x\nσ² = (1/m) Σ (x − μ)²                  (biased: used to normalize)\n"
            "x̂  = (x − μ) / √(σ² + ε)\ny  = γ · x̂ + β",
        ),
        Block(
            "math",
            "running_mean = (1 − momentum) · running_mean + momentum · μ\n"
            "running_var  = (1 − momentum) · running_var  + momentum · σ² · m/(m − 1)",
        ),
        Block("p", lead + " (from `bnlab.functional`):"),
        Block("math", backward),
        Block(
            "p",
            "The statistics are two-pass (the mean first, then the squared deviations), "
            "so a large common offset does not cost precision as E[x²] − E[x]² would. "
            "`bnlab check` compares bnlab's layers with torch.nn on your machine.",
        ),
    )


QUESTIONS: tuple[Question, ...] = (
    Question(
        "what-bn-does",
        "What does batch norm do in a CNN?",
        ("C1",),
        answers.what_bn_does,
        sources="For every channel, BN subtracts the mean and divides by the standard deviation taken over "
        "the mini-batch and all spatial positions (N × H × W values), then applies a learned "
        "per-channel scale γ and shift β. While training it uses the current batch's statistics "
        "and keeps running averages of them; in evaluation it uses those averages, so the output "
        "no longer depends on the rest of the batch. The original paper argued that this keeps "
        "each layer's input distribution steady while the layers before it change, and that "
        "training is faster for it.",
        code=(_MODEL_CODE,),
    ),
    Question(
        "pytorch-batchnorm",
        "What exactly is PyTorch's BatchNorm2d?",
        (),
        answers.pytorch_batchnorm,
        sources="`torch.nn.BatchNorm2d(C, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)`: "
        "parameters `weight` and `bias` of shape (C,); buffers `running_mean` (zeros), `running_var` "
        "(ones) and `num_batches_tracked`. Training normalizes with the batch's biased variance and "
        "updates the running averages with the unbiased one; `momentum=None` makes them cumulative "
        "averages. Keras and Flax write momentum as the decay of the old value (0.99). bnlab's layers "
        "have the same signature, defaults and `state_dict`.",
        code=(_PARITY_CODE,),
    ),
    Question(
        "placement",
        "Where do I put it: before or after the activation?",
        ("C4",),
        answers.placement,
        sources="The BN paper puts it between the convolution (or linear layer) and the nonlinearity: "
        "conv → BN → ReLU, and most architectures follow it. Reports of the other order exist: "
        "caffenet-benchmark measured BN after the activation slightly better on ImageNet "
        "(49.9% vs 47.4% top-1 accuracy), and ResNet v2's pre-activation blocks reorder the whole block. "
        "The published differences are a few points at most, which is why the lab compares the two "
        "orders paired by seed and calls a small or sign-inconsistent gap no reliable difference.",
        code=(_PLACEMENT_CODE,),
    ),
    Question(
        "how-it-works",
        "How does it work: the math, the backward, the running averages?",
        ("C2",),
        answers.how_it_works,
        sources="Per channel, over the m values of a batch: the mean μ and the biased variance σ², then "
        "y = γ · (x − μ) / √(σ² + ε) + β. The running averages weight the new batch by the "
        "momentum and store the unbiased variance σ² · m/(m − 1); evaluation normalizes with them. "
        "The backward has a closed form of two per-channel sums, so it costs about as much as "
        "the forward (Ioffe & Szegedy 2015, §3).",
        blocks=_math_blocks(),
    ),
    Question(
        "gamma-beta",
        "What shapes do γ and β have, and what identity can BN recover?",
        ("C2",),
        answers.gamma_beta,
        sources="γ and β have one entry per channel: shape (C,) for BatchNorm1d, 2d and 3d alike, because "
        "the statistics are per channel (over N × L, N × H × W or N × D × H × W values). Setting "
        "γ = √(Var[x] + ε) and β = E[x] undoes the normalization exactly, so adding BN does not "
        "take away anything the layer could represent (Ioffe & Szegedy 2015, §3). BN's output "
        "also does not change when the preceding weights are scaled by a > 0, and their gradient "
        "shrinks by 1/a: the scale invariance behind its tolerance of large learning rates.",
        code=(_IDENTITY_CODE,),
    ),
    Question(
        "implement",
        "How do I implement it, and what does it buy me?",
        ("C3",),
        answers.implement,
        sources="With BN, Inception reached its baseline accuracy in 14× fewer steps and trained at learning "
        "rates 5–30× higher (Ioffe & Szegedy 2015); ResNet-110 trains at learning rate 0.1 with BN "
        "but needs 0.0001 without (Bjorck et al. 2018).",
        code=(_SPEED_CODE,),
        extra=lambda ev: from_scratch.section_html(ev.demos),
    ),
    Question(
        "layers-ics",
        "How does BN affect the layers: is it internal covariate shift?",
        ("C1", "C5", "C6", "C7"),
        answers.layers_ics,
        sources="The original explanation is reduced internal covariate shift. Santurkar et al. (2018) "
        "injected random shifts after every BN layer and training barely suffered, found BN does not "
        "reduce a gradient-based measure of covariate shift, and argued instead that BN makes the loss "
        "and its gradient smoother, so larger steps are safe.",
        extra=ics.section_html,
    ),
    Question(
        "failure-modes",
        "When does it fail, and what should I use instead?",
        ("C8", "C9", "C10", "C11"),
        answers.failure_modes,
        sources="BN's statistics come from the batch. They get noisy when the batch is small (ResNet-50's "
        "ImageNet error rises from 23.6% at 32 images per GPU to 34.7% at 2, while GroupNorm "
        "stays at 24%; Wu & He 2018), biased when a batch is not i.i.d., and the running "
        "averages used in evaluation can differ from the statistics the network trained with. "
        "The remedies: GroupNorm does not use the batch; Batch Renorm pulls the batch "
        "statistics toward the population's; Ghost BN normalizes small virtual batches inside a "
        "large one; PreciseBN recomputes the population statistics after training.",
        code=(_ALTERNATIVES_CODE,),
    ),
    Question(
        "new-data",
        "My model does worse on new data: can batch norm help?",
        ("C13", "C14"),
        answers.new_data,
        sources="Under covariate shift a BN model's running statistics describe the training data, not the data it "
        "now sees. AdaBN (Li et al. 2016) re-estimates them on the new data; Nado et al. and Schneider et al. "
        "(2020) normalize with each test batch's statistics; TENT (Wang et al. 2021) also trains γ and β by "
        "minimizing the prediction entropy. On CIFAR-10-C at severity 5 a WRN-28-10's mean error falls "
        "from 43.5% to 20.4% with test-batch statistics and to 18.6% with TENT.",
        code=(_ADAPT_CODE,),
    ),
    Question(
        "gamma-beta-only",
        "Training only γ and β: how far does it go?",
        ("C12",),
        answers.gamma_beta_only,
        sources="Frankle et al. (2021) froze the random weights of deep ResNets, trained only BN's γ and β, "
        "and reached 82% on CIFAR-10. The per-channel scale and shift alone can reweight and switch "
        "off the features of a random network.",
        code=(_GAMMA_BETA_CODE,),
    ),
)
