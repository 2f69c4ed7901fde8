"""One training run, declared: :class:`RunConfig`, and its identity in the results store.

A sweep is a list of RunConfigs (``dataclasses.replace`` makes the variations)::

    base = RunConfig(data="mnist1d", model="cnn", norm="bn", optimizer="sgd", lr=0.1, steps=2000)
    sweep = [dataclasses.replace(base, norm=n, seed=s) for n in ("none", "bn") for s in range(3)]

:meth:`RunConfig.key` hashes every field that changes what a run computes -- data, model, norm,
optimizer, schedule, seed, probes, ... -- and the code version (:func:`code_version`: bnlab's
version and a digest of the code -- not the comments or docs -- of the files that compute a run), so the store finds
a finished run
again, and a changed setting or changed training code makes a new run. Fields that only say
*where* a run happens (``data_root``) are left out of the key.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "linear", "step")
TRAINABLE = ("all", "norm", "random")

# Fields that do not change the result and so are not part of the key.
_NOT_IN_KEY = ("data_root",)

# The sources whose code decides what a run computes (relative to the bnlab package); the store,
# the sweep runner, the command line and the reports are not among them.
_RESULT_SOURCES = (
    "functional.py",
    "activations.py",
    "core",
    "kernels",
    "nn",
    "surgery",
    "adaptation",
    "models",
    "data",
    "train/trainer.py",
    "train/seeds.py",
    "train/views.py",
    "train/grouped.py",
    "train/group_probes.py",
    "train/batches.py",
    "train/schedule.py",
    "train/probes.py",
    "train/config.py",
    "train/distributed.py",
    "experiments/probes",
)


def _code_digest(source: bytes) -> str:
    """The module's syntax tree without docstrings: comments and docs can change, the key does not."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]  # a node with a body (getattr above)
    return ast.dump(tree, annotate_fields=False)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``"<bnlab version>+<12 hex digits>"``: the version and a SHA-256 of the code (syntax trees
    without comments and docstrings) of the result-deciding sources.

    The syntax-tree dump is Python's own, so another Python minor version gives other keys (and
    re-runs the sweeps) even for the same code.
    """
    from .. import __version__

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for rel in _RESULT_SOURCES:
        path = os.path.join(root, rel)
        files = (
            [path]
            if os.path.isfile(path)
            else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".py"))
        )
        for f in files:
            h.update(os.path.relpath(f, root).replace(os.sep, "/").encode())
            with open(f, "rb") as fh:
                h.update(_code_digest(fh.read()).encode())
    return f"{__version__}+{h.hexdigest()[:12]}"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    # --- data
    data: str = "mnist1d"  # a bnlab.data name
    data_root: str | None = None  # folder of the files for mnist / fashion-mnist / cifar10 (not in the key)
    # --- model (bnlab.models.build)
    model: str = "cnn"
    norm: str = "none"  # a registered norm name
    placement: str = "before"  # the norm "before" or "after" the activation
    act: str | None = None  # None: the model's own default (relu; sigmoid for "mlp")
    norm_kw: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {"groups": 4}
    model_kw: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {"widths": [64, 64]}
    # --- optimization
    optimizer: str = "sgd"  # "sgd" (with `momentum`) or "adam" (betas 0.9, 0.999)
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD's momentum (not BN's); ignored by adam
    weight_decay: float = 0.0  # L2 added to the gradient by the optimizer (torch's convention)
    schedule: str = "constant"  # lr after warm-up: constant, cosine / linear (to 0 at `steps`), step (x0.1 at 50%, 75%)
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr
    batch_size: int = 100  # global batch; the last incomplete batch of an epoch is dropped
    batch_classes: int = 0  # 0: i.i.d. batches; k: each batch holds batch_size/k examples of k random classes
    steps: int = 1000  # optimizer steps
    seed: int = 0  # seeds init, batch order and any noise in the model
    # --- what trains
    trainable: str = "all"  # "all", "norm" (only the norms' gamma/beta), "random" (trainable_k random weights)
    trainable_k: int = 0  # with trainable="random": how many scalar weights train
    # --- measurement
    eval_every: int = 100  # record metrics every this many steps (and after the last step)
    eval_samples: int = 0  # 0: evaluate on all train/test examples; N: on the first N of each
    probes: tuple[str, ...] = ()  # probe specs (bnlab.train.probes), e.g. ("act_pct:blocks.2.act:0",)
    diverge_factor: float = 100.0  # a loss above this multiple of the first step's loss means diverged
    tag: str = ""  # free text that separates otherwise identical runs (part of the key)

    def __post_init__(self) -> None:
        # Copies (so a caller's dict cannot change a frozen config) in a canonical form.
        object.__setattr__(self, "norm_kw", dict(self.norm_kw))
        object.__setattr__(self, "model_kw", dict(self.model_kw))
        object.__setattr__(self, "probes", tuple(self.probes))
        for name in ("lr", "momentum", "weight_decay", "diverge_factor"):  # 1 and 1.0: one key
            object.__setattr__(self, name, float(getattr(self, name)))
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer in {OPTIMIZERS}", self.optimizer),
            (self.schedule in SCHEDULES, f"schedule in {SCHEDULES}", self.schedule),
            (self.trainable in TRAINABLE, f"trainable in {TRAINABLE}", self.trainable),
            (self.placement in ("before", "after"), "placement 'before' or 'after'", self.placement),
            (self.lr > 0, "lr > 0", self.lr),
            (self.batch_size >= 1, "batch_size >= 1", self.batch_size),
            (self.steps >= 1, "steps >= 1", self.steps),
            (self.batch_classes >= 0, "batch_classes >= 0", self.batch_classes),
            (
                self.batch_classes == 0 or self.batch_size % self.batch_classes == 0,
                f"batch_size divisible by batch_classes={self.batch_classes}",
                self.batch_size,
            ),
            (self.eval_every >= 1, "eval_every >= 1", self.eval_every),
            (self.warmup_steps >= 0, "warmup_steps >= 0", self.warmup_steps),
            (self.weight_decay >= 0, "weight_decay >= 0", self.weight_decay),
            (self.eval_samples >= 0, "eval_samples >= 0", self.eval_samples),
            (self.diverge_factor > 1, "diverge_factor > 1", self.diverge_factor),
            (
                self.trainable != "random" or self.trainable_k > 0,
                "trainable_k > 0 with trainable='random'",
                self.trainable_k,
            ),
            (
                self.trainable != "random" or self.weight_decay == 0,
                "weight_decay 0 with trainable='random' (decay would move the frozen weights)",
                self.weight_decay,
            ),
        ]
        for ok, want, got in checks:
            if not ok:
                raise ValueError(f"expected {want} (got {got!r})")

    def __hash__(self) -> int:
        return hash(self.key())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["probes"] = list(self.probes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"expected RunConfig fields (got unknown {unknown})")
        return cls(**{**d, "probes": tuple(d.get("probes", ()))})

    def key(self) -> str:
        """SHA-256 (hex, 24 chars) of the canonical JSON of the result-relevant fields +
        :func:`bnlab.train.config.code_version`. Computed once per config and code version (a report looks
        keys up some 10^4 times; the config is frozen)."""
        code = code_version()
        cached = self.__dict__.get("_key")
        if cached is None or cached[0] != code:
            d = {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_KEY}
            blob = json.dumps({"config": d, "code": code}, sort_keys=True, separators=(",", ":"))
            cached = self.__dict__["_key"] = (code, hashlib.sha256(blob.encode()).hexdigest()[:24])
        return cached[1]
