"""MNIST-1D test sets generated with one of the generator's own knobs turned up.

The ``mnist1d`` package's ``make_dataset`` draws, per example and always in the same order, a
padding, a scale, a translation, correlated and i.i.d. noise and a shear, each multiplied by a
coefficient of ``get_dataset_args()``. Changing a coefficient that only *multiplies* a draw --
``iid_noise_scale``, ``shear_scale``, ``scale_coeff``, ``corr_noise_scale`` -- with the seed kept
(42) gives the *same* examples with that transformation magnified: the test split holds the same
1000 digits in the same order as :func:`bnlab.data.load` ("mnist1d"), each with more noise, shear
or amplitude spread. (``max_translation`` is not such a knob: changing it changes how many random
numbers a draw consumes, and so every later example.) ``make_dataset`` standardizes each set by
its own mean and standard deviation, as a pipeline that standardizes its input would.

The generated tensors are cached like the clean set (:mod:`bnlab.data.mnist1d`: a SHA-256 of the
bytes checked on every read). Processes that need the same sets at once (a sweep's workers)
share the work: each takes the sets no other process is generating, under a file lock per set.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import torch

from . import mnist1d
from .cache import cache_dir

KNOBS = ("iid_noise_scale", "shear_scale", "scale_coeff", "corr_noise_scale")

try:
    import fcntl
except ImportError:  # no file locks (Windows): processes may generate the same set twice
    fcntl = None  # type: ignore[assignment]  # no fcntl (Windows): no lock, see _lock


def cache_path(knob: str, value: float) -> str:
    from importlib.metadata import version

    key = hashlib.sha256(f"mnist1d=={version('mnist1d')} defaults {knob}={value!r}".encode()).hexdigest()[:12]
    return os.path.join(cache_dir(), f"mnist1d-{knob}-{key}.pt")


def generate(knob: str, value: float) -> dict[str, torch.Tensor]:
    """``make_dataset`` with ``knob`` set to ``value`` (global RNG states restored after)."""
    if knob not in KNOBS:
        raise ValueError(f"expected a knob in {KNOBS} (got {knob!r})")
    return mnist1d.generate(**{knob: value})


@contextlib.contextmanager
def _lock(path: str, blocking: bool):
    """Yield True while holding the lock file of ``path`` (False if ``blocking`` is off and it is taken)."""
    if fcntl is None:
        yield True
        return
    with open(path + ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _get(knob: str, value: float, blocking: bool) -> dict[str, torch.Tensor] | None:
    path = cache_path(knob, value)
    tensors = mnist1d._read_cache(path)
    if tensors is not None:
        return tensors
    with _lock(path, blocking) as held:
        if not held:
            return None
        tensors = mnist1d._read_cache(path)  # another process may have written it meanwhile
        if tensors is None:
            tensors = generate(knob, value)
            mnist1d._write_cache(path, tensors)
    return tensors


def generated_test_sets(items: list[tuple[str, float]]) -> dict[tuple[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """``{(knob, value): (x_test, y_test)}``, generated (or read from the cache) as needed.

    Raises:
        RuntimeError: the labels differ from the clean test set's (the package no longer draws as
            described above, so the sets would not hold the same examples).
    """
    found: dict[tuple[str, float], dict[str, torch.Tensor]] = {}
    waiting = []
    for item in dict.fromkeys(items):
        tensors = _get(*item, blocking=False)
        if tensors is None:
            waiting.append(item)  # another process is generating it: take the next one first
        else:
            found[item] = tensors
    for item in waiting:
        found[item] = _get(*item, blocking=True)  # type: ignore[assignment]  # blocking: never None
    clean = mnist1d.load().y_test
    out = {}
    for item, tensors in found.items():
        if not torch.equal(tensors["y_test"], clean):
            raise RuntimeError(
                f"MNIST-1D generated with {item[0]}={item[1]!r} does not hold the clean test "
                "set's examples (its labels differ): the mnist1d package draws differently"
            )
        out[item] = (tensors["x_test"], tensors["y_test"])
    return out
