"""jlvm.runs.kinds: model kinds are objects found in one table; the run layer never asks
which one it holds, so a kind added to the table gets every command."""

import ast
import json
import pathlib

import numpy as np
import pytest
from scipy import stats

from jlvm import cli, runs
from jlvm.runs import kinds

RUNS = pathlib.Path(runs.__file__).parent


def _names_model(node) -> bool:
    """Whether an expression is a model's name: ``model``, ``config.model``..."""
    return (isinstance(node, ast.Name) and node.id == "model") or (
        isinstance(node, ast.Attribute) and node.attr == "model")


def _name_comparisons(source: str, names: set) -> list[int]:
    """Lines of ``source`` that compare a model's name with a string literal among
    ``names``, or index a dict literal keyed by them."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_names_model(v) for v in (
                node.left, *node.comparators)):
            values = [node.left, *node.comparators]
            literals = [v for v in values if isinstance(v, ast.Constant)]
            literals += [e for v in values if isinstance(v, (ast.Tuple, ast.List, ast.Set))
                         for e in v.elts if isinstance(e, ast.Constant)]
            if any(literal.value in names for literal in literals):
                found.append(node.lineno)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value in names for k in node.value.keys):
            found.append(node.lineno)
    return found


def test_nothing_in_the_run_layer_compares_a_model_name_with_a_string():
    """No `config.model == "gmm"`, `model in ("vae", "iwae")` or `{"svi": ...}[model]` in
    jlvm/runs: behaviour comes from the kind's object."""
    names = set(kinds.kinds())
    # what the scan finds (the dispatch this layer had before kinds)
    assert _name_comparisons('if config.model == "gmm": pass\n'
                             'x = model in ("vae", "iwae")\n'
                             'y = {"svi": 1, "gmm": 2}[config.model]\n', names) == [1, 2, 3]
    found = {str(path.relative_to(RUNS)): _name_comparisons(path.read_text(), names)
             for path in sorted(RUNS.rglob("*.py"))}
    assert {path: lines for path, lines in found.items() if lines} == {}
    # the one place the names appear: the table
    table = (RUNS / "kinds" / "__init__.py").read_text()
    assert all(f'"{name}"' in table for name in names)


def test_every_kind_takes_known_settings_and_says_what_it_is():
    from jlvm.runs import _config

    for name, kind in kinds.kinds().items():
        assert set(kind.settings) <= set(_config.FIELDS) - set(_config.COMMON), name
        assert kind.describe, name
        config = runs.make_config(model=name)
        assert config.model == name
    with pytest.raises(runs.RunError, match="--model must be one of vae, iwae, semi, svi, gmm"):
        kinds.kind_for("VAE")


def test_ppca_is_exact_in_evaluate_encode_and_impute(tmp_path, capsys):
    """The kind added last (one module, one table entry): probabilistic PCA, its exact
    posterior as q; every command, each value against the closed form of the run's own
    parameters (x ~ N(b, W W^T + s^2 I))."""
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "ppca", "--data", "blobs", "--latent-dim", "1",
                     "--epochs", "2", "--batch-size", "100", "--learning-rate", "0.05",
                     "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "ppca" and result["likelihood_type"] == "density"
    run = runs.load(out)
    params, test = run.state.params, np.asarray(run.setup.dataset.test, np.float64)
    W, b = np.asarray(params["W"], np.float64), np.asarray(params["b"], np.float64)
    noise = np.exp(2 * float(params["log_noise"]))
    covariance = W @ W.T + noise * np.eye(2)
    assert cli.main(["evaluate", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    exact = stats.multivariate_normal(b, covariance).logpdf(test)
    assert line["exact"] and line["num_samples"] is None and line["gap"] == 0.0
    np.testing.assert_allclose(line["log_likelihood"], exact.mean(), atol=2e-4)
    holes = test[:6].copy()
    holes[:, 1] = np.nan
    np.savez(tmp_path / "in.npz", x=holes)
    for argv in (["impute", str(out), "--input", str(tmp_path / "in.npz"), "--out",
                  str(tmp_path / "x.npz")],
                 ["encode", str(out), "--out", str(tmp_path / "z.npz")]):
        assert cli.main(argv) == 0, capsys.readouterr().err
    filled = np.load(tmp_path / "x.npz")["x"]
    conditional = b[1] + covariance[1, 0] / covariance[0, 0] * (test[:6, 0] - b[0])
    np.testing.assert_allclose(filled[:, 1], conditional, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(filled[:, 0], holes[:, 0])
    posterior = 1.0 / (1.0 + W.T @ W / noise)
    np.testing.assert_allclose(np.load(tmp_path / "z.npz")["mean"],
                               (test - b) @ W * posterior / noise, rtol=1e-4, atol=1e-5)
    with pytest.raises(runs.RunError, match="--components does not apply to --model ppca"):
        runs.make_config(model="ppca", components=3)
