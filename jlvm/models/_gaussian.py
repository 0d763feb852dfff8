"""Gaussian log-densities shared by the models, written for one observation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST  # exact float32 on every device: oracles


def mvn_log_prob_tril(x: jax.Array, mean: jax.Array, scale_tril: jax.Array) -> jax.Array:
    """log N(x; mean, L L^T) for x, mean: [D], scale_tril L: [D, D] lower triangular.

    ``-D/2 log 2pi - sum_i log L_ii - 1/2 |L^{-1}(x - mean)|^2``, by a triangular solve
    (no inverse, no determinant of the covariance).
    """
    dim = x.shape[-1]
    whitened = jax.scipy.linalg.solve_triangular(scale_tril, x - mean, lower=True)
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(scale_tril))))
    return -0.5 * dim * math.log(2 * math.pi) - log_det - 0.5 * jnp.sum(whitened**2)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) for z: [L]."""
    return -0.5 * z.shape[-1] * math.log(2 * math.pi) - 0.5 * jnp.sum(z**2)


def normal_log_prob_elementwise(x: jax.Array, mean: jax.Array,
                                log_scale: jax.Array) -> jax.Array:
    """log N(x_d; mean_d, exp(log_scale_d)^2) for each d: [D] -> [D]."""
    z = (x - mean) * jnp.exp(-log_scale)
    return -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * z**2


def observed_gaussian(x: jax.Array, mean: jax.Array, scale_tril: jax.Array,
                      mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A Gaussian N(mean, Sigma = L L^T) over [D] seen through ``mask`` [D] (True = observed):
    (log N(x_obs; mean_obs, Sigma_oo), the Cholesky factor of Sigma' = M Sigma M + (I - M),
    Sigma). With shapes fixed whatever the mask: Sigma' is Sigma_oo on the observed
    coordinates and I on the missing ones, so N(r; 0, Sigma') at r = M (x - mean) is
    N(x_obs; mean_obs, Sigma_oo) times N(0; 0, 1) per missing coordinate."""
    observed = mask.astype(mean.dtype)
    sigma = jnp.matmul(scale_tril, scale_tril.T, precision=_HIGHEST)
    restricted = observed[:, None] * sigma * observed[None, :] + jnp.diag(1.0 - observed)
    factor = jnp.linalg.cholesky(restricted)
    residual = jnp.where(mask, x - mean, 0.0)
    log_density = (mvn_log_prob_tril(residual, jnp.zeros_like(mean), factor)
                   + 0.5 * math.log(2 * math.pi) * jnp.sum(1.0 - observed))
    return log_density, factor, sigma


def conditional_gaussian(x: jax.Array, mean: jax.Array, scale_tril: jax.Array,
                         mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The same Gaussian: (log N(x_obs; ...), x with its missing entries replaced by
    E[x_mis | x_obs] = mu_m + Sigma_mo Sigma_oo^{-1} (x_o - mu_o), and the conditional
    covariance Sigma_mm - Sigma_mo Sigma_oo^{-1} Sigma_om on the missing block, 0
    elsewhere: [D, D]).

    One triangular solve with L' the Cholesky factor of Sigma' (``observed_gaussian``):
    [w, A] = L'^{-1} [M (x - mean), M Sigma]. Then |w|^2 is the Mahalanobis term,
    A^T w = Sigma_.o Sigma_oo^{-1} (x_o - mu_o) and A^T A = Sigma_.o Sigma_oo^{-1} Sigma_o.
    (Sigma' is block diagonal, so L'^{-1} keeps the missing rows of M Sigma at 0.) A single
    solve, not three, also keeps XLA's CPU runtime from running two batched triangular
    solves at once, which deadlocks jaxlib 0.10's LAPACK thread pool.
    """
    observed = mask.astype(mean.dtype)
    sigma = jnp.matmul(scale_tril, scale_tril.T, precision=_HIGHEST)
    restricted = observed[:, None] * sigma * observed[None, :] + jnp.diag(1.0 - observed)
    factor = jnp.linalg.cholesky(restricted)
    residual = jnp.where(mask, x - mean, 0.0)
    rhs = jnp.concatenate([residual[:, None], observed[:, None] * sigma], axis=1)
    solved = jax.scipy.linalg.solve_triangular(factor, rhs, lower=True)  # [D, 1 + D]
    whitened, a = solved[:, 0], solved[:, 1:]
    num_observed = jnp.sum(observed)
    log_density = (-0.5 * num_observed * math.log(2 * math.pi)
                   - jnp.sum(jnp.log(jnp.abs(jnp.diagonal(factor))))
                   - 0.5 * jnp.sum(whitened**2))
    filled = jnp.where(mask, x, mean + jnp.matmul(a.T, whitened, precision=_HIGHEST))
    missing = 1.0 - observed
    covariance = (missing[:, None] * (sigma - jnp.matmul(a.T, a, precision=_HIGHEST))
                  * missing[None, :])
    return log_density, filled, covariance
