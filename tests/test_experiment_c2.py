"""C2 is decided by exact computation: it must reproduce, and must fail when the math is broken."""

from bnlab.core import dispatch
from bnlab.core import math as core_math
from bnlab.experiments import registry
from fake_runs import check_well_formed


def test_c2_reproduces_with_tiny_errors():
    result = registry.run("C2", registry.Context(quick=True))
    check_well_formed(result)
    assert result.verdict == "reproduced"
    assert result.numbers["worst_abs_err"] < 1e-12
    assert all(s["gamma"] == [s["input"][1]] for s in result.numbers["param_shapes"].values())
    assert result.to_json()["id"] == "C2"


def test_c2_detects_a_running_variance_that_stores_the_biased_value(monkeypatch):
    # The math is broken where it is written once (bnlab.core.math), and the reference backend,
    # which runs it, is forced: the fast kernels are tested against this math elsewhere.
    original = core_math.update_running_stats

    def biased_update(rm, rv, mean, var, count, momentum):
        original(rm, rv, mean, var * (count - 1) / count, count, momentum)  # undo the m/(m-1)

    monkeypatch.setattr(core_math, "update_running_stats", biased_update)
    with dispatch.reference_only():
        assert registry.run("C2", registry.Context(quick=True)).verdict == "not reproduced"
