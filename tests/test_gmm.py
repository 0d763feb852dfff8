"""jlvm.models.gmm against SciPy (densities) and scikit-learn (EM)."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import gmm_log_joint_table, mean_and_standard_error
from scipy import stats
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


def _dense(params):
    """Every component's covariance as a [K, D, D] float64 matrix, whatever the type."""
    covariances = np.asarray(gmm.covariances(params), np.float64)
    num_components, dim = params.means.shape
    return {"full": lambda c: c,
            "tied": lambda c: np.broadcast_to(c, (num_components, dim, dim)),
            "diag": lambda c: np.stack([np.diag(v) for v in c]),
            "spherical": lambda c: c[:, None, None] * np.eye(dim)[None],
            }[gmm.covariance_type(params)](covariances)


def _sklearn_from(params, X, num_iters, reg_covar):
    """scikit-learn's GaussianMixture of params' covariance type, from params, after
    ``num_iters`` EM iterations (tol=0: no early stop)."""
    covariance_type = gmm.covariance_type(params)
    root = np.asarray(gmm.precisions_cholesky(params), np.float64)  # U: precision U U^T
    precisions = root @ np.swapaxes(root, -1, -2) if covariance_type in ("full", "tied") \
        else root**2
    mixture = GaussianMixture(
        n_components=params.logits.shape[0], covariance_type=covariance_type, tol=0.0,
        reg_covar=reg_covar, max_iter=num_iters, n_init=1, init_params="random",
        random_state=0, weights_init=_normalized(np.asarray(params.logits, np.float64)),
        means_init=np.asarray(params.means, np.float64), precisions_init=precisions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(np.asarray(X, np.float64))
    return mixture


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
    """JAX clamps out-of-range indices; an impossible z has probability 0, log p(x, z) =
    -inf, eagerly and under jit alike (it was a ValueError eagerly and -inf under jit),
    never the last component's value; its p(x | z) has NaN parameters."""
    x = jnp.array([0.5, -0.2, 1.0])
    jitted = jax.jit(gmm.log_joint)
    for z in (3, -1, 10):
        assert float(gmm.log_joint(params, x, jnp.int32(z))) == -np.inf
        assert float(jitted(params, x, jnp.int32(z))) == -np.inf
        assert float(gmm.log_likelihood(params, x, z)) == -np.inf
        assert np.all(np.isnan(np.asarray(gmm.decoder(params, z).mean())))
    assert np.isfinite(float(jitted(params, x, jnp.int32(2))))
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


# ------------------------------------------------------- missing entries (incomplete data)


def _numpy_masked_em(params, X, mask, num_iters, reg_covar):
    """EM on the observed entries written independently in NumPy (float64), for params'
    covariance type: per point and component, the Gaussian of the missing coordinates
    given the observed ones by explicit sub-matrices of the dense covariances and
    inverses; the expected sufficient statistics S_k; then scikit-learn's M-step of the
    type (full S_k, tied sum_k N_k S_k / N, diag diag(S_k), spherical mean diag(S_k))."""
    weights = np.exp(np.asarray(params.logits, np.float64))
    weights /= weights.sum()
    means = np.asarray(params.means, np.float64)
    covariances = _dense(params)
    count, dim = X.shape
    project = {"full": lambda S, n: S,
               "tied": lambda S, n: np.broadcast_to(np.einsum("k,kij->ij", n, S) / n.sum(),
                                                    S.shape),
               "diag": lambda S, n: np.stack([np.diag(np.diag(c)) for c in S]),
               "spherical": lambda S, n: np.stack([np.trace(c) / dim * np.eye(dim)
                                                   for c in S]),
               }[gmm.covariance_type(params)]
    trace = []
    for _ in range(num_iters):
        log_r = np.zeros((count, len(weights)))
        filled = np.zeros((count, len(weights), dim))
        conditional = np.zeros((count, len(weights), dim, dim))
        for n in range(count):
            o, m = mask[n], ~mask[n]
            for k in range(len(weights)):
                S = covariances[k]
                log_r[n, k] = np.log(weights[k]) + stats.multivariate_normal.logpdf(
                    X[n, o], means[k, o], S[np.ix_(o, o)])
                filled[n, k] = np.where(o, X[n], 0.0)
                if m.any():
                    gain = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)])
                    filled[n, k, m] = means[k, m] + gain @ (X[n, o] - means[k, o])
                    conditional[n, k][np.ix_(m, m)] = S[np.ix_(m, m)] - gain @ S[np.ix_(o, m)]
        log_norm = np.logaddexp.reduce(log_r, axis=1)
        trace.append(log_norm.mean())
        r = np.exp(log_r - log_norm[:, None])
        counts = r.sum(0)
        weights = counts / count
        means = np.einsum("nk,nkd->kd", r, filled) / counts[:, None]
        statistics = np.stack([
            (np.einsum("n,ni,nj->ij", r[:, k], filled[:, k] - means[k], filled[:, k] - means[k])
             + np.einsum("n,nij->ij", r[:, k], conditional[:, k])) / counts[k]
            for k in range(len(weights))])
        covariances = project(statistics, counts) + reg_covar * np.eye(dim)[None]
    return weights, means, covariances, np.array(trace)


def _incomplete_blobs():
    rng = np.random.default_rng(3)
    X = np.asarray(data.blobs(150, seed=2).train, np.float64)
    X = np.concatenate([X, 0.5 * X[:, :1] + rng.normal(size=(X.shape[0], 1))], axis=1)
    mask = rng.random(X.shape) > 0.35
    mask[~mask.any(axis=1), 0] = True  # every point observes something
    return X, mask


def _scipy_conditional(params, x, o):
    """(log p(x_obs) and E[x | x_obs]) by SciPy and explicit sub-matrices, in float64."""
    covariances = np.einsum("kij,klj->kil", params.scale_tril, params.scale_tril)
    weights = np.exp(np.asarray(jax.nn.log_softmax(params.logits), np.float64))
    means = np.asarray(params.means, np.float64)
    m = ~o
    joint = np.log(weights) + np.array([stats.multivariate_normal.logpdf(
        x[o], means[k][o], covariances[k][np.ix_(o, o)]) for k in range(3)])
    log_marginal = np.logaddexp.reduce(joint)
    filled = np.where(o, x, 0.0)
    if m.any():
        parts = [means[k][m] + covariances[k][np.ix_(m, o)]
                 @ np.linalg.solve(covariances[k][np.ix_(o, o)], x[o] - means[k][o])
                 for k in range(3)]
        filled[m] = np.exp(joint - log_marginal) @ np.array(parts)
    return joint, log_marginal, filled


def test_masked_marginals_and_conditional_means_match_scipy(params):
    """log p(x_obs) = logsumexp_k log pi_k N(x_obs; mu_k,o, Sigma_k,oo), and E[x_mis |
    x_obs] = sum_k p(k | x_obs) (mu_k,m + Sigma_k,mo Sigma_k,oo^-1 (x_o - mu_k,o)); NaN at
    a missing entry changes nothing."""
    for x, observed in (([0.1, np.nan, 0.3], [True, False, True]),
                        ([np.nan, np.nan, 1.5], [False, False, True]),
                        ([2.5, -0.5, 0.2], [True, True, True])):
        x, o = np.array(x), np.array(observed)
        joint, expected, filled = _scipy_conditional(params, x, o)
        value = gmm.log_marginal(params, jnp.asarray(x), jnp.asarray(o))
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        np.testing.assert_allclose(gmm.log_marginal(params, jnp.nan_to_num(x), o), value,
                                   rtol=1e-6)
        np.testing.assert_allclose(gmm.posterior(params, jnp.asarray(x), o).probs,
                                   np.exp(joint - expected), atol=1e-5)
        np.testing.assert_allclose(gmm.conditional_mean(params, jnp.asarray(x), o), filled,
                                   rtol=1e-5, atol=1e-5)
        for k in range(3):  # log_joint takes the mask too
            np.testing.assert_allclose(gmm.log_joint(params, jnp.asarray(x), k, o), joint[k],
                                       rtol=1e-5)
    with pytest.raises(ValueError, match="x at observed entries"):
        gmm.log_marginal(params, jnp.array([np.nan, 0.0, 1.0]), jnp.array([True, True, False]))


@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_a_point_far_out_has_responsibilities_not_nan(params, scale):
    """x = scale * v: float32's squared Mahalanobis distances overflow (1e40, 1e60), yet
    the answer is well defined: the responsibilities are the float64 ones (the component
    widest along v takes everything), log p(x) is -inf (its value, about -1e40 or -1e60,
    is no float32) and E[x_mis | x_obs] the float64 one; eagerly and under jit, never NaN."""
    x = scale * np.array([1.0, -0.5, 0.3])
    table = gmm_log_joint_table(params.logits, params.means, params.scale_tril, x)
    probs = np.exp(table - np.logaddexp.reduce(table))
    x32 = jnp.asarray(x, jnp.float32)
    for posterior, log_marginal in ((gmm.posterior, gmm.log_marginal),
                                    (jax.jit(gmm.posterior), jax.jit(gmm.log_marginal))):
        np.testing.assert_allclose(posterior(params, x32).probs, probs, atol=1e-6)
        assert float(log_marginal(params, x32)) == -np.inf
    for k in range(3):
        assert float(gmm.log_joint(params, x32, k)) == -np.inf  # about -1e40: no float32
    o = np.array([True, True, False])
    _, _, filled = _scipy_conditional(params, x, o)
    for conditional_mean in (gmm.conditional_mean, jax.jit(gmm.conditional_mean)):
        np.testing.assert_allclose(conditional_mean(params, x32, o), filled, rtol=1e-4)
    np.testing.assert_allclose(gmm.posterior(params, x32, o).probs,
                               np.exp(_scipy_conditional(params, x, o)[0]
                                      - _scipy_conditional(params, x, o)[1]), atol=1e-6)


def test_the_mixture_is_a_jlvm_model_with_its_exact_posterior_as_encoder(params, key):
    """Importance sampling with the exact posterior as proposal has zero variance: every
    draw's weight is p(x_obs), so log_marginal_is equals log_marginal for any K, with and
    without a mask; enumeration over the K components agrees too."""
    import jlvm

    model = gmm.model(3, 3)
    start = model.init(key)
    assert start.means.shape == (3, 3) and np.all(np.asarray(start.logits) == 0)
    np.testing.assert_array_equal(start.scale_tril, np.broadcast_to(np.eye(3), (3, 3, 3)))
    x = jnp.array([0.7, -0.4, 1.2])

    @jax.jit
    def values(params, x, mask):  # [exact, IS with K = 1 and 7, enumeration], [per z]
        log_joint = functools.partial(model.log_joint, params, x, mask=mask)
        q = model.encoder(params, x, mask)
        estimates = jnp.stack([gmm.log_marginal(params, x, mask),
                               *(jlvm.log_marginal_is(key, log_joint, q, num_samples)
                                 for num_samples in (1, 7)),
                               jlvm.log_marginal_exact(log_joint, jnp.arange(3))])
        # log p(x_obs, z) = log p(z) + log p(x_obs | z), and p(x | z) is the component
        by_parts = jnp.stack([jnp.stack([log_joint(z), model.prior(params).log_prob(z)
                                         + model.log_likelihood(params, x, z, mask)])
                              for z in range(3)])
        return estimates, by_parts

    for mask in (None, jnp.array([True, False, True])):
        estimates, by_parts = values(params, x, mask)
        np.testing.assert_allclose(estimates, estimates[0], rtol=1e-6)
        np.testing.assert_allclose(by_parts[:, 0], by_parts[:, 1], rtol=1e-6)
    np.testing.assert_allclose(model.decoder(params, 1).log_prob(x),
                               gmm.log_likelihood(params, x, 1), rtol=1e-6)
    with pytest.raises(ValueError, match="num_components"):
        gmm.model(0, 3)


def test_em_and_gmm_import_one_way():
    """gmm imports its EM and the shared pieces; EM imports only the shared pieces (it
    imported gmm, which imported it back at its bottom)."""
    import ast
    import pathlib

    folder = pathlib.Path(gmm.__file__).parent

    def imported(name):
        tree = ast.parse((folder / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert "jlvm.models.gmm" not in imported("_gmm_em") | imported("_mixture")
    assert {"jlvm.models._gmm_em", "jlvm.models._mixture"} <= imported("gmm")
    for name in ("fit_em", "init_from_data", "e_step", "m_step", "em_iteration",
                 "masked_em_iteration", "masked_em_step", "mean_imputed"):
        assert callable(getattr(gmm, name)) and name in gmm.__all__


def test_a_negative_reg_covar_is_named_not_nan(params, key):
    X = jax.random.normal(key, (20, 3))
    log_resp = jnp.full((20, 3), -np.log(3.0))
    mask = jnp.ones(X.shape, bool)
    for call in (lambda: gmm.m_step(X, log_resp, -1e-3),
                 lambda: gmm.em_iteration(params, X, -1e-3),
                 lambda: gmm.masked_em_step(params, X, mask, -1e-3),
                 lambda: gmm.masked_em_iteration(params, X, mask, -1e-3, 20),
                 lambda: gmm.fit_em(params, X, 2, reg_covar=-1e-3),
                 lambda: gmm.init_from_data(key, X, 2, reg_covar=-1e-3)):
        with pytest.raises(ValueError, match="reg_covar must be finite and >= 0"):
            call()


def test_em_with_missing_entries_equals_an_independent_numpy_em(key):
    """Same start, 8 iterations: parameters and trace equal NumPy's float64 EM within
    float32 rounding; the trace of mean log p(x_obs) never decreases; with a mask that
    observes everything it is today's fit_em."""
    X, mask = _incomplete_blobs()
    start = gmm.init_from_data(key, X, 3, reg_covar=1e-3)
    holes = jnp.asarray(np.where(mask, X, np.nan), jnp.float32)
    fitted, trace = gmm.fit_em(start, holes, 8, mask=jnp.asarray(mask), reg_covar=1e-3)
    weights, means, covariances, expected = _numpy_masked_em(start, X, mask, 8, 1e-3)
    np.testing.assert_allclose(trace, expected, rtol=1e-5)
    assert np.all(np.diff(np.asarray(trace)) >= -1e-5)
    np.testing.assert_allclose(jax.nn.softmax(fitted.logits), weights, atol=1e-5)
    np.testing.assert_allclose(fitted.means, means, atol=1e-4)
    np.testing.assert_allclose(_dense(fitted), covariances, atol=1e-4)
    complete, complete_trace = gmm.fit_em(start, X, 8, reg_covar=1e-3)
    observed_all, all_trace = gmm.fit_em(start, X, 8, mask=np.ones(X.shape, bool),
                                         reg_covar=1e-3)
    np.testing.assert_allclose(all_trace, complete_trace, rtol=1e-5)
    for a, b in zip(observed_all, complete, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_bad_masks_are_named(params, key):
    X, mask = _incomplete_blobs()
    start = gmm.init_from_data(key, X, 2, reg_covar=1e-3)
    empty = mask.copy()
    empty[4] = False
    with pytest.raises(ValueError, match="mask row 4 observes nothing"):
        gmm.fit_em(start, X, 2, mask=empty)
    with pytest.raises(ValueError, match="mask must have X's shape"):
        gmm.fit_em(start, X, 2, mask=mask[:, :2])
    with pytest.raises(TypeError, match="mask must be boolean"):
        gmm.fit_em(start, X, 2, mask=mask.astype(np.float32))
    nan_observed = np.where(mask, X, np.nan)
    nan_observed[0, np.flatnonzero(mask[0])[0]] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values at observed entries"):
        gmm.fit_em(start, nan_observed, 2, mask=mask)


def test_multiple_imputation_draws_follow_the_exact_conditional(params, key):
    """x ~ p(x | x_obs): the draws' mean is E[x | x_obs] (gmm.conditional_mean) within 4
    standard errors, observed entries are kept, and the missing entries vary."""
    x, observed = jnp.array([0.5, np.nan, 0.2]), jnp.array([True, False, True])
    draws = np.asarray(gmm.conditional_draws(key, params, x, observed, 20000), np.float64)
    mean = float(gmm.conditional_mean(params, x, observed)[1])
    assert abs(draws[:, 1].mean() - mean) <= 4 * draws[:, 1].std() / np.sqrt(20000)
    np.testing.assert_array_equal(draws[:, [0, 2]],
                                  np.broadcast_to(np.float32([0.5, 0.2]), (20000, 2)))
    assert draws[:, 1].std() > 0.1


def test_a_start_is_drawn_the_same_way_eagerly_under_jit_and_under_vmap():
    """Distinct means were drawn again on the host when the first draw repeated a row:
    not under jit (repeated means), and under vmap over keys (several starts at once)
    it failed, converting a traced array to NumPy."""
    X = jnp.array([[0.0, 1.0]] * 8 + [[2.0, 3.0], [4.0, 1.0], [1.0, 1.0]])  # 4 distinct
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in range(3)])
    batched = jax.vmap(gmm.init_from_data, in_axes=(0, None, None))(keys, X, 4)
    jitted = jax.jit(gmm.init_from_data, static_argnums=2)
    for key, means in zip(keys, batched.means, strict=True):
        np.testing.assert_array_equal(means, gmm.init_from_data(key, X, 4).means)
        np.testing.assert_array_equal(means, jitted(key, X, 4).means)
        assert np.unique(np.asarray(means), axis=0).shape[0] == 4
    # under jit, too few distinct rows cannot be an error: the start is NaN, never repeated
    assert np.all(np.isnan(np.asarray(jitted(keys[0], X[:9], 3).means)))


# ------------------------------------------- covariance types: full, diag, spherical, tied

TYPES = ("full", "diag", "spherical", "tied")


def _of_type(params, covariance_type):
    """The fixture's mixture with covariances of ``covariance_type``, written by hand."""
    return {"full": params,
            "diag": gmm.DiagParams(params.logits, params.means,
                                   jnp.array([[1.0, 0.8, 0.5], [0.5, 0.5, 1.2],
                                              [2.0, 1.0, 0.7]])),
            "spherical": gmm.SphericalParams(params.logits, params.means,
                                             jnp.array([0.9, 0.6, 1.5])),
            "tied": gmm.TiedParams(params.logits, params.means, params.scale_tril[0]),
            }[covariance_type]


@pytest.mark.parametrize("covariance_type", TYPES)
def test_each_covariance_type_matches_scikit_learn_from_the_same_start(params, key,
                                                                       covariance_type):
    """Same start, 15 iterations: weights, means, covariances (scikit-learn's shapes),
    trace and score equal GaussianMixture(covariance_type=...) within float32 rounding;
    gmm.bic and gmm.aic equal scikit-learn's for the same parameters and data."""
    X, _ = gmm.sample(key, params, 300)
    start = gmm.init_from_data(jax.random.PRNGKey(3), X, 3, covariance_type=covariance_type)
    assert gmm.covariance_type(start) == covariance_type
    fitted, trace = gmm.fit_em(start, X, 15)  # reg_covar=1e-6, scikit-learn's default
    assert type(fitted) is type(start)
    mixture = _sklearn_from(start, X, 15, reg_covar=1e-6)
    X64 = np.asarray(X, np.float64)
    np.testing.assert_allclose(trace[-1], mixture.lower_bound_, rtol=1e-5)
    final = jnp.mean(jax.vmap(functools.partial(gmm.log_marginal, fitted))(X))
    np.testing.assert_allclose(final, mixture.score(X64), rtol=1e-5)
    np.testing.assert_allclose(jax.nn.softmax(fitted.logits), mixture.weights_, atol=1e-5)
    np.testing.assert_allclose(fitted.means, mixture.means_, atol=1e-4)
    np.testing.assert_allclose(gmm.covariances(fitted), mixture.covariances_, atol=1e-4)
    assert np.all(np.diff(np.asarray(trace)) >= -1e-6 * np.abs(np.asarray(trace[1:])))
    # scikit-learn scoring OUR parameters: its criteria must be ours to float32 rounding
    mixture.weights_ = np.asarray(jax.nn.softmax(fitted.logits), np.float64)
    mixture.means_ = np.asarray(fitted.means, np.float64)
    mixture.covariances_ = np.asarray(gmm.covariances(fitted), np.float64)
    mixture.precisions_cholesky_ = np.asarray(gmm.precisions_cholesky(fitted), np.float64)
    np.testing.assert_allclose(gmm.bic(fitted, X), mixture.bic(X64), rtol=1e-5)
    np.testing.assert_allclose(gmm.aic(fitted, X), mixture.aic(X64), rtol=1e-5)


@pytest.mark.parametrize("covariance_type", ("diag", "spherical", "tied"))
def test_every_function_takes_every_covariance_type(params, key, covariance_type):
    """log_joint, log_likelihood, log_marginal, posterior and conditional_mean, with and
    without a mask, equal SciPy's on the dense covariances (full: the tests above); the
    decoder's log_prob is log_likelihood; draws keep observed entries; the model's init
    has the type."""
    typed = _of_type(params, covariance_type)
    dense = _dense(typed)
    dense_tril = jnp.asarray(np.linalg.cholesky(dense), jnp.float32)
    as_full = gmm.Params(typed.logits, typed.means, dense_tril)
    x = jnp.array([0.7, np.nan, -0.4])
    for observed in (np.array([True, True, True]), np.array([True, False, True])):
        mask = None if observed.all() else jnp.asarray(observed)
        point = jnp.nan_to_num(x) if mask is None else x
        joint, expected, _ = _scipy_conditional(as_full, np.nan_to_num(np.asarray(x)), observed)
        np.testing.assert_allclose(gmm.log_marginal(typed, point, mask), expected, rtol=1e-5)
        np.testing.assert_allclose(gmm.posterior(typed, point, mask).probs,
                                   np.exp(joint - expected), atol=1e-5)
        for k in range(3):
            np.testing.assert_allclose(gmm.log_joint(typed, point, k, mask), joint[k],
                                       rtol=1e-5)
    filled = gmm.conditional_mean(typed, x, observed)
    np.testing.assert_allclose(filled, gmm.conditional_mean(as_full, x, observed), atol=1e-5)
    draws = gmm.conditional_draws(key, typed, x, observed, 5)
    np.testing.assert_array_equal(draws[:, [0, 2]], np.broadcast_to(x[jnp.array([0, 2])],
                                                                    (5, 2)))
    assert draws.shape == (5, 3) and np.all(np.isfinite(np.asarray(draws)))
    np.testing.assert_allclose(gmm.decoder(typed, 1).log_prob(x.at[1].set(0.2)),
                               gmm.log_likelihood(typed, x.at[1].set(0.2), 1), rtol=1e-5)
    assert np.all(np.isnan(np.asarray(gmm.decoder(typed, 3).mean())))
    # far out, float32's squared distances overflow: the float64 responsibilities still,
    # where the covariances differ (tied components differ there by their means alone,
    # which x - mu_k at |x| = 1e30 cannot resolve in float32)
    far = 1e30 * np.array([1.0, -0.5, 0.3])
    table = gmm_log_joint_table(typed.logits, typed.means, np.linalg.cholesky(dense), far)
    probs = np.asarray(gmm.posterior(typed, jnp.asarray(far, jnp.float32)).probs)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)  # a distribution, never NaN
    if covariance_type != "tied":
        np.testing.assert_allclose(probs, np.exp(table - np.logaddexp.reduce(table)), atol=1e-6)
    samples, z = gmm.sample(key, typed, 4000)
    members = np.asarray(samples)[np.asarray(z) == 2]
    np.testing.assert_allclose(np.cov(members, rowvar=False), dense[2], atol=0.15 * dense[2].max())
    np.testing.assert_allclose(jax.jit(gmm.log_marginal)(typed, x.at[1].set(0.2)),
                               gmm.log_marginal(typed, x.at[1].set(0.2)), rtol=1e-6)
    init = gmm.model(3, 3, covariance_type).init(key)
    assert gmm.covariance_type(init) == covariance_type
    np.testing.assert_allclose(_dense(init), np.broadcast_to(np.eye(3), (3, 3, 3)))


@pytest.mark.parametrize("covariance_type", ("diag", "spherical", "tied"))
def test_em_with_missing_entries_of_each_type_equals_an_independent_numpy_em(key,
                                                                            covariance_type):
    """EM on the observed entries, per type, against NumPy's float64 EM on the dense
    covariances (which never uses the coordinatewise shortcuts): trace and parameters
    agree, the trace never decreases, and with a mask that observes everything it is the
    complete-data fit_em."""
    X, mask = _incomplete_blobs()
    X, mask = X[:60], mask[:60]
    start = gmm.init_from_data(key, X, 3, reg_covar=1e-3, covariance_type=covariance_type)
    holes = jnp.asarray(np.where(mask, X, np.nan), jnp.float32)
    fitted, trace = gmm.fit_em(start, holes, 5, mask=jnp.asarray(mask), reg_covar=1e-3)
    weights, means, covariances, expected = _numpy_masked_em(start, X, mask, 5, 1e-3)
    np.testing.assert_allclose(trace, expected, rtol=1e-5)
    assert np.all(np.diff(np.asarray(trace)) >= -1e-6)
    np.testing.assert_allclose(jax.nn.softmax(fitted.logits), weights, atol=1e-5)
    np.testing.assert_allclose(fitted.means, means, atol=1e-4)
    np.testing.assert_allclose(_dense(fitted), covariances, atol=1e-4)
    complete, complete_trace = gmm.fit_em(start, X, 5, reg_covar=1e-3)
    observed_all, all_trace = gmm.fit_em(start, X, 5, mask=np.ones(X.shape, bool),
                                         reg_covar=1e-3)
    np.testing.assert_allclose(all_trace, complete_trace, rtol=1e-5)
    for a, b in zip(observed_all, complete, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("covariance_type", ("diag", "spherical", "tied"))
def test_a_full_start_is_converted_to_the_named_type(covariance_type):
    """fit_em(full start, covariance_type=T) starts from T's part of the full covariances
    (diag: their diagonals, spherical: the diagonals' means, tied: their pi-weighted mean):
    from init_from_data's full start, that is init_from_data's start of type T."""
    X = jax.random.normal(jax.random.PRNGKey(2), (80, 3)) * jnp.array([[1.0, 2.0, 0.5]])
    full = gmm.init_from_data(jax.random.PRNGKey(0), X, 2, reg_covar=1e-3)
    typed = gmm.init_from_data(jax.random.PRNGKey(0), X, 2, reg_covar=1e-3,
                               covariance_type=covariance_type)
    converted, trace = gmm.fit_em(full, X, 3, reg_covar=1e-3, covariance_type=covariance_type)
    expected, expected_trace = gmm.fit_em(typed, X, 3, reg_covar=1e-3)
    assert type(converted) is type(typed)
    np.testing.assert_allclose(trace, expected_trace, rtol=1e-5)
    for a, b in zip(converted, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"covariance_type='full' does not match the "
                                         f"{covariance_type} start"):
        gmm.fit_em(typed, X, 2, covariance_type="full")


def _largest_intermediate(function, *args):
    """The most elements of any value ``function(*args)`` computes (its jaxpr, scans and
    other inner jaxprs included): traced, not run."""
    def largest(jaxpr):
        sizes = [int(np.prod(v.aval.shape)) for e in jaxpr.eqns for v in e.outvars]
        for e in jaxpr.eqns:
            for param in e.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    sizes.append(largest(inner))
        return max(sizes, default=0)

    return largest(jax.make_jaxpr(function)(*args).jaxpr)


def test_parameters_are_held_at_their_real_size():
    """A diagonal mixture on 784 pixels holds [K, 784], a spherical one [K], and no value
    of D x D elements is ever computed, EM on incomplete data included."""
    X = jax.random.uniform(jax.random.PRNGKey(0), (40, 784))
    mask = jax.random.uniform(jax.random.PRNGKey(1), (40, 784)) > 0.2
    for covariance_type, shape in (("diag", (4, 784)), ("spherical", (4,))):
        start = gmm.init_from_data(jax.random.PRNGKey(2), X, 4, reg_covar=1e-3,
                                   covariance_type=covariance_type)
        assert start.scale.shape == shape and gmm.covariances(start).shape == shape
        for step in (lambda p: gmm.em_iteration(p, X, 1e-3),
                     lambda p: gmm.masked_em_step(p, X, mask, 1e-3)):
            assert _largest_intermediate(step, start) < 784 * 784  # [N, K, D] at most
    fitted, trace = gmm.fit_em(start, X, 2, mask=mask, reg_covar=1e-3)
    assert fitted.scale.shape == (4,) and np.all(np.diff(np.asarray(trace)) >= 0)


def test_covariance_types_are_named_and_checked(params, key):
    X = jax.random.normal(key, (20, 3))
    for call in (lambda: gmm.init_from_data(key, X, 2, covariance_type="diagonal"),
                 lambda: gmm.fit_em(params, X, 2, covariance_type="Full"),
                 lambda: gmm.m_step(X, jnp.zeros((20, 1)), 1e-3, covariance_type=None),
                 lambda: gmm.model(2, 3, covariance_type="sphere")):
        with pytest.raises(ValueError, match=r"covariance_type must be one of \('full', "
                                             r"'diag', 'spherical', 'tied'\)"):
            call()
    diag = _of_type(params, "diag")
    x = jnp.array([0.5, -0.2, 1.0])
    with pytest.raises(ValueError, match=r"params\.scale must be positive"):
        gmm.log_marginal(diag._replace(scale=diag.scale.at[0, 1].set(-1.0)), x)
    with pytest.raises(ValueError, match=r"params\.scale must have shape \[K\]=\(3,\)"):
        gmm.log_marginal(gmm.SphericalParams(diag.logits, diag.means, diag.scale), x)
    with pytest.raises(ValueError, match=r"params\.scale_tril must have shape \[D, D\]"):
        gmm.log_marginal(gmm.TiedParams(*params), x)
    with pytest.raises(TypeError, match=r"gmm\.DiagParams"):
        gmm.covariance_type(tuple(diag))
    with pytest.raises(ValueError, match="X must have shape"):
        gmm.bic(diag, jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match="X holds 1 NaN"):
        gmm.aic(diag, jnp.zeros((5, 3)).at[0, 0].set(jnp.nan))
