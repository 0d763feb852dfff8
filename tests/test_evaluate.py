"""jlvm.evaluate: data-set-wide IS log-likelihood and ELBO, chunked and batched."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlvm
from jlvm import _batches, evaluate
from jlvm.models import vae


@pytest.fixture(scope="module")
def model():
    return vae.init(jax.random.PRNGKey(0), data_dim=10, latent_dim=2, hidden_dims=(8,))


X = (jax.random.uniform(jax.random.PRNGKey(1), (23, 10)) < 0.4).astype(jnp.float32)


def _per_example(estimate, keys, X):
    """The oracle: ``estimate(key, x)`` of each example on its own, vmapped and compiled
    (an eager loop over examples compiles every operation of the estimator one by one)."""
    return np.asarray(jax.jit(jax.vmap(estimate))(keys, X))


def test_matches_the_per_example_estimator_whatever_the_batching(model):
    key = jax.random.PRNGKey(2)
    a = evaluate.vae_log_likelihood(key, model, X, 64, batch_size=5, chunk_size=10)
    b = evaluate.vae_log_likelihood(key, model, X, 64, batch_size=23, chunk_size=64)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    keys = jax.random.split(key, 25)  # batch_size 5 pads 23 rows to 25 keys
    direct = _per_example(lambda k, x: jlvm.log_marginal_is(
        k, functools.partial(vae.log_joint, model, x), vae.encoder(model, x), 64),
        keys[:X.shape[0]], X)
    np.testing.assert_allclose(a, direct, rtol=1e-5)


def test_is_log_likelihood_is_above_the_elbo(model):
    ll = evaluate.vae_log_likelihood(jax.random.PRNGKey(3), model, X, 500)
    elbo = evaluate.vae_elbo(jax.random.PRNGKey(4), model, X, 500)
    assert ll.shape == elbo.shape == (23,)
    assert np.all(np.asarray(ll) > np.asarray(elbo))


def test_summary_and_bits_per_dim():
    mean, se = evaluate.summary(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and abs(se - 1 / np.sqrt(3)) < 1e-12
    assert abs(evaluate.bits_per_dim(-np.log(2) * 784, 784) - 1.0) < 1e-12


def test_masked_evaluation(model):
    key = jax.random.PRNGKey(5)
    everything = np.ones(10, bool)
    np.testing.assert_allclose(
        evaluate.vae_log_likelihood(key, model, X, 50, mask=everything),
        evaluate.vae_log_likelihood(key, model, X, 50), rtol=1e-6)
    half = np.arange(10) >= 5
    masked = evaluate.vae_log_likelihood(key, model, X, 200, mask=half)
    direct = _per_example(lambda k, x: jlvm.log_marginal_is(
        k, functools.partial(vae.log_joint, model, x, mask=half), vae.encoder(model, x, half),
        200), jax.random.split(key, 25)[:X.shape[0]], X)
    np.testing.assert_allclose(masked, direct, rtol=1e-5)
    # fewer observed pixels: a more probable observation
    assert np.mean(np.asarray(masked)) > np.mean(np.asarray(
        evaluate.vae_log_likelihood(key, model, X, 200)))
    with pytest.raises(ValueError, match="mask"):
        evaluate.vae_elbo(key, model, X, mask=np.ones(9, bool))


def test_nothing_missing_reaches_the_result_and_bad_arguments_are_named(model):
    key = jax.random.PRNGKey(6)
    half = np.arange(10) >= 5
    holey = X.at[:, :5].set(jnp.nan)  # NaN where the mask says missing: allowed
    for function in (evaluate.vae_log_likelihood, evaluate.vae_elbo):
        np.testing.assert_allclose(function(key, model, holey, 20, mask=half),
                                   function(key, model, X, 20, mask=half), rtol=1e-6)
        with pytest.raises(ValueError, match="NaN or infinite values at observed entries"):
            function(key, model, holey, 20)
        with pytest.raises(TypeError, match="key must be"):
            function(0, model, X, 20)
        with pytest.raises(ValueError, match=r"X must have shape \[N, D\]"):
            function(key, model, X[0], 20)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="chunk_size"):
            evaluate.vae_log_likelihood(key, model, X, 20, chunk_size=bad)
    mean, se = evaluate.summary(np.array([-3.0]))
    assert mean == -3.0 and se is None  # one value has no standard error (and NaN is not JSON)


def test_summaries_and_conversions_refuse_what_means_nothing(model):
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate.summary(np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="values must be numbers"):
        evaluate.summary("ab")
    for bad, error in (((-100.0, 0), ValueError), ((-100.0, -3), ValueError),
                       ((np.nan, 64), ValueError), (("abc", 64), TypeError),
                       ((5.0, 64), ValueError)):  # a positive log-probability
        with pytest.raises(error):
            evaluate.bits_per_dim(*bad)
    with pytest.raises(TypeError, match=r"vae\.Params"):
        evaluate.vae_log_likelihood(jax.random.PRNGKey(0), None, X, 10)
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        evaluate.vae_elbo(jax.random.PRNGKey(0), model, X, mesh="m")


def test_the_chunk_of_draws_keeps_the_temporaries_within_the_budget(model):
    # a decoder with a hidden layer of 4096: 20 rows x 200 draws hold 130 MB of activations;
    # the chunk is chosen from XLA's own count of the temporaries
    wide = evaluate._vae_model()
    params = vae.init(jax.random.PRNGKey(0), data_dim=10, latent_dim=2, hidden_dims=(4096,))
    budget = 2**23  # 8 MiB
    chunk = evaluate.chunk_size_for(wide, params, X, 200, batch_size=20, budget_bytes=budget)
    temp = evaluate._compiled(wide, "is", 200, 20, chunk, None).lower(
        jax.random.PRNGKey(0), params, X, None, None).compile().memory_analysis()
    assert 8 <= chunk < 200 and temp.temp_size_in_bytes <= budget, (chunk, temp)
    # the chunk changes the memory, not the values
    key = jax.random.PRNGKey(3)
    np.testing.assert_allclose(
        evaluate.log_likelihood(key, wide, params, X, 200, batch_size=20, chunk_size=chunk),
        evaluate.log_likelihood(key, wide, params, X, 200, batch_size=20, chunk_size=200),
        rtol=1e-5)
    # a small model gets the most draws (traced only), at most num_samples
    assert evaluate.chunk_size_for(wide, model, X, 64) == 64
    assert evaluate.chunk_size_for(wide, model, X, 5000) == 500
    # a flow's q draws with PRNG keys inside log_joint's program too (no bytes to count)
    flow = vae.init(jax.random.PRNGKey(0), data_dim=10, latent_dim=2, hidden_dims=(8,),
                    posterior="flow", prior="mixture:3")
    assert evaluate.chunk_size_for(wide, flow, X, 300) == 300
    with pytest.raises(ValueError, match="num_samples"):
        evaluate.chunk_size_for(wide, model, X, 0)
    for name in ("most", "budget_bytes"):
        with pytest.raises(ValueError, match=name):
            evaluate.chunk_size_for(wide, model, X, 10, **{name: 0})


def test_an_identical_new_model_is_not_compiled_again():
    """Two models built alike (a notebook cell run twice) share one compiled evaluation:
    the second call compiles nothing, and the cache of compiled evaluations is bounded."""
    compiled = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, seconds, **kwargs: compiled.append(name)
        if name == "/jax/core/compile/backend_compile_duration" else None)
    X = (jax.random.uniform(jax.random.PRNGKey(7), (30, 12)) < 0.4).astype(jnp.float32)
    values = []
    for seed in range(2):
        model = vae.model(12, 2, hidden_dims=(8,))  # a new model, the same settings
        params = model.init(jax.random.PRNGKey(0))
        compiled.clear()
        values.append(evaluate.log_likelihood(jax.random.PRNGKey(seed), model, params, X, 16))
        if seed == 0:
            assert compiled  # the first call compiles
    assert compiled == []  # the second does not
    assert not np.array_equal(values[0], values[1])  # it did run, with its own key
    assert evaluate._compile.cache_info().maxsize == _batches.COMPILED_MOST

    # a model whose functions cannot be compared (an unhashable callable) is evaluated too,
    # compiled for each call
    class Unhashable:
        __hash__ = None

        def __call__(self, params, x, mask=None):
            return vae.encoder(params, x, mask)

    model = vae.model(12, 2, hidden_dims=(8,))._replace(encoder=Unhashable())
    np.testing.assert_allclose(
        evaluate.log_likelihood(jax.random.PRNGKey(0), model, params, X, 16), values[0],
        rtol=1e-6)


@pytest.fixture(scope="module")
def ppca():
    """Probabilistic PCA as a jlvm.Model (the ppca kind's), its encoder the exact
    posterior; 7 rows drawn from it and their exact log p(x)."""
    from jlvm.models import linear_gaussian
    from jlvm.runs.kinds import ppca as ppca_kind

    model, exact = ppca_kind.model(5, 2)
    params = {"W": jax.random.normal(jax.random.PRNGKey(3), (5, 2)),
              "b": jnp.zeros(5), "log_noise": jnp.log(jnp.asarray(0.5))}
    rows = linear_gaussian.sample(jax.random.PRNGKey(4), exact(params), 7)[0]
    truth = jax.vmap(lambda x: linear_gaussian.log_marginal(exact(params), x))(rows)
    return model, params, rows, np.asarray(truth)


def test_ais_over_a_data_set_is_the_per_example_estimator_whatever_the_batching(ppca):
    model, params, rows, _ = ppca
    key = jax.random.PRNGKey(6)
    settings = dict(num_chains=3, initial="prior", num_leapfrog=2, step_size=0.4)
    a = evaluate.log_likelihood_ais(key, model, params, rows, 4, batch_size=3, **settings)
    b = evaluate.log_likelihood_ais(key, model, params, rows, 4, batch_size=7, **settings)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    prior = model.prior(params)
    direct = _per_example(lambda k, x: jlvm.log_marginal_ais(
        k, functools.partial(model.log_joint, params, x), prior, 4, num_chains=3,
        num_leapfrog=2, step_size=0.4), jax.random.split(key, 9)[:7], rows)
    np.testing.assert_allclose(a, direct, rtol=1e-5)


def test_ais_from_the_exact_posterior_is_exact_and_from_the_prior_close(ppca):
    """From q = p(z | x) every weight is p(x) (any number of steps); from the prior, a
    lower bound that 200 steps bring within a few tenths of a nat (the log-weights' spread
    shrinks as 1 / sqrt(steps): 0.5 nats here at 300 steps, measured)."""
    model, params, rows, truth = ppca
    exact = evaluate.log_likelihood_ais(jax.random.PRNGKey(0), model, params, rows, 2,
                                        num_chains=2, initial="encoder", num_leapfrog=2)
    np.testing.assert_allclose(exact, truth, atol=2e-4)
    masked = evaluate.log_likelihood_ais(jax.random.PRNGKey(0), model, params, rows, 2,
                                         num_chains=2, initial="encoder", num_leapfrog=2,
                                         mask=np.arange(5) < 3)
    from jlvm.models import linear_gaussian
    from jlvm.runs.kinds import ppca as ppca_kind

    _, to_exact = ppca_kind.model(5, 2)
    observed = jax.vmap(lambda x: linear_gaussian.log_marginal(
        to_exact(params), x, np.arange(5) < 3))(rows)
    np.testing.assert_allclose(masked, observed, atol=2e-4)
    annealed = evaluate.log_likelihood_ais(jax.random.PRNGKey(1), model, params, rows, 200,
                                           num_chains=8, num_leapfrog=2)
    gap = np.asarray(truth) - np.asarray(annealed)
    assert -0.1 < gap.mean() < 0.3, gap


def test_ais_over_a_data_set_refuses_what_it_cannot_do(ppca):
    ppca_model, params, rows, _ = ppca
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="initial must be one of"):
        evaluate.log_likelihood_ais(key, ppca_model, params, rows, 3, initial="posterior")
    with pytest.raises(TypeError, match=r"model\.prior must be a function"):
        evaluate.log_likelihood_ais(key, ppca_model._replace(prior=None), params, rows, 3)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        evaluate.log_likelihood_ais(key, ppca_model, params, rows, 0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        evaluate.log_likelihood_ais(key, ppca_model, params, rows, 3, schedule="cosine")
