"""Posterior families: variational parameters phi (unconstrained arrays) <-> distrax q(z)::

    diagonal: phi = (mean [L], log_scale [L]);   q = N(mean, diag exp(log_scale)^2)
    full:     phi = (mean [L], raw [L, L]);      q = N(mean, S S^T), S = lower(raw) with its
                                                 diagonal exp(diag(raw)) (a Cholesky factor)
    flow:     a diagonal Gaussian pushed through affine coupling layers (``jlvm.models.flows``)
    bernoulli: phi = (logits [L],);              q = prod_l Bernoulli(sigmoid(logits_l)) over
                                                 z in {0,1}^L (binary latent features; an
                                                 encoder's only: trained by a score-function
                                                 or DisARM gradient, never reparameterized)

Every phi is unconstrained, so a gradient step on it is always a valid q: SVI keeps a
table of phi per data point and semi-amortized inference refines the encoder's phi.
``parameters(q)`` reads phi back from a q of these families (for a flow, its base
Gaussian's phi, the bijector held fixed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm.models import priors

FAMILIES = ("diagonal", "full")  # the families a table of phi per data point can hold
# an encoder's: a flow's layers are amortized; "bernoulli" goes with a Bernoulli prior
ENCODER_FAMILIES = ("diagonal", "full", "flow", "bernoulli")
DISCRETE = ("bernoulli",)  # the families over a discrete z


def diagonal(mean: jax.Array, log_scale: jax.Array) -> distrax.MultivariateNormalDiag:
    """The diagonal Gaussian family: q = N(mean, diag exp(log_scale)^2).

    Args:
      mean: ``[L]``, the mean.
      log_scale: ``[L]``, the log standard deviation of each coordinate (unconstrained).

    Returns:
      ``distrax.MultivariateNormalDiag`` over z ``[L]``.
    """
    return distrax.MultivariateNormalDiag(mean, jnp.exp(log_scale))


def scale_tril(raw: jax.Array) -> jax.Array:
    """The Cholesky factor S of the full-covariance family from its unconstrained ``raw``.

    ``S = tril(raw, -1) + diag(exp(diag(raw)))``: the strict lower triangle as it is, the
    diagonal exp(diag(raw)) > 0 (the upper triangle is unused).

    Args:
      raw: ``[L, L]``, unconstrained.

    Returns:
      S ``[L, L]``, lower triangular with a positive diagonal.
    """
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw)))


def full(mean: jax.Array, raw: jax.Array) -> distrax.MultivariateNormalTri:
    """The full-covariance Gaussian family: q = N(mean, S S^T), S = ``scale_tril(raw)``.

    Args:
      mean: ``[L]``, the mean.
      raw: ``[L, L]``, the unconstrained Cholesky factor (see ``scale_tril``).

    Returns:
      ``distrax.MultivariateNormalTri`` over z ``[L]``.
    """
    return distrax.MultivariateNormalTri(mean, scale_tril(raw))


def bernoulli(logits: jax.Array) -> distrax.Independent:
    """The Bernoulli family: q = prod_l Bernoulli(z_l; sigmoid(logits_l)).

    The same distribution as ``jlvm.models.priors.bernoulli``.

    Args:
      logits: ``[L]``, unconstrained.

    Returns:
      ``distrax.Independent`` over z in {0,1}^L (event shape ``[L]``); draws are float32 0/1.
    """
    return priors.bernoulli(logits)


def num_outputs(family: str, latent_dim: int, context_dim: int = 0) -> int:
    """How many numbers an encoder network gives for q of ``family`` over z ``[L]``.

    Args:
      family: ``"diagonal"``, ``"full"``, ``"flow"`` or ``"bernoulli"``.
      latent_dim: L, the dimension of z.
      context_dim: C, the numbers of context for a flow's coupling layers (a flow only).

    Returns:
      An int, 2L (diagonal), L + L(L+1)/2 (full, the mean and the Cholesky factor's
      lower triangle), 2L + C (flow, its base Gaussian and the context) or L (bernoulli,
      the logits).
    """
    if family == "bernoulli":
        return latent_dim
    if family == "full":
        return latent_dim + latent_dim * (latent_dim + 1) // 2
    return 2 * latent_dim + (context_dim if family == "flow" else 0)


def from_outputs(family: str, outputs: jax.Array, latent_dim: int):
    """The phi of ``family`` from an encoder network's outputs.

    Args:
      family: ``"diagonal"``, ``"full"``, ``"flow"`` or ``"bernoulli"``.
      outputs: ``[num_outputs(family, L, C)]``, the network's numbers for one x.
      latent_dim: L, the dimension of z.

    Returns:
      phi, a tuple ``(mean [L], log_scale [L])`` (diagonal), ``(mean [L], raw [L, L])``
      (full; raw's upper triangle zero), ``(mean [L], log_scale [L], context [C])`` (flow)
      or ``(logits [L],)`` (bernoulli).
    """
    if family == "bernoulli":
        return (outputs[:latent_dim],)
    if family == "full":
        rows, cols = jnp.tril_indices(latent_dim)
        raw = jnp.zeros((latent_dim, latent_dim), outputs.dtype).at[rows, cols].set(
            outputs[latent_dim:])
        return outputs[:latent_dim], raw
    mean, log_scale = outputs[:latent_dim], outputs[latent_dim:2 * latent_dim]
    return (mean, log_scale) if family == "diagonal" else (mean, log_scale,
                                                           outputs[2 * latent_dim:])


def closed_form_moments(q: Any) -> tuple[jax.Array, jax.Array] | None:
    """The mean and standard deviation of q where distrax has them in closed form.

    Args:
      q: distrax distribution over one z ``[L]``.

    Returns:
      ``(E_q[z], stddev)``, ``[L]`` each, for the Gaussian families, a product of Normals
      or Bernoullis...; None where distrax has no closed form (a flow's, a categorical's).
    """
    try:
        return q.mean(), q.stddev()
    except NotImplementedError:
        return None


def moments(q: Any, key: jax.Array, num_samples: int = 1000) -> tuple[jax.Array, jax.Array]:
    """The mean and standard deviation of q: exact, else a Monte Carlo estimate.

    Exact where distrax has them in closed form (``closed_form_moments``), else estimated
    from ``num_samples`` draws (a flow's moments have no closed form).

    Args:
      q: distrax distribution over one z ``[L]``.
      key: PRNG key for the draws (unused where the moments are exact).
      num_samples: draws for the estimate, >= 1 (checked even where unused).

    Returns:
      ``(E_q[z], stddev)``, ``[L]`` each.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")  # 0 draws: NaN moments
    exact = closed_form_moments(q)
    if exact is not None:
        return exact
    draws = jax.vmap(lambda k: _checks.sample(q, k, 1)[0])(jax.random.split(key, num_samples))
    return jnp.mean(draws, axis=0), jnp.std(draws, axis=0)


def standard(latent_dim: int, family: str = "diagonal") -> tuple[jax.Array, jax.Array]:
    """phi of N(0, I_L) in ``family`` (where SVI's per-datapoint q start).

    Args:
      latent_dim: L, the dimension of z.
      family: ``"diagonal"`` or ``"full"`` (``FAMILIES``).

    Returns:
      ``(zeros [L], zeros [L])`` (mean, log_scale) or ``(zeros [L], zeros [L, L])``
      (mean, raw).

    Raises:
      ValueError: for another family.
    """
    if family == "diagonal":
        return jnp.zeros(latent_dim), jnp.zeros(latent_dim)
    if family == "full":
        return jnp.zeros(latent_dim), jnp.zeros((latent_dim, latent_dim))
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")


def build(family: str) -> Callable[..., distrax.Distribution]:
    """The function phi -> q of ``family``.

    Args:
      family: ``"diagonal"`` or ``"full"`` (``FAMILIES``).

    Returns:
      ``diagonal`` or ``full``.

    Raises:
      ValueError: for another family.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    return diagonal if family == "diagonal" else full


def parameters(q: Any) -> tuple[tuple[jax.Array, ...], Callable[..., distrax.Distribution]]:
    """The unconstrained parameters of a q that semi-amortized inference can refine.

    A diagonal or full-covariance Gaussian gives its own phi (a
    ``MultivariateNormalFullCovariance`` the phi of its Cholesky factor); a
    ``distrax.Transformed`` (a flow) gives its base distribution's phi, with the bijector
    kept as it is.

    Args:
      q: distrax distribution over one z ``[L]``.

    Returns:
      ``(phi, rebuild)``, phi a tuple ``(mean [L], log_scale [L])`` or
      ``(mean [L], raw [L, L])``, and ``rebuild(*phi)`` a distribution equal to ``q``.

    Raises:
      TypeError: for any other q (e.g. a Bernoulli one).
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
