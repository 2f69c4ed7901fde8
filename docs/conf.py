"""Sphinx configuration of bnlab's documentation site: ``sh scripts/docs`` builds it into build/docs/.

The build is strict (``-W``: every warning is an error) and offline. Besides Sphinx's own checks
(broken cross-references with ``nitpicky``, unknown documents, toctree errors) it fails when a name
in a public module's ``__all__`` is missing from the API reference or has no docstring
(:func:`check_public_names`), and copies the report's full edition (docs/report/) into the site.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import sys
from pathlib import Path

from sphinx.util import logging
from sphinx.util.nodes import make_refnode

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "src"))
sys.path.insert(0, str(DOCS))

import bnlab  # noqa: E402
from public_api import public_names  # noqa: E402

project = "bnlab"
author = "bnlab's authors"
release = version = bnlab.__version__
copyright = "bnlab's authors, MIT licence"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax copied into the site (_static/mathjax) instead of loaded from a CDN: the pages'
    # formulas render offline.
    "sphinx-mathjax-offline",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "report", "**.ipynb_checkpoints", "public_api.py", "conf.py"]
root_doc = "index"

# The tutorials are executed by scripts/notebooks (and by the slow test that CI runs); the site
# renders the outputs stored in the notebooks, so building it does not train anything.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_inline"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# torch's docstrings of the methods bnlab overrides (autograd.Function.forward ...) are torch's to show.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every cross-reference must resolve (nitpicky), except to the libraries bnlab builds on: their
# inventories would have to be downloaded, and the build is offline.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|nn|scipy|dask|distributed|matplotlib|numba|collections|typing|pathlib)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Parameter|Path|Any|Callable|Iterable|Iterator|Mapping|Sequence|Literal)"),
    (r"py:.*", r"(optional|callable|ndarray|dtype|device|Generator|Enum|Future|Client|NamedTuple)"),
    (r"py:class", r"(int|float|str|bool|dict|list|tuple|set|object|type|bytes|None|Exception)"),
    (r"py:class", r"(ValueError|TypeError|RuntimeError|BaseException|contextlib\..*|abc\..*|enum\..*)"),
    # Private base classes shown in "Bases:" (their public subclasses are documented).
    (r"py:class", r"bnlab\..*\._[A-Za-z]\w*"),
    (r"py:class", r"(argparse|sqlite3|threading|subprocess|os|io|types|functools|dataclasses)\..*"),
]

html_theme = "furo"
html_title = f"bnlab {release}"
html_static_path: list[str] = []
html_copy_source = False
html_show_sourcelink = False


VERDICTS = "<!-- verdicts: README.md's table, inserted here by docs/conf.py when the site is built -->"


def adapt_markdown(app, docname, source) -> None:
    """Make the repository's Markdown read the same on the site.

    * The verdict table exists once, in README.md (``python -m bnlab.report.readme`` writes it);
      the lab's page shows it in place of :data:`VERDICTS`.
    * Links to the report's edition (``docs/report/index.html``) become plain HTML links to the copy
      in the site (:func:`copy_report`), so Sphinx does not turn the page into a download.
    * Links to ``docs/X.md`` become links to the page X; ``src/bnlab/...py`` to that module's
      entry in the API reference.
    """
    text = source[0]
    if VERDICTS in text:
        readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
        start, end = readme.index("<!-- verdicts:start -->"), readme.index("<!-- verdicts:end -->")
        text = text.replace(VERDICTS, readme[start:end])
    up = "../" * docname.count("/")
    text = re.sub(
        r"\[([^\]]+)\]\((?:\.\./)*(?:docs/)?report/(?:index\.html)?\)", rf'<a href="{up}report/index.html">\1</a>', text
    )
    text = re.sub(r"\]\(docs/([\w-]+)\.md\)", rf"]({up}\1.md)", text)
    text = re.sub(
        r"\[`src/(bnlab/[\w/]+)\.py`\]\((?:\.\./)*src/bnlab/[\w/]+\.py\)",
        lambda m: "{py:mod}`" + m.group(1).replace("/", ".") + "`",
        text,
    )
    source[0] = text


def check_links(app, exception) -> None:
    """Every relative link of the built pages leads to a file of the site (Sphinx checks its own
    cross-references; this catches the raw HTML links and the report's)."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    broken = []
    for page in out.rglob("*.html"):
        if page.is_relative_to(out / "report") or page.is_relative_to(out / "_static"):
            continue
        for href in re.findall(r'href="([^"#?]+)', page.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", href):
                continue  # an absolute URL: not checked offline
            if not (page.parent / href).exists():
                broken.append(f"{page.relative_to(out)} -> {href}")
    if broken:
        raise RuntimeError("broken links in the site:\n" + "\n".join(broken))


def copy_report(app, exception) -> None:
    """The full edition of the report goes into the site as it is (one self-contained page, its
    CSVs and results.json), so the guide's links to report/index.html resolve."""
    if exception is not None or app.builder.format != "html":
        return
    shutil.copytree(DOCS / "report", Path(app.outdir) / "report", dirs_exist_ok=True)


def check_public_names(app, env) -> None:
    """Fail the build when a public name is not in the API reference, or is there without a
    docstring. A name counts as documented under its own qualified name or under the name of the
    object it re-exports (``bnlab.convert`` is ``bnlab.surgery.convert``)."""
    log = logging.getLogger("bnlab.docs")
    documented = set(env.domains["py"].objects)
    documented |= set(env.domains["py"].modules)
    by_identity = {}
    for name in documented:
        obj = _resolve(name)
        if obj is not None and (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
            by_identity[id(obj)] = name
    for module_name, name in public_names():
        qualified = f"{module_name}.{name}"
        obj = getattr(importlib.import_module(module_name), name)
        where = qualified if qualified in documented else by_identity.get(id(obj))
        if where is None:
            log.warning(f"public name {qualified} (in {module_name}.__all__) is not in the API reference")
        elif (inspect.isclass(obj) or inspect.isroutine(obj)) and not inspect.getdoc(obj):
            log.warning(f"public name {qualified} has no docstring")


def _resolve(qualified: str, context: str | None = None):
    """The object a dotted name means, as Python finds it (attributes first, then submodules), or None;
    a name that is not absolute is looked up in the module ``context`` and its parents."""
    candidates = [qualified]
    if context and not qualified.startswith("bnlab"):
        parts = context.split(".")
        candidates = [".".join(parts[:i] + [qualified.lstrip(".")]) for i in range(len(parts), 0, -1)]
    for name in candidates:
        obj = _lookup(name)
        if obj is not None:
            return obj
    return None


def _lookup(qualified: str):
    """Attributes first (``bnlab.surgery.doctor`` is the function), then submodules
    (``bnlab.surgery.doctor.DoctorReport`` is in the module the function shadows)."""
    parts = qualified.split(".")
    for modules_first in (False, True):
        try:
            obj = importlib.import_module(parts[0])
        except ImportError:
            return None
        for i, attr in enumerate(parts[1:], start=1):
            path = ".".join(parts[: i + 1])
            if modules_first and path in sys.modules:
                obj = sys.modules[path]
            elif hasattr(obj, attr):
                obj = getattr(obj, attr)
            else:
                try:
                    obj = importlib.import_module(path)
                except ImportError:
                    break
        else:
            return obj
    return None


def resolve_alias(app, env, node, contnode):
    """Resolve what Sphinx's Python domain does not, or fail as it does.

    * A docstring may name an object by another of its names (``bnlab.convert`` for
      ``bnlab.surgery.convert``; ``compressed_warmup`` inside :mod:`bnlab.nn.renorm`, documented
      under :mod:`bnlab.nn`): the link goes to where that object is documented.
    * A docstring may name an internal helper (not in any public ``__all__``, e.g.
      ``bnlab.demos.run``) that exists: it is shown as code, not linked.
    * A name that does not exist in bnlab, or a public name missing from the reference, stays an
      error (the build is strict).
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~")
    if target.startswith("'") or target.count("[") != target.count("]"):
        # A piece of a string annotation (a dataclass field's 'dict[str, Any]') that Sphinx split
        # at the comma: a type of the standard library, not a reference to resolve.
        return contnode
    obj = _resolve(target, node.get("py:module"))
    where = None if obj is None else _documented_by_identity(env).get(id(obj))
    if where is None:
        py = env.domains["py"]
        matches = [name for name in py.objects if name.endswith("." + target.lstrip("."))]
        if len(matches) == 1:
            entry = py.objects[matches[0]]
            where = (entry.docname, entry.node_id)
    if where is not None:
        docname, anchor = where
        return make_refnode(app.builder, node["refdoc"], docname, anchor, contnode)
    if obj is not None and id(obj) not in _public_ids():
        return contnode
    return None


def _public_ids() -> set[int]:
    return {id(getattr(importlib.import_module(module), name)) for module, name in public_names()}


def clear_type_docstrings(app, what, name, obj, options, lines) -> None:
    """A constant without a doc comment would show its type's docstring (``dict() -> new empty
    dictionary``): show its value alone."""
    if what in ("data", "attribute") and lines and not inspect.isclass(obj) and not inspect.isroutine(obj):
        type_doc = inspect.getdoc(type(obj)) or ""
        if "\n".join(lines).strip() == type_doc.strip():
            lines.clear()


def _documented_by_identity(env) -> dict[int, tuple[str, str]]:
    py = env.domains["py"]
    if getattr(env, "_bnlab_by_identity", None) is None:
        table = {}
        for name, entry in py.objects.items():
            obj = _resolve(name)
            if obj is not None and (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
                table.setdefault(id(obj), (entry.docname, entry.node_id))
        env._bnlab_by_identity = table
    return env._bnlab_by_identity


def setup(app):
    app.connect("env-check-consistency", check_public_names)
    app.connect("source-read", adapt_markdown)
    app.connect("build-finished", copy_report)
    app.connect("build-finished", check_links)
    app.connect("missing-reference", resolve_alias)
    app.connect("autodoc-process-docstring", clear_type_docstrings)
    return {"parallel_read_safe": True}
