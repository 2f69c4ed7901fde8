"""A probe that runs on one model only (neither an activation probe a group measures nor one that reads only
what it is handed), registered as ``one_model``: the stand-in, in the tests of seeds trained together, for a
probe of the user's that reads more than its own model (the lab's own probes all run in groups)."""

from __future__ import annotations

from bnlab.train.probes import Probe, StepContext, register_probe


class OneModel(Probe):
    def after_backward(self, ctx: StepContext) -> None:
        self._values = {"one_model/lr": float(ctx.optimizer.param_groups[0]["lr"])}


register_probe("one_model", lambda arg: OneModel())
