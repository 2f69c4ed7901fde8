"""The statistics the verdicts rest on: means with t-based 95% CIs, paired tests, Holm correction,
and equivalence tests against a margin fixed in advance (:func:`tost`, :func:`effect`).

Seeds are the unit of replication: each number below is computed over per-seed values. Paired
comparisons (the same seed, data order and initialisation under two settings) use the per-seed
differences, which removes the variance the two settings share.

The t quantiles and tail probabilities come from scipy's special functions and the sign test from
exact binomial sums: the same numbers as ``scipy.stats.ttest_1samp`` / ``binomtest`` (the tests
compare them), at a small fraction of the cost -- the stability of a verdict
(:mod:`.stability`) re-applies each rule to hundreds of resampled seed sets.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

# Two-sided level of every test a verdict reads: the rules read 95% intervals. An equivalence test (TOST)
# is usually run at 0.05 per side, i.e. with a 90% interval; here it runs at ALPHA / 2 per side, so
# "within the margin" is read off the same 95% interval as "above 0" and "below 0" -- one interval, one
# level, three readings (:func:`effect`).
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Estimate:
    """mean ± half-width of a two-sided 95% t-interval over n values."""

    mean: float
    ci: float  # half-width; NaN when n < 2
    n: int
    std: float

    @property
    def low(self) -> float:
        return self.mean - self.ci

    @property
    def high(self) -> float:
        return self.mean + self.ci

    def to_json(self) -> dict:
        """The report's form (:func:`bnlab.experiments.result.estimate`): mean, [low, high], n."""
        from .result import estimate as as_report

        if math.isnan(self.ci):
            return {"mean": self.mean, "n": self.n}
        return as_report(self.mean, (self.low, self.high), self.n)

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.ci:.2g} (n={self.n})" if self.n > 1 else f"{self.mean:.4g} (n=1)"


def estimate(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean and t-interval half-width; NaNs (e.g. diverged runs' metrics) must be removed first."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return Estimate(math.nan, math.nan, 0, math.nan)
    mean, sd = _mean_sd(v)
    if math.isnan(mean) and np.isnan(v).any():
        raise ValueError(f"expected finite values (got {int(np.isnan(v).sum())} NaN of {v.size})")
    if v.size == 1:
        return Estimate(float(v[0]), math.nan, 1, math.nan)
    half = _t_quantile(v.size - 1, level) * sd / math.sqrt(v.size)
    return Estimate(mean, half, int(v.size), sd)


# The stability of a verdict (:mod:`.stability`) re-applies each rule to hundreds of resampled seed sets, so
# these run some 10^5 times a report; on arrays of a few dozen values numpy's mean, std and allclose cost
# mostly their own overhead. The helpers below compute the same bits with the same ufuncs (tested against
# them), without it.


def _mean_sd(v: np.ndarray) -> tuple[float, float]:
    """``(v.mean(), v.std(ddof=1))`` of a 1-D float64 array of at least one value, the same bits as numpy's
    (which sums with the same ``np.add.reduce``, divides by the count, and sums the squared deviations);
    the sd is NaN for one value. Other arrays (another dtype, more dimensions) take numpy's own."""
    n = v.size
    if v.ndim != 1 or v.dtype != np.float64:
        return float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan
    mean = np.add.reduce(v) / n
    if n < 2:
        return float(mean), math.nan
    dev = v - mean
    return float(mean), math.sqrt(np.add.reduce(dev * dev) / (n - 1))


@functools.cache
def _t_quantile(df: int, level: float) -> float:
    """The t quantile of a two-sided ``level`` interval with ``df`` degrees of freedom."""
    return float(_sp.stdtrit(df, 0.5 + level / 2))


def _all_close_to_first(d: np.ndarray) -> bool:
    """``np.allclose(d, d[0])`` (its default tolerances): for a 1-D array of finite float64 values its formula,
    else numpy's own."""
    if d.ndim != 1 or d.dtype != np.float64:
        return bool(np.allclose(d, d[0]))
    first = float(d[0])
    worst = float(np.abs(d - first).max())
    if math.isfinite(worst) and math.isfinite(first):
        return worst <= 1e-08 + 1e-05 * abs(first)
    return bool(np.allclose(d, d[0]))


def t_test(d: np.ndarray) -> float:
    """Two-sided one-sample t-test p-value of mean(d) = 0 (NaN for fewer than 2 values)."""
    if d.size < 2:
        return math.nan
    return _t_p(d, *_mean_sd(d))


def _t_p(d: np.ndarray, mean: float, sd: float) -> float:
    """:func:`t_test` of ``d`` (at least 2 values) given its mean and sd."""
    if _all_close_to_first(d):
        return 0.0 if d[0] != 0 else 1.0  # no spread: the t statistic is infinite (or 0/0)
    t = mean / (sd / math.sqrt(d.size))
    return float(2.0 * _sp.stdtr(d.size - 1, -abs(t)))


@functools.lru_cache(maxsize=4096)
def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (binomial, p = 1/2) of ``wins`` against ``losses``."""
    n = wins + losses
    if n == 0 or wins == losses:
        return 1.0
    k = min(wins, losses)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Paired comparison a - b by seed: the mean difference with its CI, t-test and sign test."""

    diff: Estimate
    p_t: float  # two-sided paired t-test
    p_sign: float  # two-sided exact sign test (Wilcoxon would need n >= 6 to ever reach 0.05)
    wins: int  # seeds where a > b
    losses: int  # seeds where a < b

    def to_json(self) -> dict:
        return {
            "diff": self.diff.to_json(),
            "p_t": self.p_t,
            "p_sign": self.p_sign,
            "wins": self.wins,
            "losses": self.losses,
        }


def paired(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Paired test of a against b; a[i] and b[i] must come from the same seed."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"expected paired samples of equal length (got {a.size} and {b.size})")
    d = a - b
    wins, losses = int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))
    diff = estimate(d)
    p_t = _t_p(d, diff.mean, diff.std) if d.size >= 2 else math.nan
    return PairedTest(diff, p_t, sign_test(wins, losses), wins, losses)


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value for unpaired samples (NaN if either has < 2 values)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    if np.allclose(a, a[0]) and np.allclose(b, b[0]):
        return 0.0 if a[0] != b[0] else 1.0
    return float(_st.ttest_ind(a, b, equal_var=False).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control for several comparisons)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def separated(a: Estimate, b: Estimate) -> bool:
    """True when a's and b's 95% intervals do not overlap (a conservative 'clearly different')."""
    if math.isnan(a.ci) or math.isnan(b.ci):
        return False
    return a.low > b.high or b.low > a.high


def tost(d: Sequence[float], margin: float) -> float:
    """Two one-sided t-tests (Schuirmann 1987) of "the mean of ``d`` lies within (-margin, margin)":
    the larger of the p-values of H0: mean <= -margin and H0: mean >= margin (NaN for fewer than 2
    values). Below ALPHA / 2 exactly when the 95% t-interval of the mean lies within (-margin, margin)."""
    d = np.asarray(d, dtype=float)
    if not margin > 0:
        raise ValueError(f"expected a positive margin (got {margin!r})")
    if d.size < 2:
        return math.nan
    mean, sd = _mean_sd(d)
    if sd == 0.0:  # no spread: the mean is known exactly
        return 0.0 if abs(mean) < margin else 1.0
    se = sd / math.sqrt(d.size)
    p_low = float(_sp.stdtr(d.size - 1, -(mean + margin) / se))  # H0: mean <= -margin
    p_high = float(_sp.stdtr(d.size - 1, (mean - margin) / se))  # H0: mean >= margin
    return max(p_low, p_high)


def within(e: Estimate, margin: float) -> bool:
    """Whether the 95% interval of ``e`` lies within (-margin, margin): no difference as large as the
    margin (TOST at ALPHA / 2 per side, see :func:`tost`)."""
    return not math.isnan(e.ci) and -margin < e.low and e.high < margin


def effect(e: Estimate, margin: float, claimed: int) -> str:
    """The verdict one difference gives a claim that it is of sign ``claimed`` (-1: lower, +1: higher),
    with ``margin`` the smallest difference that matters, fixed before the runs:

    * not reproduced if the 95% interval lies within (-margin, margin) -- no difference that matters,
      a finding (equivalence) -- or wholly on the other side of 0;
    * reproduced if it lies wholly on the claimed side of 0 (and not within the margin);
    * inconclusive otherwise (the interval reaches past the margin and across 0).
    """
    if claimed not in (-1, 1):
        raise ValueError(f"expected claimed = -1 (lower) or +1 (higher) (got {claimed!r})")
    if math.isnan(e.ci):
        return "inconclusive"
    if within(e, margin):
        return "not reproduced"
    low, high = (e.low, e.high) if claimed > 0 else (-e.high, -e.low)  # in the claimed direction
    if low > 0:
        return "reproduced"
    if high < 0:
        return "not reproduced"
    return "inconclusive"
