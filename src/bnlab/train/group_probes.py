"""Activation probes of seeds trained together: ``train()``'s ``act_pct``, ``act_pct_fixed`` and ``act_moments``,
per member.

In the grouped model (:mod:`bnlab.train.grouped`) the input of member j's ``blocks.I.norm`` or
``blocks.I.act`` is member j's slice of the channels of the grouped module's input: columns
j*W..(j+1)*W of the MLP's (N, k*W), channels j*C..(j+1)*C of the CNN's (N, k*C, 1, L). A forward
pre-hook on the grouped module cuts out each active member's slice, copies it into the layout the
member's own model gives that module ((N, W) or (N, C, L), contiguous) and hands it to the single
probe's ``measure`` (:mod:`bnlab.train.probes`): the same names, the same quantiles, the same dtype
handling as :func:`~bnlab.train.trainer.train` records. The copy makes a member's values independent
of its slot (a fresh tensor of one layout, whatever the offset of the slice).

``act_pct_fixed`` reads the forward of the fixed sample (the same inputs for every member, in train
mode, running statistics restored: :func:`~bnlab.train.probes.sample_forward`) that :meth:`GroupProbes.read_sample`
runs at a metric step before the training step, with the parameters ``train()``'s probe sees after
its backward (before the optimizer step).

The hooks are registered for the forwards of a metric step only and removed after them, so
the steps between metric steps cost nothing. Only the members still counting are measured: a
diverged member records no more probe values.

The grouped model fuses bnlab's batch norm and a following ReLU into one layer, whose output is the
ReLU's: the ReLU's *input* is not materialized. A block whose act a probe reads is unfused
(``_unfuse``: the fused layer's activation set to the identity and the ReLU module restored),
so that input exists again; the other blocks stay fused.

Other probes (gradient norms, the experiments' landscape, shift and precise-BN probes) run on one
model: ``why_not_probed`` says so, and such configs train one seed at a time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ..nn.norm_act import BatchNormAct1d, BatchNormAct2d
from .probes import ActivationMoments, ActivationPercentiles, _module, make_probe, sample_forward

# The probes a group can take: they read a module's input and measure it with a function of it alone.
_GROUPED = (ActivationPercentiles, ActivationMoments)
# The modules whose input is a channel slice of the grouped module's input.
_PATH = re.compile(r"blocks\.(\d+)\.(norm|act)")


def why_not_probed(specs: Sequence[str]) -> str | None:
    """Why configs with the probes ``specs`` cannot be trained together (None if they can)."""
    for spec in specs:
        probe = make_probe(spec)
        if type(probe) not in _GROUPED:
            return f"probes other than act_pct, act_pct_fixed and act_moments run on one model (got {spec!r})"
        path = cast("ActivationPercentiles | ActivationMoments", probe).path
        if not _PATH.fullmatch(path):
            return f"probes of the input of {path!r} run on one model (grouped: of blocks.I.norm or blocks.I.act)"
    return None


def _unfuse(block: nn.Module, member_act: nn.Module) -> None:
    """Split a grouped block's fused BN + activation back into BN and the activation module, so
    that the activation's input exists (no-op for a block that is not fused)."""
    if isinstance(block.norm, (BatchNormAct1d, BatchNormAct2d)) and type(block.act) is nn.Identity:
        block.norm.act = "identity"
        block.act = member_act


class GroupProbes:
    """The ``act_pct`` / ``act_pct_fixed`` / ``act_moments`` probes ``specs`` on the grouped ``model``, whose
    members are of ``member``'s architecture: per metric step, :meth:`arm` with the members to measure,
    :meth:`read_sample` and the training forward, then :meth:`collect`."""

    def __init__(self, specs: Sequence[str], model: nn.Module, member: nn.Module) -> None:
        reason = why_not_probed(specs)
        if reason is not None:
            raise ValueError(f"expected probes a group can take (got {reason})")
        self.k = cast(int, model.k)
        self.probes = [cast("ActivationPercentiles | ActivationMoments", make_probe(s)) for s in specs]
        self.modules = []
        for p in self.probes:
            member_module = _module(member, p.path)  # train()'s error for a path the model lacks
            match = _PATH.fullmatch(p.path)
            assert match is not None  # why_not_probed checked the form
            if match.group(2) == "act":
                _unfuse(model.get_submodule(f"blocks.{match.group(1)}"), member_module)
            self.modules.append(model.get_submodule(p.path))
        self._handles: list = []
        self._values: dict[int, dict[str, float]] = {}
        self._on_sample = False  # which forward the hooks read: the fixed sample's or the training batch's

    def arm(self, members: Sequence[int]) -> None:
        """Measure ``members`` (their slots) in the next training forward."""
        self._values = {j: {} for j in members}
        if not self._values:
            return
        for probe, module in zip(self.probes, self.modules):
            self._handles.append(module.register_forward_pre_hook(functools.partial(self._hook, probe)))

    def read_sample(self, model, x: Tensor) -> None:
        """Run the fixed sample ``x`` (M, *features) through every member for the armed
        ``act_pct_fixed`` probes (nothing if none is armed or none is of that kind)."""
        if not self._values or not any(p.fixed for p in self.probes):
            return
        self._on_sample = True
        try:
            with sample_forward(model):
                model(model.inputs(x.unsqueeze(0).expand(self.k, *x.shape)))
        finally:
            self._on_sample = False

    def _hook(self, probe: ActivationPercentiles | ActivationMoments, module: nn.Module, args: tuple) -> None:
        if not module.training or probe.fixed != self._on_sample:
            return
        x = args[0].detach()  # (N, k*C) or (N, k*C, 1, L)
        c = x.shape[1] // self.k
        with torch.no_grad():
            for j, values in self._values.items():
                xj: Tensor = x.narrow(1, j * c, c)
                if xj.dim() == 4:
                    xj = xj.squeeze(2)  # (N, C, L), the member's layout
                values.update(probe.measure(xj.contiguous()))

    def collect(self) -> dict[int, dict[str, float]]:
        """The armed members' metrics of the forward since :meth:`arm`, by slot; the hooks removed."""
        for h in self._handles:
            h.remove()
        self._handles = []
        values, self._values = self._values, {}
        return values
