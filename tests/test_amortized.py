"""jlvm.inference.amortized: the VAE/IWAE learner and semi-amortized inference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jlvm
from jlvm import data, train
from jlvm.inference import amortized, semi_amortized
from jlvm.models import vae

INIT = functools.partial(vae.init, data_dim=64, latent_dim=3, hidden_dims=(32,))


@pytest.fixture(scope="module")
def digits():
    return jnp.asarray(data.digits().train)


def test_loss_is_minus_the_batch_mean_of_the_bound(digits):
    for objective, metric, fn in (("elbo", "elbo", jlvm.elbo),
                                  ("iwae", "iwae_bound", jlvm.iwae_bound)):
        learner = amortized(INIT, optax.sgd(0.0), objective=objective, num_samples=3)
        state = learner.init(jax.random.PRNGKey(0), digits[:8])
        _new, metrics = learner.step(state, digits[:8])
        step_key = jax.random.split(state.key)[1]
        keys = jax.random.split(step_key, 8)
        expected = np.mean([fn(k, functools.partial(vae.log_joint, state.params, x),
                               vae.encoder(state.params, x), 3)
                            for k, x in zip(keys, digits[:8], strict=True)])
        np.testing.assert_allclose(metrics[metric], expected, rtol=1e-5)
        np.testing.assert_allclose(metrics["loss"], -expected, rtol=1e-5)


def test_iwae_with_dreg_trains(digits):
    learner = amortized(INIT, optax.adam(3e-3), objective="iwae", num_samples=5,
                        grad_estimator="dreg")
    epoch = train.make_epoch(learner, 100)
    state = learner.init(jax.random.PRNGKey(0), digits[:100])
    state, first = epoch(state, digits)
    for _ in range(10):
        state, last = epoch(state, digits)
    assert np.mean(last["iwae_bound"]) > np.mean(first["iwae_bound"]) + 3.0


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="objective"):
        amortized(INIT, optax.adam(1e-3), objective="kl")
    with pytest.raises(ValueError, match="grad_estimator"):
        amortized(INIT, optax.adam(1e-3), objective="elbo", grad_estimator="dreg")
    with pytest.raises(ValueError, match="inner_steps"):
        semi_amortized(INIT, optax.adam(1e-3), inner_steps=0)


def test_semi_amortized_refinement_closes_part_of_the_amortization_gap(digits):
    learner = semi_amortized(INIT, optax.adam(1e-3), inner_steps=10, inner_learning_rate=0.05)
    state = learner.init(jax.random.PRNGKey(0), digits[:100])
    epoch = train.make_epoch(learner, 100)
    for _ in range(3):
        state, metrics = epoch(state, digits)
    gap = np.asarray(metrics["amortization_gap"])
    np.testing.assert_allclose(gap, np.asarray(metrics["elbo"] - metrics["elbo_amortized"]),
                               rtol=1e-4, atol=1e-4)
    assert np.mean(gap) > 0  # refining q per data point raises its ELBO
