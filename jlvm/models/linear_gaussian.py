"""Linear-Gaussian model (probabilistic PCA): the oracle for every estimator.

    z ~ N(0, I_L),   x | z ~ N(W z + b, sigma^2 I_D)
    p(x) = N(x; b, W W^T + sigma^2 I_D)
    p(z | x) = N(M^{-1} W^T (x - b), sigma^2 M^{-1}),   M = W^T W + sigma^2 I_L

Every function takes ONE observation x: [D] and latent z: [L]; vmap over data points.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm.models._gaussian import standard_normal_log_prob

# The oracle must be exact in float32 on every device: full-precision matmuls, not the
# TF32 that XLA uses by default on NVIDIA GPUs.
_mm = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


class Params(NamedTuple):
    """The parameters of x | z ~ N(W z + b, sigma^2 I_D).

    Attributes:
      W: ``[D, L]``, the loading matrix.
      b: ``[D]``, the offset (the mean of x).
      noise_std: sigma, the noise's standard deviation, a scalar > 0.
    """

    W: jax.Array
    b: jax.Array
    noise_std: jax.Array


def _sizes(params: Params) -> tuple[int, int]:
    if not isinstance(params, Params):
        raise TypeError(f"params must be a linear_gaussian.Params(W, b, noise_std), got "
                        f"{type(params).__name__}.")
    _checks.numeric_leaves(params, "params")
    if jnp.ndim(params.W) != 2:
        raise ValueError(f"params.W must have shape [D, L], got {jnp.shape(params.W)}.")
    data_dim, latent_dim = jnp.shape(params.W)
    if jnp.shape(params.b) != (data_dim,):
        raise ValueError(f"params.b must have shape [D]=({data_dim},), got {jnp.shape(params.b)}.")
    if jnp.shape(params.noise_std) != ():
        raise ValueError(f"params.noise_std must be a scalar, got shape "
                         f"{jnp.shape(params.noise_std)}.")
    if _checks.is_concrete(params.noise_std):
        noise = float(params.noise_std)
        if not 0 < noise < float("inf"):
            raise ValueError(f"params.noise_std must be finite and > 0 (a standard deviation), "
                             f"got {noise}.")
    for name in ("W", "b"):
        _checks.finite_if_concrete(getattr(params, name), f"params.{name}")
    return data_dim, latent_dim


def init(key: jax.Array, data_dim: int, latent_dim: int, *, noise_std: float = 0.5) -> Params:
    """Random parameters: W ~ N(0, 1), b ~ N(0, 1), the given noise_std.

    Args:
      key: PRNG key.
      data_dim: D >= 1, a Python int.
      latent_dim: L >= 1, a Python int.
      noise_std: sigma, a finite number > 0.

    Returns:
      ``Params`` with W ``[D, L]``, b ``[D]``, noise_std a float32 scalar.
    """
    _checks.prng_key(key)
    data_dim = _checks.positive_int(data_dim, "data_dim")
    latent_dim = _checks.positive_int(latent_dim, "latent_dim")
    noise_std = _checks.positive_number(noise_std, "noise_std")
    key_w, key_b = jax.random.split(key)
    return Params(
        W=jax.random.normal(key_w, (data_dim, latent_dim)),
        b=jax.random.normal(key_b, (data_dim,)),
        noise_std=jnp.asarray(noise_std, jnp.float32),
    )


def log_joint(params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
    """Log joint density of one observation and one latent value.

    ``log p(x, z) = log N(z; 0, I) + log N(x; W z + b, sigma^2 I)``.

    Args:
      params: ``Params``.
      x: one observation ``[D]``, finite.
      z: one latent value ``[L]``, finite.

    Returns:
      Scalar log density in nats.
    """
    data_dim, latent_dim = _sizes(params)
    x = _check_x(params, x)
    z = _checks.float_array(z, "z")
    _checks.shape_is(z, "z", (latent_dim,), "[L]")
    _checks.finite_if_concrete(z, "z")
    residual = (x - _mm(params.W, z) - params.b) / params.noise_std
    log_likelihood = (standard_normal_log_prob(residual)
                      - data_dim * jnp.log(params.noise_std))
    return standard_normal_log_prob(z) + log_likelihood


def marginal(params: Params) -> distrax.MultivariateNormalTri:
    """The exact marginal ``p(x) = N(b, W W^T + sigma^2 I)``.

    Args:
      params: ``Params``.

    Returns:
      ``distrax.MultivariateNormalTri`` with event shape ``[D]``.
    """
    data_dim, _ = _sizes(params)
    covariance = _mm(params.W, params.W.T) + params.noise_std**2 * jnp.eye(data_dim)
    return distrax.MultivariateNormalTri(params.b, jnp.linalg.cholesky(covariance))


def _check_x(params: Params, x: Any) -> jax.Array:
    data_dim, _ = _sizes(params)
    x = _checks.float_array(x, "x")
    _checks.shape_is(x, "x", (data_dim,), "[D]")
    _checks.finite_if_concrete(x, "x")
    return x


def _observed(params: Params, x: Any, mask: Any) -> tuple[jax.Array, Any]:
    """(x with its missing entries set to b, the mask as booleans [D] or None): x_d given z
    are independent, so leaving the rows of missing d out of W sums them out exactly."""
    data_dim, _ = _sizes(params)
    if mask is None:
        return _check_x(params, x), None
    mask = _checks.observation_mask(mask, data_dim)
    x = _checks.float_array(x, "x")
    _checks.shape_is(x, "x", (data_dim,), "[D]")
    if _checks.is_concrete(x) and _checks.is_concrete(mask):
        _checks.finite_if_concrete(jnp.asarray(x)[jnp.asarray(mask)], "x at observed entries")
    # replaced before any arithmetic: a NaN at a missing entry reaches nothing
    return jnp.where(mask, x, params.b), jnp.asarray(mask)


def _scaled(params: Params, x: jax.Array, mask: Any = None):
    """The L x L system behind p(x_obs) and p(z|x_obs), in units of the noise scale s so
    that no intermediate over- or underflows for tiny or huge s: A = W / s (the rows of
    missing entries zero), u = (x - b) / s, M = I + A^T A, m = M^{-1} A^T u. Returns
    (Cholesky factor of M, m, u - A m)."""
    latent_dim = params.W.shape[1]
    A = params.W / params.noise_std
    if mask is not None:
        A = jnp.where(mask[:, None], A, 0.0)
    u = (x - params.b) / params.noise_std
    factor = jnp.linalg.cholesky(jnp.eye(latent_dim) + _mm(A.T, A))
    m = jax.scipy.linalg.cho_solve((factor, True), _mm(A.T, u))
    return factor, m, u - _mm(A, m)


def log_marginal(params: Params, x: jax.Array, mask: Any = None) -> jax.Array:
    """Exact log marginal likelihood, of all of x or of its observed entries.

    ``log p(x) = log N(x; b, W W^T + s^2 I)``, s = noise_std; with a mask
    ``log p(x_obs) = log N(x_obs; b_obs, W_obs W_obs^T + s^2 I)``.

    By the matrix determinant lemma and Woodbury's identity, through an L x L system
    (A = W / s, u = (x - b) / s, M = I + A^T A, m = M^{-1} A^T u):
    ``-D/2 log 2pi - D log s - 1/2 log det M - 1/2 (|u - A m|^2 + |m|^2)``
    (D the observed count), a sum of non-negative squares (no cancellation), exact in
    float32 over any noise scale.

    Args:
      params: ``Params``.
      x: one observation ``[D]``; any value (NaN included) at missing entries.
      mask: None (all observed) or ``[D]`` booleans, True = observed (0/1 numbers also
        outside jit).

    Returns:
      Scalar log p(x) (or log p(x_obs)) in nats.

    Raises:
      ValueError: where the value is concrete and not finite (W / noise_std leaves
        float32's range).
    """
    data_dim, _ = _sizes(params)
    x, mask = _observed(params, x, mask)
    factor, m, residual = _scaled(params, x, mask)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(factor)))
    observed = data_dim if mask is None else jnp.sum(mask)
    value = (-0.5 * observed * math.log(2 * math.pi) - observed * jnp.log(params.noise_std)
             - 0.5 * log_det - 0.5 * (jnp.sum(residual**2) + jnp.sum(m**2)))
    if _checks.is_concrete(value) and not bool(jnp.isfinite(value)):
        raise ValueError(f"log p(x) is not finite in float32 for noise_std="
                         f"{float(params.noise_std)} and this W: W / noise_std leaves float32's "
                         "range.")
    return value


def posterior(params: Params, x: jax.Array, mask: Any = None) -> distrax.MultivariateNormalTri:
    """Exact posterior p(z | x), or p(z | x_obs) with a mask.

    ``p(z | x) = N(m, M^{-1})``, ``M = I + W^T W / s^2``, ``m = M^{-1} W^T (x - b) / s^2``
    (the usual covariance sigma^2 (W^T W + sigma^2 I)^{-1}, written in units of s); with a
    mask, W and x restricted to the observed rows.

    Args:
      params, x, mask: as in ``log_marginal``.

    Returns:
      ``distrax.MultivariateNormalTri`` with event shape ``[L]``.
    """
    _, latent_dim = _sizes(params)
    x, mask = _observed(params, x, mask)
    factor, mean, _ = _scaled(params, x, mask)
    covariance = jax.scipy.linalg.cho_solve((factor, True), jnp.eye(latent_dim))
    covariance = 0.5 * (covariance + covariance.T)  # exact symmetry for the Cholesky below
    return distrax.MultivariateNormalTri(mean, jnp.linalg.cholesky(covariance))


def sample(key: jax.Array, params: Params, n: int) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: z ~ N(0, I), then x | z.

    Args:
      key: PRNG key.
      params: ``Params``.
      n: number of draws >= 1, a Python int.

    Returns:
      A tuple ``(x, z)`` of x ``[n, D]`` and z ``[n, L]``.
    """
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    data_dim, latent_dim = _sizes(params)
    key_z, key_x = jax.random.split(key)
    z = jax.random.normal(key_z, (n, latent_dim))
    noise = jax.random.normal(key_x, (n, data_dim))
    x = _mm(z, params.W.T) + params.b[None, :] + params.noise_std * noise
    return x, z
