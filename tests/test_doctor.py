"""bnlab.doctor: one test per finding, a clean model with no hazards, JSON, and the command line."""

import json
import textwrap

import pytest
import torch
from torch import nn

import bnlab
from bnlab.cli import main as cli_main
from bnlab.surgery import precise_bn
from bnlab.surgery.doctor import doctor


def clean_model() -> nn.Module:
    """conv(bias=False) -> BN -> ReLU twice, PyTorch momentum, statistics calibrated on its data."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        bnlab.nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    gen = torch.Generator().manual_seed(1)
    precise_bn(model, [torch.randn(32, 3, 8, 8, generator=gen) for _ in range(4)])
    return model.eval()


def example(n=32):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def codes(report, severity="hazard"):
    return {f.code for f in report.findings if f.severity == severity}


def test_clean_model_reports_no_hazards_but_notes_placement_and_fusable_pairs():
    report = doctor(clean_model(), example())
    assert report.hazards == [] and report.num_bn_layers == 2
    assert codes(report, "note") == {"bn-placement", "fusable", "train-eval-gap"}
    assert "no hazards found" in report.to_text()


def test_frozen_parameters_in_training_mode():
    model = clean_model().train()
    model[1].weight.requires_grad_(False), model[1].bias.requires_grad_(False)
    f = [f for f in doctor(model).hazards if f.code == "frozen-bn-training"]
    assert f and f[0].where == ["1"] and ".eval()" in f[0].fix


def test_bias_before_bn():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Conv2d(1, 1, 1))  # conv not before a BN
    f = [f for f in doctor(model).hazards if f.code == "bias-before-bn"]
    assert f and f[0].where == ["0"] and "bias=False" in f[0].fix


def test_bias_before_bn_found_through_fx_trace_outside_sequential():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    report = doctor(Net())
    assert [f.where for f in report.hazards if f.code == "bias-before-bn"] == [["conv"]]
    assert "1 BN layer(s) come before an activation" in next(
        f.message for f in report.findings if f.code == "bn-placement"
    )


def test_keras_style_momentum():
    model = clean_model()
    model[4].momentum = 0.99
    f = [f for f in doctor(model).hazards if f.code == "decay-like-momentum"]
    assert f and f[0].where == ["4"] and "0.01" in f[0].fix


def test_batch_size_one_in_training_mode_is_a_hazard_and_a_note_in_eval():
    model = clean_model()
    assert "batch-size-1" in codes(doctor(model, example(1)), "note")
    model.train()
    assert "batch-size-1" in codes(doctor(model, example(1)))
    bn1d = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2)).train()
    report = doctor(bn1d, torch.randn(1, 3))  # BatchNorm1d raises on (1, C): still reported
    assert "batch-size-1" in codes(report)


def test_float16_overflow_of_running_var():
    model = clean_model()
    with torch.no_grad():
        model[1].running_var[3] = 1e5
    f = [f for f in doctor(model).hazards if f.code == "float16-overflow"]
    assert f and f[0].where == ["1"]


def test_float16_overflow_of_the_eval_scale():
    model = clean_model()
    with torch.no_grad():
        model[4].running_var.fill_(1e-9)
        model[4].weight[0] = 1e3  # scale 1e3 / sqrt(1e-9 + 1e-5) ~ 3.2e5 > 65504, running_var tiny
    assert "float16-overflow" in codes(doctor(model))


def test_dead_channels():
    model = clean_model()
    with torch.no_grad():
        model[1].weight[[0, 5]] = 0.0
    f = [f for f in doctor(model).hazards if f.code == "dead-channels"]
    assert f and "1: 2/8" in f[0].message


def test_train_eval_gap_on_uncalibrated_statistics():
    model = clean_model()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)  # statistics that do not describe the data
    f = [f for f in doctor(model, example()).hazards if f.code == "train-eval-gap"]
    assert f and "precise_bn" in f[0].fix


def test_syncbn_outside_a_distributed_run():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.SyncBatchNorm(4))
    f = [f for f in doctor(model).hazards if f.code == "syncbn-single-process"]
    assert f and f[0].where == ["1"]


def test_doctor_leaves_the_model_unchanged():
    model = clean_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    doctor(model, example())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(m.training for m in model.modules())


def test_json_report_has_every_field():
    model = clean_model()
    model[1].momentum = 0.9
    data = json.loads(json.dumps(doctor(model).to_json()))
    assert data["num_hazards"] == 1
    assert set(data["findings"][0]) == {"code", "severity", "where", "message", "fix"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script is deprecated in torch 2.13
def test_torchscript_model_is_checked_by_class_names():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.95), nn.ReLU())
    report = doctor(torch.jit.script(model))
    assert {"bias-before-bn", "decay-like-momentum"} <= codes(report)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "doctor_models.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        def clean():
            return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU()).eval()

        def keras_style():
            return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, momentum=0.99))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_cli_module_factory_text_and_exit_status(factory_module, capsys):
    assert cli_main(["doctor", "doctor_models:clean"]) == 0
    assert "no hazards found" in capsys.readouterr().out
    assert cli_main(["doctor", "doctor_models:keras_style"]) == 1
    assert "decay-like-momentum" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_torchscript_file_json_with_input(factory_module, capsys):
    path = factory_module / "model.pt"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    torch.jit.script(model).save(str(path))
    assert cli_main(["doctor", str(path), "--json", "--input-shape", "1,3,5,5"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {f["code"] for f in data["findings"]} >= {"bias-before-bn", "batch-size-1"}


def test_cli_bad_model_spec_exits_2(capsys):
    assert cli_main(["doctor", "no_such_module_xyz:f"]) == 2
    assert cli_main(["doctor", "torch.nn"]) == 2
    assert cli_main(["doctor"]) == 2
    assert "expected module:factory" in capsys.readouterr().err
