"""The `jlvm` command, run in-process and as an installed console script."""

import json
import shutil
import subprocess

import pytest

from jlvm import cli


def test_fit_gmm_prints_one_json_line(capsys):
    assert cli.main(["fit-gmm", "--components", "3", "--iters", "12", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["components"] == 3 and result["iters"] == 12
    assert result["train_log_likelihood"] > result["test_log_likelihood"] - 50
    assert -1.0 <= result["test_adjusted_rand_index"] <= 1.0
    assert "EM iteration   12/12" in err  # progress went to stderr


@pytest.mark.parametrize("argv", [["fit-gmm", "--iters", "0"], ["fit-gmm", "--components", "-1"],
                                  ["train-something"]])
def test_bad_arguments_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


def test_reg_covar_must_be_positive(capsys):
    assert cli.main(["fit-gmm", "--reg-covar", "0"]) == 2
    assert "--reg-covar" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("jlvm") is None, reason="console script not installed")
def test_console_script_runs():
    done = subprocess.run(["jlvm", "fit-gmm", "--components", "2", "--iters", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "gmm"
