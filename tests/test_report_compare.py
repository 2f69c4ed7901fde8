"""python -m bnlab.report.compare: two full reports side by side, conflicts only between settled verdicts."""

from __future__ import annotations

import json

import pytest

from bnlab.report.compare import conflicts, main, side_by_side


def _claim(cid, verdict, share=1.0, parts=(), rounds=None):
    return {
        "id": cid,
        "verdict": verdict,
        "stability": {"share": share},
        "parts": [{"key": k, "verdict": v, "stability": {"share": s}} for k, v, s in parts],
        "rounds": rounds,
    }


def _doc(*claims, threads=1, quick=False):
    env = {"quick": quick, "cpu": "AMD EPYC", "jobs": 2 if threads == 1 else 1, "threads_per_run": threads}
    return {"environment": {**env, "wall_time_s": 600.0}, "claims": list(claims)}


A = _doc(
    _claim("C1", "not reproduced", parts=[("faster", "reproduced", 1.0), ("steadier", "not reproduced", 1.0)]),
    _claim("C3", "inconclusive", 0.99),
    _claim("C7", "underpowered", 0.7, parts=[("beta", "underpowered", 0.7)]),
    _claim("C14", "not reproduced", rounds={"seeds": 12, "rounds": 2, "stopped": "settled"}),
)


def test_an_underpowered_verdict_conflicts_with_nothing():
    b = _doc(
        _claim("C1", "not reproduced", parts=[("faster", "reproduced", 1.0), ("steadier", "not reproduced", 0.95)]),
        _claim("C3", "inconclusive", 0.93),
        _claim("C7", "not reproduced", 0.91, parts=[("beta", "not reproduced", 0.91)]),  # A's was underpowered
        _claim("C14", "underpowered", 0.77),  # A's was settled
    )
    assert conflicts(A, b) == []
    table = side_by_side(A, b, ("1 thread", "2 threads"))
    assert "| C7 | underpowered (70%); beta: underpowered (70%) | not reproduced (91%); beta:" in table
    assert "| C14 | not reproduced (100%); 12 seeds | underpowered (77%) | agree |" in table
    assert table.splitlines()[-1] == "No claim or part got two different settled verdicts."
    assert "1 thread (AMD EPYC, 2 job(s) x 1 thread(s) per run, 10.0 min)" in table.splitlines()[0]


def test_two_settled_verdicts_that_differ_are_named_claim_and_part():
    b = _doc(
        _claim("C1", "reproduced", parts=[("faster", "reproduced", 1.0), ("steadier", "reproduced", 0.92)]),
        _claim("C3", "not reproduced", 0.95),
    )
    assert conflicts(A, b) == ["C1", "C1/steadier", "C3"]
    table = side_by_side(A, b)
    assert "| C1 |" in table and "differ: C1, C1/steadier |" in table
    assert "| C7 | underpowered (70%); beta: underpowered (70%) | not run | agree |" in table
    assert table.splitlines()[-1] == "Settled verdicts that differ: C1, C1/steadier, C3."


def test_a_quick_report_is_refused():
    with pytest.raises(ValueError, match=r"expected the results.json of a full run for B \(got a --quick run\)"):
        side_by_side(A, _doc(quick=True))


def test_the_command_exits_1_on_a_conflict_and_2_on_a_bad_file(tmp_path, capsys):
    a, b, same = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "same.json"
    a.write_text(json.dumps(A))
    b.write_text(json.dumps(_doc(_claim("C3", "reproduced"))))
    same.write_text(json.dumps(A))
    assert main([str(a), str(same)]) == 0
    assert main([str(a), str(b), "--labels", "one", "two"]) == 1
    assert "Settled verdicts that differ: C3." in capsys.readouterr().out
    assert main([str(a), str(tmp_path / "missing.json")]) == 2
    assert "expected a report's results.json" in capsys.readouterr().err


def test_the_heading_names_each_runs_instruction_set_where_it_was_recorded():
    b = _doc(_claim("C3", "inconclusive"))
    b["environment"]["cpu_isa"] = "AVX2 (ATEN_CPU_CAPABILITY=avx2)"
    heading = side_by_side(A, b).splitlines()[0]
    assert "| A (AMD EPYC, 2 job(s)" in heading  # an older results.json: no instruction set recorded
    assert "| B (AMD EPYC AVX2 (ATEN_CPU_CAPABILITY=avx2), 2 job(s)" in heading


def test_the_environment_records_the_instruction_set_torchs_kernels_run_with():
    """Capped by ATEN_CPU_CAPABILITY in a fresh interpreter (torch reads it when it loads): the record says
    so, variable included; the report's own process says what its torch uses."""
    import os
    import subprocess
    import sys

    import torch

    from bnlab.report.environment import ISA_CAPS, cpu_isa

    assert cpu_isa().split(" (")[0] == torch.backends.cpu.get_cpu_capability()
    code = (
        "from bnlab.report.environment import collect; "
        "print(collect(quick=True, jobs=1, seeds=None, wall_time_s=0)['cpu_isa'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ISA_CAPS}  # no cap but the one set below
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "ATEN_CPU_CAPABILITY": "default"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "DEFAULT (ATEN_CPU_CAPABILITY=default)"
