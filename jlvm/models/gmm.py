"""Gaussian mixture model: z ~ Categorical(softmax(logits)), x | z ~ N(means[z], Sigma_z).

    log p(x, z) = log pi_z + log N(x; mu_z, Sigma_z),   log p(x) = logsumexp_z log p(x, z).

The covariance types are scikit-learn's, and the parameters' type is the covariance type:
``Params`` (full, scale_tril [K, D, D]), ``DiagParams`` (scale [K, D]),
``SphericalParams`` (scale [K]) and ``TiedParams`` (scale_tril [D, D], shared). Every
function here takes any of them; diagonal and spherical mixtures are computed coordinate by
coordinate, never through a [D, D] matrix.

Every function takes ONE observation x: [D] (with ``mask`` [D], True = observed, the
observed entries x_obs and each component's marginal over them); vmap over data points.
``model(K, D, covariance_type)`` is the mixture as a ``jlvm.Model``; EM (``fit_em``,
``e_step``, ...) lives in ``jlvm.models._gmm_em`` and is re-exported here.
"""

from __future__ import annotations

import math
from typing import Any

import distrax
import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm.models._gmm_em import (
    e_step,
    em_iteration,
    fit_em,
    init_from_data,
    m_step,
    masked_em_iteration,
    masked_em_step,
    mean_imputed,
)
from jlvm.models._mixture import (
    HIGHEST,
    NAMES,
    DiagParams,
    Params,
    SphericalParams,
    TiedParams,
    covariance_named,
    covariance_of,
    log_joint_table,
    normalizable,
    observation,
    per_component,
    sizes,
)
from jlvm.models.protocol import Model

#: The covariance types, as scikit-learn names them: "full", "diag", "spherical", "tied".
COVARIANCE_TYPES = NAMES


def _component(z: Any, num_components: int) -> tuple[jax.Array, jax.Array]:
    """(z clipped to [0, K), whether z was in [0, K)): z must be an integer scalar."""
    if isinstance(z, (str, bytes)) or z is None:
        raise TypeError(f"z must be an integer component index, got {z!r}.")
    if jnp.shape(z) != ():
        raise ValueError(f"z must be a scalar component index, got shape {jnp.shape(z)}.")
    if not jnp.issubdtype(jnp.result_type(z), jnp.integer):
        raise TypeError(f"z must be an integer component index in [0, {num_components}), "
                        f"got dtype {jnp.result_type(z)}.")
    # JAX clamps out-of-range indices silently: clipped, and marked impossible
    return jnp.clip(z, 0, num_components - 1), (z >= 0) & (z < num_components)


def _factor(params, k, fill: bool = False) -> jax.Array:
    """Component k's covariance factor ([D, D] Cholesky or [D] scales); with ``fill``, NaN
    where k is past the last component."""
    family = covariance_of(params)
    factors = family.expand(params[2], params.means.shape[1])
    if family.axis is None:  # one factor shared by every component
        return jnp.where(k < params.means.shape[0], factors, jnp.nan) if fill else factors
    return factors.at[k].get(mode="fill", fill_value=jnp.nan) if fill else factors[k]


def _component_log_density(params, x, z, mask):
    """(k, whether z is a component, log N(x_obs; mu_k,obs, Sigma_k,oo)), checked once."""
    x, mask = observation(params, x, mask)
    k, inside = _component(z, params.means.shape[0])
    constant, squared, _ = covariance_of(params).terms(x, params.means[k],
                                                       _factor(params, k), mask)
    return k, inside, constant - 0.5 * squared


def covariance_type(params: Any) -> str:
    """scikit-learn's name of the parameters' covariance type.

    Args:
      params: ``Params``, ``DiagParams``, ``SphericalParams`` or ``TiedParams``.

    Returns:
      "full" (``Params``), "diag" (``DiagParams``), "spherical" (``SphericalParams``) or
      "tied" (``TiedParams``).
    """
    return covariance_of(params).name


def covariances(params: Any) -> jax.Array:
    """The covariances in scikit-learn's shapes (``GaussianMixture.covariances_``).

    Args:
      params: mixture parameters of any covariance type.

    Returns:
      full ``[K, D, D]`` (L_k L_k^T), diag ``[K, D]`` (scale^2), spherical ``[K]``
      (scale^2), tied ``[D, D]``.
    """
    sizes(params)
    return covariance_of(params).covariances(params[2])


def precisions_cholesky(params: Any) -> jax.Array:
    """scikit-learn's ``precisions_cholesky_``: U with ``Sigma^{-1} = U U^T``.

    Args:
      params: as in ``covariances``.

    Returns:
      full ``[K, D, D]`` and tied ``[D, D]`` as U = (L^{-1})^T, diag ``[K, D]`` and
      spherical ``[K]`` as 1 / scale.
    """
    sizes(params)
    return covariance_of(params).precisions_cholesky(params[2])


def log_likelihood(params: Any, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """Component z's log density: ``log p(x_obs | z) = log N(x_obs; mu_z,obs, Sigma_z,oo)``.

    -inf for a z outside [0, K) (no such component), eagerly and under jit alike.

    Args:
      params, x, z, mask: as in ``log_joint``.

    Returns:
      Scalar log density in nats.
    """
    _, inside, value = _component_log_density(params, x, z, mask)
    return jnp.where(inside, value, -jnp.inf)


def log_joint(params: Any, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """Log joint of one example and one component.

    ``log p(x_obs, z) = log pi_z + log N(x_obs; mu_z,obs, Sigma_z,oo)``. A z outside
    [0, K) has probability 0: -inf, eagerly and under jit alike. Only component z's density
    is computed: enumerating z costs K densities, not K^2. For x so far out that float32
    cannot hold its squared distance, -inf.

    Args:
      params: mixture parameters of any covariance type (``covariance_type``).
      x: ``[D]``; with a mask, anything (NaN included) at missing entries.
      z: integer scalar, the component.
      mask: ``[D]`` bool (True = observed), or None (all of x).

    Returns:
      Scalar log density in nats.
    """
    k, inside, value = _component_log_density(params, x, z, mask)
    return jnp.where(inside, jax.nn.log_softmax(params.logits)[k] + value, -jnp.inf)


def log_marginal(params: Any, x: jax.Array, mask: Any = None) -> jax.Array:
    """Exact ``log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k)]``.

    With ``mask``: log p(x_obs), each component's Gaussian marginalized to the observed
    coordinates, N(x_obs; mu_k,obs, Sigma_k,obs,obs) (for diag and spherical, the product
    over the observed coordinates). For x so far out that float32 cannot hold its squared
    distances, -inf.

    Args:
      params, x, mask: as in ``log_joint``.

    Returns:
      Scalar log density in nats.
    """
    relative, shift = log_joint_table(params, *observation(params, x, mask))
    return jax.nn.logsumexp(relative) - shift


def posterior(params: Any, x: jax.Array, mask: Any = None) -> distrax.Categorical:
    """p(z | x) (or p(z | x_obs) with ``mask``): the responsibilities.

    Args:
      params, x, mask: as in ``log_joint``.

    Returns:
      ``distrax.Categorical`` over the K components (logits normalized); a distribution
      for any finite x.
    """
    relative, _ = log_joint_table(params, *observation(params, x, mask))
    return distrax.Categorical(logits=jax.nn.log_softmax(relative))


def _information(params: Any, X: Any) -> tuple[jax.Array, int, int]:
    """(mean log p(x_n), free parameters, N) for ``bic`` and ``aic``: scikit-learn's
    ``_n_parameters``, covariances + K D means + K - 1 weights."""
    num_components, dim = sizes(params)
    X = _checks.float_array(X, "X")
    if X.ndim != 2 or X.shape[1] != dim or X.shape[0] < 1:
        raise ValueError(f"X must have shape [N, D] with D={dim} and N >= 1, got {X.shape}.")
    _checks.finite_if_concrete(X, "X")
    count = (covariance_of(params).count(num_components, dim) + num_components * dim
             + num_components - 1)
    return e_step(params, X)[1], count, X.shape[0]


def bic(params: Any, X: jax.Array) -> jax.Array:
    """Bayesian information criterion on complete data, as ``GaussianMixture.bic``.

    ``-2 sum_n log p(x_n) + n_params log N`` (lower is better), n_params the free
    parameters (full: K D (D + 1) / 2, diag: K D, spherical: K, tied: D (D + 1) / 2
    covariance entries, K D means, K - 1 weights).

    Args:
      params: as in ``log_joint``.
      X: ``[N, D]``, N >= 1, finite.

    Returns:
      Scalar.
    """
    mean_log_likelihood, count, num_points = _information(params, X)
    return -2.0 * num_points * mean_log_likelihood + count * math.log(num_points)


def aic(params: Any, X: jax.Array) -> jax.Array:
    """Akaike information criterion, as scikit-learn's ``GaussianMixture.aic``.

    ``-2 sum_n log p(x_n) + 2 n_params`` (lower is better; n_params as in ``bic``).

    Args:
      params, X: as in ``bic``.

    Returns:
      Scalar.
    """
    mean_log_likelihood, count, num_points = _information(params, X)
    return -2.0 * num_points * mean_log_likelihood + 2.0 * count


def _conditionals(params: Any, x: jax.Array, mask: Any):
    """Checked x and mask, log p(k | x_obs) [K], and per component E[x | x_obs, k] [K, D]
    and the spread of x_mis given x_obs and k: Cov [K, D, D] (full, tied) or the
    variances [K, D] (diag, spherical), 0 at observed coordinates."""
    x, mask = observation(params, x, mask)
    if mask is None:
        raise TypeError("a mask [D] (True = observed) is needed: it says what to fill in.")
    conditional = covariance_of(params).conditional
    constants, squared, norms, filled, spreads = per_component(
        lambda mean, factor: conditional(x, mean, factor, mask), params)
    relative, _ = normalizable(jax.nn.log_softmax(params.logits) + constants, squared, norms)
    return x, mask, jax.nn.log_softmax(relative), filled, spreads


def conditional_mean(params: Any, x: jax.Array, mask: Any) -> jax.Array:
    """E[x | x_obs], the exact conditional mean under the mixture.

    Every missing entry becomes ``sum_k p(k | x_obs) E[x_mis | x_obs, k]`` (for diag and
    spherical, E[x_mis | x_obs, k] = mu_k,mis); observed entries stay as they are.

    Args:
      params, x: as in ``log_joint``.
      mask: ``[D]`` bool, True = observed; None is a TypeError (it says what to fill in).

    Returns:
      ``[D]``, x with its missing entries filled in.
    """
    x, mask, log_resp, filled, _ = _conditionals(params, x, mask)
    resp = jnp.exp(log_resp)
    # a component of weight 0 adds 0, whatever its conditional mean (inf for x far out)
    filled = jnp.where(resp[:, None] > 0, filled, 0.0)
    return jnp.where(mask, x, jnp.matmul(resp, filled, precision=HIGHEST))


def sample(key: jax.Array, params: Any, n: int) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: z ~ pi, x ~ N(mu_z, Sigma_z).

    Args:
      key: PRNG key.
      params: as in ``log_joint``.
      n: number of draws, a Python int >= 1.

    Returns:
      A tuple ``(x, z)``, x ``[n, D]``, z ``[n]`` integers.
    """
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    _, dim = sizes(params)
    family = covariance_of(params)
    key_z, key_x = jax.random.split(key)
    z = jax.random.categorical(key_z, params.logits, shape=(n,))
    noise = jax.random.normal(key_x, (n, dim), dtype=params.means.dtype)
    factors = family.expand(params[2], dim)
    chosen = factors if family.axis is None else factors[z]
    return params.means[z] + jax.vmap(family.deviation, in_axes=(family.axis, 0))(
        chosen, noise), z


def conditional_draws(key: jax.Array, params: Any, x: jax.Array, mask: Any,
                      n: int) -> jax.Array:
    """n draws x ~ p(x | x_obs) (multiple imputation).

    k ~ p(k | x_obs), then x_mis ~ N(E[x_mis | x_obs, k], Cov[x_mis | x_obs, k]).

    Args:
      key, params, n: as in ``sample``.
      x, mask: as in ``conditional_mean``.

    Returns:
      ``[n, D]``, observed entries as given.
    """
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    family = covariance_of(params)
    x, mask, log_resp, filled, spreads = _conditionals(params, x, mask)
    key_k, key_x = jax.random.split(key)
    k = jax.random.categorical(key_k, log_resp, shape=(n,))
    factors = jax.vmap(family.spread_factor, in_axes=(0, None))(spreads, mask)
    noise = jax.random.normal(key_x, (n, x.shape[0]), x.dtype)
    draws = filled[k] + jax.vmap(family.deviation)(factors[k], noise)
    return jnp.where(mask[None], x[None], draws)


# ---------------------------------------------------------------- as a jlvm.Model


def prior(params: Any) -> distrax.Categorical:
    """p(z) = Categorical(softmax(logits)).

    Args:
      params: as in ``log_joint``.

    Returns:
      ``distrax.Categorical`` over the K components.
    """
    sizes(params)
    return distrax.Categorical(logits=params.logits)


def decoder(params: Any, z: jax.Array) -> distrax.Distribution:
    """p(x | z) = N(mu_z, Sigma_z).

    Args:
      params, z: as in ``log_joint``.

    Returns:
      distrax distribution over x ``[D]`` (``MultivariateNormalTri`` for full and tied,
      ``MultivariateNormalDiag`` for diag and spherical); a z outside [0, K) has no
      component: its distribution's parameters are NaN, eagerly and under jit alike.
    """
    num_components, _ = sizes(params)
    _, inside = _component(z, num_components)
    k = jnp.where(inside, z, num_components)  # out of range even where z < 0: filled NaN
    return covariance_of(params).distribution(
        params.means.at[k].get(mode="fill", fill_value=jnp.nan), _factor(params, k, True))


def model(num_components: int, data_dim: int, covariance_type: str = "full") -> Model:
    """The mixture of K Gaussians over x ``[D]`` as a ``jlvm.Model``.

    ``init(key)`` gives that type's parameters with means ~ N(0, I), identity covariances
    and equal weights; the encoder is the exact posterior (``posterior``), so importance
    sampling with it as the proposal has zero variance; ``log_joint``, ``log_likelihood``,
    ``prior`` and ``decoder`` are this module's functions.

    Args:
      num_components: K, a Python int >= 1.
      data_dim: D, a Python int >= 1.
      covariance_type: "full", "diag", "spherical" or "tied".

    Returns:
      ``jlvm.Model``.
    """
    num_components = _checks.positive_int(num_components, "num_components")
    data_dim = _checks.positive_int(data_dim, "data_dim")
    family = covariance_named(covariance_type)

    def init(key: jax.Array) -> Any:
        _checks.prng_key(key)
        return family.params(jnp.zeros(num_components),
                             jax.random.normal(key, (num_components, data_dim)),
                             family.identity(num_components, data_dim))

    return Model(init, log_joint, posterior, log_likelihood, prior, decoder)


__all__ = ["COVARIANCE_TYPES", "DiagParams", "Params", "SphericalParams", "TiedParams", "aic",
           "bic", "conditional_draws", "conditional_mean", "covariance_type", "covariances",
           "decoder", "e_step", "em_iteration", "fit_em", "init_from_data", "log_joint",
           "log_likelihood", "log_marginal", "m_step", "masked_em_iteration",
           "masked_em_step", "mean_imputed", "model", "posterior", "precisions_cholesky",
           "prior", "sample"]
