"""Batch norm from scratch (the tested module, read from its source) and the train/eval pitfalls,
each with the demo this report measured (:mod:`bnlab.demos`); the markup is templates/scratch.html."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from .. import scratch
from ..experiments import text
from .markup import render


def scratch_source() -> str:
    """bnlab/scratch.py from its first import on: exactly the code tests/test_scratch.py checks."""
    source = inspect.getsource(scratch)
    return source[source.index("import torch") :]


def _pct(v: Any) -> str:
    return text.number(v, "%")


def pitfalls(demos: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(anchor, title, what this run measured, the fix) for each pitfall; the measured text is empty
    when the demos did not run."""
    p = demos.get("pitfalls") or {}
    fe, one, lb, mo, ft = (p.get(k) for k in ("forget_eval", "batch_of_one", "last_batch", "momentum", "fine_tune"))
    out = []
    out.append(
        (
            "forget-eval",
            "Forgetting `model.eval()`",
            ""
            if not fe
            else f"The trained CNN scored {_pct(fe['eval'])} in eval mode. Left in training mode it normalizes each "
            f"batch with that batch's own statistics: {_pct(fe['train_mode_batch_1000'])} with the whole test "
            f"set as one batch, {_pct(fe['train_mode_batch_32'])} with batches of 32, "
            f"{_pct(fe['train_mode_batch_4'])} with batches of 4 and {_pct(fe['train_mode_sorted_batch_100'])} "
            f"with batches of 100 sorted by class; and a pass over the test set in training mode moved the "
            f"running means by up to {fe['running_mean_change']:.2f} standard deviations.",
            "Call `model.eval()` (and use `torch.no_grad()`) before predicting, `model.train()` before training again.",
        )
    )
    out.append(
        (
            "batch-of-one",
            "A batch of one",
            ""
            if not one
            else f"In training mode a BatchNorm1d refuses an (N = 1, C) batch: \u201c{one['error']}\u201d. "
            "An (N = 1, C, L) batch passes but normalizes each example by itself: predicting one example at a time "
            "in training "
            f"mode scored {_pct(one['train_mode_batch_1'])}. In eval mode one example alone gets what it gets in "
            f"a batch (largest difference of the outputs {one['eval_alone_vs_batch']:.0e}, float rounding).",
            "Predict in eval mode; train on batches of more than a few examples.",
        )
    )
    out.append(
        (
            "last-batch",
            "A small last batch (`drop_last`)",
            ""
            if not lb
            else f"When the data set size is not a multiple of the batch size the epoch ends with a short batch. One "
            f"SGD step on a last batch of 2 took the trained CNN from {_pct(lb['before'])} to "
            f"{_pct(lb['after_batch_2_mean'])} on average over {lb['tries']} draws (worst "
            f"{_pct(lb['after_batch_2_worst'])}); one step on a batch of 100 gave "
            f"{_pct(lb['after_batch_100_mean'])}. "
            f"A last batch of one is worse still: BatchNorm1d raises the error above.",
            "`DataLoader(..., drop_last=True)`, or a sampler that only yields full batches.",
        )
    )
    out.append(
        (
            "momentum",
            "Momentum means opposite things in PyTorch and Keras/Flax",
            ""
            if not mo
            else (
                f"PyTorch's `momentum=0.1` is the weight of the new batch; Keras's and Flax's `momentum="
                f"{mo['keras_decay']:g}` is the decay of the old value. The same average needs momentum = 1 − decay: "
                f"`bnlab.surgery.conventions.decay_to_momentum({mo['keras_decay']:g})` = {mo['converted']:.2g}. "
                f"Re-estimating the running statistics of the trained CNN over one epoch ({mo['batches_per_epoch']} "
                f"batches): momentum 0.1 gave {_pct(mo['torch_default'])}; Keras's {mo['keras_decay']:g} typed into "
                f"PyTorch (statistics of the last few batches only) {_pct(mo['keras_value_typed_in'])}; the converted "
                f"{mo['converted']:.2g} {_pct(mo['converted_one_epoch'])}, because the initial values still weigh "
                f"{(1 - mo['converted']) ** mo['batches_per_epoch']:.0%} after one epoch, and "
                f"{_pct(mo['converted_ten_epochs'])} after ten."
            ),
            (
                "Convert with `decay_to_momentum` / `momentum_to_decay` (or let `bnlab.surgery.interop` do it when "
                "moving weights), and give a slow average enough batches."
            ),
        )
    )
    out.append(
        (
            "fine-tune",
            "Fine-tuning with BN in training mode",
            ""
            if not ft
            else f"Fine-tuning only the head for {ft['steps']} steps on batches of {ft['batch']}, with the rest frozen "
            f"by `requires_grad_(False)` but BN left in training mode: {_pct(ft['bn_in_training_mode'])} (from "
            f"{_pct(ft['before'])}), and BN's running means moved by up to "
            f"{ft['bn_in_training_mode_running_mean_change']:.2f} standard deviations: `requires_grad` does "
            f"not freeze statistics. With BN frozen: {_pct(ft['frozen_bn'])}, the statistics unchanged "
            f"({ft['frozen_bn_running_mean_change']:.2g}).",
            '`bnlab.convert(model, to="frozen")`, or call `.eval()` on the BN layers after every `model.train()`.',
        )
    )
    return out


def section_html(demos: Mapping[str, Any]) -> Markup:
    """The module's source and the pitfalls, each with what this run measured (templates/scratch.html)."""
    parity = (demos.get("parity") or {}).get("largest")
    measured = (
        f" In this run it matched `torch.nn.BatchNorm2d` to a relative {parity:.0e} in outputs, gradients "
        f"and running statistics over three training steps and an evaluation (float32)."
        if parity is not None
        else ""
    )
    seconds, steps = demos.get("seconds"), (demos.get("pitfalls") or {}).get("train_steps", "?")
    took = f" (all of them took {seconds:.0f} s)" if isinstance(seconds, (int, float)) else ""
    return render(
        "scratch.html",
        measured=measured,
        source=scratch_source(),
        steps=steps,
        took=took,
        pitfalls=pitfalls(demos),
    )
