"""jlvm.models.autoregressive (NADE): a normalized distribution, trained by likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlvm
from jlvm import data
from jlvm.models import autoregressive


@pytest.fixture
def params():
    base = autoregressive.init(jax.random.PRNGKey(0), data_dim=6, hidden_dim=5)
    # non-zero biases so that the test exercises every parameter
    return base._replace(b=jnp.linspace(-1, 1, 6), c=jnp.linspace(0.5, -0.5, 5))


def test_probabilities_sum_to_one_over_every_vector(params):
    support = jlvm.binary_support(6)
    log_probs = jax.vmap(autoregressive.log_prob, in_axes=(None, 0))(params, support)
    np.testing.assert_allclose(jax.nn.logsumexp(log_probs), 0.0, atol=1e-5)


def test_log_prob_is_the_chain_rule_computed_one_pixel_at_a_time(params):
    x = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    expected = 0.0
    for d in range(6):  # h_d = sigmoid(c + W[:, :d] x[:d]) written out
        hidden = jax.nn.sigmoid(params.c + params.W[:, :d] @ x[:d])
        p_one = float(jax.nn.sigmoid(params.b[d] + params.V[d] @ hidden))
        expected += np.log(p_one if x[d] == 1 else 1 - p_one)
    np.testing.assert_allclose(autoregressive.log_prob(params, x), expected, rtol=1e-5)


def test_samples_follow_the_model(params):
    n = 40_000
    samples = autoregressive.sample(jax.random.PRNGKey(1), params, n)
    assert samples.shape == (n, 6)
    support = jlvm.binary_support(6)
    probs = np.exp(np.asarray(jax.vmap(autoregressive.log_prob, in_axes=(None, 0))(params,
                                                                                  support)))
    index = np.asarray(samples, np.int64) @ (2 ** np.arange(5, -1, -1))
    freq = np.bincount(index, minlength=64) / n
    se = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) < 5 * se + 1e-4)


@pytest.mark.optimized  # runs long enough to repay XLA's optimizations
def test_maximum_likelihood_on_binarized_digits_beats_independent_pixels():
    split = data.digits(binarize=True)
    X, X_test = jnp.asarray(split.train), jnp.asarray(split.test)
    fitted = autoregressive.fit(jax.random.PRNGKey(0),
                                autoregressive.init(jax.random.PRNGKey(1), 64, 32), X,
                                num_steps=800)
    test_ll = float(jnp.mean(jax.vmap(autoregressive.log_prob, in_axes=(None, 0))(
        fitted.params, X_test)))
    # the best model with independent pixels, fitted on train, scored on test
    p = np.clip(np.asarray(X).mean(axis=0), 1e-3, 1 - 1e-3)
    independent = np.mean(np.asarray(X_test) @ np.log(p) + (1 - np.asarray(X_test)) @ np.log(1 - p))
    assert test_ll > independent + 5.0
    assert fitted.train_log_likelihood.shape == (800,)


def test_bad_inputs(params):
    with pytest.raises(ValueError, match="x must have shape"):
        autoregressive.log_prob(params, jnp.zeros(5))
    with pytest.raises(ValueError, match="batch_size"):
        autoregressive.fit(jax.random.PRNGKey(0), params, jnp.zeros((3, 6)), batch_size=10)
    with pytest.raises(ValueError, match="X must have shape"):
        autoregressive.fit(jax.random.PRNGKey(0), params, jnp.zeros((30, 5)))
    with pytest.raises(ValueError, match="hidden_dim"):
        autoregressive.init(jax.random.PRNGKey(0), 4, 0)


def test_non_binary_vectors_are_refused(params):
    """A vector that is not binary has probability 0, eagerly and under jit alike (it was
    a ValueError eagerly and a finite number under jit); training data is refused."""
    for log_prob in (autoregressive.log_prob, jax.jit(autoregressive.log_prob)):
        assert float(log_prob(params, jnp.full(6, 0.5))) == -np.inf
        assert float(log_prob(params, jnp.zeros(6).at[2].set(2.0))) == -np.inf
        assert np.isnan(float(log_prob(params, jnp.zeros(6).at[2].set(jnp.nan))))
        assert np.isfinite(float(log_prob(params, jnp.zeros(6).at[2].set(1.0))))
    with pytest.raises(ValueError, match="0/1 values"):
        autoregressive.fit(jax.random.PRNGKey(0), params, jnp.full((4, 6), 0.5), num_steps=1,
                           batch_size=2)
    with pytest.raises(TypeError, match="key must be"):
        autoregressive.sample(5, params, 2)


def test_parameters_that_do_not_fit_together_are_named(params):
    x = jnp.zeros(6)
    with pytest.raises(ValueError, match=r"params\.V must have shape \(6, 5\)"):
        autoregressive.log_prob(params._replace(V=params.V[:, :4]), x)
    with pytest.raises(ValueError, match=r"params\.W holds 1 NaN"):
        autoregressive.log_prob(params._replace(W=params.W.at[0, 0].set(jnp.nan)), x)
    with pytest.raises(TypeError, match=r"autoregressive\.Params"):
        autoregressive.log_prob(None, x)
