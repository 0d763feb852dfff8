"""The Gaussian mixture's parameters, one type per covariance type, their checks and its
table of log-joints, shared by ``jlvm.models.gmm`` and its EM (``jlvm.models._gmm_em``):
both import this module, and gmm imports (and re-exports) the EM, never the other way round.

The covariance types are scikit-learn's, each a parameter type held at its real size:

    full       Params(logits [K], means [K, D], scale_tril [K, D, D])   Sigma_k = L_k L_k^T
    diag       DiagParams(logits, means, scale [K, D])                 Sigma_k = diag(s_k^2)
    spherical  SphericalParams(logits, means, scale [K])               Sigma_k = s_k^2 I
    tied       TiedParams(logits, means, scale_tril [D, D])            Sigma_k = L L^T

What a type changes lives in its ``Covariance`` object (``covariance_of(params)``), so the
code that scores, samples and fits a mixture never asks which type it holds. Diagonal and
spherical components are computed coordinate by coordinate: no [D, D] matrix is formed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models._gaussian import (
    conditional_gaussian,
    diagonal_conditional,
    diagonal_terms,
    gaussian_terms,
)

# Exact float32 on every device (no TF32 matmuls on GPUs): these are the tests' oracles.
HIGHEST = jax.lax.Precision.HIGHEST


class Params(NamedTuple):
    """Mixture parameters, full covariances (``covariance_type="full"``).

    Attributes:
      logits: ``[K]``, the mixing weights' unnormalized logits (pi = softmax(logits)),
        finite or -inf (a weight of 0).
      means: ``[K, D]``, the component means.
      scale_tril: ``[K, D, D]``, lower-triangular Cholesky factors L_k with a positive
        diagonal: Sigma_k = L_k L_k^T.
    """

    logits: jax.Array
    means: jax.Array
    scale_tril: jax.Array


class DiagParams(NamedTuple):
    """Diagonal covariances (``"diag"``): Sigma_k = diag(scale_k^2).

    Attributes:
      logits: ``[K]``, the mixing weights' logits, as in ``Params``.
      means: ``[K, D]``, the component means.
      scale: ``[K, D]``, per-coordinate standard deviations (> 0).
    """

    logits: jax.Array
    means: jax.Array
    scale: jax.Array


class SphericalParams(NamedTuple):
    """One variance per component (``"spherical"``): Sigma_k = scale_k^2 I.

    Attributes:
      logits: ``[K]``, the mixing weights' logits, as in ``Params``.
      means: ``[K, D]``, the component means.
      scale: ``[K]``, each component's standard deviation in every coordinate (> 0).
    """

    logits: jax.Array
    means: jax.Array
    scale: jax.Array


class TiedParams(NamedTuple):
    """One full covariance shared by every component (``"tied"``): Sigma_k = L L^T.

    Attributes:
      logits: ``[K]``, the mixing weights' logits, as in ``Params``.
      means: ``[K, D]``, the component means.
      scale_tril: ``[D, D]``, the shared covariance's lower-triangular Cholesky factor L
        (positive diagonal).
    """

    logits: jax.Array
    means: jax.Array
    scale_tril: jax.Array


class Covariance(NamedTuple):
    """What one covariance type changes. "factor" is a params' third field as stored
    (``params[2]``); per component it is ``expand(factor, D)`` along ``axis`` (None: one
    factor shared by every component): a Cholesky factor [D, D] or a scale vector [D]."""

    name: str  # scikit-learn's covariance_type
    params: type  # the parameter type: params(logits, means, factor)
    shape: Callable[[int, int], tuple[int, ...]]  # (K, D) -> the factor's shape
    shape_text: str
    check_values: Callable[[np.ndarray, str], None]  # a concrete factor -> ValueError
    expand: Callable[[jax.Array, int], jax.Array]
    axis: int | None
    terms: Callable  # (x, mean, factor, mask) -> (constant, squared, norm): log N parts
    conditional: Callable  # (x, mean, factor, mask) -> (terms..., filled [D], spread)
    deviation: Callable  # (a factor or spread_factor, noise [D]) -> [D]: factor @ noise
    spread_factor: Callable  # (spread, mask [D]) -> its factor for draws (identity off it)
    spread_shape: Callable[[int], tuple[int, ...]]  # D -> one spread's shape
    # (resp [N, K], shifted [N, K, D], spreads [N, K, ...] or None) -> what the M-step needs
    # of sum_n r_nk E[(x_n - c_k)(x_n - c_k)^T] ([K, D, D], [D, D] or [K, D])
    second_moments: Callable
    moment_shape: Callable[[int, int], tuple[int, ...]]  # (K, D) -> their shape
    # (counts N_k [K], step [K, D] = mu_k - c_k, second moments, reg_covar) -> the factor
    from_moments: Callable
    from_full: Callable  # (covariances [K, D, D], weights [K]) -> the factor
    # X [N, D] -> the data covariance [D, D] as far as from_full reads it (diag and
    # spherical read its diagonal: the variances, without the N D^2 cost of the rest)
    data_covariance: Callable
    covariances: Callable  # factor -> scikit-learn's covariances_
    precisions_cholesky: Callable  # factor -> scikit-learn's precisions_cholesky_
    # a float64 covariance [D, D] -> the eigenvalues of the part of it this type keeps
    eigenvalues: Callable
    count: Callable[[int, int], int]  # (K, D) -> free covariance parameters
    identity: Callable  # (K, D) -> the factor of identity covariances
    distribution: Callable  # (mean [D], one component's factor) -> distrax


def _check_triangular(factor: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(factor)):
        raise ValueError(f"{name} must be finite.")
    if np.any(np.triu(factor, 1) != 0):
        raise ValueError(f"{name} must be lower triangular (Cholesky factors L, Sigma = "
                         "L L^T): its entries above the diagonal are not 0.")
    if not np.all(np.diagonal(factor, axis1=-2, axis2=-1) > 0):
        raise ValueError(f"{name} must have a positive diagonal (a singular covariance has "
                         "no density).")


def _check_positive(factor: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(factor)):
        raise ValueError(f"{name} must be finite.")
    if not np.all(factor > 0):
        raise ValueError(f"{name} must be positive (standard deviations; a variance of 0 "
                         "has no density).")


def _product(factor: jax.Array) -> jax.Array:  # L L^T over the last two axes
    return jnp.matmul(factor, jnp.swapaxes(factor, -1, -2), precision=HIGHEST)


def _inverse_transposed(factor: jax.Array) -> jax.Array:  # (L^{-1})^T: scikit-learn's
    eye = jnp.broadcast_to(jnp.eye(factor.shape[-1], dtype=factor.dtype), factor.shape)
    return jnp.swapaxes(jax.lax.linalg.triangular_solve(factor, eye, left_side=True,
                                                        lower=True), -1, -2)


def _symmetric_cholesky(covariance: jax.Array) -> jax.Array:
    return jnp.linalg.cholesky(0.5 * (covariance + jnp.swapaxes(covariance, -1, -2)))


def _matrix_moments(resp, shifted, spreads):  # full: [K, D, D]
    second = jnp.einsum("nk,nki,nkj->kij", resp, shifted, shifted, precision=HIGHEST)
    if spreads is None:
        return second
    return second + jnp.einsum("nk,nkij->kij", resp, spreads, precision=HIGHEST)


def _pooled_moments(resp, shifted, spreads):  # tied: summed over components, [D, D]
    second = jnp.einsum("nk,nki,nkj->ij", resp, shifted, shifted, precision=HIGHEST)
    if spreads is None:
        return second
    return second + jnp.einsum("nk,nkij->ij", resp, spreads, precision=HIGHEST)


def _diagonal_moments(resp, shifted, spreads):  # diag, spherical: [K, D]
    # a sum of elementwise products: XLA fuses it, no [N, K, D] square is stored
    second = jnp.sum(resp[:, :, None] * shifted * shifted, axis=0)
    if spreads is None:
        return second
    return second + jnp.einsum("nk,nkd->kd", resp, spreads, precision=HIGHEST)


def _full_from_moments(counts, step, second, reg_covar):
    # Sigma_k = E_k[(x - c_k)(x - c_k)^T] - (mu_k - c_k)(mu_k - c_k)^T + reg I
    dim = step.shape[1]
    return _symmetric_cholesky(second / counts[:, None, None] - step[:, :, None] * step[:, None, :]
                               + reg_covar * jnp.eye(dim, dtype=step.dtype)[None])


def _tied_from_moments(counts, step, second, reg_covar):
    # scikit-learn's tied covariance: sum_k N_k Sigma_k / sum_k N_k + reg I
    outer = jnp.einsum("k,ki,kj->ij", counts, step, step, precision=HIGHEST)
    dim = step.shape[1]
    return _symmetric_cholesky((second - outer) / jnp.sum(counts)
                               + reg_covar * jnp.eye(dim, dtype=step.dtype))


def _diagonal_variances(counts, step, second, reg_covar):
    return second / counts[:, None] - step * step + reg_covar


def _eye(num_components: int, dim: int) -> jax.Array:
    return jnp.tile(jnp.eye(dim), (num_components, 1, 1))


_FULL = Covariance(
    name="full", params=Params, shape=lambda k, d: (k, d, d), shape_text="[K, D, D]",
    check_values=_check_triangular, expand=lambda factor, dim: factor, axis=0,
    terms=gaussian_terms, conditional=conditional_gaussian,
    deviation=lambda factor, noise: jnp.matmul(factor, noise, precision=HIGHEST),
    # the conditional covariance is 0 off the missing block: the identity there makes it
    # factorable, and the noise it gives there is discarded
    spread_factor=lambda spread, mask: jnp.linalg.cholesky(
        spread + jnp.diag(mask.astype(spread.dtype))),
    spread_shape=lambda dim: (dim, dim),
    second_moments=_matrix_moments, moment_shape=lambda k, d: (k, d, d),
    from_moments=_full_from_moments,
    from_full=lambda covariances, weights: jnp.linalg.cholesky(covariances),
    data_covariance=lambda X: jnp.cov(X, rowvar=False).reshape(X.shape[1], X.shape[1]),
    covariances=_product, precisions_cholesky=_inverse_transposed,
    eigenvalues=np.linalg.eigvalsh, count=lambda k, d: k * d * (d + 1) // 2,
    identity=_eye, distribution=distrax.MultivariateNormalTri)

_TIED = _FULL._replace(
    name="tied", params=TiedParams, shape=lambda k, d: (d, d), shape_text="[D, D]", axis=None,
    second_moments=_pooled_moments, moment_shape=lambda k, d: (d, d),
    from_moments=_tied_from_moments,
    from_full=lambda covariances, weights: jnp.linalg.cholesky(
        jnp.einsum("k,kij->ij", weights / jnp.sum(weights), covariances, precision=HIGHEST)),
    count=lambda k, d: d * (d + 1) // 2, identity=lambda k, d: jnp.eye(d))

_DIAG = Covariance(
    name="diag", params=DiagParams, shape=lambda k, d: (k, d), shape_text="[K, D]",
    check_values=_check_positive, expand=lambda factor, dim: factor, axis=0,
    terms=diagonal_terms, conditional=diagonal_conditional,
    deviation=lambda scale, noise: scale * noise,
    spread_factor=lambda variances, mask: jnp.sqrt(variances),
    spread_shape=lambda dim: (dim,),
    second_moments=_diagonal_moments, moment_shape=lambda k, d: (k, d),
    from_moments=lambda *moments: jnp.sqrt(_diagonal_variances(*moments)),
    from_full=lambda covariances, weights: jnp.sqrt(
        jnp.diagonal(covariances, axis1=1, axis2=2)),
    data_covariance=lambda X: jnp.diag(jnp.var(X, axis=0, ddof=1)),
    covariances=lambda scale: scale * scale, precisions_cholesky=lambda scale: 1.0 / scale,
    eigenvalues=np.diagonal, count=lambda k, d: k * d,
    identity=lambda k, d: jnp.ones((k, d)), distribution=distrax.MultivariateNormalDiag)

_SPHERICAL = _DIAG._replace(
    name="spherical", params=SphericalParams, shape=lambda k, d: (k,), shape_text="[K]",
    expand=lambda scale, dim: jnp.broadcast_to(scale[:, None], (scale.shape[0], dim)),
    # scikit-learn: the mean over coordinates of the diagonal variances (reg included)
    from_moments=lambda *moments: jnp.sqrt(jnp.mean(_diagonal_variances(*moments), axis=1)),
    from_full=lambda covariances, weights: jnp.sqrt(
        jnp.mean(jnp.diagonal(covariances, axis1=1, axis2=2), axis=1)),
    eigenvalues=lambda covariance: np.mean(np.diagonal(covariance), keepdims=True),
    count=lambda k, d: k, identity=lambda k, d: jnp.ones(k))

COVARIANCES = {family.name: family for family in (_FULL, _DIAG, _SPHERICAL, _TIED)}
_BY_TYPE = {family.params: family for family in COVARIANCES.values()}
NAMES = tuple(COVARIANCES)


def covariance_of(params: Any) -> Covariance:
    """The ``Covariance`` of a parameter type, or a TypeError naming the four types."""
    family = _BY_TYPE.get(type(params))
    if family is None:
        raise TypeError(
            "params must be a gmm.Params(logits, means, scale_tril) (full covariances), "
            "gmm.DiagParams(logits, means, scale), gmm.SphericalParams(logits, means, scale) "
            f"or gmm.TiedParams(logits, means, scale_tril), got {type(params).__name__}.")
    return family


def covariance_named(name: Any) -> Covariance:
    """The ``Covariance`` called ``name``, or a ValueError naming covariance_type."""
    if not isinstance(name, str) or name not in COVARIANCES:
        raise ValueError(f"covariance_type must be one of {NAMES} (scikit-learn's names), "
                         f"got {name!r}.")
    return COVARIANCES[name]


def sizes(params: Any) -> tuple[int, int]:
    """(K, D) of mixture parameters whose arrays fit together; where they are concrete,
    also that they define a mixture (static checks at trace time; no values under jit)."""
    family = covariance_of(params)
    _checks.numeric_leaves(params, "params")
    if jnp.ndim(params.means) != 2 or 0 in jnp.shape(params.means):
        raise ValueError(f"params.means must have shape [K, D] with K, D >= 1, got "
                         f"{jnp.shape(params.means)}.")
    num_components, dim = jnp.shape(params.means)
    if jnp.shape(params.logits) != (num_components,):
        raise ValueError(f"params.logits must have shape [K]=({num_components},), "
                         f"got {jnp.shape(params.logits)}.")
    name = f"params.{params._fields[2]}"
    if jnp.shape(params[2]) != family.shape(num_components, dim):
        raise ValueError(f"{name} must have shape {family.shape_text}="
                         f"{family.shape(num_components, dim)} ({family.name} covariances), "
                         f"got {jnp.shape(params[2])}.")
    if all(_checks.is_concrete(leaf) for leaf in params):
        logits, means, factor = (np.asarray(leaf) for leaf in params)
        if (np.any(np.isnan(logits)) or np.any(np.isposinf(logits))
                or np.all(np.isneginf(logits))):
            raise ValueError("params.logits must be finite or -inf (a weight of 0), not NaN "
                             "or +inf, and not all -inf.")
        if not np.all(np.isfinite(means)):
            raise ValueError("params.means must be finite.")
        family.check_values(factor, name)
    return num_components, dim


def observation(params: Any, x: Any, mask: Any = None) -> tuple[jax.Array, Any]:
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


def per_component(function: Callable, params: Any) -> Any:
    """``function(mean, factor)`` for every component k, vmapped: [K, ...] results. A
    factor shared by all (tied) is passed unbatched, so whatever depends on it alone (its
    Cholesky factor restricted to a mask, a triangular solve's matrix) is computed once."""
    family = covariance_of(params)
    factors = family.expand(params[2], params.means.shape[1])
    return jax.vmap(function, in_axes=(0, family.axis))(params.means, factors)


def component_terms(params: Any, x: jax.Array, mask: Any = None):
    """log p(x_obs, z=k) = offset_k - squared_k / 2 for every k, as (offset [K], squared
    [K], norm [K]): offset = log pi_k + the Gaussian's constant, squared and norm its
    Mahalanobis distance squared (may overflow) and not (``_gaussian.gaussian_terms``)."""
    terms = covariance_of(params).terms
    constants, squared, norms = per_component(
        lambda mean, factor: terms(x, mean, factor, mask), params)
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


def log_joint_table(params: Any, x: jax.Array, mask: Any = None):
    """(relative [K], shift): log p(x_obs, z=k) = relative_k - shift (``normalizable``)."""
    return normalizable(*component_terms(params, x, mask))
