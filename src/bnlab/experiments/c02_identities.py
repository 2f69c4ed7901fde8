"""C2: the identities of the method, by exact computation (no training, no seeds to vary).

Checked in float64 on random inputs with bnlab's layers:

* gamma = sqrt(Var[x] + eps), beta = E[x] gives back the input (1d, 2d, 3d);
* gamma and beta have shape (C,) for BatchNorm1d/2d/3d; statistics are per channel over N x spatial;
* training normalizes with the biased variance, the running variance stores the unbiased one
  (factor m/(m-1)), eval uses the running statistics;
* scale invariance: BN((aW)u) = BN(Wu) for a > 0, and the gradient w.r.t. aW is 1/a times the
  gradient w.r.t. W, for a over six orders of magnitude.
"""

from __future__ import annotations

import math

import torch

from .. import nn as bnn
from . import spec, stability
from .plotting import legend_below
from .result import ClaimResult, FigureSpec, Label

ID = "C2"
NAME = "identities"
TITLE = "BN's identities: γ and β of shape (C,), identity recovery, biased/unbiased variance, scale invariance"
QUESTION = "What shapes do γ and β have, and why can BN recover the identity?"
CLAIM = (
    "γ = sqrt(Var[x]+ε), β = E[x] recovers the input; γ, β have one entry per channel; training "
    "uses the biased variance, the running variance the unbiased one; BN is invariant to the scale "
    "of the preceding weights and scales their gradient by 1/a."
)
SOURCE = "Ioffe & Szegedy 2015, §3 and §3.3 (arXiv:1502.03167)"
TOLERANCE = 1e-9  # float64: every identity must hold to this (absolute, on O(1) values)
RULE = (
    f"Reproduced if every identity holds within {TOLERANCE:g} (float64) for BatchNorm1d, 2d and 3d; "
    "not reproduced if any fails. (Exact computation: no inconclusive outcome.)"
)
# Not seeded, so stability has another meaning here: the checks are recomputed on this many fresh random
# inputs (generator seeds 0, 1, ...), and the verdict must come out the same on every one; how far the
# largest error stays under the tolerance says how much room a machine's rounding has.
INPUT_DRAWS = 10

_LAYERS = {
    "BatchNorm1d (N,C)": (bnn.BatchNorm1d, (64, 6)),
    "BatchNorm1d (N,C,L)": (bnn.BatchNorm1d, (16, 6, 9)),
    "BatchNorm2d": (bnn.BatchNorm2d, (8, 6, 5, 7)),
    "BatchNorm3d": (bnn.BatchNorm3d, (4, 6, 3, 4, 5)),
}
_SCALES = [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3]


@torch.no_grad()
def _layer_checks(cls, shape, gen) -> dict[str, float]:
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 5
    dims = (0,) + tuple(range(2, x.dim()))
    m = x.numel() // x.shape[1]
    bn = cls(shape[1], momentum=1.0, dtype=torch.float64)
    # Training: biased variance normalizes, the running variance stores the unbiased one.
    y_train = bn(x)
    biased = x.var(dims, unbiased=False)
    bshape = (1, -1) + (1,) * (x.dim() - 2)
    manual = (x - x.mean(dims).view(bshape)) / (biased.view(bshape) + bn.eps).sqrt()
    # Identity recovery with gamma = sqrt(Var + eps), beta = E[x].
    bn.weight.copy_((biased + bn.eps).sqrt())
    bn.bias.copy_(x.mean(dims))
    identity_err = float((bn(x) - x).abs().max())
    # Eval uses the running statistics (momentum 1: the last batch's).
    bn.eval()
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    unbiased = x.var(dims, unbiased=True)
    eval_manual = (x - x.mean(dims).view(bshape)) / (unbiased.view(bshape) + bn.eps).sqrt()
    return {
        "identity_max_abs_err": identity_err,
        "train_biased_var_max_abs_err": float((y_train - manual).abs().max()),
        "running_var_unbiased_max_abs_err": float((bn.running_var - biased * m / (m - 1)).abs().max()),
        "eval_uses_running_stats_max_abs_err": float((bn(x) - eval_manual).abs().max()),
    }


def _scale_invariance(gen) -> dict[str, list[float]]:
    u = torch.randn(128, 20, generator=gen, dtype=torch.float64)
    W = torch.randn(8, 20, generator=gen, dtype=torch.float64)
    target = torch.randn(128, 8, generator=gen, dtype=torch.float64)

    def out_and_grad(weight):
        weight = weight.clone().requires_grad_()
        y = bnn.BatchNorm1d(8, eps=1e-300, dtype=torch.float64)(u @ weight.T)  # eps -> 0: exact invariance
        ((y - target) ** 2).sum().backward()
        return y.detach(), weight.grad

    y1, g1 = out_and_grad(W)
    out_err, grad_ratio = [], []
    for a in _SCALES:
        ya, ga = out_and_grad(a * W)
        out_err.append(float((ya - y1).abs().max()))
        grad_ratio.append(float(ga.norm() / g1.norm()))
    return {"scale": _SCALES, "output_max_abs_err": out_err, "grad_norm_ratio": grad_ratio}


def _draw(data):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.loglog(data["scale"], data["grad_norm_ratio"], "o", ms=7, label="measured: ‖gradient at aW‖ / ‖gradient at W‖")
    ax.loglog(data["scale"], [1 / a for a in data["scale"]], "k--", lw=1, label="1/a")
    ax.set_xlabel("scale a of the weights before BN")
    ax.set_ylabel("gradient norm ratio")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    legend_below(fig)
    return fig


LABELS = {
    "param_shapes": Label("Shapes of γ and β (one entry per channel)"),
    "identity_max_abs_err": Label("γ = √(Var[x] + ε), β = E[x]: largest difference from the input", "sci"),
    "biased_var_max_abs_err": Label(
        "Training normalizes with the biased variance: largest difference", "sci", detail=True
    ),
    "unbiased_running_var_max_abs_err": Label(
        "`running_var` stores the unbiased variance: largest difference", "sci", detail=True
    ),
    "eval_running_stats_max_abs_err": Label(
        "Evaluation uses the running statistics: largest difference", "sci", detail=True
    ),
    "scale_output_max_abs_err": Label("Weights scaled by a = 0.001 to 1000: largest change of BN's output", "sci"),
    "worst_grad_ratio_rel_err": Label("Weight gradient vs exactly 1/a: largest relative deviation", "sci"),
    "worst_abs_err": Label("Largest error of any identity", "sci", detail=True),
}


def _checks(seed: int) -> tuple[dict, dict, bool, float, float, float, str]:
    """Every check on the random inputs of generator ``seed``: (per layer, scale invariance, shapes ok,
    worst layer error, worst output change, worst gradient ratio deviation, verdict)."""
    gen = torch.Generator().manual_seed(seed)
    per_layer = {name: _layer_checks(cls, shape, gen) for name, (cls, shape) in _LAYERS.items()}
    shapes_ok = all(
        list(cls(shape[1]).weight.shape) == list(cls(shape[1]).bias.shape) == [shape[1]]
        for cls, shape in _LAYERS.values()
    )
    scale = _scale_invariance(gen)
    worst_layer = max(v for checks in per_layer.values() for v in checks.values())
    worst_out = max(scale["output_max_abs_err"])
    worst_ratio = max(abs(r * a - 1) for r, a in zip(scale["grad_norm_ratio"], scale["scale"]))
    holds = shapes_ok and max(worst_layer, worst_out, worst_ratio) <= TOLERANCE
    return per_layer, scale, shapes_ok, worst_layer, worst_out, worst_ratio, "reproduced" if holds else "not reproduced"


def run(ctx) -> ClaimResult:
    draws = [_checks(seed) for seed in range(INPUT_DRAWS)]
    per_layer, scale, shapes_ok, worst_layer, worst_out, worst_ratio, verdict = draws[0]
    param_shapes = {
        name: {"input": list(shape), "gamma": list(cls(shape[1]).weight.shape), "beta": list(cls(shape[1]).bias.shape)}
        for name, (cls, shape) in _LAYERS.items()
    }
    worst_any = max(max(d[3], d[4], d[5]) for d in draws)
    margin = math.log10(TOLERANCE / worst_any) if worst_any > 0 else math.inf
    stab = stability.computed(
        [d[-1] for d in draws],
        f"Not seeded: exact float64 computation. Recomputed on {INPUT_DRAWS} fresh random inputs, the largest "
        f"error of any identity was {worst_any:.0e}, "
        + (f"{margin:.1f} orders of magnitude under" if margin > 0 else "not under")
        + f" the tolerance {TOLERANCE:g}.",
    )
    identity_err = max(c["identity_max_abs_err"] for c in per_layer.values())
    summary = (
        "γ and β are vectors with one entry per channel — shape (C,) — for BatchNorm1d, 2d and 3d alike; "
        "a convolution's channel is normalized over N×H×W (N×L, N×D×H×W). Setting γ = sqrt(Var[x]+ε) and "
        f"β = E[x] returns the input (largest error {identity_err:.1e}), "
        "which is why adding BN never reduces what a layer can represent. Training divides by the biased "
        "batch variance while the running variance stores the unbiased one (×m/(m−1)); eval uses the running values. "
        f"Scaling the weights before BN by a from {_SCALES[0]:g} to {_SCALES[-1]:g} leaves the output unchanged "
        f"(largest difference {worst_out:.1e}) and scales the weight gradient by exactly 1/a "
        f"(largest relative deviation {worst_ratio:.1e})."
    )
    claim = spec.result(
        __name__,
        verdict=verdict,
        summary=summary,
        setup={
            "dtype": "float64",
            "layers": {k: list(v[1]) for k, v in _LAYERS.items()},
            "scales": _SCALES,
            "tolerance": TOLERANCE,
            "seeds": [0],
            "fresh inputs for the stability": INPUT_DRAWS,
            "quick": ctx.quick,
        },
        numbers={
            "param_shapes": param_shapes,
            "identity_max_abs_err": identity_err,
            **{
                key: max(c[check] for c in per_layer.values())
                for key, check in (
                    ("biased_var_max_abs_err", "train_biased_var_max_abs_err"),
                    ("unbiased_running_var_max_abs_err", "running_var_unbiased_max_abs_err"),
                    ("eval_running_stats_max_abs_err", "eval_uses_running_stats_max_abs_err"),
                )
            },
            "scale_output_max_abs_err": worst_out,
            "worst_grad_ratio_rel_err": worst_ratio,
            "worst_abs_err": max(worst_layer, worst_out),
        },
        labels=LABELS,
        finding=f"γ and β have shape (C,) in BatchNorm1d, 2d and 3d; γ = √(Var[x] + ε), β = E[x] gave back the "
        f"input to within {identity_err:.0e}, and scaling the weights before BN by 0.001 to 1000 left the "
        f"output unchanged (to within {worst_out:.0e}) and scaled their gradient by 1/a to within "
        f"{worst_ratio:.0e}: every identity "
        f"{'holds' if verdict == 'reproduced' else 'does NOT hold'} within {TOLERANCE:g}.",
        figures=[
            FigureSpec(
                "grad_scale",
                "Scale invariance: the weight gradient shrinks as 1/a",
                scale,
                _draw,
                "BatchNorm1d after a linear layer with weights aW: the output is unchanged and "
                "the gradient norm follows 1/a exactly.",
            )
        ],
        rows=[
            {"layer": name, "gamma_shape": str(tuple(param_shapes[name]["gamma"])), **checks}
            for name, checks in per_layer.items()
        ],
    )
    return spec.settle(__name__, claim, None, None, stab)
