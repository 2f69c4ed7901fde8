"""Activation probes of seeds trained together: ``train()``'s ``act_pct``, ``act_pct_fixed`` and ``act_moments``,
per member.

In the grouped model (:mod:`bnlab.train.grouped`) the input of member j's ``blocks.I.norm`` or
``blocks.I.act`` is member j's slice of the channels of the grouped module's input: columns
j*W..(j+1)*W of the MLP's (1, k*W, N) or (N, k*W), channels j*C..(j+1)*C of the CNN's (N, k*C, 1, L). A forward
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

A probe that reads only the model (and optimizer) it is handed (:attr:`~bnlab.train.probes.Probe.per_member`:
gradient norms, the experiments' gradient-ICS, landscape, precise-BN and shift probes) runs per member on the
member's own model (:class:`MemberProbes`): at a metric step, after the backward, each member still counting is
written out of the group with its gradients and the probe gets that model, an optimizer over it holding the
member's part of the group's optimizer state (:func:`~bnlab.train.grouped.member_optimizer`: a probe that
takes a trial step, as the ICS probe does, steps the member as it would step alone), and the member's batch
and loss, as ``train()``'s probe gets them; after the last step, each finished member's final model goes to
the probe's ``finish``. Other probes run on one model: ``why_not_probed`` says so, and such configs train one
seed at a time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.norm_act import BatchNormAct1d, BatchNormAct2d
from .grouped import GroupedCNN1d, GroupedMLP, member_optimizer, ungroup
from .probes import ActivationMoments, ActivationPercentiles, Probe, StepContext, _module, make_probe, sample_forward

# The probes a group can take: they read a module's input and measure it with a function of it alone.
_GROUPED = (ActivationPercentiles, ActivationMoments)
# The modules whose input is a channel slice of the grouped module's input.
_PATH = re.compile(r"blocks\.(\d+)\.(norm|act)")


def why_not_probed(specs: Sequence[str]) -> str | None:
    """Why configs with the probes ``specs`` cannot be trained together (None if they can)."""
    for spec in specs:
        probe = make_probe(spec)
        if probe.per_member:
            continue
        if type(probe) not in _GROUPED:
            return (
                f"probes other than act_pct, act_pct_fixed, act_moments and those that read only the model they "
                f"are handed run on one model (got {spec!r})"
            )
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
        probes = [make_probe(s) for s in specs]
        self.probes = [cast("ActivationPercentiles | ActivationMoments", p) for p in probes if not p.per_member]
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
        x = args[0].detach()  # the MLP's (1, k*W, N) or (N, k*W); the CNN's (N, k*C, 1, L)
        c = x.shape[1] // self.k
        with torch.no_grad():
            for j, values in self._values.items():
                xj: Tensor = x.narrow(1, j * c, c)
                if xj.dim() == 4:
                    xj = xj.squeeze(2)  # (N, C, L), the member's layout
                elif xj.dim() == 3:
                    xj = xj.squeeze(0).t()  # (N, W), the member's layout
                values.update(probe.measure(xj.contiguous()))

    def collect(self) -> dict[int, dict[str, float]]:
        """The armed members' metrics of the forward since :meth:`arm`, by slot; the hooks removed."""
        for h in self._handles:
            h.remove()
        self._handles = []
        values, self._values = self._values, {}
        return values


class MemberProbes:
    """The probes of ``specs`` that read only the model they are handed, one set per member of the
    grouped ``model`` (``members``: the members' own modules, which receive their state): per metric step
    :meth:`arm` with the members to measure, :meth:`after_backward` after the grouped backward, then
    :meth:`collect`; :meth:`finish` after the last step."""

    def __init__(self, specs: Sequence[str], model: GroupedCNN1d | GroupedMLP, members: Sequence[nn.Module]) -> None:
        self.model, self.members = model, list(members)
        self.probes: list[list[Probe]] = []
        for member in self.members:
            probes = [p for p in (make_probe(s) for s in specs) if p.per_member]
            for p in probes:
                p.attach(member)
            self.probes.append(probes)
        self._armed: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.probes and self.probes[0])

    def arm(self, members: Sequence[int]) -> None:
        self._armed = list(members) if self else []
        for j in self._armed:
            for p in self.probes[j]:
                p.arm()

    def after_backward(
        self, step: int, optimizer, sample: Tensor, batches: Sequence[tuple[Tensor, Tensor]], losses: Tensor
    ) -> None:
        """Each armed member's probes on its model written out of the group (gradients included), with
        its batch ``batches[j]`` and loss ``losses[j]``, its part of the group's ``optimizer``
        (:func:`~bnlab.train.grouped.member_optimizer`: its state and the scheduled learning rate) and the
        run's fixed ``sample``: the context ``train()``'s probe gets."""
        for j in self._armed:
            own = member_optimizer(self.model, j, self.members[j], optimizer)  # writes the member, grads too
            x, y = batches[j]
            ctx = StepContext(step, self.members[j], own, x, y, losses[j], F.cross_entropy, sample)
            for p in self.probes[j]:
                p.after_backward(ctx)

    def collect(self) -> dict[int, dict[str, float]]:
        """The armed members' metrics of this step, by slot."""
        values = {j: {k: v for p in self.probes[j] for k, v in p.collect().items()} for j in self._armed}
        self._armed = []
        return values

    def finish(self, j: int, dataset) -> dict[str, float]:
        """Member ``j``'s final metrics: its probes' ``finish`` on its trained model."""
        if not self:
            return {}
        member = ungroup(self.model, j, self.members[j])
        return {k: v for p in self.probes[j] for k, v in p.finish(member, dataset).items()}

    def detach(self) -> None:
        for probes in self.probes:
            for p in probes:
                p.detach()
