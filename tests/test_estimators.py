"""jlvm.estimators against closed forms (linear-Gaussian), enumeration and each other."""

import functools
import itertools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import (
    gaussian_kl,
    linear_gaussian_elbo,
    linear_gaussian_posterior,
    mean_and_standard_error,
)

import jlvm
from jlvm.models import gmm, linear_gaussian

NUM_REPEATS = 4000  # independent repeats for statistical assertions


@pytest.fixture
def problem(key):
    """A linear-Gaussian model, one observation, its exact log p(x) and posterior."""
    params = linear_gaussian.init(jax.random.PRNGKey(1), data_dim=6, latent_dim=3,
                                  noise_std=0.7)
    x = linear_gaussian.sample(jax.random.PRNGKey(2), params, 1)[0][0]
    return dict(
        params=params,
        x=x,
        log_joint=functools.partial(linear_gaussian.log_joint, params, x),
        log_marginal=float(linear_gaussian.log_marginal(params, x)),
        posterior=linear_gaussian.posterior(params, x),
    )


def poor_q(problem, shift=0.8, widen=1.6):
    """A diagonal Gaussian away from the posterior: a real gap to log p(x)."""
    post = problem["posterior"]
    std = jnp.sqrt(jnp.diagonal(post.covariance()))
    return distrax.MultivariateNormalDiag(post.mean() + shift * std, widen * std)


def repeats(estimate, count=NUM_REPEATS):
    """estimate(key) for `count` independent keys, vmapped and jitted."""
    keys = jax.random.split(jax.random.PRNGKey(7), count)
    return np.asarray(jax.jit(jax.vmap(estimate))(keys), np.float64)


# --------------------------------------------------------------------- identities


def test_elbo_at_exact_posterior_equals_log_marginal_for_every_draw(problem):
    values = repeats(lambda k: jlvm.elbo(k, problem["log_joint"], problem["posterior"]), 200)
    np.testing.assert_allclose(values, problem["log_marginal"], rtol=0, atol=2e-4)


def test_iwae_and_is_at_exact_posterior_are_exact_for_every_draw(problem):
    iwae = repeats(lambda k: jlvm.iwae_bound(k, problem["log_joint"], problem["posterior"], 7),
                   100)
    is_ = repeats(lambda k: jlvm.log_marginal_is(k, problem["log_joint"], problem["posterior"],
                                                 7), 100)
    np.testing.assert_allclose(iwae, problem["log_marginal"], rtol=0, atol=2e-4)
    np.testing.assert_allclose(is_, problem["log_marginal"], rtol=0, atol=2e-4)


def test_gmm_elbo_with_posterior_responsibilities_is_tight(key):
    params = gmm.Params(logits=jnp.array([0.3, -0.2, 0.0]),
                        means=jnp.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 2.0]]),
                        scale_tril=jnp.stack([jnp.eye(2), 0.5 * jnp.eye(2), 2.0 * jnp.eye(2)]))
    x = jnp.array([1.0, 0.5])
    log_joint = functools.partial(gmm.log_joint, params, x)
    value = jlvm.elbo(key, log_joint, gmm.posterior(params, x), 50,
                      grad_estimator="score_function")
    np.testing.assert_allclose(value, gmm.log_marginal(params, x), atol=1e-5)


def test_log_marginal_equals_elbo_plus_kl(problem):
    """log p(x) = ELBO(q) + KL(q || p(z|x)): closed form, then the estimator with an SE."""
    q = poor_q(problem)
    params, x, post = problem["params"], problem["x"], problem["posterior"]
    exact_elbo = linear_gaussian_elbo(params.W, params.b, params.noise_std, x, q.mean(),
                                      q.covariance())
    post_mean, post_cov = linear_gaussian_posterior(params.W, params.b, params.noise_std, x)
    kl = gaussian_kl(q.mean(), q.covariance(), post_mean, post_cov)
    assert kl > 0.5  # the identity is tested with a real gap
    np.testing.assert_allclose(exact_elbo + kl, problem["log_marginal"], rtol=0, atol=1e-4)
    # jlvm's Monte Carlo ELBO is unbiased for that ELBO
    mean, se = mean_and_standard_error(repeats(lambda k: jlvm.elbo(k, problem["log_joint"], q)))
    assert abs(mean - exact_elbo) < 4 * se
    # and distrax's KL to jlvm's exact posterior agrees with the float64 oracle
    with jax.numpy_rank_promotion("allow"):
        np.testing.assert_allclose(q.kl_divergence(post), kl, rtol=1e-3)


def test_entropy_and_kl_forms_estimate_the_same_elbo(problem):
    q = poor_q(problem)
    params, x = problem["params"], problem["x"]
    exact_elbo = linear_gaussian_elbo(params.W, params.b, params.noise_std, x, q.mean(),
                                      q.covariance())
    def log_likelihood(z):
        return (linear_gaussian.log_joint(params, x, z)
                                    - jnp.sum(jax.scipy.stats.norm.logpdf(z)))
    prior = distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
    joint = repeats(lambda k: jlvm.elbo(k, problem["log_joint"], q))
    entropy = repeats(lambda k: jlvm.elbo_with_entropy(k, problem["log_joint"], q))
    kl = repeats(lambda k: jlvm.elbo_with_kl(k, log_likelihood, q, prior))
    for values in (joint, entropy, kl):
        mean, se = mean_and_standard_error(values)
        assert abs(mean - exact_elbo) < 4 * se
    # neither form is always better: at the exact posterior the joint form's integrand is
    # constant (zero variance) while the entropy form keeps the noise of log p(x, z)
    post = problem["posterior"]
    at_post_joint = repeats(lambda k: jlvm.elbo(k, problem["log_joint"], post), 500)
    at_post_entropy = repeats(lambda k: jlvm.elbo_with_entropy(k, problem["log_joint"], post),
                              500)
    assert at_post_joint.std() < 1e-3 < 0.1 < at_post_entropy.std()


def test_iwae_bound_rises_with_k_and_stays_below_log_marginal(problem):
    q = poor_q(problem, shift=1.0, widen=1.8)
    means, ses = [], []
    for num_samples in (1, 4, 16, 64):
        values = repeats(lambda k: jlvm.iwae_bound(k, problem["log_joint"], q, num_samples),
                         2000)
        mean, se = mean_and_standard_error(values)
        assert mean < problem["log_marginal"] + 3 * se
        means.append(mean)
        ses.append(se)
    for i in range(len(means) - 1):
        assert means[i + 1] - means[i] > 3 * math.hypot(ses[i], ses[i + 1])
    # and the K=1 bound is the ELBO: same draws for the same key
    k = jax.random.PRNGKey(3)
    np.testing.assert_allclose(jlvm.iwae_bound(k, problem["log_joint"], q, 1),
                               jlvm.elbo(k, problem["log_joint"], q, 1), rtol=1e-6)


def test_importance_sampling_is_unbiased_for_p_not_log_p(problem):
    q = poor_q(problem, shift=0.5, widen=1.5)  # wider than the posterior: finite variance
    log_hat = repeats(lambda k: jlvm.log_marginal_is(k, problem["log_joint"], q, 5))
    ratio = np.exp(log_hat - problem["log_marginal"])  # p_hat / p(x)
    mean, se = mean_and_standard_error(ratio)
    assert abs(mean - 1.0) < 4 * se
    # log p_hat is biased low (Jensen), visibly so with this q
    log_mean, log_se = mean_and_standard_error(log_hat)
    assert log_mean < problem["log_marginal"] - 3 * log_se


def test_log_marginal_is_equals_iwae_value_for_the_same_key(problem):
    q = poor_q(problem)
    k = jax.random.PRNGKey(11)
    np.testing.assert_allclose(jlvm.log_marginal_is(k, problem["log_joint"], q, 33),
                               jlvm.iwae_bound(k, problem["log_joint"], q, 33), rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 250, 1000, 5000])
def test_chunking_never_changes_the_estimate(problem, chunk_size):
    q = poor_q(problem)
    k = jax.random.PRNGKey(5)
    whole = jlvm.log_marginal_is(k, problem["log_joint"], q, 1000)
    chunked = jlvm.log_marginal_is(k, problem["log_joint"], q, 1000, chunk_size=chunk_size)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=2e-5)


def test_is_converges_to_log_marginal_at_large_k(problem):
    q = poor_q(problem)
    estimate = jlvm.log_marginal_is(jax.random.PRNGKey(0), problem["log_joint"], q, 200_000,
                                    chunk_size=20_000)
    assert abs(float(estimate) - problem["log_marginal"]) < 0.01


# ----------------------------------------------------------- discrete supports


def _bits_model(num_bits=8, dim=5):
    """Binary z in {0,1}^n, x | z ~ N(V z, 0.3^2 I), a Bernoulli(0.3) prior per bit."""
    V = jax.random.normal(jax.random.PRNGKey(4), (dim, num_bits))
    z_true = (jax.random.uniform(jax.random.PRNGKey(5), (num_bits,)) < 0.5).astype(jnp.float32)
    x = V @ z_true + 0.3 * jax.random.normal(jax.random.PRNGKey(6), (dim,))

    def log_joint(z):
        log_prior = jnp.sum(z * math.log(0.3) + (1 - z) * math.log(0.7))
        return log_prior + jnp.sum(jax.scipy.stats.norm.logpdf(x, V @ z, 0.3))

    return log_joint, V, x


def test_exact_enumeration_matches_brute_force():
    log_joint, V, x = _bits_model()
    V64, x64 = np.asarray(V, np.float64), np.asarray(x, np.float64)
    terms = []
    for bits in itertools.product([0, 1], repeat=8):
        z = np.array(bits, np.float64)
        lp = np.sum(z * np.log(0.3) + (1 - z) * np.log(0.7))
        lp += np.sum(-0.5 * np.log(2 * np.pi * 0.09) - 0.5 * (x64 - V64 @ z) ** 2 / 0.09)
        terms.append(lp)
    expected = np.logaddexp.reduce(terms)
    support = jlvm.binary_support(8)
    np.testing.assert_allclose(jlvm.log_marginal_exact(log_joint, support), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(jlvm.log_marginal_exact(log_joint, support, chunk_size=37),
                               expected, rtol=1e-5)


def test_naive_monte_carlo_is_unbiased_for_p_with_small_support():
    params = gmm.Params(logits=jnp.zeros(4), means=jnp.array([[0.0], [1.0], [2.0], [3.0]]),
                        scale_tril=jnp.ones((4, 1, 1)))
    x = jnp.array([1.2])
    log_joint = functools.partial(gmm.log_joint, params, x)
    support = jnp.arange(4)
    exact = float(gmm.log_marginal(params, x))
    np.testing.assert_allclose(jlvm.log_marginal_exact(log_joint, support), exact, rtol=1e-6)
    log_hat = repeats(lambda k: jlvm.log_marginal_naive(k, log_joint, support, 3))
    mean, se = mean_and_standard_error(np.exp(log_hat - exact))
    assert abs(mean - 1.0) < 4 * se


class _InverseCdfCategorical(distrax.Categorical):
    """distrax.Categorical, drawn by inverting its CDF: one uniform number per draw where
    distrax's Gumbel-max draw takes one per category (4,096 below: 8 of the test's 9 s).
    The same distribution, so the same proposal for the estimators."""

    def _sample_n(self, key, n):
        cdf = jnp.cumsum(self.probs, axis=-1)
        u = jax.random.uniform(key, (n,), cdf.dtype) * cdf[-1]
        index = jnp.searchsorted(cdf, u, side="right")
        return jnp.minimum(index, cdf.shape[-1] - 1).astype(self._dtype)


def test_inverse_cdf_draws_follow_the_categorical():
    probs = jnp.array([0.1, 0.0, 0.6, 0.3])
    q = _InverseCdfCategorical(probs=probs)
    draws = np.asarray(q.sample(seed=jax.random.PRNGKey(0), sample_shape=20_000))
    counts = np.bincount(draws, minlength=4)
    # multinomial standard errors: at most sqrt(0.25 / 20,000) = 0.0035
    np.testing.assert_allclose(counts / 20_000, probs, atol=0.015)
    assert counts[1] == 0 and draws.dtype == np.asarray(
        distrax.Categorical(probs=probs).sample(seed=jax.random.PRNGKey(0))).dtype


def test_naive_monte_carlo_has_far_larger_variance_than_importance_sampling():
    """Uniform draws rarely hit the bit patterns that explain x; a good q does."""
    log_joint, _, _ = _bits_model(num_bits=12)
    support = jlvm.binary_support(12)
    exact = float(jlvm.log_marginal_exact(log_joint, support))
    # a good proposal over the rows of the support: the exact posterior, mixed with 20%
    # uniform (a defensive mixture) so it is good but not perfect
    log_joints = jax.vmap(log_joint)(support)
    posterior = jnp.exp(log_joints - jax.nn.logsumexp(log_joints))
    q = _InverseCdfCategorical(probs=0.8 * posterior + 0.2 / support.shape[0])
    def q_log_joint(row):
        return log_joint(support[row])
    # 400 repeats: the mean squared relative errors differ about 3,500-fold (seeds 7 to 10;
    # IS's is 0.0027 +- 0.0002); 10 draws at a time
    naive = repeats(lambda k: jlvm.log_marginal_naive(k, log_joint, support, 100), 400)
    is_ = repeats(lambda k: jlvm.log_marginal_is(k, q_log_joint, q, 100, chunk_size=10), 400)
    naive_error = np.mean((np.exp(naive - exact) - 1) ** 2)
    is_error = np.mean((np.exp(is_ - exact) - 1) ** 2)
    assert naive_error > 100 * is_error
    assert abs(np.mean(is_) - exact) < 0.05


def test_naive_is_importance_sampling_with_the_uniform_proposal():
    """With q uniform over {0,1}^n, IS is the naive estimator: same expectation."""
    log_joint, _, _ = _bits_model(num_bits=6)
    support = jlvm.binary_support(6)
    exact = float(jlvm.log_marginal_exact(log_joint, support))
    uniform = distrax.Independent(distrax.Bernoulli(probs=0.5 * jnp.ones(6)), 1)
    is_ = repeats(lambda k: jlvm.log_marginal_is(
        k, lambda z: log_joint(z.astype(jnp.float32)), uniform, 20))
    naive = repeats(lambda k: jlvm.log_marginal_naive(k, log_joint, support, 20))
    for values in (is_, naive):
        mean, se = mean_and_standard_error(np.exp(values - exact))
        assert abs(mean - 1.0) < 4 * se


def test_binary_support_enumerates_every_pattern_in_order():
    support = np.asarray(jlvm.binary_support(4))
    expected = np.array(list(itertools.product([0, 1], repeat=4)), np.float32)
    np.testing.assert_array_equal(support, expected)
    assert jlvm.binary_support(0).shape == (1, 0)
    assert jlvm.binary_support(3, dtype=jnp.int32).dtype == jnp.int32


# ----------------------------------------------------------------- diagnostics


def test_effective_sample_size():
    np.testing.assert_allclose(jlvm.effective_sample_size(jnp.full(10, -3.0)), 10.0,
                               rtol=1e-5)
    np.testing.assert_allclose(
        jlvm.effective_sample_size(jnp.array([0.0, -1e4, -1e4])), 1.0, rtol=1e-5)
    log_w = jax.random.normal(jax.random.PRNGKey(0), (50,))
    w = np.exp(np.asarray(log_w, np.float64))
    np.testing.assert_allclose(jlvm.effective_sample_size(log_w), w.sum() ** 2 / (w**2).sum(),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="log_weights"):
        jlvm.effective_sample_size(jnp.zeros((2, 2)))


def test_importance_log_weights_match_the_bound(problem):
    q = poor_q(problem)
    k = jax.random.PRNGKey(9)
    log_w = jlvm.importance_log_weights(k, problem["log_joint"], q, 20)
    assert log_w.shape == (20,)
    np.testing.assert_allclose(jax.nn.logsumexp(log_w) - math.log(20),
                               jlvm.iwae_bound(k, problem["log_joint"], q, 20), rtol=1e-6)


# ------------------------------------------------------------------- stability


def test_float32_log_weights_near_minus_ten_thousand_are_finite_and_right():
    offset = -1.0e4

    def log_joint(z):  # p(x, z) = e^offset N(z; 0.3, 1): log p(x) = offset exactly
        return offset + jnp.sum(jax.scipy.stats.norm.logpdf(z, 0.3, 1.0))

    q = distrax.MultivariateNormalDiag(jnp.zeros(2), 1.2 * jnp.ones(2))
    k = jax.random.PRNGKey(0)
    estimates = [
        jlvm.elbo(k, log_joint, q, 100),
        jlvm.iwae_bound(k, log_joint, q, 100),
        jlvm.log_marginal_is(k, log_joint, q, 4000),
        jlvm.log_marginal_is(k, log_joint, q, 4000, chunk_size=512),
    ]
    for value in estimates:
        assert value.dtype == jnp.float32 and np.isfinite(value)
        assert abs(float(value) - offset) < 0.2
    np.testing.assert_allclose(estimates[2], offset, atol=0.02)
    support = jnp.linspace(-3, 3, 7)[:, None]
    def shifted(z):
        return offset + jnp.sum(z)  # log sum_j e^{offset + z_j}
    expected = offset + float(np.logaddexp.reduce(np.linspace(-3, 3, 7)))
    np.testing.assert_allclose(jlvm.log_marginal_exact(shifted, support), expected, atol=1e-2)
    assert np.isfinite(jlvm.log_marginal_naive(k, shifted, support, 5))
    grad = jax.grad(lambda m: jlvm.iwae_bound(
        k, log_joint, distrax.MultivariateNormalDiag(m, jnp.ones(2)), 50))(jnp.zeros(2))
    assert np.all(np.isfinite(grad))


def test_impossible_latents_give_minus_infinity_not_nan():
    def log_joint(z):
        return jnp.where(jnp.sum(z) > 0, 0.0, -jnp.inf)
    support = jnp.array([[-1.0], [-2.0]])
    assert float(jlvm.log_marginal_exact(log_joint, support)) == -np.inf
    assert float(jlvm.log_marginal_exact(log_joint, support, chunk_size=1)) == -np.inf
    q = distrax.MultivariateNormalDiag(jnp.full(1, -50.0), jnp.ones(1))
    assert float(jlvm.log_marginal_is(jax.random.PRNGKey(0), log_joint, q, 10,
                                      chunk_size=3)) == -np.inf


# --------------------------------------------------------------- transformations


def test_jit_and_vmap_over_data_points_match_eager(problem):
    params = problem["params"]
    xs = linear_gaussian.sample(jax.random.PRNGKey(3), params, 4)[0]
    k = jax.random.PRNGKey(12)

    def all_estimates(x):
        log_joint = functools.partial(linear_gaussian.log_joint, params, x)
        post = linear_gaussian.posterior(params, x)
        q = distrax.MultivariateNormalDiag(post.mean() + 0.3, 1.5 * jnp.ones(3))
        return jnp.stack([
            jlvm.elbo(k, log_joint, q, 8),
            jlvm.iwae_bound(k, log_joint, q, 8),
            jlvm.log_marginal_is(k, log_joint, q, 64, chunk_size=10),
            jlvm.elbo_with_entropy(k, log_joint, q, 8),
            jlvm.log_marginal_naive(k, log_joint, jnp.eye(3), 8),
            jlvm.log_marginal_exact(log_joint, jnp.eye(3)),
        ])

    eager = np.stack([np.asarray(all_estimates(x)) for x in xs])
    jitted = np.stack([np.asarray(jax.jit(all_estimates)(x)) for x in xs])
    vmapped = np.asarray(jax.jit(jax.vmap(all_estimates))(xs))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-5)


def test_every_estimator_is_differentiable(problem):
    params, x = problem["params"], problem["x"]
    k = jax.random.PRNGKey(0)

    def objective(W, mean, name):
        log_joint = functools.partial(linear_gaussian.log_joint, params._replace(W=W), x)
        q = distrax.MultivariateNormalDiag(mean, jnp.ones(3))
        return {
            "elbo": lambda: jlvm.elbo(k, log_joint, q, 4),
            "iwae": lambda: jlvm.iwae_bound(k, log_joint, q, 4),
            "is": lambda: jlvm.log_marginal_is(k, log_joint, q, 16, chunk_size=5),
            "exact": lambda: jlvm.log_marginal_exact(log_joint, q.mean()[None] + jnp.eye(3)),
        }[name]()

    for name in ("elbo", "iwae", "is", "exact"):
        grads = jax.grad(objective, argnums=(0, 1))(params.W, jnp.zeros(3), name)
        assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in grads), name


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None, "4"])
def test_bad_num_samples_raise_value_error_naming_it(problem, bad):
    q = problem["posterior"]
    k = jax.random.PRNGKey(0)
    for call in (
        lambda: jlvm.elbo(k, problem["log_joint"], q, bad),
        lambda: jlvm.iwae_bound(k, problem["log_joint"], q, bad),
        lambda: jlvm.log_marginal_is(k, problem["log_joint"], q, bad),
        lambda: jlvm.log_marginal_naive(k, problem["log_joint"], jnp.eye(3), bad),
        lambda: jlvm.importance_log_weights(k, problem["log_joint"], q, bad),
    ):
        with pytest.raises(ValueError, match="num_samples"):
            call()


def test_bad_arguments_raise_value_error_naming_them(problem):
    q, log_joint = problem["posterior"], problem["log_joint"]
    k = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="support"):
        jlvm.log_marginal_exact(log_joint, jnp.zeros((0, 3)))
    with pytest.raises(ValueError, match="support"):
        jlvm.log_marginal_naive(k, log_joint, jnp.zeros((0, 3)), 5)
    with pytest.raises(ValueError, match="support"):
        jlvm.log_marginal_exact(log_joint, jnp.float32(1.0))
    with pytest.raises(ValueError, match="chunk_size"):
        jlvm.log_marginal_is(k, log_joint, q, 10, chunk_size=0)
    with pytest.raises(ValueError, match="grad_estimator"):
        jlvm.elbo(k, log_joint, q, grad_estimator="dreg")  # DReG is an IWAE estimator
    with pytest.raises(ValueError, match="grad_estimator"):
        jlvm.iwae_bound(k, log_joint, q, 3, grad_estimator="stl")
    with pytest.raises(ValueError, match="batch_shape"):
        jlvm.elbo(k, log_joint, distrax.Normal(jnp.zeros(3), jnp.ones(3)))
    with pytest.raises(ValueError, match="distrax"):
        jlvm.elbo(k, log_joint, "not a distribution")
    with pytest.raises(ValueError, match="log_joint"):
        jlvm.elbo(k, lambda z: z, q)  # a vector, not a scalar per z
    with pytest.raises(ValueError, match="num_bits"):
        jlvm.binary_support(-1)
    with pytest.raises(ValueError, match="num_bits"):
        jlvm.binary_support(40)
    # a wrong-shaped z reaches the model, which names it
    with pytest.raises(ValueError, match="z must have shape"):
        jlvm.log_marginal_exact(log_joint, jnp.eye(4))


def test_errors_are_raised_under_jit_too(problem):
    with pytest.raises(ValueError, match="num_samples"):
        jax.jit(lambda k: jlvm.elbo(k, problem["log_joint"], problem["posterior"], 0))(
            jax.random.PRNGKey(0))


def test_effective_sample_size_is_shift_invariant_and_never_nan():
    """Adding a constant to every log-weight leaves the weights' ratios, and so the ESS, as
    they were: equal log-weights give K at any level; infinite weights dominate and count
    as equals; every weight 0 is no effective sample at all."""
    ess = jlvm.effective_sample_size
    for level in (-1e30, -1e4, 0.0, 1e6, 1e38):
        np.testing.assert_allclose(ess(jnp.full(7, level)), 7.0, rtol=1e-5)
    np.testing.assert_allclose(ess(jnp.array([1e38, 1e38, 0.0])), 2.0, rtol=1e-5)
    assert float(ess(jnp.array([jnp.inf, 0.0, 3.0]))) == 1.0
    assert float(ess(jnp.array([jnp.inf, jnp.inf, 3.0]))) == 2.0
    assert float(ess(jnp.full(4, -jnp.inf))) == 0.0
    log_w = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (40,)), np.float64) * 3
    w = np.exp(log_w - log_w.max())
    for shift in (-1e4, 0.0, 1e4):  # float32 holds 1e4 + N(0, 9) to ~1e-3: a loose check
        np.testing.assert_allclose(ess(jnp.asarray(log_w + shift, jnp.float32)),
                                   w.sum() ** 2 / (w**2).sum(), rtol=5e-3)
    with pytest.raises(TypeError, match="log_weights"):
        ess("weights")


def test_a_discrete_q_needs_the_score_function_gradient(key):
    """A pathwise gradient through a categorical or Bernoulli draw does not exist; a
    reparameterized estimate there would silently miss the score term."""
    params = gmm.Params(logits=jnp.zeros(3), means=jnp.eye(3)[:, :2] * 3,
                        scale_tril=jnp.broadcast_to(jnp.eye(2), (3, 2, 2)))
    x = jnp.array([1.0, 0.5])
    log_joint = functools.partial(gmm.log_joint, params, x)
    q = distrax.Categorical(logits=jnp.zeros(3))
    for estimator, names in ((jlvm.elbo, ("reparam", "stl")),
                             (jlvm.iwae_bound, ("reparam", "dreg"))):
        for name in names:
            with pytest.raises(ValueError, match='use grad_estimator="score_function"'):
                estimator(key, log_joint, q, 4, grad_estimator=name)
        assert np.isfinite(float(estimator(key, log_joint, q, 4,
                                           grad_estimator="score_function")))
    with pytest.raises(ValueError, match="discrete"):
        jlvm.elbo_with_entropy(key, log_joint, q, 4)
    # evaluation alone needs no gradient: importance sampling takes a discrete q
    assert np.isfinite(float(jlvm.log_marginal_is(key, log_joint, q, 8)))


def test_a_log_joint_that_does_not_fit_q_is_named_before_anything_is_drawn(key):
    """Checked with jax.eval_shape on one abstract draw: no draw is made, nothing runs."""
    traced = []

    def vector_log_joint(z):
        traced.append(z)
        return -0.5 * z**2  # one value per coordinate, not a scalar

    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    with pytest.raises(ValueError, match=r"real scalar log p\(x, z\); on one draw of q \(z "
                                         r"of shape \(2,\), dtype float32\) it returned "
                                         r"shape \(2,\)"):
        jlvm.elbo(key, vector_log_joint, q, 5)
    assert len(traced) == 1 and isinstance(traced[0], jax.core.Tracer)
    mean = jnp.zeros(3)  # the user's model is over 3 latents, q over 2

    def three_latents(z):
        return -0.5 * jnp.sum((z - mean) ** 2)

    for estimator in (jlvm.elbo, jlvm.iwae_bound, jlvm.log_marginal_is,
                      jlvm.importance_log_weights):
        with pytest.raises(ValueError, match=r"log_joint failed on one draw of q \(z of shape "
                                             r"\(2,\)"):
            estimator(key, three_latents, q, 5)
    with pytest.raises(ValueError, match=r"log_joint failed on one row of support"):
        jlvm.log_marginal_exact(three_latents, jlvm.binary_support(2))
    with pytest.raises(TypeError, match="log_joint must be a function"):
        jlvm.elbo(key, "not a function", q)


@pytest.mark.parametrize("call, error, message", [
    (lambda lj, q: jlvm.elbo(0, lj, q), TypeError, "key must be one PRNG key"),
    (lambda lj, q: jlvm.iwae_bound(jnp.zeros(3), lj, q, 2), TypeError, "key must be one PRNG"),
    (lambda lj, q: jlvm.log_marginal_is(jnp.zeros(2), lj, q, 2), TypeError, "key must be"),
    (lambda lj, q: jlvm.log_marginal_naive(7, lj, jnp.eye(3), 2), TypeError, "key must be"),
    (lambda lj, q: jlvm.log_marginal_exact(lj, "abc"), TypeError, "support must be an array"),
    (lambda lj, q: jlvm.log_marginal_exact(lj, np.array([["a"] * 3])), TypeError,
     "support must"),
    (lambda lj, q: jlvm.log_marginal_exact(lj, jnp.ones((2, 3), jnp.complex64)), TypeError,
     "integer or real"),
    (lambda lj, q: jlvm.binary_support(3, dtype="no such dtype"), TypeError, "dtype"),
    (lambda lj, q: jlvm.binary_support(3, dtype=np.complex64), TypeError, "dtype"),
    (lambda lj, q: jlvm.elbo(jax.random.PRNGKey(0), lj, q, 2.0), ValueError, "num_samples"),
])
def test_wrong_types_are_named_not_left_to_jax(problem, call, error, message):
    with pytest.raises(error, match=message):
        call(problem["log_joint"], problem["posterior"])


def test_the_kl_form_needs_a_kl_distrax_can_compute(key):
    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    mixture = distrax.MixtureSameFamily(
        distrax.Categorical(logits=jnp.zeros(3)),
        distrax.MultivariateNormalDiag(jnp.zeros((3, 2)), jnp.ones((3, 2))))
    with pytest.raises(ValueError, match=r"no closed form in distrax; use jlvm\.elbo"):
        jlvm.elbo_with_kl(key, lambda z: -jnp.sum(z**2), q, mixture)
    with pytest.raises(ValueError, match="same z"):
        jlvm.elbo_with_kl(key, lambda z: -jnp.sum(z**2), q,
                          distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3)))


def test_nan_or_infinite_results_are_errors_not_answers(problem, key):
    """A NaN in q's parameters, a negative scale, or a log_joint that returns NaN or +inf:
    eagerly, a ValueError; -inf (probability 0) stays a legitimate answer."""
    log_joint = problem["log_joint"]
    nan_mean = distrax.MultivariateNormalDiag(jnp.full(3, jnp.nan), jnp.ones(3))
    negative = distrax.MultivariateNormalDiag(jnp.zeros(3), -jnp.ones(3))
    for call in (lambda: jlvm.elbo(key, log_joint, nan_mean, 3),
                 lambda: jlvm.iwae_bound(key, log_joint, nan_mean, 3),
                 lambda: jlvm.log_marginal_is(key, log_joint, negative, 3),
                 lambda: jlvm.elbo(key, lambda z: jnp.sum(z) * jnp.nan, problem["posterior"])):
        # q's parameters are named where q is the usual diagonal Gaussian
        with pytest.raises(ValueError, match=r"q's (mean|scales)|NaN or infinite value"):
            call()
    with pytest.raises(ValueError, match=r"\+inf"):
        jlvm.log_marginal_is(key, lambda z: jnp.inf + jnp.sum(z), problem["posterior"], 3)
    support = jnp.arange(3)
    assert float(jlvm.log_marginal_exact(lambda z: jnp.where(z >= 0, -jnp.inf, 0.0),
                                         support)) == -np.inf
    with pytest.raises(ValueError, match="log_weights hold NaN"):
        jlvm.effective_sample_size(jnp.array([0.0, jnp.nan]))


def test_a_repeated_latent_value_in_a_support_is_refused():
    log_p = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="duplicate rows"):
        jlvm.log_marginal_exact(lambda z: log_p[z], jnp.array([0, 1, 2, 2]))
    with pytest.raises(ValueError, match="duplicate rows"):
        jlvm.log_marginal_naive(jax.random.PRNGKey(0), lambda z: log_p[z],
                                jnp.array([0, 1, 2, 2]), 5)
    np.testing.assert_allclose(float(jlvm.log_marginal_exact(lambda z: log_p[z],
                                                             jnp.arange(3))), 0.0, atol=1e-6)


def test_sizes_beyond_jax_int32_are_refused_and_numpy_ints_are_ints(problem, key):
    with pytest.raises(ValueError, match="num_samples must be at most 2147483647"):
        jlvm.elbo(key, problem["log_joint"], problem["posterior"], 2**32)
    assert jlvm.binary_support(np.int64(3)).shape == (8, 3)
    assert jlvm.binary_support(jnp.int32(2)).shape == (4, 2)
    with pytest.raises(ValueError, match="num_bits"):
        jlvm.binary_support(True)


def test_a_degenerate_gaussian_q_is_named(problem, key):
    for loc, scale, message in ((jnp.zeros(3), jnp.zeros(3), "scales must be finite and > 0"),
                                (jnp.zeros(3), -jnp.ones(3), "scales must be finite and > 0"),
                                (jnp.full(3, jnp.inf), jnp.ones(3), "mean holds NaN")):
        with pytest.raises(ValueError, match=message):
            jlvm.elbo(key, problem["log_joint"], distrax.MultivariateNormalDiag(loc, scale), 2)


def test_enumerable_support_of_bits_and_categories_and_none_else():
    bits = distrax.Independent(distrax.Bernoulli(logits=jnp.zeros(3)), 1)
    np.testing.assert_array_equal(jlvm.estimators.enumerable_support(bits),
                                  jlvm.binary_support(3))
    np.testing.assert_array_equal(
        jlvm.estimators.enumerable_support(distrax.Categorical(logits=jnp.zeros(4))),
        np.arange(4))
    assert jlvm.estimators.enumerable_support(
        distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))) is None
    assert jlvm.estimators.enumerable_support(distrax.Bernoulli(logits=jnp.zeros(3))) is None
    with pytest.raises(ValueError, match="too many to enumerate"):
        jlvm.estimators.enumerable_support(
            distrax.Independent(distrax.Bernoulli(logits=jnp.zeros(30)), 1))


def test_enumerable_support_of_independent_categoricals_is_every_combination():
    # three coordinates of four values each: 4**3 rows, all distinct, in order; the exact
    # marginal over them equals a brute-force sum written with itertools
    import itertools

    logits = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    q = distrax.Independent(distrax.Categorical(logits=logits), 1)
    support = jlvm.estimators.enumerable_support(q)
    expected = np.array(list(itertools.product(range(4), repeat=3)))
    np.testing.assert_array_equal(support, expected)
    weights = jax.random.normal(jax.random.PRNGKey(1), (3, 4))

    def log_joint(z):
        return q.log_prob(z) + jnp.sum(jnp.take_along_axis(weights, z[:, None], 1))

    brute = np.logaddexp.reduce([float(log_joint(jnp.asarray(z))) for z in expected])
    np.testing.assert_allclose(jlvm.log_marginal_exact(log_joint, support), brute, rtol=1e-5)
    with pytest.raises(ValueError, match="too many to enumerate"):
        jlvm.estimators.enumerable_support(
            distrax.Independent(distrax.Categorical(logits=jnp.zeros((13, 4))), 1))
