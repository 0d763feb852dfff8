"""jlvm.Model: the learners train a model written here, in plain JAX, with dict params."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jlvm
from jlvm import train
from jlvm.inference import amortized, semi_amortized, svi
from jlvm.models import posteriors, vae

# A user's model: z ~ N(0, 1), x | z ~ N(w z + b, I_2), and a linear Gaussian encoder
# q(z | x) = N(a.x + c, exp(d)^2). Its exact posterior is in the encoder's family, so the
# ELBO's maximum is the maximum likelihood: b = mean(x), w w^T + I = the sample covariance
# with the noise fixed, i.e. w = u_1 sqrt(lambda_1 - 1) (Tipping & Bishop, sigma^2 known).


def _init(key):
    k1, k2 = jax.random.split(key)
    return {"decoder": {"w": 0.1 * jax.random.normal(k1, (2,)), "b": jnp.zeros(2)},
            "encoder": {"a": 0.1 * jax.random.normal(k2, (2,)), "c": jnp.zeros(()),
                        "d": jnp.zeros(())}}


def _log_likelihood(params, x, z, mask=None):
    if mask is not None:  # a missing entry may hold NaN: out before any arithmetic
        x = jnp.where(mask, x, 0.0)
    mean = params["decoder"]["w"] * z[0] + params["decoder"]["b"]
    per_dim = -0.5 * (x - mean) ** 2 - 0.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(per_dim if mask is None else jnp.where(mask, per_dim, 0.0))


def _prior(params):
    import distrax

    return distrax.MultivariateNormalDiag(jnp.zeros(1), jnp.ones(1))


def _log_joint(params, x, z, mask=None):
    return _prior(params).log_prob(z) + _log_likelihood(params, x, z, mask)


def _encoder(params, x, mask=None):
    e = params["encoder"]
    x = x if mask is None else jnp.where(mask, x, 0.0)
    return posteriors.diagonal(jnp.dot(e["a"], x)[None] + e["c"], e["d"][None])


MODEL = jlvm.Model(_init, _log_joint, _encoder, log_likelihood=_log_likelihood, prior=_prior)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    cov = np.array([[3.0, 1.2], [1.2, 2.0]])
    return jnp.asarray(rng.multivariate_normal([1.0, -2.0], cov, size=400), jnp.float32)


def _exact_mean_log_likelihood(decoder, X):
    w, b = decoder["w"], decoder["b"]
    cov = jnp.outer(w, w) + jnp.eye(2)
    return float(jnp.mean(jax.vmap(
        lambda x: jax.scipy.stats.multivariate_normal.logpdf(x, b, cov))(X)))


def _maximum_likelihood(X):
    X = np.asarray(X, np.float64)
    mean = X.mean(0)
    values, vectors = np.linalg.eigh(np.cov(X.T, bias=True))
    w = vectors[:, -1] * np.sqrt(values[-1] - 1.0)
    return {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(mean, jnp.float32)}


@pytest.mark.optimized  # runs long enough to repay XLA's optimizations
@pytest.mark.parametrize("form", ["joint", "kl"])
def test_amortized_trains_a_user_model_to_its_maximum_likelihood(data, form):
    learner = amortized(MODEL, optax.adam(optax.exponential_decay(3e-2, 1500, 0.05)),
                        num_samples=8, elbo_form=form)
    state = learner.init(jax.random.PRNGKey(0), data)
    # the 3000 steps in one compiled scan (one call, not 3000 dispatches from Python)
    steps = jax.jit(lambda s: jax.lax.scan(lambda s, _: learner.step(s, data), s, None,
                                           length=3000))
    state, metrics = steps(state)
    metrics = jax.tree_util.tree_map(lambda m: m[-1], metrics)  # the last step's
    assert int(state.step) == 3000
    assert isinstance(state.params, dict)  # the user's pytree, as it was given
    best = _exact_mean_log_likelihood(_maximum_likelihood(data), data)
    reached = _exact_mean_log_likelihood(state.params["decoder"], data)
    # the maximum is flat and Adam ends in Monte Carlo noise: 3000 steps reach it within
    # ~1e-4 nats per example (measured: 2e-5 to 8e-5 over seeds)
    assert best - 1e-3 < reached <= best + 1e-5
    # the encoder is the exact posterior there, so the ELBO is log p(x) (K=8 draws' noise)
    assert abs(float(metrics["elbo"]) - reached) < 0.05


def test_semi_amortized_and_svi_take_the_same_model(data):
    for learner, batch in (
            (semi_amortized(MODEL, optax.adam(1e-2), inner_steps=3), data[:50]),
            (svi(MODEL, optax.adam(1e-2), 400, inner_steps=3),
             (jnp.arange(50, dtype=jnp.int32), data[:50]))):
        state = learner.init(jax.random.PRNGKey(1), batch)
        new, metrics = jax.jit(learner.step)(state, batch)
        assert bool(metrics["finite"]) and isinstance(new.params, (dict, tuple))
        assert int(new.step) == 1


def test_masked_batches_reach_the_model_and_nan_at_missing_entries_does_not(data):
    learner = amortized(MODEL, optax.sgd(0.1))
    state = learner.init(jax.random.PRNGKey(0), data[:4])
    mask = jnp.array([[True, False]] * 4)
    holes = data[:4].at[:, 1].set(jnp.nan)
    step = jax.jit(learner.step)
    after_nan, with_nan = step(state, (holes, mask))
    after_zero, with_zero = step(state, (data[:4].at[:, 1].set(0.0), mask))
    assert np.isfinite(float(with_nan["loss"]))
    np.testing.assert_allclose(float(with_nan["loss"]), float(with_zero["loss"]), rtol=1e-6)
    # the gradient step is the same: NaN reached neither the loss nor the gradient
    assert not np.array_equal(after_nan.params["decoder"]["w"], state.params["decoder"]["w"])
    for a, b in zip(jax.tree_util.tree_leaves(after_nan), jax.tree_util.tree_leaves(after_zero),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def _naive_log_joint(params, x, z, mask=None):
    """What a user writes first: x enters the arithmetic before the mask leaves its holes
    out (NaN * 0 = NaN, in the value and in every gradient)."""
    mean = params["decoder"]["w"] * z[0] + params["decoder"]["b"]
    per_dim = -0.5 * (x - mean) ** 2 - 0.5 * jnp.log(2 * jnp.pi)
    seen = jnp.ones_like(x) if mask is None else mask.astype(x.dtype)
    return _prior(params).log_prob(z) + jnp.sum(per_dim * seen)


def _naive_encoder(params, x, mask=None):
    e = params["encoder"]
    return posteriors.diagonal(jnp.dot(e["a"], x)[None] + e["c"], e["d"][None])


@pytest.mark.parametrize("learner", ["amortized", "semi_amortized", "svi"])
def test_a_naive_model_trained_on_nan_holes_keeps_finite_parameters(data, learner):
    """The learners never hand a model NaN at a missing entry: a naive user model trained
    on (x with NaN holes, mask) batches learns from the observed entries only."""
    naive = jlvm.Model(_init, _naive_log_joint, _naive_encoder)
    mask = np.ones(data.shape, bool)
    mask[::3, 1] = False
    mask[1::3, 0] = False
    holes = jnp.where(jnp.asarray(mask), data, jnp.nan)
    if learner == "svi":
        fit = svi(naive, optax.adam(1e-2), data.shape[0], inner_steps=2)
        batch = (jnp.arange(data.shape[0], dtype=jnp.int32), holes, jnp.asarray(mask))
    else:
        fit = (amortized if learner == "amortized" else semi_amortized)(
            naive, optax.adam(1e-2))
        batch = (holes, jnp.asarray(mask))
    state = fit.init(jax.random.PRNGKey(0), batch)
    theta = state.params.model if learner == "svi" else state.params
    start = np.asarray(theta["decoder"]["w"])
    step = jax.jit(fit.step)
    for _ in range(5):
        state, metrics = step(state, batch)
        assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    leaves = jax.tree_util.tree_leaves(state.params)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves)
    theta = state.params.model if learner == "svi" else state.params
    assert not np.allclose(theta["decoder"]["w"], start)  # it learned


def test_a_non_finite_gradient_under_a_finite_loss_never_reaches_the_parameters(data):
    """A log_joint whose value is finite but whose gradient is not (sqrt at 0): the step
    keeps the old parameters and says so."""

    def log_joint(params, x, z, mask=None):
        return _log_joint(params, x, z) + jnp.sqrt(jnp.abs(params["decoder"]["b"][0]))

    learner = amortized(jlvm.Model(_init, log_joint, _encoder), optax.sgd(0.1))
    state = learner.init(jax.random.PRNGKey(0), data[:8])  # b = 0: d sqrt|b| / db = inf
    new, metrics = jax.jit(learner.step)(state, data[:8])
    assert np.isfinite(float(metrics["loss"])) and not bool(metrics["finite"])
    for a, b in zip(jax.tree_util.tree_leaves(new.params),
                    jax.tree_util.tree_leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(new.step) == 1


def test_a_model_is_checked_before_anything_compiles(data):
    with pytest.raises(TypeError, match=r"model must be a jlvm\.Model"):
        amortized({"init": _init}, optax.adam(1e-3))
    with pytest.raises(TypeError, match=r"model\.encoder must be a function"):
        amortized(jlvm.Model(_init, _log_joint), optax.adam(1e-3))
    with pytest.raises(TypeError, match=r"model\.prior must be a function"):
        amortized(jlvm.Model(_init, _log_joint, _encoder, _log_likelihood), optax.adam(1e-3),
                  elbo_form="kl")
    vector = jlvm.Model(_init, lambda p, x, z, mask=None: jnp.zeros(3), _encoder)
    with pytest.raises(ValueError, match=r"must return a scalar .* got shape \(3,\)"):
        amortized(vector, optax.adam(1e-3)).init(jax.random.PRNGKey(0), data[:4])
    with pytest.raises(TypeError, match="the mask of batch must be a boolean"):
        amortized(MODEL, optax.adam(1e-3)).init(jax.random.PRNGKey(0),
                                                (data[:4], jnp.ones((4, 2))))
    # each names the culprit, not a line deep inside JAX or distrax
    as_tuple = jlvm.Model(_init, _log_joint, lambda p, x, mask=None: (x, x))
    with pytest.raises(ValueError, match=r"model\.encoder\(params, x\) must be a distrax"):
        amortized(as_tuple, optax.adam(1e-3)).init(jax.random.PRNGKey(0), data[:4])
    wider = jlvm.Model(_init, lambda p, x, z, mask=None: _log_joint(p, x, z) + z @ jnp.ones(1),
                       lambda p, x, mask=None: posteriors.diagonal(jnp.zeros(3), jnp.zeros(3)))
    # a draw z [3], where log_joint takes z [1]
    with pytest.raises(Exception, match=r"model\.log_joint\(params, x, z\) on one example x "
                                        r"\(2,\) and a draw z \(3,\) of the encoder's q failed"):
        amortized(wider, optax.adam(1e-3)).init(jax.random.PRNGKey(0), data[:4])
    counts = jlvm.Model(lambda key: {**_init(key), "n": jnp.ones(2, jnp.int32)}, _log_joint,
                        _encoder)
    with pytest.raises(TypeError, match=r"model\.init\(key\)\['n'\] has dtype int32"):
        amortized(counts, optax.adam(1e-3)).init(jax.random.PRNGKey(0), data[:4])


def test_the_vae_is_one_model_and_its_learner_is_unchanged():
    model = vae.model(64, 2, hidden_dims=(8,))
    assert isinstance(model, jlvm.Model) and model.log_joint is vae.log_joint
    params = model.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(
        jax.tree_util.tree_leaves(params)[0],
        jax.tree_util.tree_leaves(vae.init(jax.random.PRNGKey(0), 64, 2, hidden_dims=(8,)))[0])
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        vae.model(64, 0)


def test_an_epoch_of_a_user_model_is_one_scan(data):
    learner = amortized(MODEL, optax.adam(1e-2))
    epoch = train.make_epoch(learner, 50)
    state, metrics = epoch(learner.init(jax.random.PRNGKey(0), data[:50]), data)
    assert metrics["elbo"].shape == (8,) and int(state.step) == 8
    scored = jlvm.evaluate.log_likelihood(jax.random.PRNGKey(1), MODEL, state.params, data[:10],
                                          100)
    exact = jax.vmap(lambda x: jax.scipy.stats.multivariate_normal.logpdf(
        x, state.params["decoder"]["b"],
        jnp.outer(state.params["decoder"]["w"], state.params["decoder"]["w"]) + jnp.eye(2)))(
        data[:10])
    # the encoder is not yet the posterior: IS with 100 draws is within a few hundredths
    np.testing.assert_allclose(np.asarray(scored), np.asarray(exact), atol=0.05)
