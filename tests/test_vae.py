"""jlvm.models.vae: the Flax-network likelihoods against hand-written densities."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import stats

import jlvm
from jlvm.models import vae


@pytest.fixture
def bernoulli(key):
    return vae.init(key, data_dim=12, latent_dim=3, hidden_dims=(16, 8))


@pytest.fixture
def gaussian(key):
    return vae.init(key, data_dim=4, latent_dim=2, hidden_dims=(8,), likelihood="gaussian")


def _logits(params, z):
    return np.asarray(nnx.merge(params.decoder_graph, params.decoder)(z)[0], np.float64)


def test_bernoulli_log_joint_is_prior_plus_pixelwise_bernoulli(bernoulli):
    x = (jnp.arange(12) % 3 == 0).astype(jnp.float32)
    z = jnp.array([0.5, -1.0, 2.0])
    probs = 1 / (1 + np.exp(-_logits(bernoulli, z)))
    expected = (stats.norm.logpdf(np.asarray(z)).sum()
                + stats.bernoulli.logpmf(np.asarray(x), probs).sum())
    np.testing.assert_allclose(vae.log_joint(bernoulli, x, z), expected, rtol=1e-5)
    with jax.numpy_rank_promotion("allow"):
        np.testing.assert_allclose(vae.decoder(bernoulli, z).log_prob(x),
                                   vae.log_likelihood(bernoulli, x, z), rtol=1e-5)


def test_bernoulli_likelihood_is_stable_for_saturated_logits(bernoulli):
    z = jnp.array([300.0, -300.0, 300.0])  # saturates the tanh network's logits
    x = jnp.ones(12)
    assert np.isfinite(vae.log_likelihood(bernoulli, x, z))
    assert np.isfinite(vae.log_likelihood(bernoulli, 1 - x, z))


def test_gaussian_log_joint_is_prior_plus_diagonal_gaussian(gaussian):
    x, z = jnp.array([0.1, -0.3, 0.7, 1.2]), jnp.array([0.2, -0.4])
    mean, log_scale = (np.asarray(a, np.float64) for a in
                       nnx.merge(gaussian.decoder_graph, gaussian.decoder)(z))
    expected = (stats.norm.logpdf(np.asarray(z)).sum()
                + stats.norm.logpdf(np.asarray(x), mean, np.exp(log_scale)).sum())
    np.testing.assert_allclose(vae.log_joint(gaussian, x, z), expected, rtol=1e-5)
    np.testing.assert_allclose(vae.decoder(gaussian, z).log_prob(x),
                               vae.log_likelihood(gaussian, x, z), rtol=1e-5)


def test_lecture_example_follows_its_formula(key):
    params = vae.lecture_example(key)
    decoder = nnx.merge(params.decoder_graph, params.decoder)
    A, c = decoder.mean_layer.kernel[...].T, decoder.mean_layer.bias[...]
    B, d = decoder.variance_layer.kernel[...].T, decoder.variance_layer.bias[...]
    z = jnp.array([0.3, -0.8])
    p = vae.decoder(params, z)
    np.testing.assert_allclose(p.mean(), jax.nn.sigmoid(A @ z + c), rtol=1e-6)
    np.testing.assert_allclose(p.variance(), jnp.exp(jax.nn.sigmoid(B @ z + d)), rtol=1e-5)
    x = jnp.array([0.4, 0.6])
    expected = (stats.norm.logpdf(np.asarray(z)).sum()
                + stats.multivariate_normal(np.asarray(p.mean()),
                                            np.diag(np.asarray(p.variance()))).logpdf(x))
    np.testing.assert_allclose(vae.log_joint(params, x, z), expected, rtol=1e-5)


def test_lecture_example_marginal_by_is_agrees_with_quadrature(key):
    """log p(x) = log int N(z; 0, I) p(x|z) dz: a 2-D grid against importance sampling."""
    params = vae.lecture_example(key)
    x = jnp.array([0.5, 0.4])
    grid = jnp.linspace(-7, 7, 281)
    zz = jnp.stack(jnp.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    cell = float(grid[1] - grid[0]) ** 2
    quadrature = jax.nn.logsumexp(jax.vmap(functools.partial(vae.log_joint, params, x))(zz)) \
        + np.log(cell)
    log_joint = functools.partial(vae.log_joint, params, x)
    estimate = jlvm.log_marginal_is(key, log_joint, vae.prior(params), 100_000,
                                    chunk_size=25_000)
    np.testing.assert_allclose(estimate, quadrature, atol=5e-3)


def test_encoder_gives_a_diagonal_gaussian_over_z(bernoulli):
    q = vae.encoder(bernoulli, jnp.ones(12))
    assert q.event_shape == (3,) and q.batch_shape == ()
    bound = jlvm.elbo(jax.random.PRNGKey(0),
                      functools.partial(vae.log_joint, bernoulli, jnp.ones(12)), q, 4)
    assert np.isfinite(bound)


def test_sample_shapes_and_values(bernoulli, gaussian, key):
    x, z = vae.sample(key, bernoulli, 5)
    assert x.shape == (5, 12) and z.shape == (5, 3)
    assert set(np.unique(np.asarray(x))) <= {0.0, 1.0}
    probs = vae.mean_image(bernoulli, z[0])
    assert probs.shape == (12,) and np.all((probs > 0) & (probs < 1))
    x, z = vae.sample(key, gaussian, 5)
    assert x.shape == (5, 4) and x.dtype == jnp.float32


def test_params_are_a_pytree_for_grad_optax_and_jit(bernoulli):
    xs = (jax.random.uniform(jax.random.PRNGKey(1), (8, 12)) < 0.4).astype(jnp.float32)
    traces = []

    def loss(params, key):
        keys = jax.random.split(key, xs.shape[0])

        def one(x, k):
            return jlvm.elbo(k, functools.partial(vae.log_joint, params, x),
                             vae.encoder(params, x), 1)

        return -jnp.mean(jax.vmap(one)(xs, keys))

    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, key):
        traces.append(1)  # runs only while tracing
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    params, opt_state = bernoulli, optimizer.init(bernoulli)
    values = []
    for i in range(150):
        params, opt_state, value = step(params, opt_state, jax.random.PRNGKey(i))
        values.append(float(value))
    assert len(traces) == 1  # compiled once for a fixed batch shape
    assert isinstance(params, vae.Params) and params.latent_dim == 3
    # the negative ELBO falls on this tiny data set (averaged to damp Monte Carlo noise)
    assert np.mean(values[-20:]) < np.mean(values[:20]) - 1.0


def test_bad_inputs_raise_value_errors(bernoulli, key):
    with pytest.raises(ValueError, match="x must have shape"):
        vae.log_joint(bernoulli, jnp.zeros(11), jnp.zeros(3))
    with pytest.raises(ValueError, match="z must have shape"):
        vae.log_joint(bernoulli, jnp.zeros(12), jnp.zeros(2))
    with pytest.raises(ValueError, match="x must have shape"):
        vae.encoder(bernoulli, jnp.zeros((2, 12)))
    with pytest.raises(ValueError, match="likelihood"):
        vae.init(key, 4, 2, likelihood="poisson")
    with pytest.raises(ValueError, match="activation"):
        vae.init(key, 4, 2, activation="swish!")
    with pytest.raises(ValueError, match="latent_dim"):
        vae.init(key, 4, 0)


def test_masks_and_observations_follow_one_rule_everywhere(bernoulli, key):
    """The rules of jlvm.missing.check_mask hold for the VAE too: 0/1 masks, something
    observed; observed pixels must be 0/1 numbers for a Bernoulli likelihood; a missing
    pixel may hold anything, NaN included, and never reaches the result."""
    from jlvm import missing

    x = (jnp.arange(12) % 3 == 0).astype(jnp.float32)
    z = jnp.zeros(3)
    half = jnp.full(12, 0.5)
    for call in (lambda: vae.log_joint(bernoulli, x, z, mask=half),
                 lambda: vae.encoder(bernoulli, x, mask=half),
                 lambda: missing.check_mask(half, 12)):
        with pytest.raises(ValueError, match="mask must hold booleans or 0/1 values"):
            call()
    # a value the Bernoulli cannot take has probability 0, eagerly and under jit alike (it
    # was a ValueError eagerly and a finite number under jit); data sets are checked where
    # they are read (likelihoods.check_values: tests/test_likelihoods.py)
    jitted = jax.jit(vae.log_joint)
    for log_joint in (vae.log_joint, jitted):
        assert float(log_joint(bernoulli, x.at[0].set(0.3), z)) == -np.inf
        assert float(log_joint(bernoulli, x.at[0].set(0.3), z, jnp.arange(12) > 0)) > -np.inf
    with pytest.raises(ValueError, match="NaN or infinite values at observed entries"):
        vae.log_joint(bernoulli, x.at[0].set(jnp.nan), z)
    assert np.isnan(float(jitted(bernoulli, x.at[0].set(jnp.nan), z)))  # NaN, not -inf
    mask = jnp.arange(12) >= 4
    holey = x.at[:4].set(jnp.nan)
    np.testing.assert_allclose(vae.log_joint(bernoulli, holey, z, mask=mask),
                               vae.log_joint(bernoulli, x.at[:4].set(0.0), z, mask=mask))
    q = vae.encoder(bernoulli, holey, mask=mask)
    assert np.all(np.isfinite(np.asarray(q.mean())))
    with pytest.raises(TypeError, match="mask under jit must be boolean"):
        jax.jit(lambda m: vae.log_joint(bernoulli, x, z, mask=m))(mask.astype(jnp.float32))


def test_wrong_types_name_the_argument(key):
    with pytest.raises(TypeError, match="hidden_dims must be a sequence"):
        vae.init(key, data_dim=4, latent_dim=2, hidden_dims=5)
    with pytest.raises(ValueError, match=r"hidden_dims\[1\] must be >= 1"):
        vae.init(key, data_dim=4, latent_dim=2, hidden_dims=(4, 0))
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        vae.init(0, data_dim=4, latent_dim=2)
    params = vae.init(key, data_dim=4, latent_dim=2, hidden_dims=(4,))
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        vae.sample(3, params, 2)


def test_latents_and_parameters_are_checked(bernoulli):
    x = (jnp.arange(12) % 2).astype(jnp.float32)
    np.testing.assert_allclose(vae.log_joint(bernoulli, x, [0.0, 0.1, 0.2]),
                               vae.log_joint(bernoulli, x, jnp.array([0.0, 0.1, 0.2])))
    with pytest.raises(ValueError, match="z holds 1 NaN"):
        vae.log_joint(bernoulli, x, jnp.array([jnp.nan, 0.0, 0.0]))
    with pytest.raises(TypeError, match=r"vae\.Params"):
        vae.log_joint(None, x, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"params\.likelihood"):
        vae.log_joint(bernoulli.replace(likelihood="poisson"), x, jnp.zeros(3))


def test_a_full_covariance_encoder_is_taken_by_every_learner_and_estimator():
    import distrax

    from jlvm import data, evaluate
    from jlvm.inference import amortized, semi_amortized

    X = jnp.asarray(data.digits().train[:20])
    model = vae.model(64, 3, hidden_dims=(16,), posterior="full")
    params = model.init(jax.random.PRNGKey(0))
    q = vae.encoder(params, X[0])
    assert isinstance(q, distrax.MultivariateNormalTri) and params.posterior == "full"
    covariance = np.asarray(q.covariance())
    assert np.all(np.linalg.eigvalsh(covariance) > 0)
    assert np.any(np.abs(covariance[np.tril_indices(3, -1)]) > 1e-4)  # correlated
    np.testing.assert_allclose(covariance, covariance.T, rtol=1e-6)
    # (the joint form, IWAE and DReG with this family: tests/test_posteriors.py)
    learners = [amortized(model, optax.adam(1e-3), elbo_form="kl"),
                semi_amortized(model, optax.adam(1e-3), inner_steps=2)]
    for learner in learners:
        state = learner.init(jax.random.PRNGKey(1), X)
        new, metrics = jax.jit(learner.step)(state, X)
        assert bool(metrics["finite"]) and int(new.step) == 1
    # the KL form's analytic KL(q || N(0, I)) for this q
    mean, S = np.asarray(q.mean(), np.float64), np.linalg.cholesky(covariance)
    kl = 0.5 * (np.trace(covariance) + mean @ mean - 3 - 2 * np.sum(np.log(np.diag(S))))
    np.testing.assert_allclose(float(q.kl_divergence(vae.prior(params))), kl, rtol=1e-4)
    values = evaluate.vae_log_likelihood(jax.random.PRNGKey(2), params, X[:4], 50)
    assert values.shape == (4,) and np.all(np.isfinite(np.asarray(values)))
    with pytest.raises(ValueError, match="posterior must be one of"):
        vae.model(64, 3, posterior="planar")


def test_an_encoder_that_sees_the_mask_tells_a_missing_pixel_from_a_zero():
    """Without the mask, a missing pixel and an observed 0 are the same input; with
    encoder_sees_mask (for models learned from incomplete data) they are not; NaN at a
    missing pixel is 0 there either way."""
    x = jnp.asarray(np.arange(12) % 2, jnp.float32).at[3].set(0.0)
    mask = jnp.ones(12, bool).at[3].set(False)
    for sees, differ in ((False, False), (True, True)):
        params = vae.init(jax.random.PRNGKey(0), 12, 2, hidden_dims=(8,),
                          encoder_sees_mask=sees)
        missing = vae.encoder(params, x.at[3].set(jnp.nan), mask).mean()
        zero = vae.encoder(params, x).mean()
        assert bool(jnp.any(missing != zero)) == differ
        np.testing.assert_array_equal(missing, vae.encoder(params, x, mask).mean())


def test_settings_of_the_wrong_kind_are_named(key):
    """encoder_sees_mask="false" was taken as True; a conv net without channels failed
    deep in Flax; NumPy integers are integers."""
    for bad in ("false", 0, None):
        with pytest.raises(TypeError, match="encoder_sees_mask must be a bool"):
            vae.init(key, 4, 2, hidden_dims=(4,), encoder_sees_mask=bad)
        with pytest.raises(TypeError, match="encoder_sees_mask must be a bool"):
            vae.model(4, 2, hidden_dims=(4,), encoder_sees_mask=bad)
    assert vae.model(4, 2, hidden_dims=(4,), encoder_sees_mask=np.bool_(True)).init(
        key).encoder_sees_mask is True
    for make in (lambda: vae.model(16, 2, hidden_dims=(), architecture="conv",
                                   image_shape=(4, 4)),
                 lambda: vae.init(key, 16, 2, hidden_dims=(), architecture="conv",
                                  image_shape=(4, 4))):
        with pytest.raises(ValueError, match="hidden_dims must hold at least one channel"):
            make()
    # an MLP without hidden layers is linear, a flow's coupling layers included
    linear = vae.init(key, np.int64(4), np.int32(2), hidden_dims=(), posterior="flow")
    assert linear.data_dim == 4 and type(linear.data_dim) is int
    assert np.isfinite(float(vae.log_joint(linear, jnp.ones(4), jnp.zeros(2))))
    assert vae.sample(key, linear, np.int64(3))[0].shape == (3, 4)


def test_a_log_joint_checks_its_parameters_once_per_call(bernoulli, monkeypatch):
    """Static checks run once, at the public function's entry, not again in the functions
    it calls (the spec strings were parsed four times per call, x checked twice)."""
    calls = []
    check = vae._check_params
    monkeypatch.setattr(vae, "_check_params", lambda p: calls.append(1) or check(p))
    x, z = jnp.ones(12), jnp.zeros(3)
    jax.jit(lambda p, x, z: vae.log_joint(p, x, z)).lower(bernoulli, x, z)  # a fresh trace
    vae.log_likelihood(bernoulli, x, z, jnp.arange(12) > 2)
    assert len(calls) == 2


# ------------------------------------------------------------- binary latent features


@pytest.fixture
def binary(key):
    """z in {0,1}^6 under a learned Bernoulli prior, a Bernoulli encoder, 12 pixels."""
    model = vae.model(12, 6, hidden_dims=(16,), prior="bernoulli", posterior="bernoulli")
    params = model.init(key)
    # prior logits away from 0, so that the test sees them
    params = params.replace(decoder=jax.tree_util.tree_map(lambda a: a, params.decoder))
    params.decoder["prior"]["logits"][...] = jnp.linspace(-1.5, 1.5, 6)
    return model, params


def _binary_rows(n, seed=1):
    return (jax.random.uniform(jax.random.PRNGKey(seed), (n, 12)) < 0.3).astype(jnp.float32)


def test_binary_log_joint_is_the_bernoulli_prior_plus_the_likelihood(binary):
    _, params = binary
    x, z = _binary_rows(1)[0], jnp.array([1, 0, 0, 1, 1, 0])
    logits_z = np.linspace(-1.5, 1.5, 6)
    probs_x = 1 / (1 + np.exp(-_logits(params, z.astype(jnp.float32))))
    expected = (stats.bernoulli.logpmf(np.asarray(z), 1 / (1 + np.exp(-logits_z))).sum()
                + stats.bernoulli.logpmf(np.asarray(x), probs_x).sum())
    np.testing.assert_allclose(vae.log_joint(params, x, z), expected, rtol=1e-5)
    # an integer or boolean z is the same z; a z off {0,1} has p(z) = 0, under jit too
    np.testing.assert_allclose(vae.log_joint(params, x, z.astype(bool)), expected, rtol=1e-5)
    half = jnp.full(6, 0.5)
    assert vae.log_joint(params, x, half) == -jnp.inf
    assert jax.jit(vae.log_joint)(params, x, half) == -jnp.inf
    q = vae.encoder(params, x)
    assert q.event_shape == (6,) and q.batch_shape == ()
    np.testing.assert_allclose(q.mean(), jax.nn.sigmoid(q.distribution.logits), rtol=1e-6)


def test_binary_exact_log_likelihood_is_the_sum_over_all_z_and_is_agrees(binary):
    model, params = binary
    X = _binary_rows(5)
    exact = jlvm.evaluate.log_likelihood_exact(model, params, X, chunk_size=10, batch_size=2)
    # an independent sum in float64 over the 64 values of z, by brute force
    brute = []
    for x in np.asarray(X):
        terms = [float(vae.log_joint(params, x, np.array(bits, np.float32)))
                 for bits in np.ndindex(*(2,) * 6)]
        brute.append(np.logaddexp.reduce(np.array(terms, np.float64)))
    np.testing.assert_allclose(exact, brute, rtol=1e-5)
    # importance sampling with the encoder is unbiased for p(x): with K = 4 draws, the
    # mean of p_hat / p over 2,000 keys is 1 within 4 standard errors
    keys = jax.random.split(jax.random.PRNGKey(7), 2000)
    log_is = jax.vmap(lambda k: jlvm.evaluate.log_likelihood(k, model, params, X[:1], 4,
                                                            chunk_size=4))(keys)[:, 0]
    ratio = np.exp(np.asarray(log_is, np.float64) - brute[0])
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / np.sqrt(ratio.size), ratio.mean()


def test_binary_latents_sample_as_floats_and_train_with_disarm(binary):
    model, params = binary
    x, z = vae.sample(jax.random.PRNGKey(3), params, 50)
    assert x.dtype == z.dtype == jnp.float32
    assert set(np.unique(np.asarray(z))) <= {0.0, 1.0}
    X = _binary_rows(64, seed=4)
    learner = jlvm.inference.amortized(model, optax.adam(1e-2), grad_estimator="disarm",
                                       num_samples=4)
    state = learner.init(jax.random.PRNGKey(0), X)
    before = jlvm.evaluate.log_likelihood_exact(model, state.params, X).mean()
    step = jax.jit(learner.step)
    for _ in range(100):
        state, metrics = step(state, X)
    after = jlvm.evaluate.log_likelihood_exact(model, state.params, X).mean()
    assert bool(metrics["finite"]) and after > before + 0.5, (before, after)
    # the prior's logits are learned
    assert not np.allclose(state.params.decoder["prior"]["logits"][...], 0.0)


def test_binary_latents_need_both_the_prior_and_the_posterior():
    with pytest.raises(ValueError, match="go together"):
        vae.model(12, 6, prior="bernoulli")
    with pytest.raises(ValueError, match="go together"):
        vae.model(12, 6, posterior="bernoulli")
    gaussian = vae.model(12, 6)
    with pytest.raises(ValueError, match="finite support"):
        jlvm.evaluate.log_likelihood_exact(gaussian, gaussian.init(jax.random.PRNGKey(0)),
                                           _binary_rows(2))
