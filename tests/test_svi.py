"""jlvm.inference.svi: per-datapoint variational parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jlvm import data, train
from jlvm.inference import _local, svi
from jlvm.models import posteriors, vae

MODEL = vae.model(64, 3, hidden_dims=(32,))


def test_inner_loop_raises_every_data_points_elbo():
    X = jnp.asarray(data.digits().train[:40])
    params = MODEL.init(jax.random.PRNGKey(0))
    zeros = jnp.zeros(3)

    def per_point(x, k):
        log_joint = functools.partial(vae.log_joint, params, x)
        refined, _, _ = _local.refine(log_joint, (zeros, zeros), posteriors.diagonal, k,
                                      inner_steps=50, inner_learning_rate=0.1, num_samples=4)
        # judged with 2,000 common draws, so Monte Carlo noise cannot decide the comparison
        eval_key = jax.random.fold_in(k, 1)
        return (_local.local_elbo(log_joint, (zeros, zeros), posteriors.diagonal, eval_key,
                                  2000),
                _local.local_elbo(log_joint, refined, posteriors.diagonal, eval_key, 2000))

    before, after = jax.jit(jax.vmap(per_point))(X, jax.random.split(jax.random.PRNGKey(1), 40))
    assert np.all(np.asarray(after) > np.asarray(before))


def test_svi_step_updates_only_the_batch_rows_and_raises_the_elbo():
    X = jnp.asarray(data.digits().train[:200])
    learner = svi(MODEL, optax.adam(1e-2), num_data=200, inner_steps=10, inner_learning_rate=0.1,
                  num_samples=4)
    index = jnp.arange(200, dtype=jnp.int32)
    state = learner.init(jax.random.PRNGKey(0), (index[:20], X[:20]))
    new, metrics = jax.jit(learner.step)(state, (index[:20], X[:20]))
    changed = np.any(np.asarray(new.params.mean != state.params.mean), axis=1)
    assert changed[:20].all() and not changed[20:].any()
    np.testing.assert_allclose(metrics["inner_gain"],
                               metrics["elbo"] - metrics["elbo_before_inner"], rtol=1e-4)
    epoch = train.make_epoch(learner, 20)
    first = None
    for _ in range(15):
        state, m = epoch(state, (index, X))
        first = m if first is None else first
    assert np.mean(m["elbo"]) > np.mean(first["elbo"]) + 2.0


def test_an_index_outside_the_table_stops_training_instead_of_reusing_a_row():
    """JAX would clamp index 10 of a 10-row table to row 9 and train the wrong phi."""
    X = jnp.asarray(data.digits().train[:10])
    learner = svi(MODEL, optax.adam(1e-3), 10, inner_steps=2)
    state = learner.init(jax.random.PRNGKey(0), None)
    new, metrics = jax.jit(learner.step)(state, (jnp.array([3, 10]), X[:2]))
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(np.asarray(new.params.mean), np.asarray(state.params.mean))


def test_negative_indices_and_malformed_batches_are_not_taken_for_rows():
    import pytest

    X = jnp.asarray(data.digits().train[:10])
    learner = svi(MODEL, optax.adam(1e-3), 10, inner_steps=2)
    state = learner.init(jax.random.PRNGKey(0), None)
    new, metrics = jax.jit(learner.step)(state, (jnp.array([3, -1]), X[:2]))  # -1: not row 9
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(np.asarray(new.params.mean), np.asarray(state.params.mean))
    with pytest.raises(TypeError, match=r"svi batches are \(index \[B\], x \[B, D\]\) or"):
        learner.step(state, X[:2])
    with pytest.raises(TypeError, match="vector of integers"):
        learner.step(state, (jnp.array([0.0, 1.0]), X[:2]))
    with pytest.raises(ValueError, match="the index's B=3"):
        learner.step(state, (jnp.arange(3), X[:2]))


def test_incomplete_batches_fit_each_q_to_the_observed_pixels():
    """(index, x, mask): each phi^i is fitted to log p(x_obs, z) (the model's log_joint gets
    the mask); NaN at missing pixels gives the same step as zeros there, and a step with
    every pixel observed is the complete-data step."""
    X = np.asarray(data.digits().train[:16])
    mask = np.random.default_rng(0).random(X.shape) > 0.3
    learner = svi(MODEL, optax.adam(1e-2), num_data=16, inner_steps=3, num_samples=2)
    index = jnp.arange(16, dtype=jnp.int32)
    state = learner.init(jax.random.PRNGKey(0), (index, jnp.asarray(X)))
    step = jax.jit(learner.step)
    with_nan, metrics = step(state, (index, jnp.asarray(np.where(mask, X, np.nan)),
                                     jnp.asarray(mask)))
    with_zeros, _ = step(state, (index, jnp.asarray(np.where(mask, X, 0.0)), jnp.asarray(mask)))
    assert bool(metrics["finite"])
    for a, b in zip(jax.tree_util.tree_leaves(with_nan), jax.tree_util.tree_leaves(with_zeros),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    # the ELBO of the observed pixels only: above the complete image's (fewer factors < 1)
    _, complete_metrics = step(state, (index, jnp.asarray(X), jnp.ones(X.shape, bool)))
    _, plain_metrics = jax.jit(learner.step)(state, (index, jnp.asarray(X)))
    np.testing.assert_allclose(complete_metrics["elbo"], plain_metrics["elbo"], rtol=1e-6)
    assert float(metrics["elbo"]) > float(plain_metrics["elbo"])


def test_a_model_that_multiplies_x_before_masking_never_sees_a_nan():
    """A naive model computes x * logits before leaving the missing entries out: a NaN
    there gave NaN gradients (0 * NaN) and every step was refused. The learner hands the
    model x with its missing entries at 0."""
    import distrax

    import jlvm

    def init(key):
        return {"W": 0.1 * jax.random.normal(key, (2, 8)), "b": jnp.zeros(8)}

    def log_joint(params, x, z, mask=None):
        logits = z @ params["W"] + params["b"]
        per_entry = x * logits - jax.nn.softplus(logits)
        if mask is not None:
            per_entry = jnp.where(mask, per_entry, 0.0)
        return -0.5 * z @ z + jnp.sum(per_entry)

    model = jlvm.Model(init, log_joint,
                       prior=lambda params: distrax.MultivariateNormalDiag(jnp.zeros(2),
                                                                           jnp.ones(2)))
    rng = np.random.default_rng(0)
    mask = rng.random((6, 8)) > 0.3
    x = jnp.asarray(np.where(mask, rng.random((6, 8)) > 0.5, np.nan), jnp.float32)
    batch = (jnp.arange(6, dtype=jnp.int32), x, jnp.asarray(mask))
    learner = svi(model, optax.adam(1e-2), num_data=6, inner_steps=2)
    state = learner.init(jax.random.PRNGKey(0), batch)
    step = jax.jit(learner.step)
    for _ in range(3):
        state, metrics = step(state, batch)
        assert bool(metrics["finite"])
    assert int(state.step) == 3
    for leaf in jax.tree_util.tree_leaves(state.params):
        assert np.all(np.isfinite(np.asarray(leaf)))
