"""Shifted test sets of the built-in data, needing no download: ``mnist1d-c`` and ``digits-c``.

In the spirit of CIFAR-10-C (Hendrycks & Dietterich 2019): each corruption has five severities,
1 (mild) to 5 (severe); the training split stays clean (the source domain) and only the test split
is corrupted (the target domain). ``bnlab.data.load("mnist1d-c/shear/3")`` returns such a set as
a :class:`~bnlab.data.Dataset` -- so ``RunConfig(data="mnist1d-c/shear/3")`` trains on clean data
and reports accuracy on the shifted test set -- and :func:`corrupted` takes a seed.

Severity values were chosen on one pilot model per data set (the CNN with BN, seed 0) so the
source model's error rises step by step from about 1.5x to 10x its clean error.

=========  ==================  ==========================================================  ===================
data       corruption          what changes (value at severity 1..5)                       kind
=========  ==================  ==========================================================  ===================
mnist1d    noise               i.i.d. noise of the generator (default 0.02):                generator knob
                               0.03, 0.045, 0.06, 0.08, 0.1
mnist1d    shear               the generator's shear (default 0.75): 1.25 .. 5             generator knob
mnist1d    scale               the generator's amplitude spread (default 0.4): 0.8 .. 1.9   generator knob
mnist1d    gain                x * 1.25, 1.5, 2, 3, 5                                        sensor
mnist1d    offset              x + 0.25, 0.5, 0.75, 1, 1.5 (data std is 1)                   sensor
mnist1d    contrast            per-example contrast 0.8, 0.7, 0.6, 0.5, 0.4                  sensor
digits     noise               Gaussian noise, std 0.15, 0.2, 0.3, 0.4, 0.6 (pixels 0..1)   sensor
digits     blur                Gaussian blur, std 0.6, 0.75, 1, 1.25, 1.5 pixels             sensor
digits     contrast            per-image contrast 0.7, 0.6, 0.5, 0.4, 0.3                    sensor
digits     gain                x * 1.5, 2, 3, 4, 6                                           sensor
digits     offset              x + 0.15, 0.2, 0.3, 0.4, 0.5                                  sensor
=========  ==================  ==========================================================  ===================

Generator knobs (:mod:`bnlab.data.mnist1d_knobs`) regenerate MNIST-1D with one coefficient
magnified: the same test examples, each transformed more strongly; they need no seed (the
generator's own, 42, fixes them). Sensor corruptions (:mod:`bnlab.data.corruptions`) apply to the
clean test inputs; the random ones (noise) draw from a generator seeded with ``seed``. Values are
not clipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from . import builtin
from . import corruptions as C
from .dataset import Dataset

SEVERITIES = (1, 2, 3, 4, 5)
SUFFIX = "-c"  # "mnist1d-c/noise/3" names a corrupted set


@dataclasses.dataclass(frozen=True)
class Corruption:
    name: str
    label: str  # for readers, e.g. "Gaussian noise"
    values: tuple[float, ...]  # the corruption's parameter at severity 1..5
    apply: Callable | None = None  # sensor: f(x, value, generator) -> x
    knob: str | None = None  # generator: the make_dataset argument set to the value


CORRUPTIONS: dict[str, dict[str, Corruption]] = {
    "mnist1d": {
        c.name: c
        for c in (
            Corruption("noise", "noise", (0.03, 0.045, 0.06, 0.08, 0.1), knob="iid_noise_scale"),
            Corruption("shear", "shear", (1.25, 1.75, 2.5, 3.5, 5.0), knob="shear_scale"),
            Corruption("scale", "amplitude spread", (0.8, 1.1, 1.4, 1.7, 1.9), knob="scale_coeff"),
            Corruption("gain", "gain", (1.25, 1.5, 2.0, 3.0, 5.0), C.gain),
            Corruption("offset", "offset", (0.25, 0.5, 0.75, 1.0, 1.5), C.offset),
            Corruption("contrast", "contrast", (0.8, 0.7, 0.6, 0.5, 0.4), C.contrast),
        )
    },
    "digits": {
        c.name: c
        for c in (
            Corruption("noise", "Gaussian noise", (0.15, 0.2, 0.3, 0.4, 0.6), C.gaussian_noise),
            Corruption("blur", "blur", (0.6, 0.75, 1.0, 1.25, 1.5), C.blur),
            Corruption("contrast", "contrast", (0.7, 0.6, 0.5, 0.4, 0.3), C.contrast),
            Corruption("gain", "gain", (1.5, 2.0, 3.0, 4.0, 6.0), C.gain),
            Corruption("offset", "offset", (0.15, 0.2, 0.3, 0.4, 0.5), C.offset),
        )
    },
}


def name(base: str, corruption: str, severity: int) -> str:
    """The load() name of a corrupted set, e.g. ``"mnist1d-c/noise/3"``."""
    _check(base, corruption, severity)
    return f"{base}{SUFFIX}/{corruption}/{severity}"


def parse(full: str) -> tuple[str, str, int] | None:
    """``(base, corruption, severity)`` of a corrupted set's name; None for any other name."""
    if not isinstance(full, str):
        return None
    head, _, rest = full.partition("/")
    if not head.endswith(SUFFIX) or not rest:
        return None
    corruption, _, severity = rest.partition("/")
    base = head[: -len(SUFFIX)]
    try:
        level = int(severity)
    except ValueError:
        raise ValueError(
            f"expected a name like '{base}{SUFFIX}/CORRUPTION/SEVERITY' with SEVERITY in {SEVERITIES} (got {full!r})"
        ) from None
    _check(base, corruption, level)
    return base, corruption, level


def _check(base: str, corruption: str, severity: int) -> None:
    if base not in CORRUPTIONS:
        raise ValueError(f"expected a corrupted data set of {sorted(CORRUPTIONS)} (got {base!r})")
    if corruption not in CORRUPTIONS[base]:
        raise ValueError(f"expected a corruption of {base} in {sorted(CORRUPTIONS[base])} (got {corruption!r})")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"expected severity in {SEVERITIES} (got {severity!r})")


def corrupted_test(
    base: str, corruption: str, severities=SEVERITIES, seed: int = 0, clean: Dataset | None = None
) -> dict[int, torch.Tensor]:
    """``{severity: corrupted x_test}`` of one corruption (labels: the clean set's y_test).

    ``clean`` is the loaded base set (default: ``bnlab.data.load(base)``). Noise for severity s
    draws from a generator seeded with ``seed * 100 + s``, so each set is fixed by its seed.
    """
    for s in severities:
        _check(base, corruption, s)
    spec = CORRUPTIONS[base][corruption]
    clean = builtin.load(base, None) if clean is None else clean
    if spec.knob is not None:
        from . import mnist1d_knobs

        sets = mnist1d_knobs.generated_test_sets([(spec.knob, spec.values[s - 1]) for s in severities])
        return {s: sets[(spec.knob, spec.values[s - 1])][0] for s in severities}
    out = {}
    for s in severities:
        gen = torch.Generator().manual_seed(seed * 100 + s)
        assert spec.apply is not None  # a sensor corruption (no knob)
        out[s] = spec.apply(clean.x_test, spec.values[s - 1], gen).contiguous()
    return out


def corrupted(base: str, corruption: str, severity: int, seed: int = 0) -> Dataset:
    """The base data set with its test split corrupted (train split clean), as a Dataset."""
    clean = builtin.load(base, None)
    x = corrupted_test(base, corruption, (severity,), seed, clean)[severity]
    return dataclasses.replace(clean, name=name(base, corruption, severity), x_test=x)
