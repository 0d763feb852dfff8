"""The Gaussian mixture's parameters, their checks and its table of log-joints, shared by
``jlvm.models.gmm`` and its EM (``jlvm.models._gmm_em``): both import this module, and
gmm imports (and re-exports) the EM, never the other way round.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models._gaussian import gaussian_terms

# Exact float32 on every device (no TF32 matmuls on GPUs): these are the tests' oracles.
HIGHEST = jax.lax.Precision.HIGHEST


class Params(NamedTuple):
    """Mixture parameters.

    logits: [K] unnormalized log mixing weights (pi = softmax(logits)).
    means: [K, D] component means.
    scale_tril: [K, D, D] lower-triangular Cholesky factors, Sigma_k = L_k L_k^T.
    """

    logits: jax.Array
    means: jax.Array
    scale_tril: jax.Array


def sizes(params: Any) -> tuple[int, int]:
    """(K, D) of a ``Params`` whose arrays fit together; where they are concrete, also
    that they define a mixture (static checks at trace time; no values under jit)."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be a gmm.Params(logits, means, scale_tril), got "
                        f"{type(params).__name__}.")
    _checks.numeric_leaves(params, "params")
    if jnp.ndim(params.means) != 2 or 0 in jnp.shape(params.means):
        raise ValueError(f"params.means must have shape [K, D] with K, D >= 1, got "
                         f"{jnp.shape(params.means)}.")
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


def observation(params: Params, x: Any, mask: Any = None) -> tuple[jax.Array, Any]:
    """(x [D] of the mixture's D, the mask as booleans [D] or None), checked once at a
    public function's entry: where x is concrete, its observed entries must be finite. With
    a mask, x may hold anything (NaN included) at missing entries, set to 0 here, before
    any arithmetic."""
    _, dim = sizes(params)
    x = _checks.float_array(x, "x")
    _checks.shape_is(x, "x", (dim,), "[D]")
    if mask is None:
        _checks.finite_if_concrete(x, "x")
        return x, None
    mask = jnp.asarray(_checks.observation_mask(mask, dim))
    if _checks.is_concrete(x) and _checks.is_concrete(mask):
        _checks.finite_if_concrete(x[mask], "x at observed entries")
    return jnp.where(mask, x, 0.0), mask


def component_terms(params: Params, x: jax.Array, mask: Any = None):
    """log p(x_obs, z=k) = offset_k - squared_k / 2 for every k, as (offset [K], squared
    [K], norm [K]): offset = log pi_k + the Gaussian's constant, squared and norm its
    Mahalanobis distance squared (may overflow) and not (``_gaussian.gaussian_terms``)."""
    constants, squared, norms = jax.vmap(
        lambda mean, tril: gaussian_terms(x, mean, tril, mask))(params.means, params.scale_tril)
    return jax.nn.log_softmax(params.logits) + constants, squared, norms


def normalizable(offsets: jax.Array, squared: jax.Array,
                 norms: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(relative [K], shift) with log p(x_obs, k) = relative_k - shift, relative finite for
    the most probable component, so that its logsumexp and softmax are finite and valid.

    Usually shift = 0 and relative_k = offset_k - squared_k / 2. Where every possible
    component's squared distance overflows float32 (x far out, |x| ~ 1e20), the components
    are compared through r_k^2 - r_0^2 = (r_k - r_0)(r_k + r_0), r_0 the smallest norm,
    and shift = r_0^2 / 2 = +inf: log p(x) is then -inf (its true value, below -1e38, is not
    a float32), the responsibilities a distribution, never NaN.
    """
    possible = offsets > -jnp.inf  # a component of weight 0 is never the reference
    overflow = ~jnp.isfinite(jnp.min(jnp.where(possible, squared, jnp.inf)))
    nearest = jnp.min(jnp.where(possible, norms, jnp.inf))
    excess = jnp.where(norms == nearest, 0.0, (norms - nearest) * (norms + nearest))
    relative = offsets - 0.5 * jnp.where(overflow, excess, squared)
    return relative, jnp.where(overflow, 0.5 * nearest * nearest, 0.0)


def log_joint_table(params: Params, x: jax.Array, mask: Any = None):
    """(relative [K], shift): log p(x_obs, z=k) = relative_k - shift (``normalizable``)."""
    return normalizable(*component_terms(params, x, mask))
