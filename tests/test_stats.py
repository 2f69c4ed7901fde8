"""The verdict statistics against textbook values and independent computations."""

import math

import numpy as np
import pytest

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
