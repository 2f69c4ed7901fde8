"""One notation for numbers: "mean [low, high]" with the unit once, clipped to what is possible."""

import math

import pytest

from bnlab.experiments import estimate, stats, text


def test_accuracy_is_a_percentage_with_its_interval_in_brackets():
    assert text.interval(estimate(0.947, (0.931, 0.962), n=5), "%") == "94.7% [93.1, 96.2]"
    assert text.number(0.5, "%") == "50.0%"


def test_a_difference_of_accuracies_is_signed_percentage_points_with_a_minus_sign():
    assert text.interval(estimate(-0.008, (-0.02, 0.004), n=10), "points") == "−0.8 points [−2.0, +0.4]"
    assert text.number(0.23, "points") == "+23.0 points"
    assert text.number(-0.0001, "points") == "0.0 points"  # no "-0.0"


def test_intervals_are_clipped_to_what_the_quantity_can_take():
    wide = estimate(0.592, (-0.45, 1.634), n=2)  # a 2-seed t-interval
    assert text.interval(wide, "%") == "59.2% [0.0, 100.0]"
    assert text.few_seeds(wide) and not text.few_seeds(estimate(0.5, (0.4, 0.6), n=3))
    assert text.interval(estimate(120, (-30, 270), n=2), "steps") == "120 steps [0, 270]"


def test_estimates_without_an_interval_and_missing_values():
    assert text.interval(stats.estimate([0.9]), "%") == "90.0% (1 seed)"
    assert text.interval(stats.estimate([]), "%") == "n/a"
    assert text.number(None) == "n/a" and text.number(math.nan, "%") == "n/a"
    assert text.number(math.inf, "×") == "∞×"


def test_stats_objects_and_their_json_read_the_same():
    e = stats.estimate([0.1, 0.2, 0.3])
    assert text.interval(e, "%") == text.interval(e.to_json(), "%")
    p = stats.paired([0.3, 0.4, 0.5], [0.1, 0.3, 0.3])
    assert text.interval(p.to_json(), "points") == text.interval(p.diff, "points")


def test_comparisons_follow_the_interval():
    assert text.compare(estimate(0.1, (0.05, 0.15)), "up", "down") == "up"
    assert text.compare(estimate(-0.1, (-0.15, -0.05)), "up", "down") == "down"
    assert text.compare(estimate(0.1, (-0.05, 0.15)), "up", "down", "same") == "same"


def test_p_values_and_unknown_units():
    assert text.p_value(0.0004) == "< 0.001" and text.p_value(0.0123) == "0.012" and text.p_value(0.3) == "0.30"
    with pytest.raises(ValueError, match="expected a unit"):
        text.number(1.0, "furlongs")


def test_thousands_of_steps_stay_plain_integers():
    assert text.interval(estimate(1420, (1320, 1520), n=5), "steps") == "1420 steps [1320, 1520]"
    assert text.number(598714.72, "×") == "5.99e+05×"  # only huge values lose their decimals
