"""jlvm.missing: missing pixels as latent variables, checked by enumeration and the chain rule."""

import functools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jlvm
from jlvm import missing
from jlvm.models import autoregressive, vae


@pytest.fixture
def nade():
    params = autoregressive.init(jax.random.PRNGKey(0), data_dim=12, hidden_dim=8)
    return params._replace(b=jnp.linspace(-1.5, 1.5, 12), W=3 * params.W, V=3 * params.V)


X_BAR = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])


def test_complete_fills_missing_entries_in_index_order():
    mask = np.array([True, False, True, False])
    np.testing.assert_array_equal(missing.complete(jnp.array([1.0, 9.0, 3.0, 9.0]),
                                                   jnp.array([2.0, 4.0]), mask), [1, 2, 3, 4])


def test_exact_enumeration_equals_the_chain_rule_for_a_missing_suffix(nade):
    """Hiding the LAST pixels of an autoregressive model: p(x_obs) is the prefix's chain rule."""
    mask = np.arange(12) < 7  # pixels 7..11 missing
    log_joint = missing.log_joint_with_missing(functools.partial(autoregressive.log_prob, nade),
                                               X_BAR, mask)
    exact = jlvm.log_marginal_exact(log_joint, jlvm.binary_support(5))
    logits = autoregressive.conditional_logits(nade, X_BAR)
    prefix = jnp.sum((X_BAR * logits - jax.nn.softplus(logits))[:7])
    np.testing.assert_allclose(exact, prefix, rtol=1e-5)


@pytest.fixture
def top_missing(nade):
    mask = np.arange(12) >= 6  # the FIRST six pixels missing: no shortcut exists
    log_joint = missing.log_joint_with_missing(functools.partial(autoregressive.log_prob, nade),
                                               X_BAR, mask)
    exact = float(jlvm.log_marginal_exact(log_joint, jlvm.binary_support(6)))
    return log_joint, exact


def test_importance_sampling_with_a_fitted_q_agrees_with_enumeration(top_missing):
    log_joint, exact = top_missing
    fit = jax.jit(lambda k: missing.fit_mean_field(k, log_joint, 6, num_steps=300))(
        jax.random.PRNGKey(1))
    q = missing.mean_field_bernoulli(fit.logits)
    keys = jax.random.split(jax.random.PRNGKey(2), 200)
    estimates = jax.jit(jax.vmap(lambda k: jlvm.log_marginal_is(k, log_joint, q, 2000)))(keys)
    mean = float(jnp.mean(estimates))
    se = float(jnp.std(estimates)) / math.sqrt(200)
    assert abs(mean - exact) < 4 * se + 1e-3
    assert abs(float(jlvm.log_marginal_is(jax.random.PRNGKey(3), log_joint, q, 100_000,
                                          chunk_size=10_000)) - exact) < 0.01


def _exact_elbo(log_joint, logits, num_latent):
    support = jlvm.binary_support(num_latent)
    with jax.numpy_rank_promotion("allow"):
        log_q = missing.mean_field_bernoulli(logits).log_prob(support)
    return jnp.sum(jnp.exp(log_q) * (jax.vmap(log_joint)(support) - log_q))


def test_svi_with_score_function_reaches_the_best_mean_field_elbo(top_missing):
    log_joint, exact = top_missing
    fit = jax.jit(lambda k: missing.fit_mean_field(k, log_joint, 6, num_steps=400))(
        jax.random.PRNGKey(4))
    fitted = float(_exact_elbo(log_joint, fit.logits, 6))
    # the optimum of the same family by exact gradient ascent on the enumerated ELBO
    gradient = jax.grad(lambda lg: _exact_elbo(log_joint, lg, 6))
    logits = jax.jit(lambda lg: jax.lax.fori_loop(  # 2000 steps, one compiled loop
        0, 2000, lambda _, lg: lg + 0.5 * gradient(lg), lg))(jnp.zeros(6))
    best = float(_exact_elbo(log_joint, logits, 6))
    assert best <= exact + 1e-4 and fitted <= exact + 1e-4
    assert fitted > best - 0.05
    # the lecture's point: phi = 0.5 (uniform) and phi = 1 (all on) are far worse
    assert float(_exact_elbo(log_joint, jnp.zeros(6), 6)) < fitted - 1.0
    assert float(_exact_elbo(log_joint, jnp.full(6, 30.0), 6)) < fitted - 1.0
    # and the ELBO trace rose
    assert float(jnp.mean(fit.elbo[-50:])) > float(jnp.mean(fit.elbo[:10]))


def test_mask_errors_name_the_mask(nade):
    log_prob = functools.partial(autoregressive.log_prob, nade)
    with pytest.raises(ValueError, match="mask must have shape"):
        missing.log_joint_with_missing(log_prob, X_BAR, np.ones(11, bool))
    with pytest.raises(ValueError, match="nothing observed"):
        missing.log_joint_with_missing(log_prob, X_BAR, np.zeros(12, bool))
    with pytest.raises(ValueError, match="nothing missing"):
        missing.log_joint_with_missing(log_prob, X_BAR, np.ones(12, bool))
    with pytest.raises(ValueError, match="0/1"):
        missing.check_mask(np.full(12, 2), 12)
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda m: missing.check_mask(m, 12))(jnp.ones(12, bool))
    with pytest.raises(ValueError, match="z must have shape"):
        missing.complete(X_BAR, jnp.zeros(3), np.arange(12) >= 6)
    with pytest.raises(ValueError, match="num_samples"):
        missing.fit_mean_field(jax.random.PRNGKey(0), lambda z: jnp.sum(z), 3, num_samples=1)


# ----------------------------------------------------------- masked VAE likelihood


@pytest.fixture
def bernoulli_vae():
    return vae.init(jax.random.PRNGKey(0), data_dim=8, latent_dim=2, hidden_dims=(6,))


def test_masked_vae_likelihood_is_the_sub_image_likelihood(bernoulli_vae):
    x = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    z = jnp.array([0.3, -0.7])
    mask = np.array([1, 1, 0, 1, 0, 1, 1, 0], bool)
    probs = np.asarray(vae.mean_image(bernoulli_vae, z), np.float64)
    sub_image = stats.bernoulli.logpmf(np.asarray(x)[mask], probs[mask]).sum()
    np.testing.assert_allclose(vae.log_likelihood(bernoulli_vae, x, z, mask), sub_image,
                               rtol=1e-5)
    # summing the missing pixels out by enumeration gives the same number
    missing_idx = np.flatnonzero(~mask)
    completions = jlvm.binary_support(missing_idx.size)
    full = jax.vmap(lambda values: vae.log_likelihood(
        bernoulli_vae, x.at[missing_idx].set(values), z))(completions)
    np.testing.assert_allclose(jax.nn.logsumexp(full), sub_image, rtol=1e-5)
    # whatever the missing pixels hold, NaN included, changes nothing
    poisoned = x.at[missing_idx].set(jnp.nan)
    np.testing.assert_allclose(vae.log_likelihood(bernoulli_vae, poisoned, z, mask), sub_image,
                               rtol=1e-5)
    np.testing.assert_allclose(
        vae.log_joint(bernoulli_vae, x, z, mask),
        sub_image + stats.norm.logpdf(np.asarray(z)).sum(), rtol=1e-5)


def test_masked_gaussian_vae_and_estimators_accept_the_mask():
    params = vae.init(jax.random.PRNGKey(1), data_dim=5, latent_dim=2, hidden_dims=(4,),
                      likelihood="gaussian")
    x, z = jnp.linspace(-1, 1, 5), jnp.array([0.2, 0.1])
    mask = np.array([True, False, True, True, False])
    p = vae.decoder(params, z)
    expected = stats.norm.logpdf(np.asarray(x)[mask], np.asarray(p.mean())[mask],
                                 np.asarray(p.stddev())[mask]).sum()
    np.testing.assert_allclose(vae.log_likelihood(params, x, z, mask), expected, rtol=1e-5)
    log_joint = functools.partial(vae.log_joint, params, x, mask=mask)
    q = vae.encoder(params, x, mask)
    value = jax.jit(lambda k: jlvm.log_marginal_is(k, log_joint, q, 100))(jax.random.PRNGKey(0))
    assert np.isfinite(value)


def test_masked_vae_errors(bernoulli_vae):
    x, z = jnp.zeros(8), jnp.zeros(2)
    with pytest.raises(ValueError, match="mask must have shape"):
        vae.log_likelihood(bernoulli_vae, x, z, np.ones(7, bool))
    with pytest.raises(ValueError, match="nothing observed"):
        vae.log_joint(bernoulli_vae, x, z, np.zeros(8, bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        vae.encoder(bernoulli_vae, x, np.ones((8, 1), bool))


def test_observed_values_fills_and_starting_points_are_checked(nade):
    mask = np.array([True, True, False, False] + [True] * 8)
    x = jnp.zeros(12)
    log_prob = functools.partial(autoregressive.log_prob, nade)
    with pytest.raises(TypeError, match="log_prob must be a function"):
        missing.log_joint_with_missing("f", x, mask)
    with pytest.raises(ValueError, match="NaN or infinite values at observed entries"):
        missing.log_joint_with_missing(log_prob, x.at[0].set(jnp.nan), mask)
    missing.log_joint_with_missing(log_prob, x.at[2].set(jnp.nan), mask)  # missing: fine
    with pytest.raises(ValueError, match="z holds 1 NaN"):
        missing.complete(x, jnp.array([jnp.nan, 0.0]), mask)
    np.testing.assert_array_equal(missing.complete(x, [1, 0], mask)[2:4], [1.0, 0.0])
    with pytest.raises(ValueError, match="init_logits holds 1 NaN"):
        missing.fit_mean_field(jax.random.PRNGKey(0), lambda z: jnp.sum(z) * 1.0, 2,
                               init_logits=jnp.array([jnp.nan, 0.0]))


# ----------------------------------------------------------------------- imputation


def _linear_gaussian_model():
    """Probabilistic PCA written as a jlvm.Model with a mask: its E[x_mis | x_obs] and
    Cov[x_mis | x_obs] are known exactly (W p(z | x_obs) + b, W Cov W^T + s^2 I)."""
    import distrax

    from jlvm.models import linear_gaussian

    params = linear_gaussian.init(jax.random.PRNGKey(3), data_dim=6, latent_dim=2,
                                  noise_std=0.5)

    def log_joint(p, x, z, mask=None):
        per_entry = stats_norm_logpdf(x, p.W @ z + p.b, p.noise_std)
        if mask is not None:
            per_entry = jnp.where(mask, per_entry, 0.0)
        return jnp.sum(per_entry) - 0.5 * z @ z - math.log(2 * math.pi)

    def encoder(p, x, mask=None):  # a deliberately too wide q: IS must correct it
        exact = linear_gaussian.posterior(p, x, mask)
        return distrax.MultivariateNormalDiag(exact.mean(),
                                              1.5 * jnp.sqrt(jnp.diag(exact.covariance())))

    def decoder(p, z):
        return distrax.MultivariateNormalDiag(p.W @ z + p.b, p.noise_std * jnp.ones(6))

    return jlvm.Model(lambda key: params, log_joint, encoder, decoder=decoder), params


def stats_norm_logpdf(x, mean, scale):
    return -0.5 * ((x - mean) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def test_impute_is_the_exact_conditional_mean_within_its_error():
    from jlvm.models import linear_gaussian

    model, params = _linear_gaussian_model()
    x = jnp.array([0.3, np.nan, 1.0, np.nan, 0.2, -1.0])
    mask = ~np.isnan(np.asarray(x))
    out = jax.jit(lambda k: missing.impute(k, model, params, x, mask, 4000, num_draws=4000,
                                           chunk_size=1500))(jax.random.PRNGKey(0))
    posterior = linear_gaussian.posterior(params, x, mask)
    exact = np.asarray(params.W @ posterior.mean() + params.b)
    spread = np.sqrt(np.diag(np.asarray(params.W @ posterior.covariance() @ params.W.T))
                     + 0.25)
    missing_entries = ~mask
    # self-normalized IS: standard error about sd(x_mis | x_obs) / sqrt(ESS)
    se = spread / np.sqrt(float(out.effective_sample_size))
    assert np.all(np.abs(np.asarray(out.mean) - exact)[missing_entries]
                  < 4 * se[missing_entries])
    np.testing.assert_array_equal(np.asarray(out.mean)[mask], np.asarray(x)[mask])
    draws = np.asarray(out.draws, np.float64)
    assert np.all(np.abs(draws.mean(0) - exact)[missing_entries]
                  < 4 * se[missing_entries] + 4 * spread[missing_entries] / np.sqrt(4000))
    # the spread of multiple imputations is the conditional standard deviation (5%)
    np.testing.assert_allclose(draws.std(0)[missing_entries], spread[missing_entries],
                               rtol=0.05)
    np.testing.assert_array_equal(draws[:, mask], np.broadcast_to(np.asarray(x)[mask],
                                                                  (4000, 4)))
    zeros = missing.impute(jax.random.PRNGKey(0), model, params, jnp.nan_to_num(x), mask, 4000,
                           chunk_size=1500)
    np.testing.assert_allclose(zeros.mean, out.mean, rtol=1e-6)


def test_impute_names_a_decoder_that_returns_no_distribution():
    """An array's own mean() is one number: every missing entry got it."""
    model, params = _linear_gaussian_model()
    x, mask = jnp.array([0.3, 0.0, 1.0, 0.0, 0.2, -1.0]), np.arange(6) % 2 == 0
    for decoder, error in ((lambda p, z: p.W @ z + p.b, TypeError),
                           (lambda p, z: {"mean": p.W @ z + p.b}, TypeError),
                           (lambda p, z: distrax.MultivariateNormalDiag(jnp.zeros(4),
                                                                        jnp.ones(4)),
                            ValueError)):
        with pytest.raises(error, match=r"model\.decoder"):
            missing.impute(jax.random.PRNGKey(0), model._replace(decoder=decoder), params, x,
                           mask, 10)


def test_impute_is_the_same_for_every_chunk_size_when_some_weights_are_zero():
    """A chunk of draws that all have weight 0 (log w = -inf) made the running
    logsumexp NaN (-inf - -inf), so the answer depended on the chunk size."""
    model, params = _linear_gaussian_model()

    def log_joint(p, x, z, mask=None):  # probability 0 wherever z_0 < 0
        return jnp.where(z[0] < 0, -jnp.inf, model.log_joint(p, x, z, mask))

    cut = model._replace(log_joint=log_joint)
    x, mask = jnp.array([0.3, np.nan, 1.0, np.nan, 0.2, -1.0]), np.arange(6) % 2 == 0
    results = [missing.impute(jax.random.PRNGKey(0), cut, params, x, mask, 12, chunk_size=size,
                              num_draws=np.int64(3)) for size in (1, 12)]
    assert np.all(np.isfinite(np.asarray(results[0].mean)))
    for other in results[1:]:
        np.testing.assert_allclose(other.mean, results[0].mean, rtol=1e-5)
        np.testing.assert_allclose(other.effective_sample_size,
                                   results[0].effective_sample_size, rtol=1e-5)
    assert results[0].draws.shape == (3, 6)
    with pytest.raises(ValueError, match="num_draws must be >= 0"):
        missing.impute(jax.random.PRNGKey(0), cut, params, x, mask, 12, num_draws=-1)
    with pytest.raises(ValueError, match="num_draws"):
        missing.impute(jax.random.PRNGKey(0), cut, params, x, mask, 12, num_draws=True)
