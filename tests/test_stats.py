"""The verdict statistics against textbook values and independent computations."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats

from bnlab.experiments import stats


def test_estimate_matches_textbook_t_interval():
    # n=4, mean 2.5, sd = sqrt(5/3); t_{0.975,3} = 3.182446...
    e = stats.estimate([1, 2, 3, 4])
    assert e.mean == 2.5 and e.n == 4
    assert e.ci == pytest.approx(3.182446305 * math.sqrt(5 / 3) / 2, rel=1e-8)


def test_estimate_of_one_value_has_no_interval_and_nan_is_refused():
    assert math.isnan(stats.estimate([3.0]).ci)
    with pytest.raises(ValueError, match="expected finite values"):
        stats.estimate([1.0, float("nan")])


def test_paired_test_uses_per_seed_differences():
    a = [0.90, 0.80, 0.70, 0.95, 0.85]
    b = [0.88, 0.77, 0.69, 0.92, 0.84]  # a always a bit better; unpaired the spread would hide it
    t = stats.paired(a, b)
    d = np.subtract(a, b)
    expected_t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    from scipy import stats as st

    assert t.p_t == pytest.approx(2 * st.t.sf(abs(expected_t), d.size - 1), rel=1e-9)
    assert t.wins == 5 and t.losses == 0
    assert t.p_sign == pytest.approx(2 / 32)
    assert stats.welch(a, b) > 0.5  # the same data unpaired: nothing visible


def test_paired_refuses_unequal_lengths():
    with pytest.raises(ValueError, match="equal length"):
        stats.paired([1, 2], [1])


def test_holm_adjustment():
    # p = (0.01, 0.04, 0.03) -> sorted 0.01*3, 0.03*2, max(0.06, 0.04*1)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_separated_intervals():
    hi, lo = stats.estimate([10, 10.1, 9.9]), stats.estimate([1, 1.1, 0.9])
    assert stats.separated(hi, lo) and not stats.separated(hi, stats.estimate([9, 11, 10]))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 40])
def test_fast_t_test_and_interval_match_scipy(n):
    from scipy import stats as st

    rng = np.random.default_rng(n)
    d = rng.normal(0.3, 1.0, n)
    assert stats.t_test(d) == pytest.approx(st.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    assert stats.estimate(d).ci == pytest.approx(st.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n), rel=1e-9)


@pytest.mark.parametrize("wins,losses", [(0, 1), (5, 0), (6, 2), (2, 6), (4, 4), (10, 3), (17, 20), (0, 0)])
def test_exact_sign_test_matches_scipy_binomtest(wins, losses):
    from scipy import stats as st

    expected = st.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    assert stats.sign_test(wins, losses) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_tost_is_the_larger_of_two_one_sided_t_tests(seed):
    # the reference: scipy's one-sample t-tests against each end of the margin
    d = np.random.default_rng(seed).normal(0.02 * seed, 0.05, size=4 + seed)
    margin = 0.08
    want = max(
        scipy.stats.ttest_1samp(d, -margin, alternative="greater").pvalue,
        scipy.stats.ttest_1samp(d, margin, alternative="less").pvalue,
    )
    assert stats.tost(d, margin) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_within_the_margin_is_tost_at_half_alpha_per_side(seed):
    # equivalence is read off the same 95% interval as the other decisions: TOST at 2.5% per side
    d = np.random.default_rng(100 + seed).normal(0.0, 0.1, size=5)
    margin = 0.12
    assert stats.within(stats.estimate(d), margin) == (stats.tost(d, margin) < stats.ALPHA / 2)


def test_effect_reads_one_interval_three_ways():
    lower = stats.estimate([-3.0, -2.5, -3.2, -2.8])
    higher = stats.estimate([3.0, 2.5, 3.2, 2.8])
    same = stats.estimate([0.1, -0.1, 0.05, -0.05])
    wide = stats.estimate([-3.0, 2.0, 0.5])
    assert stats.effect(lower, 1.0, -1) == "reproduced"
    assert stats.effect(higher, 1.0, -1) == "not reproduced"  # the other side of 0
    assert stats.effect(higher, 1.0, +1) == "reproduced"
    assert stats.effect(same, 1.0, -1) == "not reproduced"  # within the margin: no difference that matters
    assert stats.effect(same, 1.0, +1) == "not reproduced"
    assert stats.effect(wide, 1.0, -1) == "inconclusive"
    assert stats.effect(stats.estimate([-3.0]), 1.0, -1) == "inconclusive"  # one seed: no interval
    # significant but smaller than what matters: not reproduced (the margin is the smallest effect that counts)
    assert stats.effect(stats.estimate([-0.2, -0.25, -0.22, -0.21]), 1.0, -1) == "not reproduced"


def test_effect_and_tost_refuse_nonsense():
    with pytest.raises(ValueError, match="expected claimed = -1"):
        stats.effect(stats.estimate([1.0, 2.0]), 1.0, 0)
    with pytest.raises(ValueError, match="expected a positive margin"):
        stats.tost([1.0, 2.0], 0.0)


def _numpy_paired(d: np.ndarray) -> tuple[float, float, float]:
    """(mean, sd, t-test p) of d as numpy's mean, std and allclose give them (the helpers' reference)."""
    from scipy import special

    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if np.allclose(d, d[0]):
        p = 0.0 if d[0] != 0 else 1.0
    else:
        p = float(2.0 * special.stdtr(d.size - 1, -abs(mean / (sd / math.sqrt(d.size)))))
    return mean, sd, p


@pytest.mark.parametrize("seed", range(40))
def test_paired_gives_numpys_bits(seed):
    # paired, estimate and t_test run ~10^5 times per report (the stability's resamples) on their own
    # arithmetic; it must be numpy's to the bit, or a stored run could be judged differently than before.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 70))
    kind = seed % 5
    if kind == 0:
        a, b = rng.normal(0.5, 0.2, n), rng.normal(0.5, 0.2, n)
    elif kind == 1:  # values of accuracy: ties and exact zeros among the differences
        a, b = rng.integers(900, 1000, n) / 1000, rng.integers(900, 1000, n) / 1000
    elif kind == 2:  # a constant difference, then one that only differs within allclose's tolerance
        a = rng.normal(0, 1, n)
        b = a - 0.25
        if seed % 2:
            b[0] -= 1e-9
    elif kind == 3:  # large magnitudes (steps), where the summation order shows in the last bits
        a, b = rng.integers(100, 3000, n).astype(float), rng.integers(100, 3000, n).astype(float) * 1.0001
    else:
        a = rng.normal(0, 1e-3, n)
        b = np.zeros(n)
    d = a - b
    t = stats.paired(a, b)
    mean, sd, p = _numpy_paired(d)
    assert (t.diff.mean, t.diff.std, t.p_t) == (mean, sd, p)
    assert stats.t_test(d) == p
    assert t.diff.ci == float(scipy.special.stdtrit(n - 1, 0.975)) * sd / math.sqrt(n)


def test_t_test_with_infinite_values_is_numpys():
    cases = {(np.inf, np.inf): 0.0, (1.0, np.inf): math.nan, (0.0, 0.0, 0.0): 1.0, (-np.inf, 2.0, 2.0): math.nan}
    for values, expected in cases.items():
        d = np.array(values)
        with np.errstate(invalid="ignore"):
            got, reference = stats.t_test(d), _numpy_paired(d)[2]
        assert got == reference == expected or (math.isnan(got) and math.isnan(reference) and math.isnan(expected))


def test_t_test_of_other_dtypes_and_shapes_is_numpys():
    rng = np.random.default_rng(7)
    for d in (rng.normal(0.2, 1, 9).astype(np.float32), rng.integers(-3, 5, 12), rng.normal(0.1, 1, (3, 4))):
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        p = float(2.0 * scipy.special.stdtr(d.size - 1, -abs(mean / (sd / math.sqrt(d.size)))))
        assert stats.t_test(d) == p
    e = stats.estimate(rng.normal(0, 1, (2, 3)))  # a nested list of values: over all of them, as numpy
    assert e.n == 6
