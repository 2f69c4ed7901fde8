"""Two figures to look at before reading: training with and without BN (from the runs of C5, C1 and
C3), and inside a saturating network with and without BN (the diagnostics demo), drawn here and
placed by templates/look.html."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..experiments import text
from ..experiments.plotting import legend_below, log_ticks, percent_axis
from ..experiments.result import ClaimResult, FigureSpec
from .markup import figure

COLORS = {"none": "tab:gray", "bn": "tab:blue"}


def _figure_data(result: ClaimResult | None, name: str) -> dict | None:
    if result is None:
        return None
    return next((f.data for f in result.figures if f.name == name), None)


def headline_data(results: Mapping[str, ClaimResult]) -> dict[str, Any]:
    """The panels whose experiments ran: the CNN's accuracy (C5), the sigmoid MLP's (C1), accuracy
    against the learning rate (C3)."""
    out: dict[str, Any] = {}
    c5 = _figure_data(results.get("C5"), "train_loss")
    if c5 and c5.get("acc_bands"):
        out["cnn"] = {k: c5["acc_bands"][k] for k in ("none", "bn") if k in c5["acc_bands"]}
    c1 = _figure_data(results.get("C1"), "accuracy_vs_steps")
    if c1:
        bands = list(c1["bands"].items())[:2]  # no BN and BN at the same learning rate
        out["mlp"] = {"none" if label.startswith("no BN") else "bn": band for label, band in bands}
        out["mlp_label"] = bands[0][0].split(", ", 1)[-1] if bands else ""
    c3 = _figure_data(results.get("C3"), "accuracy_vs_lr")
    if c3:
        out["lr"] = c3["curves"]
    return out


def draw_headline(data: dict):
    import matplotlib.pyplot as plt

    panels = [k for k in ("cnn", "mlp", "lr") if k in data]
    fig, axes = plt.subplots(1, len(panels), figsize=(8, 3.2), squeeze=False)
    titles = {
        "cnn": "CNN, during training (C5)",
        "mlp": f"sigmoid MLP, {data.get('mlp_label', '')} (C1)",
        "lr": "CNN, final accuracy by learning rate (C3)",
    }
    for ax, panel in zip(axes[0], panels):
        if panel == "lr":
            for norm, curve in data["lr"].items():
                ax.plot(
                    curve["lr"],
                    [100 * m if m is not None else float("nan") for m in curve["mean"]],
                    "o-",
                    color=COLORS.get(norm),
                    label=text.name(norm),
                )
            ax.set_xscale("log")
            ax.set_xlabel("learning rate")
        else:
            for norm, band in data[panel].items():
                ax.plot(band["step"], [100 * v for v in band["mean"]], color=COLORS.get(norm), label=text.name(norm))
                ax.fill_between(
                    band["step"],
                    [100 * v for v in band["low"]],
                    [100 * v for v in band["high"]],
                    color=COLORS.get(norm),
                    alpha=0.2,
                    lw=0,
                )
            ax.set_xlabel("step")
        ax.set_title(titles[panel])
        percent_axis(ax)
    axes[0][0].set_ylabel("test accuracy")
    fig.tight_layout()
    legend_below(fig)
    return fig


def draw_diagnostics(data: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(8, 5.6))
    edges = np.array(data["none"]["trained"]["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    for ax, norm in zip(axes[0], ("none", "bn")):
        for i, hist in enumerate(data[norm]["trained"]["hist"]):
            ax.plot(centres, 100 * np.array(hist), color=f"C{i}", label=data["layers"][i])
        ax.set_title(f"{text.name(norm)}: tanh outputs per layer")
        ax.set_xlabel("tanh output")
        ax.set_ylabel("share of outputs (%)")
    top = max(ax.get_ylim()[1] for ax in axes[0])
    for ax in axes[0]:
        ax.set_ylim(0, top)  # one scale: the two distributions are compared
    layers = np.arange(len(data["layers"]))
    for j, norm in enumerate(("none", "bn")):
        sat = 100 * np.array(data[norm]["trained"]["saturation"])
        axes[1][0].bar(layers + (j - 0.5) * 0.38, sat, width=0.38, color=COLORS[norm], label=text.name(norm))
        ratio = np.array(data[norm]["trained"]["grad_to_data"])
        axes[1][1].bar(np.arange(len(ratio)) + (j - 0.5) * 0.38, ratio, width=0.38, color=COLORS[norm])
    axes[1][0].set_xticks(layers, [str(i + 1) for i in layers])
    axes[1][0].set_xlabel("hidden layer")
    axes[1][0].set_ylabel(f"saturated: |tanh| > {data['saturated']:g}")
    percent_axis(axes[1][0], limits=(0, 100))
    n = len(data["none"]["trained"]["grad_to_data"])
    axes[1][1].set_xticks(range(n), [str(i + 1) for i in range(n - 1)] + ["out"])
    axes[1][1].set_xlabel("linear layer")
    axes[1][1].set_ylabel("gradient-to-data ratio")
    axes[1][1].set_yscale("log")
    log_ticks(axes[1][1])
    fig.tight_layout()
    legend_below(fig, axes=[axes[0][0], axes[1][0]], ncol=7)
    return fig


def figures(results: Mapping[str, ClaimResult], demos: Mapping[str, Any], quick: bool) -> list[dict[str, Any]]:
    """The figures of the section "Look first" (templates/look.html) whose data this report has."""
    figures = []
    head = headline_data(results)
    if any(k in head for k in ("cnn", "mlp", "lr")):
        sources = ", ".join(f"{cid}" for cid, key in (("C5", "cnn"), ("C1", "mlp"), ("C3", "lr")) if key in head)
        figures.append(
            figure(
                FigureSpec(
                    "headline",
                    "Training with and without BN",
                    head,
                    draw_headline,
                    f"Mean over seeds with the lowest-to-highest band; from the runs of {sources}."
                    + (" A smoke test: a few steps and two seeds." if quick else ""),
                ),
                "",
            )
        )
    diag = demos.get("diagnostics")
    if diag:
        sat = {k: sum(diag[k]["trained"]["saturation"]) / len(diag[k]["trained"]["saturation"]) for k in ("none", "bn")}
        figures.append(
            figure(
                FigureSpec(
                    "diagnostics",
                    "Inside a saturating network, with and without BN",
                    diag,
                    draw_diagnostics,
                    f"A tanh MLP with {diag['hidden']} hidden layers of {diag['width']} units whose weights start too "
                    f"large (std {diag['gain']:g}/√fan-in), after {diag['steps']} SGD steps, measured on 1000 "
                    "training examples. Top: the distribution of each layer's tanh outputs. Bottom left: the share "
                    "of saturated units, where tanh's slope is almost 0 and little gradient flows "
                    f"({text.number(sat['none'], '%')} on average without BN, {text.number(sat['bn'], '%')} with). "
                    "Bottom right: std(gradient) / std(weights) per layer, how much one step changes each layer. "
                    f"Test accuracy: {text.number(diag['none']['test_acc'], '%')} without BN, "
                    f"{text.number(diag['bn']['test_acc'], '%')} with.",
                ),
                "",
            )
        )
    return figures
