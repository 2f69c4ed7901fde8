"""``bnlab doctor`` imports models from the installed packages, not from the current folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BNLAB = str(Path(sys.executable).with_name("bnlab"))


def test_a_local_folder_named_like_an_installed_package_does_not_run(tmp_path):
    marker = tmp_path / "shadow_ran"
    (tmp_path / "mnist1d").mkdir()  # mnist1d is installed (a bnlab dependency)
    (tmp_path / "mnist1d" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    done = subprocess.run([BNLAB, "doctor", "mnist1d:no_such_factory"], cwd=tmp_path, capture_output=True, text=True)
    assert not marker.exists()  # before: the local folder was imported (and its code ran)
    assert done.returncode == 2 and "no_such_factory" in done.stderr


def test_models_in_a_folder_given_with_path_are_found(tmp_path):
    (tmp_path / "my_models.py").write_text(
        "import torch\ndef net():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), "
        "torch.nn.BatchNorm2d(4), torch.nn.ReLU())\n"
    )
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    done = subprocess.run(
        [BNLAB, "doctor", "my_models:net", "--path", str(tmp_path)], cwd=elsewhere, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "1 BN layer(s)" in done.stdout


def test_help_states_the_trust_model():
    done = subprocess.run([BNLAB, "doctor", "--help"], capture_output=True, text=True, check=True)
    assert "runs the model's code" in " ".join(done.stdout.split()) and "trust" in done.stdout
