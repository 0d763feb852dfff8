"""jlvm.inference.em: EM as a Learner equals the core GMM's fit_em."""

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import data
from jlvm.inference import em
from jlvm.models import gmm


def test_em_learner_matches_fit_em():
    X = jnp.asarray(data.digits(binarize=False).train)
    learner = em(5, reg_covar=1e-2)
    state = learner.init(jax.random.PRNGKey(0), X)
    start = state.params
    step = jax.jit(learner.step)
    trace = []
    for _ in range(20):
        state, metrics = step(state, X)
        trace.append(float(metrics["log_likelihood"]))
    params, expected = gmm.fit_em(start, X, 20, reg_covar=1e-2)
    np.testing.assert_allclose(trace, expected, rtol=1e-5)
    for a, b in zip(state.params, params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # init is gmm.init_from_data with the learner's split of the key
    np.testing.assert_array_equal(
        start.means, gmm.init_from_data(jax.random.split(jax.random.PRNGKey(0))[0], X, 5,
                                        reg_covar=1e-2).means)


def test_an_em_step_that_breaks_down_never_reaches_the_parameters():
    """Two points on top of each other and no regularization: the covariance is singular,
    the M-step gives NaN, the step keeps the old parameters and says so."""
    import pytest

    X = jnp.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    learner = em(1, reg_covar=0.0)
    state = learner.init(jax.random.PRNGKey(0), X + jnp.array([[0.0, 0.0], [1.0, 0.0],
                                                                [0.0, 1.0]]))
    new, metrics = jax.jit(learner.step)(state, X)
    assert not bool(metrics["finite"])
    for a, b in zip(new.params, state.params, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match="reg_covar"):
        em(2, reg_covar="none")
    with pytest.raises(ValueError, match="reg_covar must be finite and >= 0"):
        em(2, reg_covar=-1e-3)  # covariances that are not positive definite: NaN


def test_a_batch_of_another_dimension_is_named():
    import pytest

    X = jax.random.normal(jax.random.PRNGKey(0), (20, 3))
    learner = em(2)
    state = learner.init(jax.random.PRNGKey(1), X)
    with pytest.raises(ValueError, match="the mixture's D=3"):
        learner.step(state, X[:, :2])


def test_incomplete_batches_run_em_on_the_observed_entries():
    """(X, mask) batches: each step is gmm.fit_em's masked iteration, from a start drawn
    from the column-mean-imputed data; NaN at missing entries changes nothing."""
    X = np.asarray(data.digits(binarize=False).train[:300])
    mask = np.random.default_rng(1).random(X.shape) > 0.25
    holes = jnp.asarray(np.where(mask, X, np.nan))
    learner = em(3, reg_covar=1e-2)
    state = learner.init(jax.random.PRNGKey(0), (holes, jnp.asarray(mask)))
    start = state.params
    step = jax.jit(learner.step)
    trace = []
    for _ in range(4):
        state, metrics = step(state, (holes, jnp.asarray(mask)))
        trace.append(float(metrics["log_likelihood"]))
    params, expected = gmm.fit_em(start, holes, 4, mask=jnp.asarray(mask), reg_covar=1e-2)
    np.testing.assert_allclose(trace, expected, rtol=1e-5)
    for a, b in zip(state.params, params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    filled = np.where(mask, X, np.nanmean(np.where(mask, X, np.nan), axis=0))
    np.testing.assert_array_equal(start.means, gmm.init_from_data(
        jax.random.split(jax.random.PRNGKey(0))[0], filled, 3, reg_covar=1e-2).means)


def test_the_learner_fits_each_covariance_type():
    """em(K, covariance_type=T): init gives T's parameters (gmm.init_from_data of T), each
    step is gmm.fit_em's iteration of T, complete and incomplete batches; an unknown
    name is a ValueError listing the four."""
    import pytest

    X = jax.random.normal(jax.random.PRNGKey(0), (60, 3)) * jnp.array([[1.0, 2.0, 0.5]])
    mask = jax.random.uniform(jax.random.PRNGKey(1), X.shape) > 0.2
    mask = mask.at[:, 0].set(True)
    for covariance_type, observed in (("diag", mask), ("spherical", None), ("tied", mask)):
        learner = em(2, reg_covar=1e-3, covariance_type=covariance_type)
        batch = X if observed is None else (X, observed)
        state = learner.init(jax.random.PRNGKey(2), batch)
        assert gmm.covariance_type(state.params) == covariance_type
        new, metrics = jax.jit(learner.step)(state, batch)
        expected, trace = gmm.fit_em(state.params, X, 1, reg_covar=1e-3, mask=observed)
        np.testing.assert_allclose(metrics["log_likelihood"], trace[0], rtol=1e-6)
        for a, b in zip(new.params, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"covariance_type must be one of \('full', 'diag', "
                                         r"'spherical', 'tied'\)"):
        em(2, covariance_type="diagonal")


def test_the_bernoulli_family_is_bernoulli_mixture_fit_em():
    """em(K, family=bernoulli_mixture): init is bernoulli_mixture.init_from_data with the
    learner's split of the key, each step one iteration of its fit_em (complete and
    incomplete batches), the trace never decreases; the GMM's settings are refused."""
    import pytest

    from jlvm.models import bernoulli_mixture

    X = jnp.asarray(data.digits().train[:400])
    mask = jnp.asarray(np.random.default_rng(0).random(X.shape) > 0.2).at[:, 0].set(True)
    for observed in (None, mask):
        learner = em(4, family=bernoulli_mixture)
        batch = X if observed is None else (X, observed)
        state = learner.init(jax.random.PRNGKey(0), batch)
        start = state.params
        np.testing.assert_array_equal(start.logits_x, bernoulli_mixture.init_from_data(
            jax.random.split(jax.random.PRNGKey(0))[0], X, 4, mask=observed).logits_x)
        step = jax.jit(learner.step)
        trace = []
        for _ in range(8):
            state, metrics = step(state, batch)
            assert bool(metrics["finite"])
            np.testing.assert_array_equal(metrics["elbo"], metrics["log_likelihood"])
            trace.append(float(metrics["log_likelihood"]))
        assert np.all(np.diff(trace) >= -1e-4), trace
        params, expected = bernoulli_mixture.fit_em(start, X, 8, mask=observed)
        np.testing.assert_allclose(trace, expected, rtol=1e-5)
        for a, b in zip(state.params, params, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"reg_covar=0\.01 applies to the Gaussian mixture "
                                         "only"):
        em(2, reg_covar=1e-2, family=bernoulli_mixture)
    with pytest.raises(ValueError, match="covariance_type='diag'"):
        em(2, covariance_type="diag", family=bernoulli_mixture)
    with pytest.raises(TypeError, match="family must be a mixture module"):
        em(2, family=np)
    with pytest.raises(ValueError, match="the mixture's D=64"):
        learner = em(2, family=bernoulli_mixture)
        learner.step(learner.init(jax.random.PRNGKey(0), X), X[:, :10])
