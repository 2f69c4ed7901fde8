"""numba's threading layer as bnlab starts it (bnlab.kernels.threads), checked in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Runs a training forward big enough for the parallel kernels on 2 threads, then reports.
_RUN = textwrap.dedent("""
    import json, os, sys
    import torch, numba
    import bnlab
    from bnlab.core.backends import numba_cpu
    from bnlab.kernels import threads
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(4, 8, 128, 128)  # above numba_cpu.PARALLEL_MIN_NUMEL
    y = bnlab.nn.BatchNorm2d(8)(x)
    ref = torch.nn.functional.batch_norm(x, None, None, training=True)
    ok = bool(torch.allclose(y, ref, rtol=1e-4, atol=1e-5))
    print(json.dumps(dict(layer=numba.threading_layer(), ok=ok, parallel=numba_cpu.parallel(x))))
""")


def _run(code: str, **env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _omp_loads() -> bool:
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except ImportError:
        return False
    return True


def _clean_env() -> dict:
    chosen = ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
    return {k: v for k, v in os.environ.items() if k not in chosen}


def test_openmp_layer_is_preferred():
    out = subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True, timeout=120, env=_clean_env())
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["parallel"]
    assert report["layer"] == ("omp" if _omp_loads() else "workqueue")


# torch's thread count and the OpenMP runtime's nesting limit around bnlab's first fast calls.
_STATE = textwrap.dedent("""
    import json
    import torch
    torch.set_num_threads({threads})
    from bnlab.kernels import threads
    before = threads.openmp_state()
    import bnlab
    x = torch.randn(4, 8, 128, 128, requires_grad=True)
    bnlab.nn.BatchNorm2d(8)(x).sum().backward()
    print(json.dumps(dict(before=before, after=threads.openmp_state())))
""")


@pytest.mark.parametrize("n", [1, 2])
def test_starting_the_kernels_keeps_torchs_thread_count_and_nesting(n):
    # numba's omp layer runs in torch's OpenMP runtime, and starting it set that runtime's thread
    # count to the number of CPUs and enabled nesting: a 1-thread torch ran 2-thread teams, and two
    # such trainings sharing 2 cores ran 16x slower than the reference path.
    report = _run(_STATE.format(threads=n))
    assert report["after"] == report["before"] and report["before"][0] == n


def test_a_layer_chosen_by_the_user_is_kept():
    report = _run(_RUN, NUMBA_THREADING_LAYER="workqueue")
    assert report["layer"] == "workqueue" and report["ok"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_serial_kernels():
    # GNU OpenMP aborts a forked child that opens a parallel region after its parent did; bnlab's
    # numba backend must send the child to the serial kernels instead, and give the same answer.
    code = _RUN + textwrap.dedent("""
        pid = os.fork()
        if pid == 0:
            serial = not numba_cpu.parallel(x) and not threads.parallel_allowed()
            y2 = bnlab.nn.BatchNorm2d(8)(x)
            torch.set_num_threads(1)  # torch's own OpenMP pool cannot run in a forked child either
            os._exit(0 if serial and torch.allclose(y2, y, rtol=1e-5, atol=1e-6) else 3)
        _, status = os.waitpid(pid, 0)
        print(json.dumps(dict(child=os.waitstatus_to_exitcode(status), parent_parallel=numba_cpu.parallel(x))))
    """)
    report = _run(code)
    assert report == {"child": 0, "parent_parallel": True}


# Two Python threads train and backprop BN at once, each 20 times, big enough for the parallel kernels.
_TWO_THREADS = textwrap.dedent("""
    import json, threading
    import torch, numba
    import bnlab
    torch.set_num_threads(2)
    try:
        from numba.np.ufunc import parallel
        parallel._launch_threads()
    except (ValueError, ImportError) as e:  # this layer cannot load here (tbb not installed)
        print(json.dumps(dict(unavailable=str(e).splitlines()[0])))
        raise SystemExit(0)
    xs = [torch.randn(4, 8, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]

    def run(x):
        bn, x = bnlab.nn.BatchNorm2d(8), x.clone().requires_grad_()
        y = bn(x)
        y.backward(x.detach())
        return y.detach(), x.grad, bn.running_var

    alone = [run(x) for x in xs]
    out = {}

    def work(i):
        for _ in range(20):
            out[i] = run(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = all(torch.equal(a, b) for i in range(2) for a, b in zip(out[i], alone[i]))
    print(json.dumps(dict(layer=numba.threading_layer(), same=same)))
""")


@pytest.mark.parametrize("layer", ["omp", "workqueue", "tbb"])
def test_two_python_threads_under_each_threading_layer(layer):
    """workqueue aborted the process (SIGABRT) when two threads launched parallel kernels at once;
    every layer must now give each thread the bits it gets alone."""
    result = _run(_TWO_THREADS, NUMBA_THREADING_LAYER=layer)
    if "unavailable" in result:
        pytest.skip(f"numba's {layer} layer cannot load here: {result['unavailable']}")
    assert result == {"layer": layer, "same": True}
