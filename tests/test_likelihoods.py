"""jlvm.models.likelihoods: each p(x | z) against SciPy or a sum over every value of x."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special, stats

from jlvm import data
from jlvm.inference import amortized
from jlvm.models import likelihoods, vae


def test_specs_are_parsed_and_bad_ones_named():
    assert likelihoods.parse("bernoulli") == likelihoods.Spec("bernoulli")
    assert likelihoods.parse("gaussian-fixed:0.1") == likelihoods.Spec("gaussian-fixed", 0.1)
    assert likelihoods.parse("categorical:17") == likelihoods.Spec("categorical", 17)
    assert str(likelihoods.parse("gaussian-fixed:0.10")) == "gaussian-fixed:0.1"
    for bad in ("poisson", "categorical:1", "categorical:x", "categorical", "gaussian:2",
                "gaussian-fixed:0", "gaussian-fixed:-1", "gaussian-fixed:nan",
                "gaussian-fixed:inf", "bernoulli:2", "", "bernoulli:",
                # other scripts' digits, which int() and float() read: not spec numbers
                "categorical:\u00b2", "categorical:\u0663", "gaussian-fixed:\u0663",
                "gaussian-fixed:1_0", "gaussian-fixed: 1", "categorical:1_7"):
        with pytest.raises(ValueError, match="likelihood must be one of"):
            likelihoods.parse(bad)
    with pytest.raises(TypeError, match="likelihood must be a string"):
        likelihoods.parse(3)


def test_pixel_log_probs_against_scipy():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(2, 6)).astype(np.float32)
    x = np.array([0, 1, 1, 0, 1, 0], np.float32)
    bernoulli = likelihoods.pixel_log_probs(likelihoods.parse("bernoulli"), outputs[:1], x)
    np.testing.assert_allclose(bernoulli, stats.bernoulli.logpmf(x, special.expit(outputs[0])),
                               rtol=1e-5)
    y = rng.normal(size=6).astype(np.float32)
    gaussian = likelihoods.pixel_log_probs(likelihoods.parse("gaussian"), outputs, y)
    np.testing.assert_allclose(gaussian, stats.norm.logpdf(y, outputs[0], np.exp(outputs[1])),
                               rtol=1e-5)
    logits = rng.normal(size=(5, 6)).astype(np.float32)  # M=5 levels: 0, 1/4, ..., 1
    index = np.array([0, 4, 2, 1, 3, 2])
    value = likelihoods.pixel_log_probs(likelihoods.parse("categorical:5"), logits,
                                        index / 4.0)
    expected = special.log_softmax(logits, axis=0)[index, np.arange(6)]
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # a value a Bernoulli cannot take has probability 0; NaN stays NaN
    off = likelihoods.pixel_log_probs(likelihoods.parse("bernoulli"), outputs[:1],
                                      np.array([0.3, 1, np.inf, -1, np.nan, 0], np.float32))
    np.testing.assert_array_equal(np.isneginf(off), [True, False, True, True, False, False])
    assert np.isnan(off[4])
    off_grid = likelihoods.pixel_log_probs(likelihoods.parse("categorical:5"), logits,
                                           np.full(6, 0.3, np.float32))
    assert np.all(np.isneginf(off_grid))  # no probability off the grid


def test_gray_levels_are_a_probability_distribution():
    """Summed over all 3^2 images of D=2 pixels with M=3 levels, p(x | z) is 1; draws land
    on the grid with the softmax's frequencies (within 4 standard errors); the mean is
    sum_k p_k k/(M-1)."""
    spec = likelihoods.parse("categorical:3")
    logits = jnp.array([[0.3, -1.0], [1.2, 0.1], [-0.5, 0.7]])  # [M, D]
    q = likelihoods.distribution(spec, logits)
    images = jnp.array(list(itertools.product([0.0, 0.5, 1.0], repeat=2)))
    np.testing.assert_allclose(jnp.sum(jnp.exp(q.log_prob(images))), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q.log_prob(images[4]),
                               jnp.sum(likelihoods.pixel_log_probs(spec, logits, images[4])),
                               rtol=1e-6)
    draws = np.asarray(q.sample(seed=jax.random.PRNGKey(0), sample_shape=(20000,)))
    assert set(np.unique(draws)) <= {0.0, 0.5, 1.0}
    probs = special.softmax(np.asarray(logits), axis=0)
    for level, value in enumerate((0.0, 0.5, 1.0)):
        frequency = np.mean(draws == value, axis=0)
        se = np.sqrt(probs[level] * (1 - probs[level]) / draws.shape[0])
        assert np.all(np.abs(frequency - probs[level]) < 4 * se)
    np.testing.assert_allclose(q.mean(), np.array([0.0, 0.5, 1.0]) @ probs, rtol=1e-5)
    np.testing.assert_allclose(likelihoods.mean(spec, logits), q.mean(), rtol=1e-6)


def test_values_without_probability_are_refused():
    with pytest.raises(ValueError, match="0/1 values"):
        likelihoods.check_values(likelihoods.parse("bernoulli"), np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="gray levels k/16"):
        likelihoods.check_values(likelihoods.parse("categorical:17"), np.array([0.0, 0.3]))
    with pytest.raises(ValueError, match="gray levels"):
        likelihoods.check_values(likelihoods.parse("categorical:17"), np.array([1.0625]))
    likelihoods.check_values(likelihoods.parse("categorical:17"), np.arange(17) / 16)
    likelihoods.check_values(likelihoods.parse("gaussian"), np.array([-3.0, 2.5]))


@pytest.mark.parametrize("spec", ["gaussian-pixel", "gaussian-fixed:0.1", "categorical:17"])
def test_vae_likelihoods_on_gray_digits(spec):
    """The VAE's log p(x | z) is the likelihood's formula at its decoder's rows; a fixed
    scale gets no parameter and a learned per-pixel one gets a gradient; on the gray digits
    the categorical log p(x) is a log-probability (<= 0)."""
    X = jnp.asarray(data.digits(binarize=False).train[:16])
    params = vae.init(jax.random.PRNGKey(0), 64, 2, hidden_dims=(8,), likelihood=spec)
    z = jnp.array([0.4, -0.3])
    rows = vae._decode(params, z)
    if spec == "categorical:17":
        index = np.rint(np.asarray(X[0]) * 16).astype(int)
        expected = special.log_softmax(np.asarray(rows, np.float64), axis=0)[
            index, np.arange(64)].sum()
    else:
        expected = stats.norm.logpdf(np.asarray(X[0]), rows[0], np.exp(rows[1])).sum()
    np.testing.assert_allclose(vae.log_likelihood(params, X[0], z), expected, rtol=1e-5)
    np.testing.assert_allclose(vae.decoder(params, z).log_prob(X[0]), expected, rtol=1e-5)
    if spec == "gaussian-fixed:0.1":
        np.testing.assert_allclose(rows[1], np.full(64, np.log(0.1)), rtol=1e-6)
        assert "log_scale" not in params.decoder
    if spec == "gaussian-pixel":
        grads = jax.grad(lambda p: vae.log_likelihood(p, X[0], z))(params)
        assert np.any(np.asarray(grads.decoder["log_scale"][...]) != 0)
    learner = amortized(vae.model(64, 2, hidden_dims=(8,), likelihood=spec), optax.adam(1e-3))
    state = learner.init(jax.random.PRNGKey(1), X)
    _, metrics = jax.jit(learner.step)(state, X)
    assert np.isfinite(float(metrics["elbo"]))
    if spec == "categorical:17":
        assert float(metrics["elbo"]) < 0
        x, _ = vae.sample(jax.random.PRNGKey(2), params, 4)
        likelihoods.check_values(likelihoods.parse(spec), np.asarray(x))  # on the grid
        # off the grid: probability 0, eagerly and under jit alike
        assert float(vae.log_joint(params, X[0] + 0.01, z)) == -np.inf
        assert float(jax.jit(vae.log_joint)(params, X[0] + 0.01, z)) == -np.inf
