"""jlvm.ais against the exact log p(x) of linear-Gaussian models (SciPy's closed form), with
the prior and a deliberately poor diagonal q as starts: unbiasedness of the weights in both
directions, the BDMC sandwich closing, AIS against IS at equal cost, and each pitfall that
would break E[w] = p(x)."""

import functools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import linear_gaussian_marginal, linear_gaussian_posterior, mean_and_standard_error

import jlvm
from jlvm import _checks, ais
from jlvm.models import linear_gaussian

REPEATS = 300  # independent AIS runs behind each statistical assertion


def _problem(data_dim, latent_dim, noise_std, seed=1):
    params = linear_gaussian.init(jax.random.PRNGKey(seed), data_dim, latent_dim,
                                  noise_std=noise_std)
    x, z = linear_gaussian.sample(jax.random.PRNGKey(seed + 1), params, 1)
    x, z = x[0], z[0]
    W, b, s = (np.asarray(a, np.float64) for a in params)
    mean, cov = linear_gaussian_posterior(W, b, s, x)
    return dict(params=params, x=x, z=z, exact=float(linear_gaussian_marginal(W, b, s).logpdf(
        np.asarray(x, np.float64))), log_joint=functools.partial(linear_gaussian.log_joint,
                                                                 params, x),
        mean=mean, cov=cov, latent_dim=latent_dim)


@pytest.fixture(scope="module")
def problem():
    """Six observed dimensions, two latent: a posterior three to ten times narrower than
    the prior."""
    return _problem(6, 2, 0.4)


def _starts(problem):
    """(prior, a poor diagonal q: shifted by 1.5 posterior stds, 0.6 times as wide) as one
    distribution family, so one compiled program serves both."""
    std = np.sqrt(np.diag(problem["cov"]))
    loc = np.stack([np.zeros(2), problem["mean"] + 1.5 * std]).astype(np.float32)
    scale = np.stack([np.ones(2), 0.6 * std]).astype(np.float32)
    return loc, scale


def _runs(estimate, problem, count=REPEATS):
    """estimate(key, initial) for each start and `count` keys: [2, count] float64."""
    loc, scale = _starts(problem)
    keys = jax.random.split(jax.random.PRNGKey(7), count)
    run = jax.jit(jax.vmap(jax.vmap(
        lambda k, m, s: estimate(k, distrax.MultivariateNormalDiag(m, s)),
        (0, None, None)), (None, 0, 0)))
    return np.asarray(run(keys, loc, scale), np.float64)


def _posterior_draws(problem, key, count):
    return jnp.asarray(np.random.default_rng(key).multivariate_normal(
        problem["mean"], problem["cov"], count), jnp.float32)


def _unbiased_for(values, target_log, sign=1.0):
    """E[exp(sign * (values - target_log))] = 1 within 4 standard errors; returns
    (mean, standard error) of the ratio."""
    ratio = np.exp(sign * (values - target_log))
    mean, error = mean_and_standard_error(ratio)
    assert abs(mean - 1.0) < 4 * error + 1e-3, (mean, error)
    return mean, error


# --------------------------------------------------------------------- identities


def test_schedules_run_from_exactly_zero_to_exactly_one():
    for kind in ais.SCHEDULES:
        for steps in (1, 2, 7, 1000):
            betas = ais.schedule(steps, kind)
            assert betas.shape == (steps + 1,) and betas[0] == 0.0 and betas[-1] == 1.0
            assert np.all(np.diff(betas) > 0)
            assert np.float32(betas[-1]) == 1.0
    sigmoid = ais.schedule(1000, "sigmoidal")
    assert np.diff(sigmoid)[0] < np.diff(sigmoid)[500] / 10  # small steps at the ends
    assert ais.schedule(1000, "geometric")[1] == pytest.approx(1e-4)


def test_one_step_is_importance_sampling_with_the_same_draws(problem):
    """T = 1: no move, the weight is p(x, z_0) / initial(z_0), z_0 drawn with the chains'
    key (split(key, 3)[1])."""
    key = jax.random.PRNGKey(3)
    q = distrax.MultivariateNormalDiag(jnp.asarray(problem["mean"], jnp.float32),
                                       jnp.ones(2))
    got = jlvm.log_marginal_ais(key, problem["log_joint"], q, 1, num_chains=5, step_size=0.3)
    z, log_q = _checks.sample_and_log_prob(q, jax.random.split(key, 3)[1], 5)
    log_w = jax.vmap(problem["log_joint"])(z) - log_q
    np.testing.assert_allclose(got, jax.nn.logsumexp(log_w) - math.log(5), rtol=1e-6)


def test_reverse_from_one_step_is_the_harmonic_mean_of_the_draws(problem):
    z = _posterior_draws(problem, 0, 4)
    prior = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    got = jlvm.log_marginal_ais_reverse(jax.random.PRNGKey(0), problem["log_joint"], prior,
                                        z, 1, step_size=0.3)
    log_likelihood = jax.vmap(problem["log_joint"])(z) - _checks.log_prob(prior, z)
    np.testing.assert_allclose(got, math.log(4) - jax.nn.logsumexp(-log_likelihood),
                               rtol=1e-6)


# --------------------------------------------------------------------- unbiasedness


def test_forward_weights_are_unbiased_for_p_x_and_the_estimate_is_below_log_p_x(problem):
    """With a pilot-tuned step size: E[exp(estimate)] = p(x) from either start, and the
    estimate's mean lies below log p(x) (Jensen)."""
    values = _runs(lambda k, q: jlvm.log_marginal_ais(k, problem["log_joint"], q, 10,
                                                      num_chains=2, num_leapfrog=5), problem)
    for start in values:
        _unbiased_for(start, problem["exact"])
        mean, error = mean_and_standard_error(start)
        assert mean < problem["exact"] + 2 * error
    # the poor q is a real test: its AIS is visibly off log p(x) at this length
    assert np.mean(values[1]) < problem["exact"] - 0.02


def test_reverse_weights_are_unbiased_for_one_over_p_x_and_the_estimate_is_above(problem):
    z = _posterior_draws(problem, 1, 2)
    values = _runs(lambda k, q: jlvm.log_marginal_ais_reverse(
        k, problem["log_joint"], q, z, 10, num_leapfrog=5), problem)
    for start in values:
        _unbiased_for(start, problem["exact"], sign=-1.0)
        mean, error = mean_and_standard_error(start)
        assert mean > problem["exact"] - 2 * error


def test_a_large_step_size_stays_unbiased_thanks_to_the_metropolis_correction(problem):
    """Step size 1.2, 4 leapfrog steps: the leapfrog's energy error is large and only the
    accept/reject step keeps f_b invariant. With the correction removed (a proposal that
    always accepts), this test and both unbiasedness tests above fail: checked by mutation,
    as were the increment taken after the move and step sizes adapted along the estimating
    chains (caught by the pilot test below)."""
    values = _runs(lambda k, q: jlvm.log_marginal_ais(
        k, problem["log_joint"], q, 6, num_chains=2, num_leapfrog=4, step_size=1.2), problem)
    for start in values:
        _unbiased_for(start, problem["exact"])


def test_the_pilot_is_frozen_before_the_chains_run(problem):
    """No step size means: tune on the pilot's own chains (key split(key, 3)[0]), then run
    with those sizes fixed: the same value as passing them explicitly."""
    key = jax.random.PRNGKey(11)
    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    sizes = ais.tune_step_sizes(jax.random.split(key, 3)[0], problem["log_joint"], q, 12,
                                num_leapfrog=3)
    assert sizes.shape == (12,) and np.all(np.asarray(sizes) > 0)
    tuned = jlvm.log_marginal_ais(key, problem["log_joint"], q, 12, num_leapfrog=3)
    frozen = jlvm.log_marginal_ais(key, problem["log_joint"], q, 12, num_leapfrog=3,
                                   step_size=sizes)
    np.testing.assert_allclose(tuned, frozen, rtol=1e-6)
    # and the tuned sizes are reasonable: a pilot run at them accepts near 0.65
    betas = jnp.asarray(ais.schedule(12), jnp.float32)
    path = ais._Path(problem["log_joint"], q, (2,))
    z = _checks.sample(q, jax.random.PRNGKey(5), 64)
    _, _, acceptance = jax.jit(lambda z: ais._chains(jax.random.PRNGKey(6), path, z, betas,
                                                     sizes[:-1], jnp.ones(2), 3))(z)
    assert 0.4 < float(jnp.mean(acceptance)) < 0.9


# --------------------------------------------------------------------- accuracy


def test_bdmc_gap_closes_as_steps_grow(problem):
    z = _posterior_draws(problem, 2, 4)
    prior = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))

    def gap(steps):
        def one(k):
            return (jlvm.log_marginal_ais_reverse(k, problem["log_joint"], prior, z, steps,
                                                  num_leapfrog=4)
                    - jlvm.log_marginal_ais(k, problem["log_joint"], prior, steps,
                                            num_chains=4, num_leapfrog=4))
        keys = jax.random.split(jax.random.PRNGKey(9), 40)
        return mean_and_standard_error(np.asarray(jax.jit(jax.vmap(one))(keys), np.float64))

    short, long = gap(3), gap(60)
    assert short[0] > 0.5 and long[0] > -2 * long[1]  # an upper bound above a lower one
    assert long[0] < short[0] / 5


def test_ais_from_the_prior_beats_is_from_the_prior_at_equal_cost():
    """A narrow posterior (20 observations, noise 0.1): AIS with 100 geometric steps of 4
    chains and 5 leapfrog steps (pilot included) against IS with as many log-joint
    gradients' worth of draws."""
    hard = _problem(20, 3, 0.1, seed=4)
    prior = distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
    steps, chains, leapfrog = 100, 4, 5
    cost = (chains * steps + ais.PILOT_CHAINS * ais.PILOT_STEPS) * (leapfrog + 1)
    keys = jax.random.split(jax.random.PRNGKey(2), 20)
    by_ais = jax.jit(jax.vmap(lambda k: jlvm.log_marginal_ais(
        k, hard["log_joint"], prior, steps, num_chains=chains, num_leapfrog=leapfrog,
        schedule="geometric")))(keys)
    by_is = jax.jit(jax.vmap(lambda k: jlvm.log_marginal_is(
        k, hard["log_joint"], prior, cost)))(keys)
    error_ais = np.sqrt(np.mean((np.asarray(by_ais) - hard["exact"]) ** 2))
    error_is = np.sqrt(np.mean((np.asarray(by_is) - hard["exact"]) ** 2))
    assert error_ais < error_is / 3, (error_ais, error_is)


# --------------------------------------------------------------------- compositions


def test_jit_and_vmap_agree_with_eager(problem):
    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    eager = [jlvm.log_marginal_ais(k, problem["log_joint"], q, 5, num_chains=3,
                                   num_leapfrog=2, step_size=0.3) for k in keys]
    batched = jax.jit(jax.vmap(lambda k: jlvm.log_marginal_ais(
        k, problem["log_joint"], q, 5, num_chains=3, num_leapfrog=2, step_size=0.3)))(keys)
    np.testing.assert_allclose(batched, eager, rtol=1e-5)


def test_event_shapes_beyond_a_vector_move_as_one_flat_z(problem):
    """A z of shape [1, 2] is the same model as z [2]: the same estimate."""
    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    q2 = distrax.Independent(distrax.Normal(jnp.zeros((1, 2)), jnp.ones((1, 2))), 2)
    key = jax.random.PRNGKey(8)
    flat = jlvm.log_marginal_ais(key, problem["log_joint"], q, 4, num_chains=2,
                                 step_size=0.5, num_leapfrog=2)
    square = jlvm.log_marginal_ais(key, lambda z: problem["log_joint"](z[0]), q2, 4,
                                   num_chains=2, step_size=0.5, num_leapfrog=2)
    np.testing.assert_allclose(flat, square, rtol=1e-5)


# --------------------------------------------------------------------- bad arguments


def test_bad_arguments_are_one_clear_error_each(problem):
    key = jax.random.PRNGKey(0)
    lj = problem["log_joint"]
    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        jlvm.log_marginal_ais(key, lj, q, 0)
    with pytest.raises(ValueError, match="num_chains must be >= 1"):
        jlvm.log_marginal_ais(key, lj, q, 3, num_chains=0)
    with pytest.raises(ValueError, match=r"z_posterior must have shape \[num_chains, \*event\]"):
        jlvm.log_marginal_ais_reverse(key, lj, q, jnp.zeros((4, 3)), 3)
    with pytest.raises(ValueError, match=r"z_posterior must have shape"):
        jlvm.log_marginal_ais_reverse(key, lj, q, jnp.zeros(2), 3)
    with pytest.raises(ValueError, match="z_posterior holds 1 NaN"):
        jlvm.log_marginal_ais_reverse(key, lj, q, jnp.array([[0.0, jnp.nan]]), 3)
    bits = distrax.Independent(distrax.Bernoulli(logits=jnp.zeros(2)), 1)
    with pytest.raises(ValueError, match="initial must be a continuous distribution"):
        jlvm.log_marginal_ais(key, lambda z: jnp.sum(z * 1.0), bits, 3)
    with pytest.raises(ValueError, match="initial must have batch_shape"):
        jlvm.log_marginal_ais(key, lj, distrax.Normal(jnp.zeros(2), 1.0), 3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        jlvm.log_marginal_ais(key, lj, q, 3, schedule="linear")
    with pytest.raises(ValueError, match="schedule must rise strictly"):
        jlvm.log_marginal_ais(key, lj, q, 2, schedule=np.array([0.0, 0.7, 0.5]))
    with pytest.raises(ValueError, match=r"step_size must be None, a number or an array"):
        jlvm.log_marginal_ais(key, lj, q, 3, step_size=jnp.ones(2))
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        jlvm.log_marginal_ais(key, lj, q, 3, step_size=-0.1)
    with pytest.raises(ValueError, match="log_joint must map ONE latent value"):
        jlvm.log_marginal_ais(key, lambda z: z, q, 3)
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        jlvm.log_marginal_ais(0, lj, q, 3)


def test_bdmc_brackets_the_exact_log_likelihood_of_simulated_data():
    """PPCA (exact log p(x)): the simulated rows come from the model, forward AIS from the
    prior is below their exact log p(x) on average and reverse AIS above."""
    from jlvm.runs.kinds import ppca

    model, exact = ppca.model(4, 2)
    params = {"W": jax.random.normal(jax.random.PRNGKey(3), (4, 2)), "b": jnp.ones(4),
              "log_noise": jnp.log(jnp.asarray(0.3))}
    sandwich = ais.bdmc(jax.random.PRNGKey(0), model, params, 24, 8, num_chains=2,
                        initial="prior", num_leapfrog=3)
    assert sandwich.x.shape == (24, 4) and sandwich.z.shape == (24, 2)
    truth = np.asarray(jax.vmap(lambda x: linear_gaussian.log_marginal(exact(params), x))(
        sandwich.x))
    lower, lower_se = mean_and_standard_error(np.asarray(sandwich.lower) - truth)
    upper, upper_se = mean_and_standard_error(np.asarray(sandwich.upper) - truth)
    assert lower < 2 * lower_se and upper > -2 * upper_se
    assert upper - lower > 0.05  # 8 steps from the prior leave a visible gap
    with pytest.raises(TypeError, match=r"model\.decoder must be a function"):
        ais.bdmc(jax.random.PRNGKey(0), model._replace(decoder=None), params, 2, 2)


def test_bdmc_compiles_once_per_model_and_settings():
    """A second call, with a model built anew alike (a notebook cell run again, or the
    command's next block of simulated points), compiles nothing and draws new points."""
    from jlvm.models import vae

    compiled = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, seconds, **kwargs: compiled.append(name)
        if name == "/jax/core/compile/backend_compile_duration" else None)
    lowers = []
    for seed in range(2):
        model = vae.model(6, 2, hidden_dims=(4,))
        params = model.init(jax.random.PRNGKey(0))
        compiled.clear()
        sandwich = ais.bdmc(jax.random.PRNGKey(seed), model, params, 4, 2, num_chains=2,
                            initial="prior", num_leapfrog=2)
        lowers.append(np.asarray(sandwich.lower))
        assert bool(compiled) == (seed == 0)
    assert not np.array_equal(*lowers)
