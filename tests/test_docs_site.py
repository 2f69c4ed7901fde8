"""The documentation site: every public name (docs/public_api.py) is in the API reference pages,
the guide and the tutorials are in its table of contents, and (marked ``site``: about 35-50 s on 2 shared cores) the
strict build passes and its pages hold an entry for every public name."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

from public_api import PUBLIC_MODULES, public_names  # noqa: E402


def _reference_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((DOCS / "reference").glob("*.md")))


def _documented() -> set[str]:
    """The qualified names the reference pages' autodoc directives document: an ``automodule`` with
    ``:members:`` documents its module's ``__all__`` less ``:exclude-members:``; ``autoclass``,
    ``autofunction`` and ``autodata`` one name each."""
    names = set()
    text = _reference_text()
    for module, options in re.findall(r"\.\. automodule:: (\S+)\n((?:   :[^\n]*\n)*)", text):
        names.add(module)
        if re.search(r"^   :members:\s*$", options, re.M):
            excluded = re.search(r"^   :exclude-members: ([^\n]*)$", options, re.M)
            skip = {n.strip() for n in excluded.group(1).split(",")} if excluded else set()
            exported = getattr(importlib.import_module(module), "__all__", ())
            names |= {f"{module}.{n}" for n in exported if n not in skip}
    names |= set(re.findall(r"\.\. auto(?:class|function|data):: (\S+)", text))
    return names


def _is_object(obj) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)


def _lookup(qualified: str):
    """The object a documented name means, or None (attributes of classes are not looked up)."""
    module, _, attr = qualified.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None


def test_every_public_name_is_in_the_api_reference():
    documented = _documented()
    by_identity = set()
    for name in documented:
        module, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr) if module else importlib.import_module(name)
        except (ImportError, AttributeError):
            obj = importlib.import_module(name)
        if _is_object(obj):
            by_identity.add(id(obj))
    missing = []
    for module, name in public_names():
        obj = getattr(importlib.import_module(module), name)
        if f"{module}.{name}" not in documented and not (_is_object(obj) and id(obj) in by_identity):
            missing.append(f"{module}.{name}")
    assert missing == []


def test_every_public_module_with_all_is_listed():
    import pkgutil

    import bnlab

    internal = ("bnlab.kernels", "bnlab.core.backends.numba_cpu", "bnlab.bench", "bnlab.__main__")
    listed = set(PUBLIC_MODULES)
    for info in pkgutil.walk_packages(bnlab.__path__, "bnlab."):
        if info.name.startswith(internal):
            continue
        module = importlib.import_module(info.name)
        parent = importlib.import_module(info.name.rpartition(".")[0])
        reexported = set(getattr(parent, "__all__", ())) >= set(getattr(module, "__all__", ()))
        if hasattr(module, "__all__") and not reexported:
            assert info.name in listed, f"{info.name} has an __all__ of its own: list it in docs/public_api.py"


def test_the_guide_and_the_tutorials_are_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).with_suffix("").as_posix() for p in (DOCS / "guide").glob("*.md")]
    pages += [p.relative_to(DOCS).with_suffix("").as_posix() for p in (DOCS / "tutorials").glob("*.ipynb")]
    assert [p for p in pages if f"\n{p}\n" not in index] == []


@pytest.mark.site
def test_the_strict_build_passes_and_documents_every_public_name(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    pytest.importorskip("myst_nb", reason="the docs extra is not installed")
    out = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-W", "--keep-going", "-q", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-5000:]
    html = "\n".join(p.read_text(encoding="utf-8") for p in (out / "reference").glob("*.html"))
    anchors = set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', html))
    anchors |= set(re.findall(r'id="module-([^"]+)"', html))
    assert len(anchors) > 300
    same_object = {id(obj) for obj in map(_lookup, anchors) if _is_object(obj)}
    for module, name in public_names():
        obj = getattr(importlib.import_module(module), name)
        entry = f"{module}.{name}" in anchors or (_is_object(obj) and id(obj) in same_object)
        assert entry, f"{module}.{name} has no entry in the site"
    assert (out / "report" / "index.html").exists()
    assert (out / "tutorials" / "from_scratch.html").exists() and (out / "tutorials" / "new_data.html").exists()


# The last commit whose README.md held the whole user's guide (626-818 lines, before it was cut to a
# short README whose long sections moved to docs/guide/): everything measured in it must stay on the site.
LONG_README_COMMIT = "2e27e5fa4ba331a9d923cacd959a596fed42aeaf"


def _measured_lines_missing_from_the_site(readme: str) -> list[str]:
    """The table rows and paragraph lines of ``readme`` with a number in them that no guide page (or the
    home page) holds; the verdict table is left out (docs/conf.py inserts it into the lab's page)."""
    start, end = readme.index("<!-- verdicts:start -->"), readme.index("<!-- verdicts:end -->")
    readme = readme[:start] + readme[end:]
    site = "\n".join(p.read_text(encoding="utf-8") for p in [DOCS / "index.md", *(DOCS / "guide").glob("*.md")])
    measured = [line for line in readme.splitlines() if re.search(r"\d", line) and not line.startswith("#")]
    return [line for line in measured if line.strip() not in site]


def test_nothing_measured_in_the_readme_is_lost_on_the_site():
    """Every table row and every paragraph line with a measured number in README.md is on a guide page
    (the verdict table is inserted into the lab's page from the README when the site is built)."""
    assert _measured_lines_missing_from_the_site((ROOT / "README.md").read_text(encoding="utf-8")) == []


def test_nothing_measured_in_the_long_readme_was_lost_when_it_was_cut():
    """The same for the long README that the short one replaced, read from the repository's history."""
    shown = subprocess.run(
        ["git", "show", f"{LONG_README_COMMIT}:README.md"], cwd=ROOT, capture_output=True, text=True, encoding="utf-8"
    )
    if shown.returncode != 0:
        pytest.skip(f"the long README's commit is not in this checkout (git: {shown.stderr.strip()[:200]})")
    assert len(shown.stdout.splitlines()) > 600  # the long README, not a short one
    assert _measured_lines_missing_from_the_site(shown.stdout) == []
