"""jlvm.models.flows: the coupling flow against the change-of-variables formula computed
independently, its path gradients at the exact posterior, and every learner taking it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jlvm
from jlvm import data, evaluate
from jlvm.inference import amortized, semi_amortized
from jlvm.models import flows, linear_gaussian, posteriors, vae

L = 3


def _conditioners(weights):
    """Coupling functions written here: (shift, log-scale) = (tanh(A m + c), 0.5 tanh(B m))
    of the masked z, one (A, c, B) per layer."""
    return [lambda masked, A=A, c=c, B=B: (jnp.tanh(A @ masked + c), 0.5 * jnp.tanh(B @ masked))
            for A, c, B in weights]


def _weights(key, layers=4):
    keys = jax.random.split(key, 3 * layers)
    return [(jax.random.normal(keys[3 * i], (L, L)), jax.random.normal(keys[3 * i + 1], (L,)),
             jax.random.normal(keys[3 * i + 2], (L, L))) for i in range(layers)]


def _forward_by_hand(weights, u):
    """RealNVP written out: layer i keeps the coordinates with index parity i % 2 and maps
    the others to u exp(log-scale) + shift; applied in order, layer 1 first."""
    z = np.asarray(u, np.float64)
    for i, (A, c, B) in enumerate(weights):
        keep = np.arange(L) % 2 == i % 2
        masked = np.where(keep, z, 0.0)
        shift = np.tanh(np.asarray(A, np.float64) @ masked + np.asarray(c, np.float64))
        log_scale = 0.5 * np.tanh(np.asarray(B, np.float64) @ masked)
        z = np.where(keep, z, z * np.exp(log_scale) + shift)
    return z


def test_the_flows_density_is_the_change_of_variables_formula():
    """log q(z) = log N(u; m, diag s^2) - log |det dz/du| at u = f^{-1}(z), with the
    Jacobian from jax.jacfwd of the map (not distrax's log-determinant) and the map checked
    against a NumPy RealNVP."""
    weights = _weights(jax.random.PRNGKey(0))
    mean, log_scale = jnp.array([0.3, -0.5, 1.0]), jnp.array([0.1, -0.2, 0.4])
    q = flows.flow(mean, log_scale, _conditioners(weights))
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts a sample axis inside
        z, log_q = q.sample_and_log_prob(seed=jax.random.PRNGKey(1), sample_shape=(6,))
    base = posteriors.diagonal(mean, log_scale)
    for z_k, log_q_k in zip(z, log_q, strict=True):
        u = q.bijector.inverse(z_k)
        np.testing.assert_allclose(_forward_by_hand(weights, u), z_k, rtol=1e-5, atol=1e-5)
        jacobian = np.asarray(jax.jacfwd(q.bijector.forward)(u), np.float64)
        expected = float(base.log_prob(u)) - np.linalg.slogdet(jacobian)[1]
        np.testing.assert_allclose(log_q_k, expected, rtol=1e-5)
        np.testing.assert_allclose(q.log_prob(z_k), expected, rtol=1e-5)
    assert abs(np.linalg.slogdet(jacobian)[1]) > 0.1  # the flow is not volume-preserving
    assert [m.tolist() for m in flows.coupling_masks(3, 2)] == [[True, False, True],
                                                               [False, True, False]]


# W with orthogonal columns: the exact posterior p(z | x) is a diagonal Gaussian, so a
# flow whose coupling layers are the identity (zero output weights) is exactly it
W = jnp.array([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0], [-0.5, 0.0, 1.0], [0.0, 0.0, 0.0]])
PARAMS = linear_gaussian.Params(W=W, b=jnp.array([0.1, -0.3, 0.2, 0.0]),
                                noise_std=jnp.array(0.7))


def test_stl_and_dreg_gradients_vanish_at_the_exact_posterior_for_a_flow(key):
    """At q = p(z|x) every draw's log-weight is log p(x): the path gradients are exactly
    zero for the base Gaussian AND the coupling layers' weights, for every draw."""
    x = jnp.array([1.0, -0.5, 0.3, 0.8])
    posterior = linear_gaussian.posterior(PARAMS, x)
    covariance = np.asarray(posterior.covariance())
    np.testing.assert_allclose(covariance, np.diag(np.diag(covariance)), atol=1e-6)
    base = (posterior.mean(), 0.5 * jnp.log(jnp.diagonal(posterior.covariance())))
    # zero weights: each layer is the identity, but its outputs' derivatives in the
    # weights are not zero (tanh'(0) = 1), so a wrong estimator would show here
    layers = [(jnp.zeros((L, L)), jnp.zeros(L), jnp.zeros((L, L))) for _ in range(2)]
    log_joint = functools.partial(linear_gaussian.log_joint, PARAMS, x)

    def q(phi):
        (mean, log_scale), weights = phi
        return flows.flow(mean, log_scale, _conditioners(weights))

    for fn, estimator in ((jlvm.elbo, "stl"), (jlvm.iwae_bound, "dreg")):
        grads = jax.grad(lambda phi, fn=fn, estimator=estimator: fn(
            key, log_joint, q(phi), 16, grad_estimator=estimator))((base, layers))
        for g in jax.tree_util.tree_leaves(grads):
            np.testing.assert_allclose(g, 0.0, atol=3e-5)
    reparam = jax.grad(lambda phi: jlvm.elbo(key, log_joint, q(phi), 16))((base, layers))
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(reparam)) > 1e-3


def test_every_learner_and_estimator_takes_a_flow_encoder():
    X = jnp.asarray(data.digits().train[:16])
    model = vae.model(64, 2, hidden_dims=(8,), posterior="flow")
    for learner in (amortized(model, optax.adam(1e-3)),
                    amortized(model, optax.adam(1e-3), objective="iwae", num_samples=3,
                              grad_estimator="dreg"),
                    semi_amortized(model, optax.adam(1e-3), inner_steps=2)):
        state = learner.init(jax.random.PRNGKey(1), X)
        new, metrics = jax.jit(learner.step)(state, X)
        assert bool(metrics["finite"]) and int(new.step) == 1
    params = model.init(jax.random.PRNGKey(0))
    values = evaluate.vae_log_likelihood(jax.random.PRNGKey(2), params, X[:4], 20)
    assert values.shape == (4,) and np.all(np.isfinite(np.asarray(values)))
    # no analytic entropy for a flow: the entropy form is refused when the learner starts
    with pytest.raises(ValueError, match="no closed form"):
        amortized(model, optax.adam(1e-3), elbo_form="entropy").init(jax.random.PRNGKey(1), X)


def test_the_score_function_gradient_takes_a_flow(key):
    """A flow's log_prob takes one z, not a batch: the score-function estimators crashed
    inside JAX on it. Their values equal the reparameterized ones on the same draws, their
    gradients are finite, and the amortized learner trains a flow encoder with them."""
    x = jnp.array([1.0, -0.5, 0.3, 0.8])
    log_joint = functools.partial(linear_gaussian.log_joint, PARAMS, x)
    layers = _weights(jax.random.PRNGKey(3), layers=2)

    def value(mean, fn, estimator):
        q = flows.flow(mean, jnp.full(L, -0.3), _conditioners(layers))
        return fn(key, log_joint, q, 5, grad_estimator=estimator)

    both = jax.jit(lambda mean: [(value(mean, fn, "reparam"),
                                   jax.value_and_grad(value)(mean, fn, "score_function"))
                                  for fn in (jlvm.elbo, jlvm.iwae_bound)])
    for reparam, (score, grad) in both(jnp.zeros(L)):
        np.testing.assert_allclose(score, reparam, rtol=1e-5)
        assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0)
    X = jnp.asarray(data.digits().train[:8])
    learner = amortized(vae.model(64, 2, hidden_dims=(8,), posterior="flow"),
                        optax.adam(1e-3), objective="iwae", num_samples=2,
                        grad_estimator="score_function")
    state = learner.init(jax.random.PRNGKey(1), X)
    new, metrics = jax.jit(learner.step)(state, X)
    assert bool(metrics["finite"]) and int(new.step) == 1
