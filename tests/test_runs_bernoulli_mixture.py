"""jlvm train --model bernoulli-mixture: EM on binary data, exact evaluation, the
responsibilities, exact imputation, its figures and the clustering's agreement with the
labels (the adjusted Rand index)."""

import contextlib
import io
import json

import jax
import numpy as np
import pytest

from jlvm import cli, data, runs
from jlvm.models import bernoulli_mixture
from jlvm.runs import _evaluation


def _cli(*argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bm") / "run"
    code, _, stderr = _cli("train", "--model", "bernoulli-mixture", "--components", 4,
                           "--data", "digits", "--epochs", 3, "--out", out)
    assert code == 0, stderr
    return out


def test_evaluate_is_exact_with_the_adjusted_rand_index(run_dir):
    """jlvm evaluate: the mean of bernoulli_mixture.log_marginal over the test split under
    the checkpoint's parameters, equal to the ELBO, and sklearn's adjusted Rand index of the
    most probable components against the labels; on a subset, aligned with its rows."""
    from sklearn.metrics import adjusted_rand_score

    code, stdout, stderr = _cli("evaluate", run_dir)
    assert code == 0, stderr
    line = json.loads(stdout.strip().splitlines()[-1])
    params = runs.load(run_dir).state.params
    test = data.digits()
    X = jax.numpy.asarray(test.test)
    exact = jax.vmap(bernoulli_mixture.log_marginal, in_axes=(None, 0))(params, X)
    assert line["method"] == "exact" and line["exact"] and line["num_samples"] is None
    assert line["likelihood_type"] == "probability"
    np.testing.assert_allclose(line["log_likelihood"], float(np.mean(exact)), atol=1e-3)
    assert line["elbo"] == line["log_likelihood"] and line["gap"] == 0.0
    components = jax.vmap(lambda x: bernoulli_mixture.posterior(params, x).logits)(X)
    components = np.asarray(components).argmax(axis=1)
    np.testing.assert_allclose(line["adjusted_rand_index"],
                               adjusted_rand_score(test.test_labels, components), atol=1e-4)
    assert 0.1 < line["adjusted_rand_index"] <= 1
    # a random subset: the labels follow its rows
    [subset] = runs.evaluate(run_dir, num_examples=100, seed=3)
    rows = np.sort(np.random.default_rng(3).choice(X.shape[0], 100, replace=False))
    np.testing.assert_allclose(subset["adjusted_rand_index"], adjusted_rand_score(
        test.test_labels[rows], components[rows]), atol=1e-4)
    # rows with nothing observed are dropped with their labels; the others are clustered
    # by p(k | x_obs)
    run = runs.load(run_dir)
    holes = np.array(test.test[:60])
    holes[[3, 10]] = np.nan
    holes[20:40, :32] = np.nan
    line = _evaluation.evaluate_split(run.setup, run.state, holes, jax.random.PRNGKey(0),
                                      num_samples=1, chunk_size=None, batch_size=100,
                                      missing="none", mesh=None,
                                      labels=test.test_labels[:60])
    assert line["examples_with_nothing_observed"] == 2
    kept = np.ones(60, bool)
    kept[[3, 10]] = False
    mask = ~np.isnan(holes[kept])
    logits = jax.vmap(lambda x, m: bernoulli_mixture.posterior(params, x, m).logits)(
        jax.numpy.asarray(np.nan_to_num(holes[kept])), jax.numpy.asarray(mask))
    np.testing.assert_allclose(line["adjusted_rand_index"], adjusted_rand_score(
        test.test_labels[:60][kept], np.asarray(logits).argmax(axis=1)), atol=1e-4)
    # no labels (the valid split has none; a data file may have none): nothing is scored
    line = _evaluation.evaluate_split(run.setup, run.state, holes, jax.random.PRNGKey(0),
                                      num_samples=1, chunk_size=None, batch_size=100,
                                      missing="none", mesh=None)
    assert "adjusted_rand_index" not in line

def test_encode_and_impute_are_exact(run_dir, tmp_path):
    params = runs.load(run_dir).state.params
    test = data.digits().test[:20]
    code, _, stderr = _cli("encode", run_dir, "--out", tmp_path / "codes.npz")
    assert code == 0, stderr
    codes = np.load(tmp_path / "codes.npz")
    expected = jax.vmap(lambda x: jax.nn.softmax(
        bernoulli_mixture.posterior(params, x).logits))(jax.numpy.asarray(
            data.digits().test))
    np.testing.assert_allclose(codes["responsibilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(codes["component"], np.asarray(expected).argmax(axis=1))
    assert codes["labels"].shape == codes["component"].shape
    mask = np.random.default_rng(0).random(test.shape) > 0.4
    mask[:, 0] = True
    np.savez(tmp_path / "holes.npz", x=np.where(mask, test, np.nan))
    code, _, stderr = _cli("impute", run_dir, "--input", tmp_path / "holes.npz", "--out",
                           tmp_path / "filled.npz", "--draws", 3)
    assert code == 0, stderr
    filled = np.load(tmp_path / "filled.npz")
    expected = jax.vmap(bernoulli_mixture.conditional_mean, in_axes=(None, 0, 0))(
        params, jax.numpy.asarray(np.where(mask, test, 0.0)), jax.numpy.asarray(mask))
    np.testing.assert_allclose(filled["x"], expected, atol=1e-5)
    np.testing.assert_array_equal(filled["x"][mask], test[mask])
    draws = filled["draws"]
    assert draws.shape == (3, *test.shape)
    assert np.all((draws == 0) | (draws == 1))
    np.testing.assert_array_equal(draws[:, mask], np.broadcast_to(test[mask], (3, mask.sum())))


def test_figures_and_samples(run_dir, tmp_path):
    for name in ("components.png", "cluster_sizes.png", "samples.png", "elbo.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG", name
    code, _, stderr = _cli("sample", run_dir, "--out", tmp_path / "s.png", "--n", 8)
    assert code == 0, stderr
    assert (tmp_path / "s.png").exists()


def test_non_binary_data_and_the_gmm_settings_are_refused(tmp_path):
    code, _, stderr = _cli("train", "--model", "bernoulli-mixture", "--data",
                                "digits-gray", "--epochs", 1, "--out", tmp_path / "gray")
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and "--data" in stderr, stderr
    assert "binary" in stderr and not (tmp_path / "gray").exists()
    code, _, stderr = _cli("train", "--model", "bernoulli-mixture", "--components", 5000,
                           "--data", "digits", "--epochs", 1, "--out", tmp_path / "many")
    assert code == 2 and "--components (5000) must be at most" in stderr, stderr
    code, _, stderr = _cli("train", "--model", "bernoulli-mixture", "--covariance-type",
                           "diag", "--epochs", 1, "--out", tmp_path / "cov")
    assert code == 2 and "covariance" in stderr, stderr
    code, _, stderr = _cli("train", "--model", "bernoulli-mixture", "--likelihood",
                           "bernoulli", "--epochs", 1, "--out", tmp_path / "lik")
    assert code == 2 and "--likelihood does not apply" in stderr, stderr
