"""Gaussian mixture model: z ~ Categorical(softmax(logits)), x | z ~ N(means[z], L_z L_z^T).

    log p(x, z) = log pi_z + log N(x; mu_z, Sigma_z),   log p(x) = logsumexp_z log p(x, z).

Every function takes ONE observation x: [D]; vmap over data points.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models._gaussian import conditional_gaussian, mvn_log_prob_tril, observed_gaussian

# Exact float32 on every device (no TF32 matmuls on GPUs): these are the tests' oracles.
_HIGHEST = jax.lax.Precision.HIGHEST


class Params(NamedTuple):
    """Mixture parameters.

    logits: [K] unnormalized log mixing weights (pi = softmax(logits)).
    means: [K, D] component means.
    scale_tril: [K, D, D] lower-triangular Cholesky factors, Sigma_k = L_k L_k^T.
    """

    logits: jax.Array
    means: jax.Array
    scale_tril: jax.Array


def _sizes(params: Params) -> tuple[int, int]:
    if not isinstance(params, Params):
        raise TypeError(f"params must be a gmm.Params(logits, means, scale_tril), got "
                        f"{type(params).__name__}.")
    _checks.numeric_leaves(params, "params")
    if jnp.ndim(params.means) != 2 or 0 in jnp.shape(params.means):
        raise ValueError(f"params.means must have shape [K, D] with K, D >= 1, got "
                         f"{jnp.shape(params.means)}.")
        raise ValueError(f"params.means must have shape [K, D], got {jnp.shape(params.means)}.")
    num_components, dim = jnp.shape(params.means)
    if jnp.shape(params.logits) != (num_components,):
        raise ValueError(f"params.logits must have shape [K]=({num_components},), "
                         f"got {jnp.shape(params.logits)}.")
    if jnp.shape(params.scale_tril) != (num_components, dim, dim):
        raise ValueError(f"params.scale_tril must have shape [K, D, D]="
                         f"{(num_components, dim, dim)}, got {jnp.shape(params.scale_tril)}.")
    if all(_checks.is_concrete(leaf) for leaf in params):
        _check_values(*(np.asarray(leaf) for leaf in params))
    return num_components, dim


def _check_values(logits: np.ndarray, means: np.ndarray, scale_tril: np.ndarray) -> None:
    """Concrete parameters that define a mixture, or a ValueError saying which do not."""
    if np.any(np.isnan(logits)) or np.any(np.isposinf(logits)) or np.all(np.isneginf(logits)):
        raise ValueError("params.logits must be finite or -inf (a weight of 0), not NaN or "
                         "+inf, and not all -inf.")
    if not np.all(np.isfinite(means)):
        raise ValueError("params.means must be finite.")
    if not np.all(np.isfinite(scale_tril)):
        raise ValueError("params.scale_tril must be finite.")
    if np.any(np.triu(scale_tril, 1) != 0):
        raise ValueError("params.scale_tril must be lower triangular (Cholesky factors L_k, "
                         "Sigma_k = L_k L_k^T): its entries above the diagonal are not 0.")
    if not np.all(np.diagonal(scale_tril, axis1=1, axis2=2) > 0):
        raise ValueError("params.scale_tril must have a positive diagonal (a singular "
                         "covariance has no density).")


def _check_x(params: Params, x: Any) -> jax.Array:
    """x as an array [D] of the mixture's D (finite where concrete)."""
    _, dim = _sizes(params)
    x = _checks.float_array(x, "x")
    _checks.shape_is(x, "x", (dim,), "[D]")
    _checks.finite_if_concrete(x, "x")
    return x


def _log_joint_all(params: Params, x: jax.Array, mask: Any = None) -> jax.Array:
    """log p(x_obs, z=k) for every k: [K] (all of x where ``mask`` is None)."""
    log_weights = jax.nn.log_softmax(params.logits)
    if mask is None:
        log_densities = jax.vmap(mvn_log_prob_tril, in_axes=(None, 0, 0))(
            x, params.means, params.scale_tril)
    else:
        log_densities = jax.vmap(lambda mean, tril: observed_gaussian(x, mean, tril, mask)[0])(
            params.means, params.scale_tril)
    return log_weights + log_densities


def log_joint(params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
    """log p(x, z) = log pi_z + log N(x; mu_z, Sigma_z). x: [D], z: integer scalar in [0, K).

    A z outside [0, K) has probability 0: a concrete one is a ``ValueError`` (surely a
    mistake); under jit, where its value is unknown, log p(x, z) = -inf.
    """
    x = _check_x(params, x)
    num_components, _ = _sizes(params)
    if isinstance(z, (str, bytes)) or z is None:
        raise TypeError(f"z must be an integer component index, got {z!r}.")
    if jnp.shape(z) != ():
        raise ValueError(f"z must be a scalar component index, got shape {jnp.shape(z)}.")
    if not jnp.issubdtype(jnp.result_type(z), jnp.integer):
        raise TypeError(f"z must be an integer component index in [0, {num_components}), "
                        f"got dtype {jnp.result_type(z)}.")
    if _checks.is_concrete(z) and not 0 <= int(z) < num_components:
        raise ValueError(f"z must be a component index in [0, {num_components}), got {int(z)}.")
    inside = (z >= 0) & (z < num_components)
    # clip: JAX clamps out-of-range indices silently; an impossible z gets -inf instead
    k = jnp.clip(z, 0, num_components - 1)
    # only component z's density: enumerating z costs K densities, not K^2
    value = (jax.nn.log_softmax(params.logits)[k]
             + mvn_log_prob_tril(x, params.means[k], params.scale_tril[k]))
    return jnp.where(inside, value, -jnp.inf)


def _check_observed(params: Params, x: Any, mask: Any) -> tuple[jax.Array, Any]:
    """(x, mask as booleans [D] or None): with a mask, x may hold anything (NaN included)
    at missing entries, which are set to 0 before any arithmetic."""
    if mask is None:
        return _check_x(params, x), None
    _, dim = _sizes(params)
    mask = jnp.asarray(_checks.observation_mask(mask, dim))
    x = _checks.float_array(x, "x")
    _checks.shape_is(x, "x", (dim,), "[D]")
    if _checks.is_concrete(x) and _checks.is_concrete(mask):
        _checks.finite_if_concrete(x[mask], "x at observed entries")
    return jnp.where(mask, x, 0.0), mask


def log_marginal(params: Params, x: jax.Array, mask: Any = None) -> jax.Array:
    """Exact log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k)]. x: [D].

    With ``mask`` [D] (True = observed): log p(x_obs), each component's Gaussian
    marginalized to the observed coordinates, N(x_obs; mu_k,obs, Sigma_k,obs,obs).
    """
    x, mask = _check_observed(params, x, mask)
    return jax.nn.logsumexp(_log_joint_all(params, x, mask))


def posterior(params: Params, x: jax.Array, mask: Any = None) -> distrax.Categorical:
    """p(z | x) (or p(z | x_obs) with ``mask``): the responsibilities, as a
    ``distrax.Categorical`` (logits normalized)."""
    x, mask = _check_observed(params, x, mask)
    return distrax.Categorical(logits=jax.nn.log_softmax(_log_joint_all(params, x, mask)))


def conditional_mean(params: Params, x: jax.Array, mask: Any) -> jax.Array:
    """E[x | x_obs]: x [D] with every missing entry replaced by sum_k p(k | x_obs)
    E[x_mis | x_obs, k], the exact conditional mean under the mixture (observed entries
    as they are). ``mask`` [D], True = observed."""
    x, mask = _check_observed(params, x, mask)
    if mask is None:
        raise TypeError("conditional_mean needs a mask [D] (True = observed).")
    log_densities, filled, _ = jax.vmap(
        lambda mean, tril: conditional_gaussian(x, mean, tril, mask))(params.means,
                                                                      params.scale_tril)
    resp = jax.nn.softmax(jax.nn.log_softmax(params.logits) + log_densities)
    return jnp.where(mask, x, jnp.matmul(resp, filled, precision=_HIGHEST))


def sample(key: jax.Array, params: Params, n: int) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: z ~ pi, x ~ N(mu_z, Sigma_z). Returns (x [n, D], z [n])."""
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    _, dim = _sizes(params)
    key_z, key_x = jax.random.split(key)
    z = jax.random.categorical(key_z, params.logits, shape=(n,))
    noise = jax.random.normal(key_x, (n, dim), dtype=params.means.dtype)
    x = params.means[z] + jnp.einsum("nij,nj->ni", params.scale_tril[z], noise,
                                     precision=_HIGHEST)
    return x, z


def conditional_draws(key: jax.Array, params: Params, x: jax.Array, mask: Any,
                      n: int) -> jax.Array:
    """n draws x ~ p(x | x_obs) [n, D]: k ~ p(k | x_obs), then x_mis ~ N(E[x_mis | x_obs,
    k], Cov[x_mis | x_obs, k]) (multiple imputation; observed entries as given)."""
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    x, mask = _check_observed(params, x, mask)
    if mask is None:
        raise TypeError("conditional_draws needs a mask [D] (True = observed).")
    log_densities, filled, covariances = jax.vmap(
        lambda mean, tril: conditional_gaussian(x, mean, tril, mask))(params.means,
                                                                      params.scale_tril)
    key_k, key_x = jax.random.split(key)
    k = jax.random.categorical(key_k, jax.nn.log_softmax(params.logits) + log_densities,
                               shape=(n,))
    # the conditional covariance is 0 off the missing block: the identity there makes it
    # factorable, and the noise it gives there is discarded below
    observed = mask.astype(x.dtype)
    factors = jnp.linalg.cholesky(covariances + jnp.diag(observed)[None])
    noise = jax.random.normal(key_x, (n, x.shape[0]), x.dtype)
    draws = filled[k] + jnp.einsum("nij,nj->ni", factors[k], noise, precision=_HIGHEST)
    return jnp.where(mask[None], x[None], draws)


# EM lives in its own module; its names are this module's too
from jlvm.models._gmm_em import (  # noqa: E402
    e_step,
    em_iteration,
    fit_em,
    init_from_data,
    m_step,
    masked_em_iteration,
    masked_em_step,
    mean_imputed,
)

__all__ = ["Params", "conditional_draws", "conditional_mean", "e_step", "em_iteration",
           "fit_em", "init_from_data", "log_joint", "log_marginal", "m_step",
           "masked_em_iteration", "masked_em_step", "mean_imputed", "posterior", "sample"]

