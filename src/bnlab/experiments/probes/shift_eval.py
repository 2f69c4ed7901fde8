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

The sets of one size are adapted together and the test batches of one set normalized together, as
members of one grouped model of copies of the trained model (:mod:`bnlab.train.grouped`, where no
operation mixes members): the same measurements as one set and one batch at a time (tested), about
4x faster; a model that cannot be grouped is measured one set and one batch at a time.

Names: ``shift/CORRUPTION/S/METHOD`` (``shift/clean/0/...``, ``shift/train/0/...``). Every
method works on a copy or restores what it changes: the trained model and torch's RNG state are
left as they were.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import Tensor, nn

from ... import data as bdata
from ...adaptation import Adaptation, Tent, TestBatchNorm, adapt, softmax_entropy
from ...data import shifted
from ...train.grouped import GroupedCNN1d, GroupedMLP, group, why_not_groupable
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


def _copies(model: nn.Module, k: int) -> GroupedCNN1d | GroupedMLP | None:
    """``k`` copies of ``model`` as one grouped model (:mod:`bnlab.train.grouped`: no operation mixes
    members, so each computes what the model computes alone), in the model's mode; None for fewer than
    two copies or a model that cannot be grouped (the measurements then run one batch or set at a time)."""
    if k < 2 or why_not_groupable(model) is not None:
        return None
    return group([model] * k).train(model.training)


@torch.no_grad()
def _eval(model: nn.Module, x: Tensor) -> Tensor:
    was = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was)


@torch.no_grad()
def _test_batch(model: nn.Module, x: Tensor, batch: int, prior: float | None = None, copies=None) -> Tensor:
    """Logits with every BN layer on the statistics of each batch of ``batch`` consecutive examples (the
    last may be smaller): the whole batches as members of one grouped model of copies, in one forward.
    ``copies(k)``: where the grouped copies come from (default :func:`_copies`; they are left unchanged)."""
    whole = x.shape[0] // batch
    grouped, out = (copies or functools.partial(_copies, model))(whole), []
    if grouped is not None:
        with TestBatchNorm(grouped, prior):
            out.append(grouped(grouped.inputs(x[: whole * batch].reshape(whole, batch, *x.shape[1:]))).flatten(0, 1))
        x = x[whole * batch :]
    if x.shape[0]:
        with TestBatchNorm(model, prior):
            out += [model(b) for b in x.split(batch)]
    return torch.cat(out)


def _adabn(model: nn.Module, xs: list[Tensor]) -> list[Tensor]:
    """For each set of ``xs`` (of one size): eval-mode logits after :func:`bnlab.adapt` ``method="stats"``
    on the set in batches of BATCH, each set on its own copy of the model (members of one grouped model)."""
    grouped = _copies(model, len(xs))
    if grouped is None:
        return [_adabn_one(model, x) for x in xs]
    x = torch.stack(xs)  # (sets, n, ...): member i's batches are set i's
    adapt(grouped, list(x.split(BATCH, dim=1)), method="stats", forward=lambda _, b: grouped(grouped.inputs(b)))
    return list(_eval(grouped, grouped.inputs(x)).unbind(0))


def _adabn_one(model: nn.Module, x: Tensor, samples: int | None = None) -> Tensor:
    """Eval-mode logits of ``x`` after AdaBN on a copy of ``model`` from the first ``samples`` examples
    of ``x`` (default: all of them)."""
    m = copy.deepcopy(model)
    adapt(m, x.split(BATCH), method="stats", num_samples=samples)
    return _eval(m, x)


def _tent(model: nn.Module, xs: list[Tensor], batch: int, lr: float) -> list[Tensor]:
    """TENT online on each set of ``xs`` (of one size), from the source model every time: the logits of
    each batch of ``batch``, predicted before its update, as :class:`bnlab.adaptation.Tent` makes them.

    The sets run as members of one grouped model of copies: the loss is the sum of the members' mean
    prediction entropies (:class:`~bnlab.adaptation.Tent`'s ``loss``), so each member's γ and β get exactly
    its own set's gradient, and Adam's update is elementwise (tested against :func:`bnlab.adapt` set by set)."""
    grouped = _copies(model, len(xs))
    if grouped is None:
        out = []
        for x in xs:
            result = adapt(copy.deepcopy(model), x.split(batch), method="tent", lr=lr, keep_outputs=True)
            assert isinstance(result, Adaptation) and result.outputs is not None  # batches given, outputs kept
            out.append(torch.cat(result.outputs))
        return out
    k = len(xs)

    def loss(out: Tensor) -> Tensor:  # (sets, batch, classes): the sum of the members' mean entropies
        return softmax_entropy(out.flatten(0, 1)).view(k, -1).mean(1).sum()

    tent = Tent(grouped, optimizer="adam", lr=lr, forward=lambda m, xb: m(grouped.inputs(xb)), loss=loss)
    logits = [tent(xb) for xb in torch.stack(xs).split(batch, dim=1)]  # (sets, batch, ...) at a time
    return list(torch.cat(logits, 1).unbind(0))


def _gap(model: nn.Module, x: Tensor, y: Tensor, copies) -> dict[str, float]:
    """``source``, ``test_batch`` and ``disagree`` on one set."""
    src = _eval(model, x)
    tb = _test_batch(model, x, BATCH, copies=copies)
    return {
        "source": error(src, y),
        "test_batch": error(tb, y),
        "disagree": float((src.argmax(1) != tb.argmax(1)).float().mean()),
    }


def _small(model: nn.Module, x: Tensor, y: Tensor, copies) -> dict[str, float]:
    """The small-batch measurements of one set but TENT's, on its first SUBSET examples."""
    x, y = x[:SUBSET], y[:SUBSET]
    out = {"subset_source": error(_eval(model, x), y)}
    for b in SMALL_BATCHES:
        out[f"test_batch@{b}"] = error(_test_batch(model, x, b, copies=copies), y)
        out[f"prior@{b}"] = error(_test_batch(model, x, b, PRIOR, copies), y)
    for n in FEW_SAMPLES:
        out[f"adabn@{n}"] = error(_adabn_one(model, x, n), y)
    return out


def measure_sets(model: nn.Module, sets: list[tuple[Tensor, Tensor, str]]) -> list[dict[str, float]]:
    """The errors on each ``(x, y, methods)`` set (see the module docstring). ``methods``: "all" (with the
    small-batch ones), "main" (without them) or "gap" (source, test_batch and disagree only). The
    adapted methods run on the sets of each size together (:func:`_adabn`, :func:`_tent`)."""
    copies = functools.cache(functools.partial(_copies, model))  # for test-batch statistics, which change nothing
    out = [_gap(model, x, y, copies) for x, y, _ in sets]
    main = [i for i, (_, _, methods) in enumerate(sets) if methods != "gap"]
    for size in sorted({sets[i][0].shape[0] for i in main}):
        same = [i for i in main if sets[i][0].shape[0] == size]
        xs = [sets[i][0] for i in same]
        for key, logits in (
            ("adabn", _adabn(model, xs)),
            ("tent", _tent(model, xs, BATCH, TENT_LR)),
            ("tent_lr_paper", _tent(model, xs, BATCH, TENT_LR_PAPER)),
        ):
            for i, z in zip(same, logits):
                out[i][key] = error(z, sets[i][1])
    small = [i for i, (_, _, methods) in enumerate(sets) if methods == "all"]
    for i in small:
        out[i].update(_small(model, sets[i][0], sets[i][1], copies))
    for b in TENT_BATCHES:
        for i, z in zip(small, _tent(model, [sets[i][0][:SUBSET] for i in small], b, TENT_LR)):
            out[i][f"tent@{b}"] = error(z, sets[i][1][:SUBSET])
    return out


def measure(model: nn.Module, x: Tensor, y: Tensor, methods: str = "all") -> dict[str, float]:
    """The errors on one set: :func:`measure_sets` of that set alone."""
    return measure_sets(model, [(x, y, methods)])[0]


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
            measured = measure_sets(model, [(x.to(device), labels, methods) for _, _, x, labels, methods in sets])
            for (corruption, s, *_), values in zip(sets, measured):
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
