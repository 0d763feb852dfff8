"""The mixture of Bernoullis against oracles written here: brute-force sums over z and over
the missing pixels' values, an independent NumPy EM from the same start, Bayes' rule."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlvm
from jlvm.models import bernoulli_mixture as bm


def _data(seed=0, count=120, dim=6, components=3):
    """Binary data from a known mixture, and random parameters to evaluate at."""
    rng = np.random.default_rng(seed)
    prob = rng.uniform(0.05, 0.95, (components, dim))
    z = rng.integers(0, components, count)
    X = (rng.random((count, dim)) < prob[z]).astype(np.float32)
    params = bm.Params(jnp.asarray(rng.normal(size=components), jnp.float32),
                       jnp.asarray(rng.normal(size=(components, dim)), jnp.float32))
    return X, params


def _log_bernoulli(x, prob):
    """log prod_d p^x (1 - p)^(1 - x), float64: [..., K] for x [..., 1, D], prob [K, D]."""
    return np.sum(x * np.log(prob) + (1 - x) * np.log1p(-prob), axis=-1)


def _np(params):
    logits = np.asarray(params.logits, np.float64)
    weights = np.exp(logits - logits.max())
    return weights / weights.sum(), 1 / (1 + np.exp(-np.asarray(params.logits_x, np.float64)))


def test_log_marginal_and_posterior_equal_bayes_rule_in_float64():
    X, params = _data()
    weights, prob = _np(params)
    joint = np.log(weights) + _log_bernoulli(X[:, None, :], prob)  # [N, K]
    exact = np.logaddexp.reduce(joint, axis=1)
    got = jax.vmap(bm.log_marginal, in_axes=(None, 0))(params, X)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)
    resp = jax.vmap(lambda x: bm.posterior(params, x).probs)(X)
    np.testing.assert_allclose(resp, np.exp(joint - exact[:, None]), atol=1e-5)
    # log_joint enumerated over z by jlvm's own exact estimator: the same sum
    one = jlvm.log_marginal_exact(lambda z: bm.log_joint(params, X[0], z), jnp.arange(3))
    np.testing.assert_allclose(one, exact[0], rtol=1e-5)


def test_masked_marginal_sums_out_the_missing_pixels_by_brute_force():
    X, params = _data(seed=1)
    weights, prob = _np(params)
    mask = np.array([True, False, True, False, False, True])
    missing = np.flatnonzero(~mask)
    for x in X[:5]:
        completions = []
        for values in itertools.product([0.0, 1.0], repeat=missing.size):
            full = x.copy()
            full[missing] = values
            completions.append(np.logaddexp.reduce(
                np.log(weights) + _log_bernoulli(full[None], prob)))
        brute = np.logaddexp.reduce(completions)
        garbage = np.where(mask, x, np.nan)  # NaN at missing entries reaches nothing
        np.testing.assert_allclose(bm.log_marginal(params, garbage, mask), brute,
                                   rtol=1e-5, atol=1e-5)
        # E[x_d | x_obs] by the same enumeration
        probs = np.exp(np.array(completions) - brute)
        grid = np.array(list(itertools.product([0.0, 1.0], repeat=missing.size)))
        expected = x.copy()
        expected[missing] = probs @ grid
        np.testing.assert_allclose(bm.conditional_mean(params, garbage, mask), expected,
                                   atol=1e-5)


def _numpy_em(weights, prob, X, mask, num_iters):
    """EM for the observed data, written independently in float64: per iteration the
    mean log p(x_obs) of the old parameters, then the M-step with the probabilities
    clipped to [1e-6, 1 - 1e-6] and 1/2 where a component observes a pixel nowhere."""
    trace = []
    for _ in range(num_iters):
        log_p = np.log(weights) + (mask * (X * np.log(prob)[:, None, :] + (1 - X)
                                           * np.log1p(-prob)[:, None, :])).sum(-1).T
        norm = np.logaddexp.reduce(log_p, axis=1)
        trace.append(norm.mean())
        resp = np.exp(log_p - norm[:, None])
        weights = resp.sum(0) / len(X)
        seen = resp.T @ mask
        prob = np.clip(np.where(seen > 0, resp.T @ (mask * X) / np.maximum(seen, 1e-300), 0.5),
                       1e-6, 1 - 1e-6)
    return weights, prob, np.array(trace)


@pytest.mark.parametrize("masked", [False, True])
def test_em_equals_an_independent_implementation_and_never_decreases(key, masked):
    X, _ = _data(seed=2, count=200, dim=8)
    mask = np.random.default_rng(3).random(X.shape) < 0.6 if masked else np.ones(X.shape, bool)
    mask[:, 0] = True
    start = bm.init_from_data(key, X, 3, mask=mask if masked else None)
    given = np.where(mask, X, np.nan) if masked else X
    fitted, trace = bm.fit_em(start, given, 25, mask=mask if masked else None)
    weights, prob, expected = _numpy_em(*_np(start), X, mask.astype(float), 25)
    np.testing.assert_allclose(trace, expected, rtol=1e-5)
    np.testing.assert_allclose(jax.nn.softmax(fitted.logits), weights, atol=1e-4)
    np.testing.assert_allclose(jax.nn.sigmoid(fitted.logits_x), prob, atol=1e-4)
    assert np.all(np.diff(np.asarray(trace)) >= -1e-5), np.diff(trace).min()
    assert trace[-1] > trace[0] + 0.1  # it learned something


def test_mask_of_all_true_is_the_complete_data_em(key):
    X, _ = _data(seed=4)
    start = bm.init_from_data(key, X, 2)
    a = bm.fit_em(start, X, 5)
    b = bm.fit_em(start, X, 5, mask=np.ones(X.shape, bool))
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(left, right, rtol=1e-6)


def test_em_recovers_a_well_separated_mixture(key):
    rng = np.random.default_rng(5)
    prob = np.array([[0.9] * 10 + [0.1] * 10, [0.1] * 10 + [0.9] * 10])
    z = rng.integers(0, 2, 2000)
    X = (rng.random((2000, 20)) < prob[z]).astype(np.float32)
    fitted, _ = bm.fit_em(bm.init_from_data(key, X, 2), X, 30)
    order = np.argsort(np.asarray(fitted.logits_x[:, 0]))[::-1]
    learned = np.asarray(jax.nn.sigmoid(fitted.logits_x))[order]
    # each probability within 4 binomial standard errors of the truth
    counts = np.bincount(z, minlength=2)[[0, 1]]
    np.testing.assert_array_less(np.abs(learned - prob),
                                 4 * np.sqrt(0.09 / counts.min()))


def test_sampling_frequencies_match_the_parameters(key):
    _, params = _data(seed=6)
    x, z = bm.sample(key, params, 20000)
    weights, prob = _np(params)
    assert x.shape == (20000, 6) and z.shape == (20000,)
    freq = np.bincount(np.asarray(z), minlength=3) / 20000
    np.testing.assert_array_less(np.abs(freq - weights), 4 * np.sqrt(weights / 20000) + 1e-9)
    # pixel frequencies of component 0
    ones = np.asarray(x)[np.asarray(z) == 0].mean(0)
    se = np.sqrt(prob[0] * (1 - prob[0]) / max(np.sum(np.asarray(z) == 0), 1))
    np.testing.assert_array_less(np.abs(ones - prob[0]), 4 * se)


def test_as_a_model_its_encoder_makes_importance_sampling_exact(key):
    X, params = _data(seed=7)
    model = bm.model(3, 6)
    assert model.init(key).logits_x.shape == (3, 6)
    q = model.encoder(params, X[0])
    estimate = jlvm.log_marginal_is(key, lambda z: model.log_joint(params, X[0], z), q, 4)
    np.testing.assert_allclose(estimate, bm.log_marginal(params, X[0]), rtol=1e-5)
    # log_joint = prior + likelihood, and the decoder is the likelihood
    z = jnp.int32(1)
    np.testing.assert_allclose(
        model.log_joint(params, X[0], z),
        model.prior(params).log_prob(z) + model.log_likelihood(params, X[0], z), rtol=1e-6)
    np.testing.assert_allclose(model.decoder(params, z).log_prob(X[0]),
                               model.log_likelihood(params, X[0], z), rtol=1e-6)


def test_jit_gives_the_eager_numbers_and_impossible_z_is_minus_infinity():
    X, params = _data(seed=8)
    eager = bm.log_marginal(params, X[0])
    np.testing.assert_allclose(jax.jit(bm.log_marginal)(params, X[0]), eager, rtol=1e-6)
    for z in (-1, 3):
        assert bm.log_joint(params, X[0], jnp.int32(z)) == -np.inf
        assert jax.jit(bm.log_joint)(params, X[0], jnp.int32(z)) == -np.inf


def test_bad_arguments_name_what_was_expected(key):
    X, params = _data()
    with pytest.raises(ValueError, match="0 or 1"):
        bm.log_marginal(params, X[0] + 0.5)
    with pytest.raises(ValueError, match=r"x must have shape"):
        bm.log_marginal(params, X[0, :3])
    with pytest.raises(TypeError, match=r"params must be a bernoulli_mixture\.Params"):
        bm.log_marginal({"logits": 1}, X[0])
    with pytest.raises(ValueError, match="logits_x must be finite"):
        bm.log_marginal(params._replace(logits_x=params.logits_x.at[0, 0].set(jnp.inf)), X[0])
    with pytest.raises(ValueError, match="num_iters"):
        bm.fit_em(params, X, 0)
    with pytest.raises(ValueError, match="observes nothing"):
        bm.fit_em(params, X, 2, mask=np.zeros(X.shape, bool))
    with pytest.raises(ValueError, match="num_components"):
        bm.init_from_data(key, X[:2], 3)
    with pytest.raises(TypeError, match="integer component index"):
        bm.log_joint(params, X[0], 1.0)
