"""Posterior families: variational parameters phi (unconstrained arrays) <-> distrax q(z).

    diagonal: phi = (mean [L], log_scale [L]);   q = N(mean, diag exp(log_scale)^2)
    full:     phi = (mean [L], raw [L, L]);      q = N(mean, S S^T), S = lower(raw) with its
                                                 diagonal exp(diag(raw)) (a Cholesky factor)

Every phi is unconstrained, so a gradient step on it is always a valid q: SVI keeps a
table of phi per data point and semi-amortized inference refines the encoder's phi.
``parameters(q)`` reads phi back from a q of these families (and from a normalizing flow
on top of one, whose bijector is then held fixed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

FAMILIES = ("diagonal", "full")


def diagonal(mean: jax.Array, log_scale: jax.Array) -> distrax.MultivariateNormalDiag:
    """q = N(mean, diag exp(log_scale)^2); mean, log_scale: [L]."""
    return distrax.MultivariateNormalDiag(mean, jnp.exp(log_scale))


def scale_tril(raw: jax.Array) -> jax.Array:
    """The Cholesky factor S [L, L] from unconstrained ``raw`` [L, L]: the strict lower
    triangle as it is, the diagonal exp(diag(raw)) > 0 (the upper triangle is unused)."""
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw)))


def full(mean: jax.Array, raw: jax.Array) -> distrax.MultivariateNormalTri:
    """q = N(mean, S S^T) with S = ``scale_tril(raw)``; mean: [L], raw: [L, L]."""
    return distrax.MultivariateNormalTri(mean, scale_tril(raw))


def standard(latent_dim: int, family: str = "diagonal") -> tuple[jax.Array, jax.Array]:
    """phi of N(0, I_L) in ``family`` (where SVI's per-datapoint q start)."""
    if family == "diagonal":
        return jnp.zeros(latent_dim), jnp.zeros(latent_dim)
    if family == "full":
        return jnp.zeros(latent_dim), jnp.zeros((latent_dim, latent_dim))
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")


def build(family: str) -> Callable[..., distrax.Distribution]:
    """The function phi -> q of ``family``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    return diagonal if family == "diagonal" else full


def parameters(q: Any) -> tuple[tuple[jax.Array, ...], Callable[..., distrax.Distribution]]:
    """(phi, rebuild) with ``rebuild(*phi)`` equal to ``q``: the unconstrained parameters
    of a q that semi-amortized inference can refine.

    A diagonal or full-covariance Gaussian gives its own phi (a
    ``MultivariateNormalFullCovariance`` the phi of its Cholesky factor); a
    ``distrax.Transformed`` (a flow) gives its base distribution's phi, with the bijector
    kept as it is.
    """
    # distrax's Gaussians are themselves Transformed (of a standard normal): them first
    if isinstance(q, distrax.MultivariateNormalDiag):
        return (q.loc, jnp.log(q.scale_diag)), diagonal
    if isinstance(q, (distrax.MultivariateNormalTri, distrax.MultivariateNormalFullCovariance)):
        # the Cholesky factor of the covariance: the same q whichever factor it was given
        # (upper, or with negative diagonal entries); its diagonal is > 0, raw holds its log
        tril = jnp.linalg.cholesky(q.covariance())
        raw = jnp.tril(tril, -1) + jnp.diag(jnp.log(jnp.diagonal(tril)))
        return (q.loc, raw), full
    if isinstance(q, distrax.Transformed) and not isinstance(
            q, distrax.MultivariateNormalFromBijector):
        phi, rebuild_base = parameters(q.distribution)
        bijector = q.bijector
        return phi, lambda *p: distrax.Transformed(rebuild_base(*p), bijector)
    raise TypeError(f"the encoder's q must be a diagonal Gaussian "
                    f"(distrax.MultivariateNormalDiag), a full-covariance one "
                    f"(distrax.MultivariateNormalTri) or a distrax.Transformed of either to "
                    f"be refined per data point, got {type(q).__name__}.")
