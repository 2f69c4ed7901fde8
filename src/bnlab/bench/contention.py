"""Two trainings sharing the cores: how much each slows down, bnlab's batch norm against torch's.

A user who runs two jobs on one machine should lose no more to bnlab than to torch. Each sample
starts fresh processes that train the lab's MNIST-1D CNN (synthetic input of MNIST-1D's shape, SGD,
batch 100) with ``threads`` torch threads for ``seconds``: once alone, once two side by side. The *slowdown* is the
alone rate over the mean paired rate (2.0: the two halves of the cores; more: they fight). The row's
``ratio`` is bnlab's slowdown over torch's (goal: <= 1.1). Alone and paired runs of both libraries
are interleaved and repeated; medians are reported. Only the training loop is timed (after a
warm-up), not the start of the process.

Run one child by hand: ``python -m bnlab.bench.contention NORM THREADS SECONDS`` prints steps/s.

Measured with 2 threads per process on 2 cores, both libraries collapse (torch's GNU OpenMP teams
spin against each other; slowdowns of 7x to 40x that change from run to run), so the goal is set
at 1 thread, the setting of ``bnlab train`` and of the lab's workers.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

NORMS = {"torch": "torch_bn", "bnlab": "bn"}


def train_rate(norm: str, threads: int, seconds: float) -> float:
    """Steps per second of the lab's CNN with ``norm`` over ``seconds`` (after 20 warm-up steps)."""
    import torch
    import torch.nn.functional as F

    from .. import models

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.build("cnn", norm=norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(1000, 40), torch.randint(0, 10, (1000,))

    def step(i: int) -> None:
        idx = torch.arange(i * 100, i * 100 + 100) % 1000
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(20):
        step(i)
    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts the timed loops of a pair together
    start, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        step(steps)
        steps += 1
    return steps / elapsed


def _spawn(norm: str, threads: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bnlab.bench.contention", norm, str(threads), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rates(procs: list[subprocess.Popen]) -> list[float]:
    """Wait until every child has warmed up, start their timed loops together, collect steps/s."""
    for p in procs:
        assert p.stdout is not None and p.stdin is not None  # both opened as pipes above
        if p.stdout.readline().strip() != "ready":
            p.kill()
            raise RuntimeError(f"contention child failed: {p.communicate()[1].strip()[-500:]}")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    rates = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"contention child failed (exit {p.returncode}): {err.strip()[-500:]}")
        rates.append(json.loads(out.strip().splitlines()[-1])["steps_per_s"])
    return rates


def measure(threads: int = 1, seconds: float = 2.0, repeats: int = 2) -> dict:
    """One row: alone and paired steps/s of each library, their slowdowns and bnlab's over torch's."""
    if threads < 1 or seconds <= 0 or repeats < 1:
        raise ValueError(f"expected threads >= 1, seconds > 0, repeats >= 1 (got {threads}, {seconds}, {repeats})")
    alone: dict[str, list[float]] = {lib: [] for lib in NORMS}
    paired: dict[str, list[float]] = {lib: [] for lib in NORMS}
    for _ in range(repeats):
        for lib, norm in NORMS.items():
            alone[lib] += _rates([_spawn(norm, threads, seconds)])
            pair = _rates([_spawn(norm, threads, seconds), _spawn(norm, threads, seconds)])
            paired[lib].append(statistics.fmean(pair))
    row: dict = {"op": "contention", "threads": threads, "seconds": seconds, "repeats": repeats}
    for lib in NORMS:
        row[f"{lib}_alone_sps"] = statistics.median(alone[lib])
        row[f"{lib}_paired_sps"] = statistics.median(paired[lib])
        row[f"{lib}_slowdown"] = row[f"{lib}_alone_sps"] / row[f"{lib}_paired_sps"]
    row["ratio"] = row["bnlab_slowdown"] / row["torch_slowdown"]
    return row


def format_row(r: dict) -> str:
    return (
        f"contention  {r['threads']} thread(s) x 2 processes: torch {r['torch_alone_sps']:.0f} -> "
        f"{r['torch_paired_sps']:.0f} steps/s (slowdown {r['torch_slowdown']:.2f}x), bnlab "
        f"{r['bnlab_alone_sps']:.0f} -> {r['bnlab_paired_sps']:.0f} steps/s (slowdown "
        f"{r['bnlab_slowdown']:.2f}x); ratio {r['ratio']:.2f}"
    )


if __name__ == "__main__":
    norm, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps({"steps_per_s": train_rate(norm, threads, seconds)}))
