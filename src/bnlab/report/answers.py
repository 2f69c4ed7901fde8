"""The short answers at the top of the page, written from what this run measured.

Each answer is a function ``answer(ev: Evidence) -> Answer``: one to three plain sentences that
give a recommendation where one exists and quote this run's numbers, plus links to the evidence.
:data:`bnlab.report.content.QUESTIONS` pairs each function with its question; adding a question to
the page is one entry there (an answer function may live in any module). An answer must still
read when an experiment did not run: :meth:`Evidence.number` returns None for anything missing,
and the function then says what the sources report and that this run did not measure it.

Text is plain: the renderer escapes it, and only `backticks` become inline code.
"""

from __future__ import annotations

import dataclasses

from ..experiments import text
from ..experiments.c04_placement import better_order
from .evidence import Evidence
from .ics import believe, readings


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    # (href, label) or (href, label, part): "#C4" links show that claim's verdict; with a part key, the
    # verdict of the part the sentence rests on ("#C1", "C1: faster", "faster").
    links: tuple[tuple[str, ...], ...] = ()


def _iv(e, unit: str) -> str:
    return text.interval(e, unit)


def _reach(e, last_step: float) -> str:
    """ "in N steps [...]", or "never in N steps" when every seed ran out (counted as past the end)."""
    mean = text.parts(e)[0]
    return f"never in {last_step:g} steps" if mean > last_step else f"in {_iv(e, 'steps')}"


def what_bn_does(ev: Evidence) -> Answer:
    out = (
        "It standardizes every channel with the mean and standard deviation of the batch (over N × H × W "
        "values), then applies a learned scale γ and shift β; in evaluation it uses running averages instead. "
        "Use it in deep CNNs: training gets faster and less sensitive to the learning rate."
    )
    acc = ev.number("C5", "test_acc")
    steps = ev.number("C1", "steps_to_target_bn"), ev.number("C1", "steps_to_target_none")
    measured = []
    if acc:
        measured.append(
            f"MNIST-1D's CNN ended at {_iv(acc['bn'], '%')} test accuracy with BN and "
            f"{_iv(acc['none'], '%')} without ({ev.said('C5', 'bn-beats-none', 'BN beat no BN, C5')})"
        )
    if None not in steps:
        target = f"{ev.number('C1', 'target_acc'):.0%}"
        last = ev.results["C1"].setup.get("steps", float("inf"))
        measured.append(
            f"a sigmoid MLP reached {target} {_reach(steps[0], last)} with BN and {_reach(steps[1], last)} without "
            f"({ev.said('C1', 'faster', 'BN trained faster, C1')})"
        )
    out += f" {ev.this_run}: {'; '.join(measured)}." if measured else " (Not measured in this run.)"
    return Answer(
        out, (("#look", "figure"), ("#C5", "C5: BN beats no BN", "bn-beats-none"), ("#C1", "C1: faster", "faster"))
    )


def pytorch_batchnorm(ev: Evidence) -> Answer:
    out = (
        "`nn.BatchNorm2d(C)` has two learned parameters of shape (C,), `weight` (γ) and `bias` (β), and "
        "three buffers, `running_mean`, `running_var` and `num_batches_tracked`. In `model.train()` it "
        "normalizes with the batch's mean and biased variance and moves the running averages by momentum "
        "0.1 (the weight of the new batch), storing the unbiased variance; in `model.eval()` it uses the "
        "running averages, so call `model.eval()` before you predict."
    )
    parity = ev.demo("parity", "largest")
    if parity is not None:
        out += (
            f" {ev.this_run}: a 40-line version written from scratch matched it to a relative "
            f"{parity:.0e} in outputs, gradients and running statistics (float32)."
        )
    return Answer(out, (("#scratch", "from scratch"), ("#C2", "C2")))


def placement(ev: Evidence) -> Answer:
    out = (
        "Put it between the convolution (or linear layer) and the activation, conv → BN → ReLU, as the BN "
        "paper does and most architectures follow, and drop the convolution's bias: BN's mean subtraction "
        "cancels it."
    )
    diffs = {a: ev.number("C4", f"{a}_after_minus_before") for a in ("relu", "tanh")}
    outcomes = [ev.number("C4", f"{a}_outcome") for a in diffs]
    if all(d is not None for d in diffs.values()):
        if not ev.settled("C4"):
            words = "not settled by these seeds (underpowered, not a finding)"
        else:
            words = {
                "before": "before was as good or better",
                "after": "after was as good or better, against the convention",
                "depends": "the better order depended on the activation",
                "neither": "no reliable difference either way",
            }[better_order(outcomes)]
        out += (
            f" {ev.this_run}, test accuracy after − before: ReLU {_iv(diffs['relu'], 'points')}, tanh "
            f"{_iv(diffs['tanh'], 'points')}: {words}."
        )
    return Answer(out, (("#C4", "C4"),))


def how_it_works(ev: Evidence) -> Answer:
    out = (
        "Per channel, over the m values of a batch: μ = mean, σ² = biased variance, "
        "x̂ = (x − μ) / √(σ² + ε), y = γ · x̂ + β; in evaluation μ and σ² come from running averages. Because the "
        "statistics come from "
        "the batch, a model left in training mode predicts each example from the batch it sits in."
    )
    fe = ev.demo("pitfalls", "forget_eval")
    if fe:
        out += (
            f" {ev.this_run}: the same trained CNN scored {text.number(fe['eval'], '%')} in eval mode, "
            f"{text.number(fe['train_mode_batch_4'], '%')} in training mode with batches of 4 and "
            f"{text.number(fe['train_mode_sorted_batch_100'], '%')} with batches sorted by class."
        )
    return Answer(out, (("#pitfalls", "pitfalls"), ("#C2", "C2")))


def gamma_beta(ev: Evidence) -> Answer:
    out = (
        "One entry per channel: shape (C,) in BatchNorm1d, 2d and 3d alike. With γ = √(Var[x] + ε) and "
        "β = E[x], BN gives back its input exactly, so adding BN takes nothing away from what a layer can "
        "represent."
    )
    err = ev.number("C2", "identity_max_abs_err")
    if err is not None:
        out += (
            f" {ev.this_run} checked both: shape (C,) for every layer kind, the identity to within {err:.0e} (float64)."
        )
    return Answer(out, (("#C2", "C2"),))


def implement(ev: Evidence) -> Answer:
    out = (
        "Use `nn.BatchNorm2d(C)` after each convolution (`bnlab.nn.BatchNorm2d` is the same layer); the "
        "whole mechanism is about 40 lines, written out below and tested against PyTorch's. What it buys: "
        "larger stable learning rates and fewer steps."
    )
    lr_bn, lr_none = ev.number("C3", "max_training_lr_bn"), ev.number("C3", "max_training_lr_none")
    s_bn, s_none = ev.number("C3", "steps_to_threshold_bn"), ev.number("C3", "steps_to_threshold_none")
    if None not in (s_bn, s_none) and ev.results.get("C3") is not None:

        def lr(v):
            return "none" if v is None else f"{v:g}"

        last = ev.results["C3"].setup.get("steps", float("inf"))
        out += (
            f" {ev.this_run}: the largest learning rate that trained was {lr(lr_bn)} with BN and "
            f"{lr(lr_none)} without ({ev.said('C3', 'higher-lr', 'at least 5× higher')}), and at their best rates "
            f"BN reached 80% test accuracy {_reach(s_bn, last)}, no BN {_reach(s_none, last)} "
            f"({ev.said('C3', 'fewer-steps', 'fewer steps')})."
        )
    return Answer(
        out,
        (
            ("#scratch", "the code"),
            ("#C3", "C3: higher rates", "higher-lr"),
            ("#C3", "C3: fewer steps", "fewer-steps"),
        ),
    )


def layers_ics(ev: Evidence) -> Answer:
    out = (
        "Internal covariate shift is the change of a layer's input distribution while the layers before it "
        "learn; the BN paper credited BN's speed to reducing it, Santurkar et al. (2018) to a smoother loss "
        "instead."
    )
    measured = readings(ev)
    sat = ev.demo("diagnostics")
    if sat:
        mean = {k: sum(sat[k]["trained"]["saturation"]) / len(sat[k]["trained"]["saturation"]) for k in ("none", "bn")}
        measured.append(
            f"in a saturating tanh network BN kept {text.number(mean['bn'], '%')} of the units "
            f"saturated against {text.number(mean['none'], '%')} without"
        )
    if measured:
        out += f" {ev.this_run}: {'; '.join(measured)}."
    out += " " + believe(ev)
    return Answer(
        out,
        (
            ("#ics", "explained"),
            ("#look", "figure"),
            ("#C1", "C1: steadier", "steadier"),
            ("#C5", "C5: noise harmless", "harmless"),
            ("#C6", "C6"),
            ("#C7", "C7: loss range", "loss-range"),
            ("#C7", "C7: gradient change", "grad-change"),
            ("#C7", "C7: β-smoothness", "beta"),
        ),
    )


def failure_modes(ev: Evidence) -> Answer:
    out = (
        "When the batch is a poor sample of the data: tiny batches, batches of one or two classes, or "
        "statistics that differ between training and evaluation. Then use GroupNorm (no batch statistics), "
        "Batch Renorm for non-i.i.d. batches, `drop_last=True`, frozen BN for fine-tuning with small batches, "
        "and PreciseBN to recompute the statistics after training."
    )
    measured = []
    bn, gn = ev.number("C8", "bn_error"), ev.number("C8", "gn_error")
    if bn and gn:
        measured.append(
            f"BN's error went from {_iv(bn['32'], '%')} at batch 32 to {_iv(bn['2'], '%')} at batch 2, "
            f"GroupNorm's from {_iv(gn['32'], '%')} to {_iv(gn['2'], '%')} (C8)"
        )
    brn = ev.number("C9", "non_iid_brn_minus_bn")
    if brn:
        measured.append(f"Batch Renorm − BN on batches of 2 classes: {_iv(brn, 'points')} (C9)")
    lb = ev.demo("pitfalls", "last_batch")
    if lb:
        measured.append(
            f"one last step on a batch of 2 took a trained CNN from {text.number(lb['before'], '%')} to "
            f"{text.number(lb['after_batch_2_mean'], '%')} on average"
        )
    if measured:
        out += f" {ev.this_run}: {'; '.join(measured)}."
    return Answer(out, (("#C8", "C8"), ("#C9", "C9"), ("#C10", "C10"), ("#C11", "C11"), ("#pitfalls", "pitfalls")))


def gamma_beta_only(ev: Evidence) -> Answer:
    out = (
        "Further than one would guess: with every other weight frozen at its random value, training only "
        "BN's γ and β reached 82% on CIFAR-10 in deep ResNets (Frankle et al. 2021)."
    )
    accs = [ev.number("C12", f"test_acc_{k}") for k in ("norm", "random", "all")]
    if None not in accs:
        out += (
            f" {ev.this_run}, on a small CNN: {_iv(accs[0], '%')} with only γ and β "
            f"({ev.said('C12', 'above-chance', 'far above chance')}), {_iv(accs[1], '%')} with as many random "
            f"weights ({ev.said('C12', 'beats-random', 'γ and β beat them')}), {_iv(accs[2], '%')} with all "
            f"weights (chance 10%)."
        )
    return Answer(
        out,
        (("#C12", "C12: far above chance", "above-chance"), ("#C12", "C12: beats random weights", "beats-random")),
    )


def new_data(ev: Evidence) -> Answer:
    """C13's own answer (``c13_adapt_statistics.answer``) when it ran; the sources' otherwise."""
    from ..experiments import c13_adapt_statistics as c13

    result = ev.results.get("C13")
    if result is None or not any(k.startswith("Mean error at severity") for k in result.numbers):
        return Answer(
            "Often, when the new data differ in their statistics: re-estimate batch norm's statistics on "
            "unlabeled new data (AdaBN) and predict in eval mode. (Not measured in this run.)",
            (("#C13", "C13"), ("#C14", "C14")),
        )
    out = c13.answer(result, ev.results.get("C14"))
    if ev.quick:
        out += " This smoke test (not evidence) measured these numbers."
    return Answer(out, (("#C13", "C13"), ("#C14", "C14")))
