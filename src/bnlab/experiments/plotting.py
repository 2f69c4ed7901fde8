"""What every experiment figure shares: legends that sit outside the data, percent axes, log axes
with enough ticks. The report draws figures with one text size (bnlab.report.figures)."""

from __future__ import annotations

from collections.abc import Iterable


def legend_below(fig, axes: Iterable | None = None, ncol: int | None = None, title: str | None = None) -> None:
    """One legend for the figure, centred under it (outside every axis, so it covers no data); the
    entries are the labelled artists of ``axes`` (default: all), each label once."""
    handles, labels = [], []
    for ax in axes if axes is not None else fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            frameon=False,
            ncol=ncol or min(len(labels), 4),
            title=title,
        )


def percent_axis(ax, axis: str = "y", limits: tuple[float, float] | None = (0, 100)) -> None:
    """Label ``axis`` in percent; values must already be in percent (0-100)."""
    from matplotlib.ticker import PercentFormatter

    getattr(ax, f"{axis}axis").set_major_formatter(PercentFormatter(decimals=0))
    if limits is not None:
        getattr(ax, f"set_{axis}lim")(*limits)


def log_ticks(ax, axis: str = "y") -> None:
    """A log axis with enough labelled ticks for its range (matplotlib's default labels a narrow range
    once or never): evenly spaced plain numbers within a decade, 1-2-5 over a few decades, powers of
    ten beyond. Call it after the data are drawn."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    target = getattr(ax, f"{axis}axis")
    lo, hi = getattr(ax, f"get_{axis}lim")()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 3.0
    if decades < 1:
        target.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], min_n_ticks=4))
    else:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())
