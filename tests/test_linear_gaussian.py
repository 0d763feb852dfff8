"""jlvm.models.linear_gaussian against SciPy and Bayes' rule in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import linear_gaussian_marginal, linear_gaussian_posterior
from scipy import stats

from jlvm.models import linear_gaussian


@pytest.fixture
def params():
    return linear_gaussian.init(jax.random.PRNGKey(0), data_dim=5, latent_dim=2, noise_std=0.6)


def test_log_marginal_matches_scipy(params, key):
    xs, _ = linear_gaussian.sample(key, params, 5)
    oracle = linear_gaussian_marginal(params.W, params.b, params.noise_std)
    for x in xs:
        np.testing.assert_allclose(linear_gaussian.log_marginal(params, x),
                                   oracle.logpdf(np.asarray(x, np.float64)), rtol=1e-5)
        np.testing.assert_allclose(linear_gaussian.marginal(params).log_prob(x),
                                   oracle.logpdf(np.asarray(x, np.float64)), rtol=1e-5)


def test_log_joint_matches_scipy(params):
    x, z = jnp.arange(5.0) / 3, jnp.array([0.4, -1.1])
    expected = (stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(np.asarray(z))
                + stats.multivariate_normal(
                    np.asarray(params.W @ z + params.b),
                    float(params.noise_std) ** 2 * np.eye(5)).logpdf(np.asarray(x)))
    np.testing.assert_allclose(linear_gaussian.log_joint(params, x, z), expected, rtol=1e-5)


def test_posterior_is_bayes_rule(params, key):
    x = linear_gaussian.sample(key, params, 1)[0][0]
    post = linear_gaussian.posterior(params, x)
    mean, cov = linear_gaussian_posterior(params.W, params.b, params.noise_std, x)
    np.testing.assert_allclose(post.mean(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(post.covariance(), cov, rtol=1e-4, atol=1e-6)
    # log p(z|x) = log p(x, z) - log p(x) at any z
    for z in (jnp.zeros(2), jnp.array([1.0, -2.0]), jnp.array([-0.3, 0.7])):
        np.testing.assert_allclose(
            post.log_prob(z),
            linear_gaussian.log_joint(params, x, z) - linear_gaussian.log_marginal(params, x),
            atol=2e-4)


def test_samples_have_the_marginal_moments(params, key):
    n = 40_000
    x, z = linear_gaussian.sample(key, params, n)
    cov = np.asarray(params.W @ params.W.T) + float(params.noise_std) ** 2 * np.eye(5)
    mean = np.asarray(x, np.float64).mean(axis=0)
    assert np.all(np.abs(mean - np.asarray(params.b)) < 4 * np.sqrt(np.diag(cov) / n))
    # standard error of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(np.asarray(x, np.float64), rowvar=False) - cov) < 4.5 * se)
    assert z.shape == (n, 2)


def test_jit_and_vmap_match_eager(params, key):
    xs, _ = linear_gaussian.sample(key, params, 3)
    eager = [float(linear_gaussian.log_marginal(params, x)) for x in xs]
    batched = jax.jit(jax.vmap(linear_gaussian.log_marginal, in_axes=(None, 0)))(params, xs)
    np.testing.assert_allclose(batched, eager, rtol=1e-6)
    means = jax.vmap(lambda x: linear_gaussian.posterior(params, x).mean())(xs)
    np.testing.assert_allclose(means[1], linear_gaussian.posterior(params, xs[1]).mean(),
                               rtol=1e-5)


def test_bad_inputs_raise_value_errors(params, key):
    with pytest.raises(ValueError, match="x must have shape"):
        linear_gaussian.log_marginal(params, jnp.zeros(4))
    with pytest.raises(ValueError, match="x must have shape"):
        linear_gaussian.posterior(params, jnp.zeros((5, 1)))
    with pytest.raises(ValueError, match="z must have shape"):
        linear_gaussian.log_joint(params, jnp.zeros(5), jnp.zeros(3))
    with pytest.raises(ValueError, match="noise_std"):
        linear_gaussian.init(key, 3, 2, noise_std=0.0)
    with pytest.raises(ValueError, match="latent_dim"):
        linear_gaussian.init(key, 3, 0)


@pytest.mark.parametrize("noise, error", [(0.0, ValueError), (-0.5, ValueError),
                                          (float("inf"), ValueError), (float("nan"), ValueError),
                                          ("0.5", TypeError), (None, TypeError)])
def test_the_noise_scale_must_be_a_positive_finite_number(params, noise, error):
    with pytest.raises(error, match="noise_std"):
        linear_gaussian.init(jax.random.PRNGKey(0), 5, 2, noise_std=noise)
    if error is ValueError:  # the same parameters built by hand are refused where used
        bad = params._replace(noise_std=jnp.float32(noise))
        for function in (linear_gaussian.log_marginal, linear_gaussian.posterior):
            with pytest.raises(ValueError, match=r"params\.noise_std must be finite and > 0"):
                function(bad, jnp.zeros(5))


@pytest.mark.parametrize("noise", [1e-5, 1e-3, 30.0, 1e30])
def test_log_marginal_is_exact_in_float32_over_any_noise_scale(noise):
    """W W^T + s^2 I in float32 underflows into a singular matrix for tiny s (SciPy's
    float64 refuses it too at 1e-5) and overflows for huge s; the L x L form does neither.
    Oracle: the matrix determinant lemma and Woodbury's identity in float64 NumPy."""
    params = linear_gaussian.init(jax.random.PRNGKey(3), 6, 2, noise_std=noise)
    x = np.array([0.3, -1.0, 2.0, 0.5, 0.0, 1.5])
    W, b, s = (np.asarray(params.W, np.float64), np.asarray(params.b, np.float64),
               float(params.noise_std))
    r = x - b
    M = np.eye(2) + W.T @ W / s**2
    m = np.linalg.solve(M, W.T @ r / s**2)
    quadratic = (r @ r - (W.T @ r) @ m) / s**2  # r^T C^{-1} r by Woodbury
    expected = -0.5 * (6 * np.log(2 * np.pi) + 12 * np.log(s) + np.linalg.slogdet(M)[1]
                       + quadratic)
    np.testing.assert_allclose(float(linear_gaussian.log_marginal(params, x)), expected,
                               rtol=2e-5)
    posterior = linear_gaussian.posterior(params, x)
    np.testing.assert_allclose(np.asarray(posterior.mean()), m, rtol=2e-4, atol=1e-6)


def test_latents_and_parameters_are_checked(params):
    x, z = jnp.zeros(5), jnp.zeros(2)
    np.testing.assert_allclose(linear_gaussian.log_joint(params, x, [0.0, 0.0]),
                               linear_gaussian.log_joint(params, x, z))
    with pytest.raises(ValueError, match="z holds 1 NaN"):
        linear_gaussian.log_joint(params, x, z.at[0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"params\.W holds 1 NaN"):
        linear_gaussian.log_marginal(params._replace(W=params.W.at[0, 0].set(jnp.nan)), x)
    with pytest.raises(TypeError, match=r"linear_gaussian\.Params"):
        linear_gaussian.log_marginal((params.W, params.b, params.noise_std), x)


def test_masked_marginal_and_posterior_are_the_observed_rows_model(params, key):
    """log p(x_obs) = log N(x_obs; b_o, W_o W_o^T + s^2 I) (SciPy, float64), under jit
    too; p(z | x_obs) is Bayes' rule with the observed rows; NaN at a missing entry changes
    nothing."""
    xs, _ = linear_gaussian.sample(key, params, 4)
    W, b = np.asarray(params.W, np.float64), np.asarray(params.b, np.float64)
    noise = float(params.noise_std)
    masks = np.array([[True, False, True, True, False], [False, False, False, False, True],
                      [True, True, True, True, True], [False, True, False, True, True]])
    for x, o in zip(np.asarray(xs, np.float64), masks, strict=True):
        covariance = W[o] @ W[o].T + noise**2 * np.eye(o.sum())
        expected = stats.multivariate_normal.logpdf(x[o], b[o], covariance)
        holes = jnp.asarray(np.where(o, x, np.nan), jnp.float32)
        np.testing.assert_allclose(linear_gaussian.log_marginal(params, holes, o), expected,
                                   rtol=1e-5)
        np.testing.assert_allclose(jax.jit(linear_gaussian.log_marginal)(
            params, holes, jnp.asarray(o)), expected, rtol=1e-5)
        precision = np.eye(2) + W[o].T @ W[o] / noise**2
        mean = np.linalg.solve(precision, W[o].T @ (x[o] - b[o]) / noise**2)
        posterior = linear_gaussian.posterior(params, holes, o)
        np.testing.assert_allclose(posterior.mean(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(posterior.covariance(), np.linalg.inv(precision),
                                   rtol=1e-4)
    with pytest.raises(ValueError, match="mask leaves nothing observed"):
        linear_gaussian.log_marginal(params, xs[0], np.zeros(5, bool))
