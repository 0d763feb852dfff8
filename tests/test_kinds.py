"""jlvm.runs.kinds: model kinds are objects found in one table; the run layer never asks
which one it holds, so a kind added to the table gets every command."""

import ast
import json
import pathlib

import numpy as np
import pytest

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


def _linear_kind():
    """A kind written outside jlvm: probabilistic PCA with its exact posterior as encoder,
    trained by the amortized learner, evaluated exactly; its settings one of the table's."""
    import jax

    from jlvm.runs.kinds import Kind, _latent

    def build(config, data, stored, warn):
        import distrax
        import jax.numpy as jnp
        import optax

        import jlvm
        from jlvm.inference import amortized
        from jlvm.models import linear_gaussian

        dim = data.dataset.train.shape[1]

        def init(key):
            return {"W": 0.1 * jax.random.normal(key, (dim, 1)), "b": jnp.zeros(dim)}

        def exact(params):
            return linear_gaussian.Params(params["W"], params["b"], jnp.asarray(0.5))

        def log_joint(params, x, z, mask=None):
            per = jax.scipy.stats.norm.logpdf(x, params["W"] @ z + params["b"], 0.5)
            return jnp.sum(jax.scipy.stats.norm.logpdf(z)) + jnp.sum(
                per if mask is None else jnp.where(mask, per, 0.0))

        def encoder(params, x, mask=None):
            return linear_gaussian.posterior(exact(params), x, mask)

        def decoder(params, z):
            return distrax.MultivariateNormalDiag(params["W"] @ z + params["b"],
                                                  jnp.full(dim, 0.5))

        def prior(params):
            return distrax.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))

        model = jlvm.Model(init, log_joint, encoder, prior=prior, decoder=decoder)
        learner = amortized(model, optax.adam(config.learning_rate))
        return _latent.built(model, learner, batch_size=config.batch_size,
                             reported=(("elbo", "ELBO"),), likelihood_type="density",
                             facts={})

    return Kind(settings=("learning_rate", "batch_size"), defaults=lambda given, facts: {},
                check=lambda config: None, build=build, describe="PPCA, sigma = 0.5")


def test_a_kind_added_to_the_table_gets_every_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(kinds.kinds(), "ppca", _linear_kind())
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "ppca", "--data", "blobs", "--epochs", "1",
                     "--batch-size", "100", "--learning-rate", "0.05", "--out",
                     str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "ppca" and np.isfinite(result["train_elbo"])
    assert cli.main(["evaluate", str(out), "--num-samples", "10"]) == 0
    line = json.loads(capsys.readouterr().out)
    # its q is the exact posterior: importance sampling is exact, every weight is p(x)
    assert abs(line["gap"]) < 1e-3 and line["likelihood_type"] == "density"
    holes = np.array(runs.load(out).setup.dataset.test[:5])
    holes[:, 1] = np.nan
    np.savez(tmp_path / "in.npz", x=holes)
    for argv in (["encode", str(out), "--out", str(tmp_path / "z.npz")],
                 ["impute", str(out), "--input", str(tmp_path / "in.npz"), "--out",
                  str(tmp_path / "x.npz")],
                 ["sample", str(out), "--out", str(tmp_path / "s.png")],
                 ["train", "--out", str(out), "--resume", "--epochs", "2"]):
        assert cli.main(argv) == 0, capsys.readouterr().err
    assert not np.isnan(np.load(tmp_path / "x.npz")["x"]).any()
    with pytest.raises(runs.RunError, match="--latent-dim does not apply to --model ppca"):
        runs.make_config(model="ppca", latent_dim=3)
