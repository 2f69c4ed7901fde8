"""One training, several runs: the runs that differ only in what observes the training share it.

Two configs of one seed train the same bits when they differ only in

* the probes that read only the model they are handed (:attr:`~bnlab.train.probes.Probe.per_member`: gradient
  norms, the experiments' gradient-ICS, landscape, precise-BN and shift probes: they work on a copy of the
  member and of its part of the optimizer's state, from their own random generators),
* ``eval_every`` (an evaluation runs in eval mode, without gradients, and restores the mode), and
* ``steps``, on a constant schedule (whose learning rate does not depend on the run's length; the batch
  order of a shorter run is the start of a longer run's: :mod:`~bnlab.train.batches`),

or in ``act`` being None in one and the model's own activation, named, in the other.

:func:`trunk` maps a config to what decides its training; :func:`~bnlab.train.seeds.train_seeds` trains the
configs of one trunk once, up to the longest run's steps, and gives each config, as a :class:`View` of that
training, exactly the result it gets when trained alone: its own metric steps, train-loss intervals,
divergence checks (on its own schedule), probes (armed at its own metric steps, on their own copies of the
members) and final metrics (at its own last step). The experiments ask for such runs: claim C3's plain
CNN at learning rate 0.1 is C5's BN and no-BN arms (1500 of its 2000 steps), C4's BN before ReLU (1500 steps,
its activation named) and C11's runs (with the precise-BN probe); C13's runs are the first 1000 steps of
C14's (with the shift probe); C6's runs (the gradient-ICS probe) are seeds 0-4 of C7's (the landscape
probe). Tested bit for bit against each run trained alone.

A config with probes that read the grouped model (``act_pct``, ``act_pct_fixed``, ``act_moments``: hooks on
its forward, and an unfused block), or with a probe spec that names no probe, shares nothing: its trunk is
the config itself (with seed 0 and its activation named).
"""

from __future__ import annotations

import dataclasses
import math

from torch import Tensor

from ..models import default_act
from .config import RunConfig
from .probes import make_probe
from .trainer import CHECK_EVERY

__all__ = ["View", "trunk"]


def trunk(config: RunConfig) -> RunConfig:
    """What decides ``config``'s training but its seed: configs of one trunk and seed train the same bits."""
    act = default_act(config.model) if config.act is None else config.act  # None: the model's own
    if not all(_observes_only(spec) for spec in config.probes):
        return dataclasses.replace(config, seed=0, act=act)
    steps = 1 if config.schedule == "constant" else config.steps
    return dataclasses.replace(config, seed=0, act=act, probes=(), eval_every=1, steps=steps)


def _observes_only(spec: str) -> bool:
    """Whether probe ``spec`` reads only the model it is handed (False for a spec that names no probe: the
    run refuses it where it runs, and its error is recorded)."""
    try:
        return make_probe(spec).per_member
    except ValueError:
        return False


class View:
    """The runs of one config (``template``, seed 0) in a shared training: the members in ``slots`` are its
    seeds. Per member: the status, the diverged step, the metric series, the final metrics and (if kept) the
    model, as :func:`~bnlab.train.seeds.train_seeds` records them for the config alone; ``probes``: its own
    :class:`~bnlab.train.group_probes.MemberProbes`."""

    def __init__(self, template: RunConfig, slots: list[int], probes) -> None:
        self.config, self.slots, self.probes = template, slots, probes
        self.active = list(slots)  # the members still counting
        self.done = False
        self._checked = 0  # the last step the divergence check read
        self.last_row = dict.fromkeys(slots, 0)
        self.status = dict.fromkeys(slots, "finished")
        self.diverged: dict[int, int | None] = dict.fromkeys(slots)
        self.series: dict[int, dict[str, list[float]]] = {j: {} for j in slots}
        self.finals: dict[int, dict[str, float]] = {j: {} for j in slots}
        self.models: dict[int, object] = dict.fromkeys(slots)

    def metric_step(self, step: int) -> bool:
        return step % self.config.eval_every == 0 or step == self.config.steps

    def check(self, step: int, losses: Tensor, first_loss: list[float]) -> list[int] | None:
        """The divergence check of the config alone at ``step`` (at its metric steps and every
        :data:`~bnlab.train.trainer.CHECK_EVERY` steps): the members that tripped now, or None where the
        config alone does not check at this step."""
        if not (self.metric_step(step) or step - self._checked >= CHECK_EVERY):
            return None
        window = losses[self._checked : step].tolist()  # rows of k
        tripped = []
        limit = self.config.diverge_factor
        for j in self.active:
            bad = [
                i
                for i, row in enumerate(window, self._checked + 1)
                if not math.isfinite(row[j]) or row[j] > limit * first_loss[j]
            ]
            if bad:
                self.status[j], self.diverged[j] = "diverged", bad[0]
                tripped.append(j)
        self._checked = step
        return tripped

    def steps_done(self, j: int) -> int:
        d = self.diverged[j]
        return d if d is not None else self.config.steps
