"""The bnlab command line: sub-commands run and bad input fails with a message."""

import subprocess
import sys


from bnlab import cli


def test_every_command_builds_its_parser():
    parser = cli.build_parser()
    for name in cli.COMMANDS:
        assert parser.parse_args([name] + (["C2"] if name == "run" else [])).command == name


def test_list_and_run_c2(capsys):
    assert cli.main(["list"]) == 0
    assert "C2" in capsys.readouterr().out
    assert cli.main(["run", "C2"]) == 0
    assert "verdict: REPRODUCED, the same on 10 of 10 fresh random inputs" in capsys.readouterr().out


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["run", "C99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnlab run: unknown experiment 'C99'; expected one of") and err.count("\n") == 1


def test_check_command_passes_in_a_fresh_process():
    out = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "check", "--steps", "1"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "all cases match" in out.stdout
