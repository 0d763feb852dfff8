"""jlvm.models.priors: the mixture prior against SciPy, and as the VAE's learned prior."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special, stats

from jlvm import data
from jlvm.inference import amortized
from jlvm.models import priors, vae


def test_specs_are_parsed_and_bad_ones_named():
    assert priors.parse("normal") == priors.Spec("normal")
    assert priors.parse("bernoulli") == priors.Spec("bernoulli")
    assert priors.parse("mixture:10") == priors.Spec("mixture", 10)
    assert str(priors.parse("mixture:3")) == "mixture:3"
    for bad in ("mixture", "mixture:0", "mixture:-2", "mixture:2.5", "gmm:3", "Normal", "",
                "mixture:\u00b2", "mixture:\u0663", "mixture:1_0", "mixture: 3", "Bernoulli",
                "bernoulli:3"):
        with pytest.raises(ValueError,
                           match="prior must be 'normal', 'bernoulli' or 'mixture:K'"):
            priors.parse(bad)
    with pytest.raises(TypeError, match="prior must be a string"):
        priors.parse(None)


def test_mixture_log_density_equals_scipys():
    rng = np.random.default_rng(1)
    logits, means = rng.normal(size=3), rng.normal(size=(3, 2))
    log_scales = 0.3 * rng.normal(size=(3, 2))
    z = rng.normal(size=(5, 2)) * 2
    p = priors.mixture(*(jnp.asarray(a, jnp.float32) for a in (logits, means, log_scales)))
    weights = special.log_softmax(logits)
    expected = special.logsumexp(
        [weights[k] + stats.multivariate_normal.logpdf(z, means[k], np.diag(np.exp(2 * s)))
         for k, s in enumerate(log_scales)], axis=0)
    np.testing.assert_allclose(jax.vmap(p.log_prob)(jnp.asarray(z, jnp.float32)), expected,
                               rtol=1e-5)
    far = jnp.full(2, 60.0)  # every component's density underflows float32: logsumexp holds
    assert np.isfinite(float(p.log_prob(far)))


def test_the_vae_learns_its_mixture_prior():
    """log p(x, z) = log sum_k pi_k N(z; mu_k, sigma_k^2) + log p(x | z) with the prior's
    parameters in theta; a step moves them; draws of z follow the mixture (means within 4
    standard errors); the KL form, which needs an analytic KL, is refused at init."""
    X = jnp.asarray(data.digits().train[:32])
    model = vae.model(64, 2, hidden_dims=(8,), prior="mixture:3")
    params = model.init(jax.random.PRNGKey(0))
    p = vae.prior(params)
    z = jnp.array([0.5, -0.2])
    np.testing.assert_allclose(vae.log_joint(params, X[0], z),
                               p.log_prob(z) + vae.log_likelihood(params, X[0], z), rtol=1e-6)
    learner = amortized(model, optax.adam(1e-2))
    state = learner.init(jax.random.PRNGKey(1), X)
    new, metrics = jax.jit(learner.step)(state, X)
    assert bool(metrics["finite"])
    before = np.asarray(state.params.decoder["prior"]["means"][...])
    after = np.asarray(new.params.decoder["prior"]["means"][...])
    assert np.all(np.abs(after - before) > 0)  # every component's mean was trained
    draws = np.asarray(vae.sample_latents(jax.random.PRNGKey(2), params, 4000))
    weights = np.asarray(jax.nn.softmax(p.mixture_distribution.logits))
    mean = weights @ np.asarray(p.components_distribution.mean())
    se = draws.std(0) / np.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * se)
    with pytest.raises(ValueError, match="no closed form"):
        amortized(model, optax.adam(1e-2), elbo_form="kl").init(jax.random.PRNGKey(1), X)


def test_the_bernoulli_prior_is_one_distribution_over_bits_with_learned_logits():
    module = priors.BernoulliPrior(3)
    np.testing.assert_array_equal(module.logits[...], np.zeros(3))
    logits = jnp.array([-1.0, 0.5, 2.0])
    p = priors.bernoulli(logits)
    assert p.event_shape == (3,) and p.batch_shape == ()
    z = np.array([1.0, 0.0, 1.0])
    expected = stats.bernoulli.logpmf(z, special.expit(np.asarray(logits))).sum()
    np.testing.assert_allclose(p.log_prob(jnp.asarray(z)), expected, rtol=1e-6)
    with jax.numpy_rank_promotion("allow"):  # distrax's Bernoulli broadcasts implicitly
        assert p.sample(seed=jax.random.PRNGKey(0)).dtype == jnp.float32
