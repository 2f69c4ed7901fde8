"""The one building block every model is made of: a linear map, a norm and an activation.

``placement`` says where the norm goes relative to the activation:

* ``"before"`` -- ``act(norm(op(x)))``, as in Ioffe & Szegedy 2015 (BN before the nonlinearity);
* ``"after"``  -- ``norm(act(op(x)))``, the order Chollet reported in later Inception code.

Each part is a named child (``op``, ``norm``, ``act``) so experiments can hook "the input of the
last hidden sigmoid" as ``model.blocks[-1].act`` or find every norm by name.
"""

from __future__ import annotations

from torch import Tensor, nn

PLACEMENTS = ("before", "after")


def check_placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        raise ValueError(f"expected placement in {PLACEMENTS} (got {placement!r})")
    return placement


class Block(nn.Module):
    """``op`` then ``norm`` and ``act`` in the order ``placement`` gives."""

    def __init__(self, op: nn.Module, norm: nn.Module, act: nn.Module, placement: str = "before") -> None:
        super().__init__()
        self.placement = check_placement(placement)
        self.op = op
        self.norm = norm
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.op(x)
        if self.placement == "before":
            return self.act(self.norm(x))
        return self.norm(self.act(x))

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}"
