"""The library without the lab: importing the layers, functional and surgery loads no lab
dependency, a lab command without them says which extra to install, and (slow) a fresh
`pip install .` without extras gives working layers and surgery."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from bnlab.extras import LAB_MODULES

ROOT = Path(__file__).resolve().parents[1]

# Uses the layers and the surgery tools the way the README does, then prints which lab modules the
# process has loaded.
LIBRARY_USE = textwrap.dedent("""
    import sys
    import bnlab, bnlab.nn, bnlab.functional, bnlab.surgery
    LAB = %r
    loaded_by_import = sorted(m for m in sys.modules if m.partition(".")[0] in LAB)
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    converted = bnlab.convert(model, to="bnlab")
    x = torch.randn(16, 3, 10, 10)
    converted(x).square().mean().backward()
    ref = model(x)
    assert isinstance(converted[1], bnlab.nn.BatchNorm2d)
    assert torch.allclose(converted(x), ref, atol=1e-5), "converted model differs from torch's"
    folded = bnlab.fold(converted.eval(), example_input=x)
    assert torch.allclose(folded(x), converted(x), atol=1e-4)
    print(str(bnlab.doctor(converted.eval(), example_input=x)).count("hazard"), "doctor lines")
    print("import loaded:", loaded_by_import)
    print("use loaded:", sorted({m.partition(".")[0] for m in sys.modules} & set(LAB)))
""") % (sorted(LAB_MODULES),)


def test_importing_the_library_loads_no_lab_dependency():
    out = subprocess.run([sys.executable, "-c", LIBRARY_USE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "import loaded: []" in out.stdout.splitlines()
    # Running a kernel lets numba's own BLAS detection import scipy where scipy is installed (it is
    # numba's, for np.linalg in jitted code); nothing else of the lab may appear.
    used = out.stdout.splitlines()[-1]
    assert used in ("use loaded: []", "use loaded: ['scipy']"), used


WITHOUT_LAB = textwrap.dedent("""
    import sys
    for name in %r:
        sys.modules[name] = None  # as if not installed: importing it raises ImportError
    from bnlab.cli import main
    sys.exit(main(sys.argv[1:]))
""") % (sorted(LAB_MODULES),)


@pytest.mark.parametrize(
    "argv", [["report", "--quick"], ["run", "C4", "--quick"], ["list"], ["train", "--data", "digits", "--steps", "1"]]
)
def test_a_lab_command_without_the_lab_extra_says_which_extra_to_install(argv, tmp_path):
    env = {**os.environ, "BNLAB_STORE": str(tmp_path / "runs.sqlite"), "BNLAB_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_LAB, *argv, *(["--out", str(tmp_path)] if argv[0] == "report" else [])],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stderr.splitlines()[-1]
    assert last.startswith(f"bnlab {argv[0]}: this needs ") and last.endswith("""extra: pip install "bnlab[lab]\"""")
    assert "Traceback" not in out.stderr


def test_library_commands_work_without_the_lab_extra(tmp_path):
    out = subprocess.run([sys.executable, "-c", WITHOUT_LAB, "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "report" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow
def test_a_fresh_install_without_extras_has_working_layers_and_surgery(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert {"torch", "numpy", "numba", "bnlab"} <= installed
    assert not installed & {"scipy", "matplotlib", "scikit-learn", "mnist1d", "dask", "distributed"}, installed
    use = subprocess.run([str(python), "-c", LIBRARY_USE], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert use.returncode == 0, use.stderr[-3000:]
    assert use.stdout.splitlines()[-2:] == ["import loaded: []", "use loaded: []"]
    report = subprocess.run(
        [str(env_dir / "bin" / "bnlab"), "report", "--quick", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert report.returncode == 2
    assert report.stderr.strip().splitlines()[-1].endswith("""extra: pip install "bnlab[lab]\"""")
