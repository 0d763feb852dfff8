"""Gaussian log-densities shared by the models, written for one observation.

A multivariate Gaussian's log-density comes in parts, log N = constant - squared / 2 with
squared = |w|^2, w = L^{-1}(x - mean) (the Mahalanobis distance), and norm = |w| beside it:
for x far out (|w| > 1.8e19) float32's squared overflows to +inf while norm stays finite,
so a mixture can still compare its components (``jlvm.models._mixture``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST  # exact float32 on every device: oracles
_LOG_2PI = math.log(2 * math.pi)
# |w|^2 of a diagonal Gaussian cannot overflow below this bound on max |w_d|^2 D; past it
# it is summed scaled by 2^-64 (a power of two: exact)
_SAFE_SQUARED, _DOWN, _UP = 1e37, 2.0**-64, 2.0**64


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) for z: [L]."""
    return -0.5 * z.shape[-1] * _LOG_2PI - 0.5 * jnp.sum(z**2)


def normal_log_prob_elementwise(x: jax.Array, mean: jax.Array,
                                log_scale: jax.Array) -> jax.Array:
    """log N(x_d; mean_d, exp(log_scale_d)^2) for each d: [D] -> [D]."""
    z = (x - mean) * jnp.exp(-log_scale)
    return -0.5 * _LOG_2PI - log_scale - 0.5 * z**2


def _squared_and_norm(whitened: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(|w|^2, |w|): the norm scaled by max |w_i|, finite wherever w is."""
    top = jnp.max(jnp.abs(whitened))
    safe = jnp.where((top > 0) & jnp.isfinite(top), top, 1.0)  # no 0/0, no inf/inf
    norm = jnp.where(jnp.isfinite(top), safe * jnp.sqrt(jnp.sum((whitened / safe) ** 2)), top)
    return jnp.sum(whitened**2), norm


def _restricted_factor(scale_tril: jax.Array, mask: jax.Array):
    """(Sigma = L L^T, the Cholesky factor of Sigma' = M Sigma M + (I - M)): Sigma_oo on
    the observed coordinates, I on the missing ones, so that shapes are fixed whatever the
    mask and N(r; 0, Sigma') at r = M (x - mean) is N(x_obs; mean_obs, Sigma_oo) times
    N(0; 0, 1) per missing coordinate."""
    observed = mask.astype(scale_tril.dtype)
    sigma = jnp.matmul(scale_tril, scale_tril.T, precision=_HIGHEST)
    restricted = observed[:, None] * sigma * observed[None, :] + jnp.diag(1.0 - observed)
    return sigma, jnp.linalg.cholesky(restricted)


def gaussian_terms(x: jax.Array, mean: jax.Array, scale_tril: jax.Array,
                   mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """log N(x; mean, L L^T) = constant - squared / 2 as (constant, squared, norm); x, mean:
    [D], scale_tril L: [D, D] lower triangular. With ``mask`` [D] (True = observed), of
    x_obs under the observed coordinates' marginal N(mean_obs, Sigma_oo).

    By a triangular solve: no inverse, no determinant of the covariance.
    """
    if mask is None:
        factor, residual, count = scale_tril, x - mean, x.shape[-1]
    else:
        _, factor = _restricted_factor(scale_tril, mask)
        residual, count = jnp.where(mask, x - mean, 0.0), jnp.sum(mask)
    whitened = jax.scipy.linalg.solve_triangular(factor, residual, lower=True)
    constant = -0.5 * count * _LOG_2PI - jnp.sum(jnp.log(jnp.abs(jnp.diagonal(factor))))
    return (constant, *_squared_and_norm(whitened))


def conditional_gaussian(x: jax.Array, mean: jax.Array, scale_tril: jax.Array,
                         mask: jax.Array):
    """The Gaussian seen through ``mask``: (constant, squared, norm) of log N(x_obs; ...)
    as in ``gaussian_terms``, x with its missing entries replaced by E[x_mis | x_obs] =
    mu_m + Sigma_mo Sigma_oo^{-1} (x_o - mu_o), and the conditional covariance Sigma_mm -
    Sigma_mo Sigma_oo^{-1} Sigma_om on the missing block, 0 elsewhere: [D, D].

    One triangular solve with L' the Cholesky factor of Sigma' (``_restricted_factor``):
    [w, A] = L'^{-1} [M (x - mean), M Sigma]. Then |w|^2 is the Mahalanobis term,
    A^T w = Sigma_.o Sigma_oo^{-1} (x_o - mu_o) and A^T A = Sigma_.o Sigma_oo^{-1} Sigma_o.
    (Sigma' is block diagonal, so L'^{-1} keeps the missing rows of M Sigma at 0.) A single
    solve, not three, also keeps XLA's CPU runtime from running two batched triangular
    solves at once, which deadlocks jaxlib 0.10's LAPACK thread pool.
    """
    observed = mask.astype(mean.dtype)
    sigma, factor = _restricted_factor(scale_tril, mask)
    residual = jnp.where(mask, x - mean, 0.0)
    rhs = jnp.concatenate([residual[:, None], observed[:, None] * sigma], axis=1)
    solved = jax.scipy.linalg.solve_triangular(factor, rhs, lower=True)  # [D, 1 + D]
    whitened, a = solved[:, 0], solved[:, 1:]
    constant = (-0.5 * jnp.sum(observed) * _LOG_2PI
                - jnp.sum(jnp.log(jnp.abs(jnp.diagonal(factor)))))
    filled = jnp.where(mask, x, mean + jnp.matmul(a.T, whitened, precision=_HIGHEST))
    missing = 1.0 - observed
    covariance = (missing[:, None] * (sigma - jnp.matmul(a.T, a, precision=_HIGHEST))
                  * missing[None, :])
    return (constant, *_squared_and_norm(whitened), filled, covariance)


def diagonal_terms(x: jax.Array, mean: jax.Array, scale: jax.Array,
                   mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``gaussian_terms`` of N(x; mean, diag(scale^2)); x, mean, scale: [D] (standard
    deviations). Coordinate by coordinate, so D = 784 costs O(D): the observed coordinates'
    marginal is their product, w_d = (x_d - mean_d) / scale_d over them.

    One sum over the coordinates gives both |w|^2 and |w|: vmapped over points and
    components, a second pass (``_squared_and_norm``'s max |w_d|) made the E-step 5 times
    slower. The sum is scaled by 2^-64 only where the bound (max|x| + max|mean|) / min scale
    (a pass over x and one over the component, not one per pair) says it could overflow,
    i.e. where |x| or |mean| exceeds ~1e16 standard deviations: there float32's x - mean
    has no digit left at the scale of one standard deviation, and the terms |w_d| < 1 that
    the scaling flushes to 0 are noise.
    """
    whitened = (x - mean) / scale
    log_scale = jnp.log(scale)
    if mask is None:
        count = x.shape[-1]
    else:
        whitened = jnp.where(mask, whitened, 0.0)
        log_scale, count = jnp.where(mask, log_scale, 0.0), jnp.sum(mask)
    bound = (jnp.max(jnp.abs(x)) + jnp.max(jnp.abs(mean))) / jnp.min(scale)
    down = jnp.where(bound * bound * x.shape[-1] < _SAFE_SQUARED, 1.0, _DOWN)
    scaled = jnp.sum((whitened * down) ** 2)
    up = jnp.where(down == 1.0, 1.0, _UP)
    return (-0.5 * count * _LOG_2PI - jnp.sum(log_scale), scaled * up * up,
            jnp.sqrt(scaled) * up)


def diagonal_conditional(x: jax.Array, mean: jax.Array, scale: jax.Array, mask: jax.Array):
    """``conditional_gaussian`` of N(mean, diag(scale^2)), coordinate by coordinate: the
    coordinates are independent, so E[x_mis | x_obs] = mean_mis and the conditional
    variances are scale^2 on the missing coordinates, 0 on the observed ones: [D] (the
    diagonal of the conditional covariance, which is all of it)."""
    return (*diagonal_terms(x, mean, scale, mask), jnp.where(mask, x, mean),
            jnp.where(mask, 0.0, scale * scale))
