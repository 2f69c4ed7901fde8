"""Measurements taken during training at the metric steps: activation percentiles, gradient norms.

A config names its probes by spec strings (so configs stay plain data and hash into the store key):

=================================  ==========================================================================
spec                               metrics recorded at each metric step
=================================  ==========================================================================
``act_pct:PATH[:UNIT]``            15th/50th/85th percentiles of the *input* of module ``PATH`` (e.g.
                                   ``blocks.2.act``, the last hidden sigmoid of the MLP) over the training
                                   batch of that step; with ``UNIT`` only channel/unit ``UNIT``'s values
                                   (Ioffe & Szegedy 2015, Fig. 1b/c), else all values.
                                   Names: ``act_pct/PATH[:UNIT]/p15``, ``.../p50``, ``.../p85``.
``act_pct_fixed:PATH[:UNIT]``      the same percentiles on a fixed sample of inputs: the run's training-accuracy
                                   examples (the first ``eval_samples`` training examples, the same at every
                                   metric step), in one extra forward in train mode (the sample's own batch
                                   statistics) whose BN running statistics are restored after it.
                                   Names: ``act_pct_fixed/PATH[:UNIT]/p15``, ... A fixed sample measures how
                                   the parameters move the distribution; a training batch adds its own
                                   sampling noise, which BN removes by normalizing each batch.
``act_moments:PATH``               mean and standard deviation of the input of ``PATH`` (all values).
``grad_norm``                      L2 norm of every trainable parameter's gradient: ``grad_norm/NAME``,
                                   and of all of them together: ``grad_norm/total``.
=================================  ==========================================================================

The activation probes read the training forward of the metric step through a forward pre-hook
(they add no forward pass and change no BN statistics), ``act_pct_fixed`` the forward of the fixed
sample it runs after the backward (:func:`sample_forward`); the gradient probe reads the gradients
after the backward, before the optimizer step. Between metric steps the hooks return at once.
Seeds trained together (:mod:`bnlab.train.seeds`) record ``act_pct``, ``act_pct_fixed`` and
``act_moments`` per member with these probes' own ``measure`` (:mod:`bnlab.train.group_probes`), and run
a probe that reads only the model it is handed (:attr:`Probe.per_member`: ``grad_norm`` and the
experiments' gradient-ICS, landscape, precise-BN and shift probes) on each member's model written out of the group.

New probes: subclass :class:`Probe` and ``register_probe("name", factory)``, where
``factory(arg: str | None) -> Probe`` receives what follows ``name:`` in the spec. A probe sees a
:class:`StepContext` after the backward, so it may also compute things of its own (it must then
leave the model as it found it -- BN running statistics included), and ``finish(model, dataset)``
after the last step, whose metrics go to ``RunResult.final_metrics``. A sweep's worker processes
are fresh interpreters: register probes (and norms) at import of a module and name a function of
it as ``run_sweep(..., worker_setup=...)`` so the workers know them too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn

PERCENTILES = (15, 50, 85)


@dataclasses.dataclass
class StepContext:
    """What a probe sees after the backward of a metric step (before the optimizer step)."""

    step: int  # 1-based index of the step being taken
    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: Tensor  # this step's batch
    y: Tensor
    loss: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    sample: Tensor | None = None  # the run's fixed sample of training inputs (those of its training accuracy)


class Probe:
    """Base class: ``attach`` once, then per metric step ``arm`` -> forward/backward ->
    ``after_backward`` -> ``collect``; ``finish`` after the last step; ``detach`` at the end
    removes every hook."""

    #: Whether this probe reads only what it is handed, so that seeds trained together run it on each member's
    #: model written out of the group (:class:`bnlab.train.group_probes.MemberProbes`). Such a probe reads, in
    #: ``after_backward``, the model (its parameters, their gradients, its buffers), the step's batch, loss and
    #: loss function, the step and the optimizer (in a group, one over the member holding its part of the
    #: group's state: :func:`bnlab.train.grouped.member_optimizer`), and in ``finish`` the model.
    per_member: ClassVar[bool] = False

    def __init__(self) -> None:
        self.armed = False
        self._handles: list = []
        self._values: dict[str, float] = {}

    def attach(self, model: nn.Module) -> None:
        pass

    def arm(self) -> None:
        self.armed = True
        self._values = {}

    def after_backward(self, ctx: StepContext) -> None:
        pass

    def finish(self, model: nn.Module, dataset) -> dict[str, float]:
        """After the last step of a run that did not diverge: metrics of the trained model (e.g. an
        accuracy after recomputing BN statistics), stored in ``RunResult.final_metrics``. A probe
        that changes the model here must restore it."""
        return {}

    def collect(self) -> dict[str, float]:
        self.armed = False
        values, self._values = self._values, {}
        return values

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as e:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"expected a module path of the model such as {names[:6]} (got {path!r})") from e


@contextlib.contextmanager
def sample_forward(model: nn.Module) -> Iterator[None]:
    """An extra forward of ``model`` that leaves no trace: no autograd graph, every buffer (BN running
    statistics, ``num_batches_tracked``) restored after it, torch's CPU RNG state and the RNG state of
    the model's GPUs too (dropout or noisy norms in the forward draw the same numbers as without it)."""
    buffers = [(b, b.clone()) for b in model.buffers()]
    gpus = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=gpus):
            yield
    finally:
        with torch.no_grad():
            for b, value in buffers:
                b.copy_(value)


class _InputProbe(Probe):
    """Reads the input of one module in the armed forward: the training forward of the metric step,
    or with ``fixed`` the forward of the fixed sample that :meth:`after_backward` runs."""

    def __init__(self, path: str, fixed: bool = False) -> None:
        super().__init__()
        self.path = path
        self.fixed = fixed

    def arm(self) -> None:
        super().arm()
        self.armed = not self.fixed  # a fixed-sample probe reads only its own forward

    def after_backward(self, ctx: StepContext) -> None:
        if not self.fixed:
            return
        if ctx.sample is None:
            raise ValueError(f"expected the run's fixed sample for {self.path!r}'s fixed-sample probe (got none)")
        with sample_forward(ctx.model):
            self.armed = True
            try:
                ctx.model(ctx.sample)
            finally:
                self.armed = False

    def attach(self, model: nn.Module) -> None:
        self._handles.append(_module(model, self.path).register_forward_pre_hook(self._hook))

    def _hook(self, module: nn.Module, args: tuple) -> None:
        if self.armed and module.training and not self._values:
            with torch.no_grad():
                self._values = self.measure(args[0].detach())

    def measure(self, x: Tensor) -> dict[str, float]:
        raise NotImplementedError


class ActivationPercentiles(_InputProbe):
    def __init__(
        self, path: str, unit: int | None = None, q: tuple[float, ...] = PERCENTILES, fixed: bool = False
    ) -> None:
        super().__init__(path, fixed)
        self.unit, self.q = unit, tuple(q)
        self.prefix = f"act_pct{'_fixed' if fixed else ''}/{path}" + ("" if unit is None else f":{unit}")

    def measure(self, x: Tensor) -> dict[str, float]:
        vals = x[:, self.unit] if self.unit is not None else x  # one unit: (N,) or (N, L...) values
        vals = vals.reshape(-1).float()
        qs = torch.quantile(vals, torch.tensor([q / 100 for q in self.q], device=vals.device))
        return {f"{self.prefix}/p{q:g}": float(v) for q, v in zip(self.q, qs.tolist())}


class ActivationMoments(_InputProbe):
    def measure(self, x: Tensor) -> dict[str, float]:
        x = x.float()
        return {f"act_mean/{self.path}": float(x.mean()), f"act_std/{self.path}": float(x.std())}


class GradNorms(Probe):
    per_member = True

    def after_backward(self, ctx: StepContext) -> None:
        total = 0.0
        for name, p in ctx.model.named_parameters():
            if p.grad is not None:
                n = float(p.grad.detach().float().norm())
                self._values[f"grad_norm/{name}"] = n
                total += n * n
        self._values["grad_norm/total"] = total**0.5


def _act_pct(arg: str | None, fixed: bool = False) -> Probe:
    name = "act_pct_fixed" if fixed else "act_pct"
    if not arg:
        raise ValueError(f"expected {name}:PATH[:UNIT] (got no PATH)")
    path, _, unit = arg.partition(":")
    try:
        return ActivationPercentiles(path, int(unit) if unit else None, fixed=fixed)
    except ValueError:
        raise ValueError(f"expected an integer UNIT in {name}:{arg} (got {unit!r})") from None


def _act_moments(arg: str | None) -> Probe:
    if not arg:
        raise ValueError("expected act_moments:PATH (got no PATH)")
    return ActivationMoments(arg)


def _grad_norm(arg: str | None) -> Probe:
    if arg:
        raise ValueError(f"expected grad_norm without an argument (got {arg!r})")
    return GradNorms()


_PROBES: dict[str, Callable[[str | None], Probe]] = {
    "act_pct": _act_pct,
    "act_pct_fixed": functools.partial(_act_pct, fixed=True),
    "act_moments": _act_moments,
    "grad_norm": _grad_norm,
}


def register_probe(name: str, factory: Callable[[str | None], Probe]) -> None:
    """Make ``name[:ARG]`` specs build ``factory(ARG or None)``."""
    if ":" in name or not name:
        raise ValueError(f"expected a probe name without ':' (got {name!r})")
    _PROBES[name] = factory


# Probes the experiments define register themselves when this module is imported; a spec that
# names one must resolve in a fresh worker process too, so unknown names import it once.
_LAB_PROBES = "bnlab.experiments.probes"


def make_probe(spec: str) -> Probe:
    name, sep, arg = spec.partition(":")
    if name not in _PROBES:
        import importlib

        importlib.import_module(_LAB_PROBES)
    if name not in _PROBES:
        raise ValueError(f"expected a probe in {sorted(_PROBES)} (got {spec!r})")
    return _PROBES[name](arg if sep else None)
