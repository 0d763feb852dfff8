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

MODEL = vae.model(64, 3, hidden_dims=(32,))


@pytest.fixture(scope="module")
def digits():
    return jnp.asarray(data.digits().train)


def test_loss_is_minus_the_batch_mean_of_the_bound(digits):
    for objective, metric, fn in (("elbo", "elbo", jlvm.elbo),
                                  ("iwae", "iwae_bound", jlvm.iwae_bound)):
        learner = amortized(MODEL, optax.sgd(0.0), objective=objective, num_samples=3)
        state = learner.init(jax.random.PRNGKey(0), digits[:8])
        _new, metrics = jax.jit(learner.step)(state, digits[:8])
        step_key = jax.random.split(state.key)[1]
        keys = jax.random.split(step_key, 8)

        def bound(k, x, fn=fn):  # the oracle: jlvm's bound of one example
            return fn(k, functools.partial(vae.log_joint, state.params, x),
                      vae.encoder(state.params, x), 3)

        # one example at a time, vmapped and compiled (an eager loop compiles op by op)
        expected = np.mean(np.asarray(jax.jit(jax.vmap(bound))(keys, digits[:8])))
        np.testing.assert_allclose(metrics[metric], expected, rtol=1e-5)
        np.testing.assert_allclose(metrics["loss"], -expected, rtol=1e-5)


@pytest.mark.parametrize("form", ["entropy", "kl"])
def test_analytic_elbo_forms_are_the_joint_form_in_expectation(form, digits):
    """Same draws: elbo_form="kl" is jlvm.elbo_with_kl of the VAE's likelihood and prior
    (and "entropy" jlvm.elbo_with_entropy); over many draws its mean equals the joint form's
    within standard errors, and its gradient is an unbiased estimate of the same one."""
    learner = amortized(MODEL, optax.sgd(0.0), elbo_form=form, num_samples=2)
    state = learner.init(jax.random.PRNGKey(0), digits[:8])
    _new, metrics = jax.jit(learner.step)(state, digits[:8])
    keys = jax.random.split(jax.random.split(state.key)[1], 8)
    params = state.params

    def bound(k, x):  # the oracle: jlvm's bound in that form, of one example
        if form == "kl":
            return jlvm.elbo_with_kl(k, functools.partial(vae.log_likelihood, params, x),
                                     vae.encoder(params, x), vae.prior(params), 2)
        return jlvm.elbo_with_entropy(k, functools.partial(vae.log_joint, params, x),
                                      vae.encoder(params, x), 2)

    expected = np.asarray(jax.jit(jax.vmap(bound))(keys, digits[:8]))
    np.testing.assert_allclose(metrics["elbo"], np.mean(expected), rtol=1e-5)

    x = digits[3]
    joint = amortized(MODEL, optax.sgd(0.0))

    def values(learner, key):  # (bound, d bound / d encoder's last bias) for one draw
        loss_fn = jax.jit(lambda p, k: learner.step(state._replace(params=p, key=k),
                                                    x[None])[1]["elbo"])
        value, grads = jax.value_and_grad(loss_fn)(params, key)
        return value, jax.tree_util.tree_leaves(grads.encoder)[-2]

    draws = jax.random.split(jax.random.PRNGKey(1), 4000)
    a_val, a_grad = jax.jit(jax.vmap(lambda k: values(learner, k)))(draws)
    b_val, b_grad = jax.jit(jax.vmap(lambda k: values(joint, k)))(draws)
    diff, se = np.mean(a_val) - np.mean(b_val), np.hypot(np.std(a_val), np.std(b_val)) / 63.2
    assert abs(diff) < 4 * se + 1e-4, (diff, se)
    gdiff = np.mean(a_grad, 0) - np.mean(b_grad, 0)
    gse = np.hypot(np.std(a_grad, 0), np.std(b_grad, 0)) / 63.2
    assert np.all(np.abs(gdiff) < 5 * gse + 1e-4), np.max(np.abs(gdiff) / (gse + 1e-12))
    if form == "kl":  # the KL's gradient is exact: less noise in the encoder's gradient
        assert np.mean(np.var(a_grad, 0)) < np.mean(np.var(b_grad, 0))


def test_iwae_with_dreg_trains(digits):
    learner = amortized(MODEL, optax.adam(3e-3), objective="iwae", num_samples=5,
                        grad_estimator="dreg")
    epoch = train.make_epoch(learner, 100)
    state = learner.init(jax.random.PRNGKey(0), digits[:100])
    state, first = epoch(state, digits)
    for _ in range(10):
        state, last = epoch(state, digits)
    assert np.mean(last["iwae_bound"]) > np.mean(first["iwae_bound"]) + 3.0


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="objective"):
        amortized(MODEL, optax.adam(1e-3), objective="kl")
    with pytest.raises(ValueError, match="grad_estimator"):
        amortized(MODEL, optax.adam(1e-3), objective="elbo", grad_estimator="dreg")
    with pytest.raises(ValueError, match="elbo_form"):
        amortized(MODEL, optax.adam(1e-3), elbo_form="analytic")
    with pytest.raises(ValueError, match="elbo_form"):
        amortized(MODEL, optax.adam(1e-3), objective="iwae", elbo_form="kl")
    with pytest.raises(ValueError, match="grad_estimator"):
        amortized(MODEL, optax.adam(1e-3), elbo_form="kl", grad_estimator="stl")
    with pytest.raises(ValueError, match="inner_steps"):
        semi_amortized(MODEL, optax.adam(1e-3), inner_steps=0)


def test_semi_amortized_refinement_closes_part_of_the_amortization_gap(digits):
    learner = semi_amortized(MODEL, optax.adam(1e-3), inner_steps=10, inner_learning_rate=0.05)
    state = learner.init(jax.random.PRNGKey(0), digits[:100])
    epoch = train.make_epoch(learner, 100)
    for _ in range(3):
        state, metrics = epoch(state, digits)
    gap = np.asarray(metrics["amortization_gap"])
    np.testing.assert_allclose(gap, np.asarray(metrics["elbo"] - metrics["elbo_amortized"]),
                               rtol=1e-4, atol=1e-4)
    assert np.mean(gap) > 0  # refining q per data point raises its ELBO


def test_batches_and_functions_are_checked():
    learner = amortized(vae.model(64, 2, hidden_dims=(8,)), optax.adam(1e-3))
    state = learner.init(jax.random.PRNGKey(0), None)
    with pytest.raises(ValueError, match=r"batch must be an array x \[B, D\] with B >= 1"):
        learner.step(state, jnp.zeros((0, 64)))
    with pytest.raises(ValueError, match="batch must be an array"):
        learner.step(state, None)
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        learner.init(0, None)
    for make in (amortized, semi_amortized):
        with pytest.raises(TypeError, match=r"model must be a jlvm\.Model"):
            make("f", optax.adam(1e-3))
        with pytest.raises(TypeError, match=r"wrap it in a model"):
            make(vae.init, optax.adam(1e-3))


def _binary_latent_model(dim, latent):
    """Binary z: Bernoulli(1/2) prior, x | z ~ Bernoulli(sigmoid(W z + b)), q(z | x) a
    product of Bernoullis with logits V x + c (a small model of the test's own)."""
    import distrax

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"W": 0.1 * jax.random.normal(k1, (dim, latent)), "b": jnp.zeros(dim),
                "V": 0.1 * jax.random.normal(k2, (latent, dim)), "c": jnp.zeros(latent)}

    def log_joint(params, x, z, mask=None):
        logits = params["W"] @ z.astype(jnp.float32) + params["b"]
        return jnp.sum(x * logits - jax.nn.softplus(logits)) - latent * jnp.log(2.0)

    def encoder(params, x, mask=None):
        return distrax.Independent(distrax.Bernoulli(logits=params["V"] @ x + params["c"]), 1)

    return jlvm.Model(init, log_joint, encoder)


def test_disarm_trains_binary_latents_in_pairs_and_refuses_an_odd_count(digits):
    model = _binary_latent_model(64, 8)
    learner = amortized(model, optax.adam(1e-2), grad_estimator="disarm")  # one pair
    state = learner.init(jax.random.PRNGKey(0), digits[:100])
    step = jax.jit(learner.step)
    first = None
    for _ in range(60):
        state, metrics = step(state, digits[:100])
        first = float(metrics["elbo"]) if first is None else first
    assert bool(metrics["finite"]) and float(metrics["elbo"]) > first + 5, (
        first, float(metrics["elbo"]))
    with pytest.raises(ValueError, match="num_samples counts draws"):
        amortized(model, optax.adam(1e-2), grad_estimator="disarm", num_samples=3)
