"""Gaussian log-densities shared by the models, written for one observation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


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
