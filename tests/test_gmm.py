"""jlvm.models.gmm against SciPy (densities) and scikit-learn (EM)."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import gmm_log_joint_table, mean_and_standard_error
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from jlvm import data
from jlvm.models import gmm


@pytest.fixture
def params():
    return gmm.Params(
        logits=jnp.array([0.2, -0.5, 0.9]),
        means=jnp.array([[0.0, 0.0, 1.0], [3.0, -1.0, 0.0], [-2.0, 2.0, 0.5]]),
        scale_tril=jnp.array([
            [[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.1, 0.5]],
            [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.2, 1.2]],
            [[2.0, 0.0, 0.0], [-0.5, 1.0, 0.0], [0.4, 0.4, 0.7]],
        ]),
    )


def test_log_joint_marginal_and_posterior_match_scipy(params):
    for x in ([0.1, 0.2, 0.3], [2.5, -0.5, 0.2], [-4.0, 3.0, 1.0]):
        table = gmm_log_joint_table(params.logits, params.means, params.scale_tril, x)
        x = jnp.array(x)
        for k in range(3):
            np.testing.assert_allclose(gmm.log_joint(params, x, k), table[k], rtol=1e-5)
        log_marginal = np.logaddexp.reduce(table)
        np.testing.assert_allclose(gmm.log_marginal(params, x), log_marginal, rtol=1e-5)
        np.testing.assert_allclose(gmm.posterior(params, x).probs,
                                   np.exp(table - log_marginal), atol=1e-5)


def test_sampling_follows_the_mixture(params, key):
    x, z = gmm.sample(key, params, 20_000)
    assert x.shape == (20_000, 3) and z.shape == (20_000,)
    weights = np.asarray(jax.nn.softmax(params.logits))
    for k in range(3):
        freq, se = mean_and_standard_error((np.asarray(z) == k).astype(np.float64))
        assert abs(freq - weights[k]) < 4 * se
        members = np.asarray(x)[np.asarray(z) == k]
        mean, se = mean_and_standard_error(members)
        assert np.all(np.abs(mean - np.asarray(params.means[k])) < 4 * se)
        cov = np.asarray(params.scale_tril[k] @ params.scale_tril[k].T)
        np.testing.assert_allclose(np.cov(members, rowvar=False), cov, atol=0.1 * cov.max())


def test_clustering_by_posterior_recovers_the_components(params, key):
    x, z = gmm.sample(key, params, 2000)
    assigned = jax.vmap(lambda xi: jnp.argmax(gmm.posterior(params, xi).probs))(x)
    # Bayes-optimal assignment: its accuracy is the mean posterior mass of the truth
    expected = jnp.mean(jax.vmap(lambda xi, zi: gmm.posterior(params, xi).probs[zi])(x, z))
    accuracy = jnp.mean(assigned == z)
    assert accuracy >= expected - 0.02 and accuracy > 0.9


def _normalized(logits):
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def _sklearn_from(params, X, num_iters, reg_covar):
    covariances = np.asarray(jnp.einsum("kij,klj->kil", params.scale_tril, params.scale_tril),
                             np.float64)
    mixture = GaussianMixture(
        n_components=params.logits.shape[0], covariance_type="full", tol=0.0,
        reg_covar=reg_covar, max_iter=num_iters, n_init=1,
        weights_init=_normalized(np.asarray(params.logits, np.float64)),
        means_init=np.asarray(params.means, np.float64),
        precisions_init=np.linalg.inv(covariances))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(np.asarray(X, np.float64))
    return mixture


def test_fit_em_matches_scikit_learn_from_the_same_start(params, key):
    X, _ = gmm.sample(key, params, 600)
    start = gmm.init_from_data(jax.random.PRNGKey(3), X, 3)
    fitted, trace = gmm.fit_em(start, X, 40)
    mixture = _sklearn_from(start, X, 40, reg_covar=1e-6)
    np.testing.assert_allclose(trace[-1], mixture.lower_bound_, rtol=1e-4)
    final = jnp.mean(jax.vmap(functools.partial(gmm.log_marginal, fitted))(X))
    np.testing.assert_allclose(final, mixture.score(np.asarray(X, np.float64)), rtol=1e-4)
    np.testing.assert_allclose(jax.nn.softmax(fitted.logits), mixture.weights_, atol=1e-4)
    np.testing.assert_allclose(fitted.means, mixture.means_, atol=1e-3)
    np.testing.assert_allclose(jnp.einsum("kij,klj->kil", fitted.scale_tril, fitted.scale_tril),
                               mixture.covariances_, atol=1e-3)


def test_em_log_likelihood_never_decreases_on_digits():
    X = jnp.asarray(data.digits(binarize=False).train)
    start = gmm.init_from_data(jax.random.PRNGKey(0), X, 10, reg_covar=1e-2)
    _, trace = gmm.fit_em(start, X, 60, reg_covar=1e-2)
    trace = np.asarray(trace, np.float64)
    # EM's monotonicity, up to float32 rounding of a sum of ~1000 terms
    assert np.all(np.diff(trace) >= -1e-5 * np.abs(trace[1:]))
    assert trace[-1] > trace[0] + 5.0


def test_em_on_digits_matches_scikit_learn():
    X = jnp.asarray(data.digits(binarize=False).train)
    start = gmm.init_from_data(jax.random.PRNGKey(0), X, 5, reg_covar=1e-2)
    _, trace = gmm.fit_em(start, X, 15, reg_covar=1e-2)
    mixture = _sklearn_from(start, X, 15, reg_covar=1e-2)
    np.testing.assert_allclose(trace[-1], mixture.lower_bound_, rtol=1e-4)


def test_jit_and_vmap_match_eager(params):
    xs = jnp.array([[0.1, 0.2, 0.3], [2.5, -0.5, 0.2]])
    eager = np.array([float(gmm.log_marginal(params, x)) for x in xs])
    batched = jax.jit(jax.vmap(gmm.log_marginal, in_axes=(None, 0)))(params, xs)
    np.testing.assert_allclose(batched, eager, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(gmm.log_joint)(params, xs[0], 1),
                               gmm.log_joint(params, xs[0], 1), rtol=1e-6)


def test_bad_inputs_raise_value_errors(params, key):
    with pytest.raises(ValueError, match="x must have shape"):
        gmm.log_marginal(params, jnp.zeros(4))
    with pytest.raises(ValueError, match="x must have shape"):
        gmm.log_joint(params, jnp.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match="z must be a scalar"):
        gmm.log_joint(params, jnp.zeros(3), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="n must be"):
        gmm.sample(key, params, 0)
    with pytest.raises(ValueError, match="X must have shape"):
        gmm.fit_em(params, jnp.zeros((10, 4)), 3)
    with pytest.raises(ValueError, match="num_iters"):
        gmm.fit_em(params, jnp.zeros((10, 3)), 0)
    with pytest.raises(ValueError, match="scale_tril"):
        gmm.log_marginal(params._replace(scale_tril=jnp.zeros((3, 2, 2))), jnp.zeros(3))


def test_a_component_index_outside_the_mixture_is_never_another_component(params):
    """JAX clamps out-of-range indices; log p(x, z) of an impossible z is -inf (under jit,
    where its value is unknown) or a ValueError (a concrete mistake), never the last
    component's value."""
    x = jnp.array([0.5, -0.2, 1.0])
    for z in (3, -1, 10):
        with pytest.raises(ValueError, match=r"z must be a component index in \[0, 3\)"):
            gmm.log_joint(params, x, jnp.int32(z))
        assert float(jax.jit(gmm.log_joint)(params, x, jnp.int32(z))) == -np.inf
    assert np.isfinite(float(jax.jit(gmm.log_joint)(params, x, jnp.int32(2))))
    with pytest.raises(TypeError, match="z must be an integer"):
        gmm.log_joint(params, x, jnp.float32(1.0))


def test_em_that_breaks_down_says_so_instead_of_returning_nan(params):
    X = jnp.array([[0.0, 1.0, 2.0], [0.5, -1.0, 1.0]])
    with pytest.raises(ValueError, match="X holds 1 NaN"):
        gmm.fit_em(params, X.at[0, 1].set(jnp.nan), 3)
    one_component = gmm.Params(params.logits[:1], params.means[:1], params.scale_tril[:1])
    with pytest.raises(ValueError, match=r"EM broke down .* reg_covar"):
        gmm.fit_em(one_component, X[:1], 2, reg_covar=0.0)  # one point: no covariance
    _, trace = gmm.fit_em(one_component, X[:1], 2, reg_covar=1e-3)
    assert np.all(np.isfinite(np.asarray(trace)))
    with pytest.raises(ValueError, match="N >= max"):
        gmm.init_from_data(jax.random.PRNGKey(0), X[:1], 1)
    with pytest.raises(TypeError, match="reg_covar must be a number"):
        gmm.fit_em(params, X, 2, reg_covar="small")
    with pytest.raises(TypeError, match=r"params\.means must be an array of numbers"):
        gmm.log_marginal(params._replace(means="far"), X[0])
    with pytest.raises(ValueError, match="x holds 1 NaN"):
        gmm.log_marginal(params, X[0].at[0].set(jnp.nan))


def test_parameters_that_define_no_mixture_are_named(params):
    x = jnp.array([0.5, -0.2, 1.0])
    upper = params._replace(scale_tril=params.scale_tril.at[0, 0, 2].set(0.9))
    singular = params._replace(scale_tril=params.scale_tril.at[1, 1, 1].set(0.0))
    for bad, message in ((upper, "lower triangular"), (singular, "positive diagonal"),
                         (params._replace(logits=params.logits.at[0].set(jnp.nan)), "logits"),
                         (params._replace(logits=jnp.full(3, -jnp.inf)), "not all -inf"),
                         (params._replace(means=params.means.at[0, 0].set(jnp.inf)), "means")):
        with pytest.raises(ValueError, match=message):
            gmm.log_marginal(bad, x)
    with pytest.raises(TypeError, match=r"gmm\.Params"):
        gmm.log_marginal(None, x)
    np.testing.assert_allclose(gmm.log_marginal(params, [0.5, -0.2, 1.0]),
                               gmm.log_marginal(params, x))  # a list is an array


def test_init_from_data_draws_distinct_means_or_says_why_not():
    X = jnp.array([[0.0, 1.0]] * 8 + [[2.0, 3.0], [4.0, 1.0]])  # 3 distinct rows
    start = gmm.init_from_data(jax.random.PRNGKey(0), X, 3)
    assert np.unique(np.asarray(start.means), axis=0).shape[0] == 3
    with pytest.raises(ValueError, match="2 distinct rows, fewer than num_components=3"):
        gmm.init_from_data(jax.random.PRNGKey(0), X[:9], 3)
    with pytest.raises(ValueError, match="covariance is singular"):
        gmm.init_from_data(jax.random.PRNGKey(0), jnp.ones((10, 2)).at[:5].set(0.0), 2,
                           reg_covar=0.0)
    with pytest.raises(ValueError, match="X must have shape"):
        gmm.init_from_data(jax.random.PRNGKey(0), jnp.zeros((10, 0)), 2)


def test_collinear_data_without_regularization_is_singular_not_a_start():
    X = jax.random.normal(jax.random.PRNGKey(1), (50, 1)).repeat(2, 1)  # x_2 = x_1
    with pytest.raises(ValueError, match="covariance is singular"):
        gmm.init_from_data(jax.random.PRNGKey(0), X, 2, reg_covar=0.0)
    start = gmm.init_from_data(jax.random.PRNGKey(0), X, 2, reg_covar=1e-3)
    assert np.all(np.isfinite(np.asarray(start.scale_tril)))
