"""jlvm evaluate --method ais / bdmc (jlvm/runs/_ais.py): through the run's jlvm.Model alone,
in the data's own units; exact where AIS starts at the exact posterior (PPCA's encoder)."""

import json

import jax
import numpy as np
import pytest
from scipy import stats

from jlvm import cli, evaluate, runs


@pytest.fixture(scope="module")
def ppca_run(tmp_path_factory):
    """PPCA on a CSV of real numbers in the thousands (standardized, so every number is
    converted back to the file's units); its encoder is the exact posterior."""
    folder = tmp_path_factory.mktemp("ppca")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 1)) @ np.array([[1.0, 0.6, -0.4]]) + 0.3 * rng.normal(
        size=(150, 3))
    np.savetxt(folder / "x.csv", 1000.0 * x + 50.0, delimiter=",")
    out = folder / "run"
    assert cli.main(["train", "--model", "ppca", "--data", str(folder / "x.csv"),
                     "--latent-dim", "1", "--epochs", "2", "--batch-size", "100",
                     "--learning-rate", "0.05", "--out", str(out)]) == 0
    return out


def _line(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_ais_from_the_exact_posterior_is_exact_in_the_files_units(ppca_run, capsys):
    """From q = p(z | x) every AIS weight is p(x): the command's mean equals the closed form
    of the run's own parameters, in the CSV's units, for any number of steps."""
    run = runs.load(ppca_run)
    facts = json.loads((ppca_run / "config.json").read_text())["facts"]["data"]
    # the test rows as the file holds them, by the row numbers the run directory recorded
    test = np.loadtxt(ppca_run.parent / "x.csv", delimiter=",")[facts["test_rows"]]
    params = run.state.params
    # the model's parameters are in standardized units; the file's x = mean + scale * x'
    units = run.setup.data.units
    W, b = np.asarray(params["W"], np.float64), np.asarray(params["b"], np.float64)
    covariance = W @ W.T + np.exp(2 * float(params["log_noise"])) * np.eye(3)
    assert units is not None  # a CSV of real numbers is standardized
    mean, scale = np.asarray(units.mean), np.asarray(units.scale, np.float64)
    exact = stats.multivariate_normal(mean + scale * b,
                                      covariance * np.outer(scale, scale)).logpdf(test)
    line = _line(capsys, ["evaluate", str(ppca_run), "--method", "ais", "--ais-steps", "3",
                          "--num-chains", "2"])
    assert line["method"] == "ais" and line["ais_steps"] == 3 and line["num_chains"] == 2
    assert line["initial"] == "encoder" and line["num_examples"] == test.shape[0]
    np.testing.assert_allclose(line["log_likelihood"], exact.mean(), atol=2e-4)
    sandwich = _line(capsys, ["evaluate", str(ppca_run), "--method", "bdmc",
                              "--num-examples", "12", "--ais-steps", "3", "--num-chains", "2"])
    assert sandwich["method"] == "bdmc" and sandwich["num_examples"] == 12
    assert abs(sandwich["gap"]) < 1e-3 and sandwich["gap_se"] < 1e-3
    assert sandwich["log_likelihood_lower"] == pytest.approx(
        sandwich["log_likelihood_upper"], abs=1e-3)


def test_a_vae_run_is_annealed_as_the_python_function_does(trained, capsys):
    """The run layer's AIS is jlvm.evaluate.log_likelihood_ais on the run's own model and
    rows (one compiled program serves both)."""
    from jlvm.runs import _ais, _setup

    run_dir = trained("vae").path
    run = runs.load(run_dir)
    rows = _setup.subset(run.setup.dataset.test.shape[0], 6, 3)
    X = np.asarray(run.setup.dataset.test[rows], np.float32)
    key = jax.random.PRNGKey(3)
    line = _ais.evaluate_ais(run.setup, run.state, X, key, num_steps=4, num_chains=2,
                             batch_size=100, missing="none", mesh=None)
    assert line["initial"] == "encoder" and line["num_examples"] == 6
    assert line["likelihood_type"] == "probability" and line["bits_per_dim"] > 0
    # one block of rows: its key is fold_in(key, 0)
    direct = evaluate.log_likelihood_ais(
        jax.random.fold_in(key, 0), run.setup.built.model, run.setup.built.params(run.state),
        X, 4, num_chains=2, initial="encoder")
    assert line["log_likelihood"] == pytest.approx(float(np.mean(direct)), abs=1e-4)
    # (BDMC on this run: benchmarks/ais_mnist.py's test; the command's: the PPCA test above)


def test_a_discrete_latent_is_one_line_and_exit_2(trained, capsys):
    assert cli.main(["evaluate", str(trained("gmm").path), "--method", "ais",
                     "--ais-steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--method ais" in err and "continuous" in err
    assert cli.main(["evaluate", str(trained("gmm").path), "--method", "bdmc"]) == 2
    assert "--method bdmc: initial must be a continuous" in capsys.readouterr().err
    assert cli.main(["evaluate", str(trained("gmm").path), "--ais-steps", "0"]) == 2
    assert "--ais-steps must be" in capsys.readouterr().err
