"""`bnlab bench`: well-formed rows on a tiny shape list, the goal arithmetic, the run plan."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bnlab import cli
from bnlab.core import dispatch
from bnlab.bench import cases, command, environment, goals, timing

ROW_FIELDS = {
    "op": str,
    "dims": int,
    "shape": list,
    "layout": str,
    "dtype": str,
    "torch_us": float,
    "bnlab_us": float,
    "ratio": float,
    "gbps": float,
    "bandwidth_fraction": float,
}


def test_fused_and_fold_rows_carry_their_extra_fields(tmp_path):
    out = tmp_path / "bench.json"
    rc = cli.main(
        [
            "bench",
            "--quick",
            "--repeats",
            "1",
            "--shapes",
            "2x3x4x4",
            "--json",
            str(out),
            "--ops",
            "bn_relu_fwd_bwd,bn_silu_fwd_bwd,fold_eval",
        ]
    )
    assert rc == 0
    rows = {r["op"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"bn_relu_fwd_bwd", "bn_silu_fwd_bwd", "fold_eval"}
    for op in ("bn_relu_fwd_bwd", "bn_silu_fwd_bwd"):
        r = rows[op]
        assert r["layout"] == "nchw" and r["shape"] == [2, 3, 4, 4]
        # one input-sized tensor kept instead of two (plus the same per-channel vectors each side)
        assert r["saved_bytes_bnlab"] < r["saved_bytes_torch"] and 0.5 <= r["saved_ratio"] < 0.6
    fold = rows["fold_eval"]
    assert fold["shape"] == [64, 3, 32, 32]  # its own model input, whatever --shapes says
    assert fold["gbps"] is None and fold["max_abs_diff"] < 1e-4


def test_bench_json_on_tiny_shapes_has_well_formed_rows(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli.main(
        [
            "bench",
            "--quick",
            "--repeats",
            "1",
            "--shapes",
            "6x4,2x3x4x4",
            "--json",
            str(out),
            "--ops",
            "train_fwd,train_fwd_bwd,eval",
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    # 1d: 3 ops on one layout; 2d: 3 ops x (nchw, channels_last)
    assert len(rows) == 9
    assert {(r["op"], r["layout"]) for r in rows if r["dims"] == 2} == {
        (op, lay) for op in ("train_fwd", "train_fwd_bwd", "eval") for lay in ("nchw", "channels_last")
    }
    for r in rows:
        for field, kind in ROW_FIELDS.items():
            assert isinstance(r[field], kind), field
        assert r["torch_us"] > 0 and r["bnlab_us"] > 0
        assert math.isclose(r["ratio"], r["bnlab_us"] / r["torch_us"], rel_tol=1e-9)
        nbytes = r["passes"] * math.prod(r["shape"]) * 4
        assert math.isclose(r["gbps"], nbytes / (r["bnlab_us"] * 1e-6) / 1e9, rel_tol=1e-9)
        assert math.isclose(r["bandwidth_fraction"], r["gbps"] / result["copy_gbps"], rel_tol=1e-9)
        assert r["path"] == "fast"  # every layout of these shapes has a kernel, eval included
    assert {r["passes"] for r in rows} == {3, 8, 2}
    env = result["environment"]
    for key in ("torch", "numba", "torch_threads", "allocator", "cpu", "numba_threading_layer"):
        assert key in env
    assert "loadavg_before" in env and all(r["ratio_min"] > 0 for r in rows)
    assert result["first_call_s"] > 0 and result["copy_gbps"] > 0
    printed = capsys.readouterr()
    assert "ratio" in printed.out and "goals (on medians" in printed.out
    assert "[1/9]" in printed.err  # the progress line


def test_run_reports_the_path_of_bfloat16_rows():
    plan = cases.plan(quick=False, ops=["eval"], shapes={2: [(2, 3, 4, 4)]})
    nchw = [(c.dtype, c.param_dtype) for c in plan if c.layout == "nchw"]
    assert nchw == [(torch.float32, None), (torch.bfloat16, None), (torch.bfloat16, torch.float32)]
    for case, name in zip([c for c in plan if c.dtype == torch.bfloat16], ["bfloat16", "bf16/f32"]):
        row = command.run_case(case, copy_gbps=10.0, repeats=1, min_sample_s=0.0)
        assert row["path"] == "fast" and row["dtype"] == name  # both on the kernels, bfloat16 read as it is
        with dispatch.reference_only():
            row = command.run_case(case, copy_gbps=10.0, repeats=1, min_sample_s=0.0)
        assert row["path"] == "reference: fast path disabled"


def test_quick_plan_is_2d_and_bn1d_float32_only():
    plan = cases.plan(quick=True)
    assert {c.dims for c in plan} == {1, 2}
    assert {c.dtype for c in plan} == {torch.float32}
    assert {c.shape for c in plan if c.dims == 1 and not cases.OPS[c.op].shapes} == {(256, 512)}  # fixed: their own
    full = cases.plan(quick=False)
    assert {c.dims for c in full} == {1, 2, 3} and len(full) > len(plan)


def test_plan_and_registry_reject_mistakes():
    with pytest.raises(ValueError, match="expected operations"):
        cases.plan(quick=True, ops=["train_fwdd"])
    with pytest.raises(ValueError, match="already registered"):
        cases.register("eval", passes=2)(lambda case: None)
    with pytest.raises(ValueError, match="expected shapes like"):
        cases.parse_shapes("8x128xx")
    assert cases.parse_shapes("4x6,2x3x4x4,2x3x4x4x4,2x3x9") == {
        1: [(4, 6), (2, 3, 9)],
        2: [(2, 3, 4, 4)],
        3: [(2, 3, 4, 4, 4)],
    }


def row(op, ratio, dims=2, layout="nchw", shape=(64, 64, 32, 32), frac=0.5):
    return {
        "op": op,
        "dims": dims,
        "layout": layout,
        "shape": list(shape),
        "dtype": "float32",
        "ratio": ratio,
        "bandwidth_fraction": frac,
    }


def test_goals_use_geometric_mean_worst_case_and_bandwidth():
    rows = [
        row("train_fwd_bwd", 0.5),
        row("train_fwd_bwd", 0.7, shape=(8, 128, 56, 56)),
        row("train_fwd", 0.2, shape=(8, 128, 56, 56), frac=0.9),
        row("train_fwd", 0.8),
    ]
    by_name = {g["goal"]: g for g in goals.evaluate(rows)}
    geo = by_name["training fwd+bwd, NCHW 2d: geometric mean ratio <= 0.6"]
    assert math.isclose(geo["value"], math.sqrt(0.5 * 0.7)) and geo["met"]
    assert by_name["training fwd+bwd, NCHW 2d: every ratio <= 0.8"]["met"]
    assert math.isclose(by_name["training fwd, NCHW 2d: geometric mean ratio <= 0.4"]["value"], 0.4)
    assert by_name["(8, 128, 56, 56) training fwd NCHW: >= 0.8 of copy bandwidth"]["met"]
    assert by_name["eval: every ratio <= 1.0"]["met"] is None  # not measured
    missed = goals.evaluate([row("eval", 1.3)])
    assert [g["met"] for g in missed if g["goal"].startswith("eval")] == [False]


def test_interleaved_timing_reports_a_median_per_callable():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    med = timing.time_interleaved({"a": make("a"), "b": make("b")}, repeats=3, warmup=1, min_sample_s=0.0)
    assert set(med) == {"a", "b"} and all(v > 0 for v in med.values())
    assert calls["a"] >= 1 + 1 + 3  # warm-up, loop calibration, samples
    with pytest.raises(ValueError, match="repeats >= 1"):
        timing.time_interleaved({"a": make("a")}, repeats=0)


def test_allocator_pinning_is_recorded():
    text = environment.pin_allocator()
    assert text.startswith(("glibc mallopt", "not pinned"))


def test_contention_row_times_both_libraries_alone_and_paired():
    from bnlab.bench import contention

    row = contention.measure(threads=1, seconds=0.3, repeats=1)
    for lib in ("torch", "bnlab"):
        assert row[f"{lib}_alone_sps"] > 0 and row[f"{lib}_paired_sps"] > 0
        assert math.isclose(row[f"{lib}_slowdown"], row[f"{lib}_alone_sps"] / row[f"{lib}_paired_sps"])
    assert math.isclose(row["ratio"], row["bnlab_slowdown"] / row["torch_slowdown"])
    verdict = {g["goal"]: g for g in goals.evaluate([row])}
    goal = next(g for name, g in verdict.items() if name.startswith("two 1-thread"))
    assert goal["rows"] == 1 and goal["value"] == row["ratio"]
    assert "contention" in contention.format_row(row)


def test_contention_threads_option_is_validated():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--contention", "1,x"])


def test_overhead_and_lab_rows_time_both_libraries(tmp_path):
    out = tmp_path / "bench.json"
    rc = cli.main(
        [
            "bench",
            "--quick",
            "--repeats",
            "1",
            "--json",
            str(out),
            "--ops",
            "overhead_train_fwd,overhead_train_fwd_bwd,overhead_eval,lab_cnn_step",
        ]
    )
    assert rc == 0
    rows = {r["op"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"overhead_train_fwd", "overhead_train_fwd_bwd", "overhead_eval", "lab_cnn_step"}
    for r in rows.values():
        assert r["torch_us"] > 0 and r["bnlab_us"] > 0 and r["gbps"] is None and r["path"] == "fast"
    assert rows["overhead_eval"]["shape"] == [2, 8, 2, 2] and rows["lab_cnn_step"]["threads"] == 1
    goal = next(g for g in goals.evaluate(list(rows.values())) if g["goal"].startswith("lab CNN step"))
    assert goal["rows"] == 1


@pytest.mark.slow
def test_compiled_row_times_torch_compile_against_bnlab_eager():
    plan = cases.plan(quick=False, ops=["compiled_fwd_bwd"], shapes={2: [(2, 3, 4, 4)]})
    assert [c.layout for c in plan] == ["nchw", "channels_last"]
    row = command.run_case(plan[0], copy_gbps=10.0, repeats=1, min_sample_s=0.0)
    assert row["torch_compiled"] and row["torch_us"] > 0 and row["bnlab_us"] > 0


def test_seed_step_goals_take_the_best_k():
    rows = [dict(row("seed_step_cnn", r), shape=[k, 100]) for k, r in ((1, 1.1), (4, 0.6), (16, 0.45))]
    by_name = {g["goal"]: g for g in goals.evaluate(rows)}
    cnn = by_name["seed-step, MNIST-1D CNN: best ratio <= 0.5"]
    assert cnn["value"] == 0.45 and cnn["met"]
    assert by_name["seed-step, sigmoid MLP: best ratio <= 0.3"]["met"] is None  # not measured
    worse = goals.evaluate([dict(row("seed_step_mlp", 0.35), shape=[16, 60])])
    assert [g["met"] for g in worse if g["goal"].startswith("seed-step, sigmoid")] == [False]


def test_seed_step_rows_time_k_seeds_alone_and_together_in_cpu_time(tmp_path):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--repeats", "1", "--json", str(out), "--ops", "seed_step_mlp", "--contention", "0"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows] == [[k, 60] for k in (1, 4, 16, 32)]
    for r in rows:
        assert r["clock"] == "cpu" and r["k"] == r["shape"][0] and r["path"] == f"grouped, k={r['k']}"
        assert r["torch_us"] > 0 and r["bnlab_us"] > 0


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.text, self.tty = "", tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_is_plain_lines_in_a_pipe_and_one_live_line_on_a_terminal(tty):
    stream = _Stream(tty)
    command.run(True, ops=["eval"], shapes={2: [(4, 3, 5, 5)]}, repeats=1, progress=stream, contention_threads=[])
    if tty:
        assert stream.text.startswith("\r[1/") and "\033[K" in stream.text
    else:
        lines = stream.text.splitlines()
        assert lines and all(line.startswith("[") for line in lines), stream.text
        assert "\r" not in stream.text and "\033" not in stream.text


def test_seed_step_rows_of_c12s_random_arm_at_the_group_width(tmp_path):
    out = tmp_path / "bench.json"
    ops = ["--ops", "seed_step_c12_random", "--contention", "0"]
    assert cli.main(["bench", "--repeats", "1", "--json", str(out), *ops]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows] == [[1, 100], [8, 100]]
    assert all(r["clock"] == "cpu" and r["torch_us"] > 0 and r["bnlab_us"] > 0 for r in rows)
