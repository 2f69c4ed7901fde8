"""``shift_eval``: the trained model's error on shifted test sets, unadapted and adapted (C13, C14).

Spec ``shift_eval:DATA:S1,S2,...[:main]`` (e.g. ``shift_eval:mnist1d:1,2,3,4,5``; ``:main`` leaves
out the small-batch measurements below, for a quick run). After the last step
(:meth:`Probe.finish`), for the clean test set and for every corruption of
:data:`bnlab.data.shifted.CORRUPTIONS` ``[DATA]`` at each severity S, it records the error (a
fraction) of

* ``source``      -- the model as trained, eval mode (the source running statistics);
* ``test_batch``  -- BN with each test batch's own statistics (TENT's "norm" row; Nado et al.;
  Schneider et al. without prior), batches of :data:`BATCH` in the test set's order;
* ``adabn``       -- after :func:`bnlab.adapt` ``method="stats"`` on the whole (unlabeled) test
  set in batches of BATCH, then eval mode (Li et al.'s AdaBN);
* ``tent``        -- TENT online (Wang et al.): batches of BATCH in order, each predicted and then
  γ/β updated by one Adam step at :data:`TENT_LR`, from the source model for every set (the
  paper's reset per corruption and severity); ``tent_lr_paper`` the same at the paper's lr 1e-3;

and ``disagree``, the fraction of test examples whose eval-mode prediction differs from the
test-batch one (a label-free view of the same gap). The first :data:`TRAIN_SAMPLES` clean
training examples (the data the model was trained on) get ``source``, ``test_batch`` and
``disagree``. For the clean set and every corruption at the highest severity listed, it also
records small-batch behaviour on the first :data:`SUBSET` test examples (to bound the cost of
batches of one): ``subset_source`` (eval mode), ``test_batch@B`` and ``prior@B`` (Schneider et
al.'s prior N = :data:`PRIOR`) for B in :data:`SMALL_BATCHES`, ``adabn@n`` (statistics from only
the first n of them) for n in :data:`FEW_SAMPLES`, and ``tent@B`` for B in :data:`TENT_BATCHES`.

Names: ``shift/CORRUPTION/S/METHOD`` (``shift/clean/0/...``, ``shift/train/0/...``). Every
method works on a copy or restores what it changes: the trained model and torch's RNG state are
left as they were.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ... import data as bdata
from ...adaptation import Adaptation, TestBatchNorm, adapt
from ...data import shifted
from ...train.probes import Probe, register_probe

BATCH = 100  # test batch: the training batch size of C13/C14 (TENT's CIFAR setting used 200)
TENT_LR = 5e-3  # Adam: the paper's 1e-3 x 50 updates per set = 5e-3 x our 10 (1000 examples / 100)
TENT_LR_PAPER = 1e-3
PRIOR = 16  # Schneider et al.'s prior strength N (pseudo samples of the source statistics)
SMALL_BATCHES = (1, 2, 4, 8, 16)
FEW_SAMPLES = (4, 16, 64)
TENT_BATCHES = (8,)
TRAIN_SAMPLES = 1000
SUBSET = 250  # test examples for the small-batch measurements


def error(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) != y).float().mean())


@torch.no_grad()
def _eval(model: nn.Module, x: Tensor) -> Tensor:
    was = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was)


@torch.no_grad()
def _test_batch(model: nn.Module, x: Tensor, batch: int, prior: float | None = None) -> Tensor:
    with TestBatchNorm(model, prior):
        return torch.cat([model(b) for b in x.split(batch)])


def _adabn(model: nn.Module, x: Tensor, samples: int | None = None) -> Tensor:
    m = copy.deepcopy(model)
    adapt(m, x.split(BATCH), method="stats", num_samples=samples)
    return _eval(m, x)


def _tent(model: nn.Module, x: Tensor, batch: int, lr: float) -> Tensor:
    m = copy.deepcopy(model)
    result = adapt(m, x.split(batch), method="tent", lr=lr, keep_outputs=True)
    assert isinstance(result, Adaptation) and result.outputs is not None  # batches given, outputs kept
    return torch.cat(result.outputs)


def measure(model: nn.Module, x: Tensor, y: Tensor, methods: str = "all") -> dict[str, float]:
    """The errors on one set (see the module docstring). ``methods``: "all" (with the small-batch
    ones), "main" (without them) or "gap" (source, test_batch and disagree only)."""
    src = _eval(model, x)
    tb = _test_batch(model, x, BATCH)
    out = {
        "source": error(src, y),
        "test_batch": error(tb, y),
        "disagree": float((src.argmax(1) != tb.argmax(1)).float().mean()),
    }
    if methods == "gap":
        return out
    out.update(
        {
            "adabn": error(_adabn(model, x), y),
            "tent": error(_tent(model, x, BATCH, TENT_LR), y),
            "tent_lr_paper": error(_tent(model, x, BATCH, TENT_LR_PAPER), y),
        }
    )
    if methods == "all":
        x, y = x[:SUBSET], y[:SUBSET]
        out["subset_source"] = error(_eval(model, x), y)
        for b in SMALL_BATCHES:
            out[f"test_batch@{b}"] = error(_test_batch(model, x, b), y)
            out[f"prior@{b}"] = error(_test_batch(model, x, b, PRIOR), y)
        for n in FEW_SAMPLES:
            out[f"adabn@{n}"] = error(_adabn(model, x, n), y)
        for b in TENT_BATCHES:
            out[f"tent@{b}"] = error(_tent(model, x, b, TENT_LR), y)
    return out


class ShiftEval(Probe):
    per_member = True  # reads only the model, batch, loss and learning rate it is handed

    def __init__(self, data: str, severities: tuple[int, ...], small: bool = True) -> None:
        super().__init__()
        if data not in shifted.CORRUPTIONS:
            raise ValueError(f"expected shift_eval:DATA with DATA in {sorted(shifted.CORRUPTIONS)} (got {data!r})")
        self.data, self.severities, self.small = data, tuple(severities), small

    def finish(self, model: nn.Module, dataset) -> dict[str, float]:
        rng = torch.get_rng_state()
        device = next(model.parameters()).device
        clean = bdata.load(self.data)
        y = clean.y_test.to(device)
        top = max(self.severities)
        most = "all" if self.small else "main"
        sets = [
            ("clean", 0, clean.x_test, y, most),
            ("train", 0, clean.x_train[:TRAIN_SAMPLES], clean.y_train[:TRAIN_SAMPLES].to(device), "gap"),
        ]
        for corruption in shifted.CORRUPTIONS[self.data]:
            xs = shifted.corrupted_test(self.data, corruption, self.severities, clean=clean)
            sets += [(corruption, s, xs[s], y, most if s == top else "main") for s in self.severities]
        metrics = {}
        try:
            for corruption, s, x, labels, methods in sets:
                values = measure(model, x.to(device), labels, methods)
                metrics.update({f"shift/{corruption}/{s}/{k}": v for k, v in values.items()})
        finally:
            torch.set_rng_state(rng)
        return metrics


def _shift_eval(arg: str | None) -> Probe:
    data, _, levels = (arg or "").partition(":")
    levels, _, option = levels.partition(":")
    try:
        severities = tuple(int(s) for s in levels.split(","))
    except ValueError:
        severities = ()
    if not data or not severities or any(s not in shifted.SEVERITIES for s in severities) or option not in ("", "main"):
        raise ValueError(
            f"expected shift_eval:DATA:S1,S2,...[:main] with severities in {shifted.SEVERITIES} (got {arg!r})"
        )
    return ShiftEval(data, severities, small=option != "main")


register_probe("shift_eval", _shift_eval)
