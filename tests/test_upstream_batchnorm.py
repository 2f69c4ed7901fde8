"""PyTorch's own BatchNorm test cases, run against bnlab's classes.

The cases come from torch's test data shipped in the wheel -- ``module_db`` of
``torch.testing._internal.common_modules`` (what test/test_modules.py iterates: every constructor /
input pair of BatchNorm1d/2d/3d and the error inputs) -- and checks ported from test/test_modules.py
(forward parity in train and eval, running statistics, gradients and gradgradcheck, state_dict both
ways, deepcopy/pickle, repr, memory format, non-contiguous inputs, train and eval differ) and from
test/test_nn.py's batch-norm tests (the size errors, buffers untouched when tracking is switched off,
less than one value per channel, simple average). torch's module is the oracle for each.

Cannot apply (and not ported): the CUDA/cuDNN/MPS cases (no device), the half-precision cuDNN cases,
torch's aot-autograd/inductor fusion tests of module_db (they test torch's compiler on torch's own
kernels). Scripting is tested on its own, against eager bnlab and torch, in test_torchscript.py.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.testing._internal.common_modules import module_db

import bnlab

BN_INFOS = [
    info for info in module_db if info.module_cls in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
]
OURS = {
    torch.nn.BatchNorm1d: bnlab.nn.BatchNorm1d,
    torch.nn.BatchNorm2d: bnlab.nn.BatchNorm2d,
    torch.nn.BatchNorm3d: bnlab.nn.BatchNorm3d,
}


def _cases(training: bool, dtype=torch.float64, requires_grad=True):
    for info in BN_INFOS:
        for case in info.module_inputs_func(
            info, device="cpu", dtype=dtype, requires_grad=requires_grad, training=training
        ):
            yield pytest.param(
                info, case, id=f"{info.module_cls.__name__}-{case.desc or 'default'}-{'train' if training else 'eval'}"
            )


def _build(info, case):
    args, kwargs = case.constructor_input.args, case.constructor_input.kwargs
    torch.manual_seed(0)
    ref = info.module_cls(*args, **kwargs).double()
    ours = OURS[info.module_cls](*args, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("info,case", list(_cases(True)) + list(_cases(False)))
def test_module_db_forward_backward_and_state_match_torch(info, case):
    for training in (True, False):
        ref, ours = _build(info, case)
        ref.train(training), ours.train(training)
        (x,) = case.forward_input.args
        x1, x2 = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
        y_ref, y = ref(x1), ours(x2)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        if y.numel():
            g = torch.randn_like(y)
            y_ref.backward(g), y.backward(g)
            torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-9, atol=1e-9)
            for a, b in zip(ours.parameters(), ref.parameters()):
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)
        for name, buf in ref.named_buffers():
            torch.testing.assert_close(getattr(ours, name), buf)


@pytest.mark.slow
@pytest.mark.parametrize("info,case", list(_cases(True)))
def test_module_db_gradcheck_and_gradgradcheck(info, case):
    _, ours = _build(info, case)
    (x,) = case.forward_input.args
    if x.numel() == 0:
        pytest.skip("empty batch: nothing to differentiate (torch's test skips it too)")
    params = [p for p in ours.parameters()]
    names = [n for n, _ in ours.named_parameters()]

    def fn(x, *ps):
        return torch.func.functional_call(ours, dict(zip(names, ps)), (x,))

    inputs = (x.detach().clone().requires_grad_(), *[p.detach().clone().requires_grad_() for p in params])
    ours.train()
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("info", BN_INFOS, ids=lambda i: i.module_cls.__name__)
def test_module_db_error_inputs_raise_as_torch_does(info):
    for err in info.module_error_inputs_func(
        info, device="cpu", dtype=torch.float32, requires_grad=False, training=True
    ):
        case = err.module_error_input
        m = OURS[info.module_cls](*case.constructor_input.args, **case.constructor_input.kwargs)
        with pytest.raises(err.error_type, match=err.error_regex):
            m(*case.forward_input.args)


@pytest.mark.parametrize("info,case", list(_cases(True, requires_grad=False)))
def test_module_db_repr_pickle_deepcopy_and_state_dict_both_ways(info, case):
    ref, ours = _build(info, case)
    assert repr(ours) == repr(ref)
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(clone) is type(ours)
        for (n, a), (_, b) in zip(clone.state_dict().items(), ours.state_dict().items()):
            assert torch.equal(a, b), n
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    ref.load_state_dict(torch.load(buf))


@pytest.mark.parametrize(
    "info,case",
    [
        c
        for c in _cases(True, dtype=torch.float32, requires_grad=False)
        if c.values[0].module_cls is not torch.nn.BatchNorm1d
    ],
)
def test_module_db_memory_format_and_non_contiguous_inputs(info, case):
    ref, ours = _build(info, case)
    ref.float(), ours.float()
    (x,) = case.forward_input.args
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    for inp in (x.contiguous(memory_format=fmt), x.transpose(-1, -2).contiguous().transpose(-1, -2)):
        y_ref, y = ref(inp), ours(inp)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        assert y.is_contiguous(memory_format=fmt) == y_ref.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("info", BN_INFOS, ids=lambda i: i.module_cls.__name__)
def test_train_and_eval_differ(info):  # ModuleInfo.train_and_eval_differ=True for batch norm
    case = next(
        iter(info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=False, training=True))
    )
    _, ours = _build(info, case)
    (x,) = case.forward_input.args
    assert not torch.allclose(ours.train()(x), ours.eval()(x))


# --- test/test_nn.py's batch-norm tests ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["running_mean", "running_var", "weight", "bias"])
def test_raises_if_a_per_channel_tensor_is_not_the_size_of_the_input(which):
    x = torch.rand(2, 10)
    for size in (9, 11):
        args = {"running_mean": torch.rand(10), "running_var": torch.rand(10), "weight": None, "bias": None}
        args[which] = torch.nn.Parameter(torch.rand(size)) if which in ("weight", "bias") else torch.rand(size)
        with pytest.raises(RuntimeError):
            bnlab.functional.batch_norm(x, args["running_mean"], args["running_var"], args["weight"], args["bias"])


def test_raises_if_less_than_one_value_per_channel():
    with pytest.raises(ValueError):
        bnlab.nn.BatchNorm1d(10)(torch.rand(10)[None, :, None])


def test_buffers_are_not_updated_when_stats_are_not_tracked():
    bn = bnlab.nn.BatchNorm1d(4, track_running_stats=True)
    bn.track_running_stats = False
    before = [b.clone() for b in bn.buffers()]
    bn(torch.rand(32, 4))
    assert all(torch.equal(a, b) for a, b in zip(before, bn.buffers()))


@pytest.mark.parametrize("affine", [True, False])
def test_simple_average_matches_torch(affine):
    ours, ref = (
        bnlab.nn.BatchNorm1d(10, momentum=None, affine=affine),
        torch.nn.BatchNorm1d(10, momentum=None, affine=affine),
    )
    for _ in range(4):
        x = torch.rand(16, 10) * 3
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_non_contiguous_eval_input_keeps_channels_last_as_torch():
    x = torch.arange(6, dtype=torch.float).reshape(1, 3, 2, 1).permute(0, 2, 1, 3)
    ours, ref = bnlab.nn.BatchNorm2d(2).eval(), torch.nn.BatchNorm2d(2).eval()
    y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref)
    assert y.is_contiguous(memory_format=torch.channels_last) == y_ref.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(4, 8, 10, 10), (4, 1, 9, 9), (4, 9, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nhwc_training_matches_torch(shape, dtype):
    x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    ours, ref = bnlab.nn.BatchNorm2d(shape[1]).to(dtype), torch.nn.BatchNorm2d(shape[1]).to(dtype)
    ref.load_state_dict(ours.state_dict())
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = ours(x1), ref(x2)
    g = torch.randn_like(y)
    y.backward(g), y_ref.backward(g)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_lazy_batch_norm_infers_channels_and_becomes_the_plain_class():
    for lazy, plain, shape in (
        (bnlab.nn.LazyBatchNorm1d, bnlab.nn.BatchNorm1d, (4, 6)),
        (bnlab.nn.LazyBatchNorm2d, bnlab.nn.BatchNorm2d, (4, 6, 3, 3)),
        (bnlab.nn.LazyBatchNorm3d, bnlab.nn.BatchNorm3d, (4, 6, 2, 3, 3)),
    ):
        m, ref = lazy(), getattr(torch.nn, lazy.__name__)()
        x = torch.randn(shape)
        torch.testing.assert_close(m(x), ref(x))
        assert type(m) is plain and m.num_features == 6 and m.weight.shape == (6,)
        torch.testing.assert_close(m.running_var, ref.running_var)
