"""Where numba caches bnlab's compiled kernels, so only the first process pays the JIT.

The cache lives in ``kernels/__pycache__``; when that folder is not writable (a system-wide or
read-only install), in a per-user folder instead: ``$BNLAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/bnlab/numba`` (``~/.cache/bnlab/numba``), else a folder in the temp dir. A
``NUMBA_CACHE_DIR`` set by the user is used in their place.

numba keys a cached function by its own source file's time stamp only, but the kernels inline code
from other files (activations, the fast exp): a change there would silently reuse stale machine
code. So the kernels get a subfolder named after a digest of every kernel source file
(:data:`KERNEL_SOURCES`); a change to any of them compiles afresh, and in the package folder the
subfolders of older digests are removed. This must run before the kernels compile, so
:mod:`bnlab.kernels.numba_cpu` imports it first.

**Compiled or cache-loaded: the same bits.** Guarantee: for the same inputs, thread count and
kernel sources, every process computes bit-identical results, whether the kernels were compiled
just now or loaded from the cache -- because no process ever runs a kernel compiled in-process:
every process runs the machine code stored in the cache. (Exception: when no cache folder is
writable at all, the kernels compile in-process, and may then differ in the last bits from
cache-loaded runs elsewhere.)

Why it is needed: numba compiles each helper function an entry point calls (the drivers, the
merges, and always the gufuncs that numba makes of a ``prange`` loop) as a library of its own
*and* links a copy of it into the entry point's library, where LLVM optimizes it a second time;
the vectorized float reductions of the two versions add in different orders. In a process that
compiles, the helper's own library is defined first and every call goes to it; in a process that
loads the entry point from the cache, only the copies exist. Measured on a cold cache before this
mechanism: 64 of 208 outputs (y, statistics, gradients; both memory families, serial and
parallel, identity and SiLU) differed, e.g. y by 2.4e-7 and dweight by 7.6e-6 on (100, 32, 64).
Inlining every helper at numba IR level (``inline="always"``) does not remove the cause: it made
the serial kernels identical but the parallel ones still differed (32 of 208 outputs at 2
threads), because numba compiles a ``prange`` body as a gufunc library of its own in any case --
also when the drivers are inlined into entry points compiled with ``parallel=True``.

How: :func:`compile_out_of_process` makes each entry point compile a signature it lacks in a child
process, which writes it to the cache, and then load it from there like every later process.
Loaded entry points contain only the linked copies, so the order of calls in a process does not
matter either. The cost is a child process per new signature the first time it is needed on a
machine (about 1-2 s on top of the compilation); a warm cache costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numba

# The files whose code ends up in the compiled kernels (numba inlines across them).
KERNEL_SOURCES = ("numba_cpu.py", "numba_conv.py", "numba_tags.py", "numba_storage.py", "fast_exp.py", "cache.py")
_HERE = Path(__file__).parent


def source_digest() -> str:
    """12 hex digits of the SHA-256 of the kernel sources (and numba's version)."""
    h = hashlib.sha256(numba.__version__.encode())
    for name in KERNEL_SOURCES:
        h.update((_HERE / name).read_bytes())
    return h.hexdigest()[:12]


def is_writable(folder: str | os.PathLike[str]) -> bool:
    """True if ``folder`` exists (or can be made) and a file can be created in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=os.fspath(folder)):
            return True
    except OSError:
        return False


def user_cache_dirs() -> list[Path]:
    """The per-user folders tried, in order, when the package folder is not writable."""
    dirs = []
    if os.environ.get("BNLAB_CACHE_DIR"):
        dirs.append(Path(os.environ["BNLAB_CACHE_DIR"]) / "numba")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(xdg) / "bnlab" / "numba")
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    dirs.append(Path(tempfile.gettempdir()) / f"bnlab-numba-cache-{uid}")
    return dirs


def choose_cache_dir(package_cache: str | os.PathLike, candidates: list[Path]) -> str | None:
    """The first writable folder of ``package_cache`` and then ``candidates``; None if none is."""
    for folder in [Path(package_cache), *candidates]:
        if is_writable(folder):
            return str(folder)
    return None


def _remove_older(base: Path, keep: str) -> None:
    for old in base.glob("kernels-*"):
        if old.name != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)  # another process may be using it: best effort


def configure() -> str | None:
    """Point numba's cache at ``<base>/kernels-<digest>`` (base as in the module docstring).

    Returns the cache folder in use, or None when no folder is writable (the kernels are then
    compiled without a disk cache, once per process).
    """
    package_cache = _HERE / "__pycache__"
    sub = f"kernels-{source_digest()}"
    user_base = os.environ.get("NUMBA_CACHE_DIR")
    base = user_base if user_base else choose_cache_dir(package_cache, user_cache_dirs())
    if base is None or not is_writable(Path(base) / sub):
        return None
    if Path(base) == package_cache:
        _remove_older(package_cache, sub)
    numba.config.CACHE_DIR = str(Path(base) / sub)  # type: ignore[attr-defined]  # set at run time, not typed
    return numba.config.CACHE_DIR  # type: ignore[attr-defined]  # (as above)


CACHE_DIR = configure()

_CHILD = "BNLAB_KERNELS_CHILD"  # set in the child process that compiles a kernel for its parent
# The child imports the kernels without bnlab's package __init__ (and so without torch): it only compiles.
_CHILD_CODE = (
    "import pickle, sys, types; pkg = types.ModuleType('bnlab'); pkg.__path__ = [sys.argv[1]]; "
    "sys.modules['bnlab'] = pkg; import importlib; module = importlib.import_module(sys.argv[2]); "
    "getattr(module, sys.argv[3]).compile(pickle.loads(bytes.fromhex(sys.argv[4])))"
)


def _compile_in_child(module: str, name: str, sig) -> bool:
    """Compile ``<module>.<name>`` (a kernel module of this package) for ``sig`` in a child process, into
    the cache; True if it did."""
    assert CACHE_DIR is not None  # the caller checked that compiled code is cached
    env = dict(os.environ, NUMBA_CACHE_DIR=os.path.dirname(CACHE_DIR), **{_CHILD: "1"})
    cmd = [sys.executable, "-c", _CHILD_CODE, str(_HERE.parent), module, name, pickle.dumps(sig).hex()]
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        warnings.warn(
            f"bnlab: compiling kernel {name} in a child process failed ({last}); compiling it "
            f"in this process, whose results may differ in the last bits from cache-loaded runs",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def compile_out_of_process(dispatchers) -> None:
    """Make each numba dispatcher compile a signature it lacks in a child process and load it from the
    cache (module docstring); a no-op without a disk cache or in that child itself."""
    if CACHE_DIR is None or os.environ.get(_CHILD):
        return
    from numba.core import sigutils

    for dispatcher in dispatchers:

        def compile(sig, _d=dispatcher, _compile=dispatcher.compile):
            args, _ = sigutils.normalize_signature(sig)
            if tuple(args) not in _d.overloads and _d._cache.load_overload(sig, _d.targetctx) is None:
                _compile_in_child(_d.py_func.__module__, _d.py_func.__name__, sig)
            return _compile(sig)  # loads from the cache (compiles here only if the child failed)

        dispatcher.compile = compile
