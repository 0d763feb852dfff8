"""jlvm.diagnostics: gradient statistics against direct computation."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlvm
from jlvm.models import linear_gaussian


def test_statistics_match_a_direct_computation():
    def objective(key, theta):
        return jnp.sum(theta * jax.random.normal(key, (3,)))  # grad = noise, mean 0, sd 1

    theta = jnp.ones(3)
    stats = jlvm.gradient_statistics(jax.random.PRNGKey(0), objective, theta, 500)
    keys = jax.random.split(jax.random.PRNGKey(0), 500)
    grads = np.stack([np.asarray(jax.grad(objective, argnums=1)(k, theta)) for k in keys])
    np.testing.assert_allclose(stats.mean, grads.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats.std, grads.std(axis=0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(stats.snr, np.abs(grads.mean(0)) / grads.std(0, ddof=1),
                               rtol=1e-4)


def test_constant_gradients_have_infinite_or_zero_snr_not_nan():
    stats = jlvm.gradient_statistics(jax.random.PRNGKey(0),
                                      lambda k, t: t[0] * 2.0, jnp.ones(2), 10)
    np.testing.assert_array_equal(stats.snr, [np.inf, 0.0])


def test_stl_beats_reparam_near_the_posterior():
    params = linear_gaussian.init(jax.random.PRNGKey(1), 5, 2, noise_std=0.7)
    x = linear_gaussian.sample(jax.random.PRNGKey(2), params, 1)[0][0]
    post = linear_gaussian.posterior(params, x)
    log_joint = functools.partial(linear_gaussian.log_joint, params, x)
    phi = (post.mean() + 0.05, 1.05 * post.scale_tri)  # full covariance, near the posterior

    def objective(name):
        return lambda k, p: jlvm.elbo(k, log_joint,
                                      distrax.MultivariateNormalTri(p[0], jnp.tril(p[1])), 1,
                                      grad_estimator=name)

    stl = jlvm.gradient_statistics(jax.random.PRNGKey(3), objective("stl"), phi, 2000)
    reparam = jlvm.gradient_statistics(jax.random.PRNGKey(3), objective("reparam"), phi, 2000)
    # a near-exact q: STL's gradient noise is far smaller (Roeder et al., 2017)
    assert np.all(np.asarray(stl.std[0]) < 0.5 * np.asarray(reparam.std[0]))


def test_num_draws_validated():
    with pytest.raises(ValueError, match="num_draws"):
        jlvm.gradient_statistics(jax.random.PRNGKey(0), lambda k, t: t, jnp.ones(()), 1)


def test_keys_and_objectives_are_checked():
    params = jnp.zeros(2)
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        jlvm.gradient_statistics(1, lambda k, p: jnp.sum(p), params, 4)
    with pytest.raises(ValueError, match="objective must return a real scalar"):
        jlvm.gradient_statistics(jax.random.PRNGKey(0), lambda k, p: p, params, 4)
    with pytest.raises(TypeError, match="objective must be a function"):
        jlvm.gradient_statistics(jax.random.PRNGKey(0), None, params, 4)


def test_nan_gradients_and_bad_params_are_named():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="gradient is NaN or infinite"):
        jlvm.gradient_statistics(key, lambda k, p: jnp.sum(p) * jnp.nan, jnp.zeros(2), 4)
    with pytest.raises(TypeError, match="floating-point"):
        jlvm.gradient_statistics(key, lambda k, p: jnp.sum(p), jnp.arange(2), 4)
    with pytest.raises(TypeError, match="params"):
        jlvm.gradient_statistics(key, lambda k, p: jnp.sum(p), "abc", 4)
    with pytest.raises(ValueError, match=r"objective\(key, params\) failed"):
        jlvm.gradient_statistics(key, lambda p: jnp.sum(p), jnp.zeros(2), 4)
