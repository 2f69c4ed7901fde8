"""The package as users get it: ``python -m build`` makes an sdist and a wheel that ``twine check``
accepts, with one version number and ``py.typed``; the wheel (not the source tree) installed into a
fresh virtual environment imports, matches torch.nn, runs ``bnlab --help`` and, without the lab
extra, says which extra a lab command needs.

Marked ``site`` (about 75 s on 2 shared cores: the build, two venvs' worth of pip). The fresh environment gets the
library's dependencies (torch, numpy, numba and what they need) from the environment running the
tests, through a folder of links to exactly those distributions, so nothing is downloaded (never a
CUDA torch) and none of the lab's packages is importable there.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

import bnlab
from bnlab.extras import LAB_MODULES

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_DEPS = ("torch", "numpy", "numba")

pytestmark = pytest.mark.site

SMOKE = textwrap.dedent("""
    import sys, torch, bnlab
    print("bnlab from", bnlab.__file__)
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5, dtype=torch.float64)
    ours, ref = bnlab.nn.BatchNorm2d(4).double(), torch.nn.BatchNorm2d(4).double()
    for _ in range(2):
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=0, atol=1e-12)
    lab = %r
    for name in lab:
        try:
            __import__(name)
        except ImportError:
            continue
        sys.exit(f"lab package {name} is importable in the light install")
    print("smoke ok", bnlab.__version__)
""") % (sorted(LAB_MODULES),)


def _closure(names) -> list[md.Distribution]:
    """The installed distributions ``names`` need, themselves included (extras left out)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed
        seen[name] = dist
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return list(seen.values())


def _link_farm(dest: Path) -> Path:
    """A folder holding links to the files of the library's dependency closure only."""
    dest.mkdir()
    for dist in _closure(LIBRARY_DEPS):
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if top not in ("__pycache__",) and not (dest / top).exists() and (base / top).exists():
                (dest / top).symlink_to(base / top)
    return dest


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with the setuptools installed here instead of downloading one.
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


def test_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dist_dir):
    wheels, sdists = list(dist_dir.glob("*.whl")), list(dist_dir.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"bnlab-{bnlab.__version__}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"bnlab-{bnlab.__version__}.tar.gz"]
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "bnlab/py.typed" in names
    templates = ROOT / "src" / "bnlab" / "report" / "templates"
    missing = [t.name for t in templates.iterdir() if f"bnlab/report/templates/{t.name}" not in names]
    assert missing == [], f"the report's templates missing from the wheel: {missing}"
    assert not [n for n in names if "__pycache__" in n or "kernels-" in n]  # no compiled-kernel cache
    metadata = zipfile.ZipFile(wheels[0]).read(f"bnlab-{bnlab.__version__}.dist-info/METADATA").decode()
    assert f"Version: {bnlab.__version__}" in metadata
    assert "Provides-Extra: lab" in metadata
    with tarfile.open(sdists[0]) as sdist:
        assert f"bnlab-{bnlab.__version__}/src/bnlab/py.typed" in sdist.getnames()


def test_the_version_is_written_once():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in text and not re.search(r"^version\s*=\s*\"", text, re.M)
    assert f"## {bnlab.__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_the_wheel_installed_in_a_fresh_venv_works_without_the_lab(dist_dir, tmp_path):
    # Nothing from this process's path: the venv sees the wheel and the linked dependencies only.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        env=clean,
    ).stdout.strip()
    (Path(site) / "bnlab-test-deps.pth").write_text(str(_link_farm(tmp_path / "deps")) + "\n")
    wheel = next(dist_dir.glob("*.whl"))
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # pip finds the declared dependencies satisfied (torch, numpy, numba from the links).
    deps = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, timeout=300, env=clean)
    assert "bnlab" not in deps.stdout, deps.stdout
    smoke = subprocess.run(
        [str(python), "-c", SMOKE], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=clean
    )
    assert smoke.returncode == 0, smoke.stdout[-2000:] + smoke.stderr[-3000:]
    assert f"bnlab from {site}/bnlab/__init__.py" in smoke.stdout  # the wheel, not the source tree
    assert smoke.stdout.splitlines()[-1] == f"smoke ok {bnlab.__version__}"
    help_ = subprocess.run([str(bin_dir / "bnlab"), "--help"], capture_output=True, text=True, timeout=300, env=clean)
    assert help_.returncode == 0 and "report" in help_.stdout, help_.stderr[-2000:]
    lab = subprocess.run(
        [str(bin_dir / "bnlab"), "list"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=clean
    )
    assert lab.returncode == 2
    assert lab.stderr.strip().splitlines()[-1].endswith("""extra: pip install "bnlab[lab]\"""")


RENDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])  # the installed wheel before anything else on the path
    import bnlab
    from bnlab.report import markup, render_page
    assert bnlab.__file__.startswith(sys.argv[1]), bnlab.__file__
    page = render_page([], {"quick": True, "bnlab": bnlab.__version__}, demos={})
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page and "Short answers" in page
    assert "--paper: #fbfbf9" in page  # the stylesheet, from the installed style.css
    print("rendered", len(page), "characters from", markup.environment().loader.get_source(
        markup.environment(), "page.html")[1])
""")


def test_the_installed_wheel_renders_a_report_page_from_its_templates(dist_dir, tmp_path):
    # The wheel unpacked into a folder of its own, the lab's packages from this environment.
    target = tmp_path / "site"
    wheel = next(dist_dir.glob("*.whl"))
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", RENDER, str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=clean,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert f"from {target}/bnlab/report/templates/page.html" in run.stdout
