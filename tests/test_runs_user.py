"""jlvm.runs._user and the kind of a model of your own: a model in a .py file and a CSV of
real numbers, through the `jlvm` command in new processes, checked against closed forms
in the file's units."""

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import background
import jax
import numpy as np
import pytest
from scipy import stats

from jlvm import cli, runs
from jlvm.runs import _user

# probabilistic PCA written as a user would: z ~ N(0, I_L), x | z ~ N(W z + b, sigma^2 I),
# with its exact posterior p(z | x_obs) as the encoder (a Gaussian: Tipping & Bishop). The
# ELBO is then log p(x) at every draw, so the amortized learner ascends the likelihood
# itself, and importance sampling and imputation have only their Monte Carlo error. Its
# log-likelihood computes with x before it masks: a NaN at a hole would reach the gradient
# if the learner handed it over.
PPCA = textwrap.dedent('''
    import distrax, jax, jax.numpy as jnp
    import jlvm

    def make(data_dim, latent_dim=1, init_scale=0.1):
        def init(key):
            return {"W": init_scale * jax.random.normal(key, (data_dim, latent_dim)),
                    "b": jnp.zeros(data_dim), "log_sigma": jnp.zeros(())}

        def prior(params):
            return distrax.MultivariateNormalDiag(jnp.zeros(latent_dim), jnp.ones(latent_dim))

        def log_likelihood(params, x, z, mask=None):
            per = jax.scipy.stats.norm.logpdf(x, params["W"] @ z + params["b"],
                                              jnp.exp(params["log_sigma"]))
            return jnp.sum(per if mask is None else jnp.where(mask, per, 0.0))

        def log_joint(params, x, z, mask=None):
            return prior(params).log_prob(z) + log_likelihood(params, x, z, mask)

        def encoder(params, x, mask=None):
            seen = jnp.ones(data_dim) if mask is None else mask.astype(x.dtype)
            W = params["W"] * seen[:, None]
            precision = jnp.eye(latent_dim) + W.T @ W / jnp.exp(2 * params["log_sigma"])
            covariance = jnp.linalg.inv(precision)
            mean = covariance @ W.T @ ((x - params["b"]) * seen) / jnp.exp(
                2 * params["log_sigma"])
            return distrax.MultivariateNormalTri(mean, jnp.linalg.cholesky(covariance))

        def decoder(params, z):
            return distrax.MultivariateNormalDiag(
                params["W"] @ z + params["b"], jnp.full(data_dim, jnp.exp(params["log_sigma"])))

        return jlvm.Model(init, log_joint, encoder, log_likelihood=log_likelihood,
                          prior=prior, decoder=decoder)
''')
ROWS, SEED = 300, 3
TRAIN = ["--epochs", "150", "--batch-size", "270", "--learning-rate", "0.05",
         "--num-samples", "8", "--checkpoint-every", "140", "--eval-every", "1000"]


def _data(rng) -> np.ndarray:
    """Rows of a line in 3-D plus noise, in units far from standard ones."""
    z = rng.normal(size=(ROWS, 1))
    x = z @ np.array([[2.0, -1.0, 0.5]]) + 0.5 * rng.normal(size=(ROWS, 3))
    return (x + np.array([10.0, -3.0, 100.0])) * np.array([1.0, 0.2, 50.0])


def _jlvm(argv, cwd, timeout=600):
    """What `jlvm ARGV...` printed, run in a new process on the background runner's core."""
    done = subprocess.run(background.jlvm(*argv), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _train_and_evaluate():
    """``jlvm train`` in the folder of ppca.py and data.csv, with relative paths; then
    ``jlvm evaluate`` of the run from another folder: two new processes."""
    folder, elsewhere = background.folder("user-model"), background.folder("elsewhere")
    (folder / "ppca.py").write_text(PPCA)
    X = _data(np.random.default_rng(0))
    lines = ["a,b,c"] + [",".join(repr(float(v)) for v in row) for row in X]
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    (result,) = _jlvm(["train", "--model", "ppca.py:make", "--data", "data.csv", "--seed",
                       SEED, "--out", "run", *TRAIN], cwd=folder)
    (line,) = _jlvm(["evaluate", folder / "run", "--split", "train", "--num-samples", "500"],
                    cwd=elsewhere)
    return folder, X, result, line


def _gaussian(params, scale):
    """The trained model's mean and covariance of standardized x: (b, W W^T + s^2 I)."""
    W, b = np.asarray(params["W"], np.float64), np.asarray(params["b"], np.float64)
    return b, W @ W.T + np.exp(2 * float(params["log_sigma"])) * np.eye(W.shape[0])


@pytest.fixture(scope="module")
def ppca_run():
    """(folder, X, what jlvm train printed, what jlvm evaluate --split train printed)."""
    return background.result(_train_and_evaluate)


@pytest.mark.background.with_args(_train_and_evaluate)
def test_a_model_of_your_own_on_a_csv_reaches_the_ppca_maximum_likelihood(ppca_run):
    folder, X, result, line = ppca_run
    run_dir = folder / "run"
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["config"]["model"] == f"{folder / 'ppca.py'}:make"
    assert stored["config"]["data"] == str(folder / "data.csv")
    facts = stored["facts"]
    assert facts["model"]["model_source"]["sha256"] == _user._hash(folder / "ppca.py")
    # the test split: round(0.1 N) distinct rows; the training split the others in order
    test_rows = np.asarray(facts["data"]["test_rows"])
    assert test_rows.shape == (round(0.1 * ROWS),) and len(set(test_rows)) == test_rows.size
    train = np.delete(X, test_rows, axis=0)
    mean, scale = train.mean(0), train.std(0)
    np.testing.assert_allclose(facts["data"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(facts["data"]["scale"], scale, rtol=1e-12)
    # the maximum likelihood of PPCA (L=1, sigma learned) on the standardized rows, then
    # in the file's units: minus the sum of log std (Tipping & Bishop, 1999)
    standardized = (train - mean) / scale
    values, vectors = np.linalg.eigh(np.cov(standardized.T, bias=True))
    noise = values[:2].mean()
    W = vectors[:, 2:] * np.sqrt(values[2:] - noise)
    best = stats.multivariate_normal(np.zeros(3), W @ W.T + noise * np.eye(3)).logpdf(
        standardized).mean() - np.log(scale).sum()
    # a new process, in another folder, imported the factory again
    assert line["likelihood_type"] == "density" and line["bits_per_dim"] is None
    # the encoder is the exact posterior, so importance sampling is exact and so is the
    # learner's gradient: what is left is the optimizer's last steps (measured: 5e-5 nats;
    # -6.11 nats per row in the file's units, -3.36 for the standardized rows)
    assert abs(line["log_likelihood"] - best) < 2e-3
    assert line["log_likelihood"] <= best + 1e-4  # a maximum (and rounding to 4 decimals)
    assert abs(result["train_elbo"] - best) < 2e-3


def test_evaluate_encode_impute_sample_and_resume_work_on_it_from_anywhere(ppca_run,
                                                                            tmp_path,
                                                                            monkeypatch,
                                                                            capsys):
    folder, X, _, _ = ppca_run
    run_dir = tmp_path / "copy"
    shutil.copytree(folder / "run", run_dir)
    monkeypatch.chdir(tmp_path)  # not the folder it was trained in
    run = runs.load(run_dir)
    params = run.state.params
    facts = json.loads((run_dir / "config.json").read_text())["facts"]["data"]
    mean, scale = np.asarray(facts["mean"]), np.asarray(facts["scale"])
    b, covariance = _gaussian(params, scale)
    # imputation: E[x_mis | x_obs] of the trained Gaussian, in the file's units; observed
    # entries bit for bit (float32 in, float32 out)
    holes = X[:20].astype(np.float32)
    holes[::2, 1] = np.nan
    holes[1::4, 0] = np.nan
    np.savez(tmp_path / "holes.npz", x=holes)
    assert cli.main(["impute", str(run_dir), "--input", str(tmp_path / "holes.npz"),
                     "--out", str(tmp_path / "filled.npz"), "--num-samples", "2000"]) == 0
    written = np.load(tmp_path / "filled.npz")
    filled, ess = written["x"], written["effective_sample_size"]
    observed = ~np.isnan(holes)
    assert filled.dtype == np.float32
    np.testing.assert_array_equal(filled[observed], holes[observed])
    W = np.asarray(params["W"], np.float64)
    noise = np.exp(2 * float(params["log_sigma"]))
    for row, seen, got, size in zip(holes, observed, filled, ess, strict=True):
        if seen.all():
            continue
        standardized = (row.astype(np.float64) - mean) / scale
        gain = covariance[~seen][:, seen] @ np.linalg.inv(covariance[seen][:, seen])
        exact = b[~seen] + gain @ (standardized[seen] - b[seen])
        got = (got[~seen] - mean[~seen]) / scale[~seen]
        # self-normalized importance sampling of E[W_mis z + b_mis | x_obs]: its standard
        # error is the posterior sd of W_mis z over the root of the effective sample size
        posterior = np.linalg.inv(np.eye(1) + W[seen].T @ W[seen] / noise)
        error = np.sqrt(np.diag(W[~seen] @ posterior @ W[~seen].T) / size)
        assert np.all(np.abs(got - exact) < 4 * error + 1e-4), (got, exact, error)
    capsys.readouterr()
    # features: the encoder's mean, the exact posterior mean of the standardized test rows
    assert cli.main(["encode", str(run_dir), "--out", str(tmp_path / "codes.npz")]) == 0
    codes = np.load(tmp_path / "codes.npz")
    test = (X[np.asarray(facts["test_rows"])] - mean) / scale
    posterior = np.linalg.inv(np.eye(1) + W.T @ W / noise)
    expected = (test - b) @ W @ posterior / noise
    np.testing.assert_allclose(codes["mean"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(codes["scale"], np.sqrt(np.broadcast_to(
        np.diag(posterior), expected.shape)), rtol=1e-4)
    # resumed from epoch 140 (its checkpoint 150 gone): the uninterrupted run's parameters
    # at epoch 150, bit for bit
    shutil.rmtree(run_dir / "checkpoints" / "150")
    assert cli.main(["train", "--out", str(run_dir), "--resume"]) == 0
    for a, c in zip(jax.tree_util.tree_leaves(runs.load(folder / "run").state),
                    jax.tree_util.tree_leaves(runs.load(run_dir).state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    capsys.readouterr()


def test_a_changed_model_file_is_a_warning_and_parameters_that_no_longer_fit_an_error(
        ppca_run, tmp_path, capsys):
    folder, _, _, _ = ppca_run
    shutil.copytree(folder, tmp_path / "f")
    run_dir, source = tmp_path / "f" / "run", tmp_path / "f" / "ppca.py"
    stored = json.loads((run_dir / "config.json").read_text())
    stored["config"]["model"] = f"{source}:make"
    stored["config"]["data"] = str(tmp_path / "f" / "data.csv")
    (run_dir / "config.json").write_text(json.dumps(stored))
    source.write_text(PPCA + "\n# a comment\n")
    assert cli.main(["evaluate", str(run_dir), "--num-samples", "5"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has changed since the run was trained" in err[0], err
    # now the factory builds other shapes: one line that says which
    source.write_text(PPCA.replace("def make(data_dim, latent_dim=1,",
                                   "def make(data_dim, latent_dim=2,"))
    assert cli.main(["evaluate", str(run_dir), "--num-samples", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "does not fit" in err[1] and "(3, 1)" in err[1], err
    # the data file changed: refused, nothing computed from other data
    source.write_text(PPCA)
    data = tmp_path / "f" / "data.csv"
    data.write_text(data.read_text().replace("a,b,c", "x,y,z"))
    assert cli.main(["evaluate", str(run_dir), "--num-samples", "5"]) == 2
    err = capsys.readouterr().err
    assert "has changed since the run was trained" in err and "data.csv" in err


@pytest.mark.parametrize("spec, message", [
    ("nowhere.py:make", "nowhere.py does not exist"),
    ("ppca.py:missing", "defines no function missing (it defines make)"),
    ("ppca.py:1make", "must be the name of the factory function"),
    ("no_such_package.module:make", "cannot import no_such_package.module"),
    ("broken.py:make", "importing"),
    ("wrong.py:make", "must return a jlvm.Model"),
    ("raising.py:make", "make(data_dim=64, width=3) raised ValueError: width"),
])
def test_a_model_that_cannot_be_built_is_one_line(spec, message, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ppca.py").write_text(PPCA)
    (tmp_path / "broken.py").write_text("def make(:\n")
    (tmp_path / "wrong.py").write_text("def make(data_dim, **kwargs):\n    return 3\n")
    (tmp_path / "raising.py").write_text(
        "def make(data_dim, width):\n    raise ValueError(f'width {width} is odd')\n")
    code = cli.main(["train", "--model", spec, "--model-arg", "width=3", "--epochs", "1",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_model_arguments_are_json_where_they_parse(tmp_path):
    assert _user.parse_arguments(["a=1", "b=0.5", "c=true", "d=[1, 2]", "e=relu",
                                  'f="2"', "g="]) == {
        "a": 1, "b": 0.5, "c": True, "d": [1, 2], "e": "relu", "f": "2", "g": ""}
    for bad, message in (["x", "NAME=VALUE"], ["1a=2", "NAME=VALUE"],
                         ["data_dim=3", "jlvm passes data_dim"]):
        with pytest.raises(runs.RunError, match=message):
            runs.make_config(model=str(tmp_path / "m.py") + ":make",
                             model_args=_user.parse_arguments([bad]))
    with pytest.raises(runs.RunError, match="is given twice"):
        _user.parse_arguments(["a=1", "a=2"])
    with pytest.raises(runs.RunError, match="does not apply to --model vae"):
        runs.make_config(model_args={"a": 1})
    config = runs.make_config(model="pkg.mod:make", objective="iwae")
    assert config.num_samples == 5 and config.model == "pkg.mod:make"
    config = runs.make_config(model="m.py:make")
    assert config.model == f"{pathlib.Path.cwd() / 'm.py'}:make"
    with pytest.raises(runs.RunError, match="--grad-estimator for --objective elbo"):
        runs.make_config(model="m.py:make", grad_estimator="dreg")
    with pytest.raises(runs.RunError, match="--latent-dim does not apply"):
        runs.make_config(model="m.py:make", latent_dim=3)


def test_a_package_module_factory_is_imported_again_from_its_root(tmp_path, monkeypatch):
    """package.module:FACTORY found from the folder jlvm train ran in: the run records that
    folder, and later commands find the module there again, from anywhere."""
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "linear.py").write_text(PPCA)
    monkeypatch.chdir(tmp_path)
    model, facts = _user.build("mymodels.linear:make", 3, {"latent_dim": 2})
    assert facts["root"] == str(tmp_path) and facts["path"] == str(package / "linear.py")
    assert model.init(jax.random.PRNGKey(0))["W"].shape == (3, 2)
    for name in ("mymodels.linear", "mymodels"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(pathlib.Path(tmp_path.anchor))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(runs.RunError, match=r"cannot import mymodels\.linear"):
        _user.build("mymodels.linear:make", 3, {}, stored={"sha256": "x"})
    again, _ = _user.build("mymodels.linear:make", 3, {}, stored=facts)  # from its root
    assert again.init(jax.random.PRNGKey(0))["W"].shape == (3, 1)
