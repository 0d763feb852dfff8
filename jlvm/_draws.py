"""What every surrogate objective of ``jlvm.gradients`` builds on: K draws from q, one
PRNG key each, their log densities (log p(x, z_k), log q(z_k), and log q along the path
z(phi) alone) and the stop-gradient arithmetic the surrogates are written in.
``jlvm.gradients`` re-exports the public names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

from jlvm import _checks

LogJoint = Callable[[jax.Array], jax.Array]

_sg = jax.lax.stop_gradient


def draw(key: jax.Array, q: Any, num_samples: int) -> tuple[jax.Array, jax.Array]:
    """K independent draws from ``q``, one PRNG key each.

    One key per draw (rather than one call with ``sample_shape=(K,)``) makes draw k depend
    only on (key, k): chunked and unchunked evaluations, the ELBO and the IWAE bound all
    see the same z's for the same key.

    Args:
      key: PRNG key; draw k's own is ``fold_in(key, k)`` (``draw_keys``).
      q: distrax distribution over one z (batch_shape ()).
      num_samples: K >= 1.

    Returns:
      A tuple ``(z, log_q)`` of z ``[K, *event]`` and log q(z) ``[K]``.
    """
    return draw_with_keys(draw_keys(key, jnp.arange(num_samples)), q)


def draw_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    """The key of draw k for each k in ``indices``: ``fold_in(key, k)``.

    Computed where it is needed, so K draws never hold K keys in memory at once (a chunked
    sum holds one chunk's).

    Args:
      key: PRNG key.
      indices: ``[n]`` integer draw indices.

    Returns:
      ``[n]`` keys, stacked like ``key`` (``[n, 2]`` for a raw ``uint32`` key).
    """
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def _diagonal_normal(q: Any) -> tuple[jax.Array, jax.Array] | None:
    """(loc [L], scale [L]) where q is a ``distrax.MultivariateNormalDiag`` (exactly that
    class: every encoder's q), else None.

    Such a q is sampled and scored below with the few array operations it needs; distrax's
    general bijector route gives the same draws and values but several more kernels per
    step, which a train step of 0.1 ms on a GPU (or 2 ms on a CPU) feels.
    """
    if type(q) is distrax.MultivariateNormalDiag:
        return q.loc, q.scale_diag
    return None


def _diagonal_normal_log_prob(u: jax.Array, scale: jax.Array) -> jax.Array:
    """log N(z; loc, diag scale^2) from u = (z - loc) / scale [K, L] -> [K]."""
    return (jnp.sum(-0.5 * u**2 - jnp.log(scale)[None], axis=1)
            - 0.5 * u.shape[1] * math.log(2 * math.pi))


def draw_with_keys(keys: jax.Array, q: Any) -> tuple[jax.Array, jax.Array]:
    """One draw from ``q`` per key in ``keys``.

    Args:
      keys: ``[K]`` PRNG keys (``draw_keys``).
      q: as in ``draw``.

    Returns:
      A tuple ``(z, log_q)`` of z ``[K, *event]`` and log q(z) ``[K]``.
    """
    diagonal = _diagonal_normal(q)
    if diagonal is not None:
        loc, scale = diagonal
        # distrax's own draw for this key: normal(key, (1, L))[0]
        eps = jax.vmap(lambda k: jax.random.normal(k, (1, *loc.shape), loc.dtype)[0])(keys)
        # z = loc + scale * eps; along z(phi), log q(z) = log N(eps; 0, I) - sum log scale
        return loc[None] + scale[None] * eps, _diagonal_normal_log_prob(eps, scale)
    z, log_q = jax.vmap(lambda k: _checks.sample_and_log_prob(q, k, 1))(keys)
    return z[:, 0], log_q[:, 0]


def log_joints(log_joint: LogJoint, z: jax.Array) -> jax.Array:
    """log p(x, z_k) for a stack of z, checking that log_joint returns a scalar.

    Args:
      log_joint: ``z -> log p(x, z)``, z: ``[*event]`` -> scalar (else a ``ValueError``).
      z: ``[K, *event]``.

    Returns:
      ``[K]`` values.
    """
    if jnp.shape(z)[0] == 1:
        # no vmap over a single draw: under an outer vmap over data points its axis of
        # size 1 would make XLA transpose every gradient of the decoder's activations
        values = jnp.expand_dims(log_joint(z[0]), 0)
    else:
        values = jax.vmap(log_joint)(z)
    if jnp.shape(values) != jnp.shape(z)[:1]:
        raise ValueError(
            "log_joint must map ONE latent value z to a scalar log p(x, z); for a stack of "
            f"{jnp.shape(z)[0]} latents it returned shape {jnp.shape(values)[1:]} per latent."
        )
    return values


def path_log_prob(q: Any, z: jax.Array) -> jax.Array:
    """log q(z) whose gradient flows only along the path z(phi), not via q's parameters.

    First-order stop-gradient of q's parameters, written without rebuilding q::

        sg(log q(z)) + sg(grad_z log q(z)) . (z - sg(z))

    has the value log q(z) and the gradient (d log q / dz)(dz / dphi). (Rebuilding q from
    stopped leaves with tree_map is unsafe: distrax bijectors keep bound methods of the
    ORIGINAL objects in their static data, which would leak the parameters' gradient.)

    Args:
      q: as in ``draw``; continuous.
      z: ``[K, *event]`` reparameterized draws of q (a discrete dtype is a ``ValueError``).

    Returns:
      ``[K]`` log q(z).
    """
    if not jnp.issubdtype(jnp.result_type(z), jnp.floating):
        raise ValueError("this grad_estimator differentiates along the sampling path and needs "
                         f"a continuous q; got samples of dtype {jnp.result_type(z)}. Use "
                         'grad_estimator="score_function" for discrete q.')
    fixed = _sg(z)
    diagonal = _diagonal_normal(q)
    if diagonal is not None:
        loc, scale = _sg(diagonal[0])[None], _sg(diagonal[1])[None]
        u = (fixed - loc) / scale
        values, scores = _diagonal_normal_log_prob(u, scale[0]), -u / scale
    else:
        values, scores = jax.vmap(jax.value_and_grad(lambda one: _checks.log_prob(q, one)))(
            fixed)
    displacement = (_sg(scores) * (z - fixed)).reshape(z.shape[0], -1)
    return _sg(values) + jnp.sum(displacement, axis=1)


def log_probs(q: Any, z: jax.Array) -> jax.Array:
    """log q(z_k) for a stack of z.

    In one call where q's ``log_prob`` takes a batch of z, else one draw at a time (a
    flow's coupling layers, distrax's ``MaskedCoupling``, take one z: tried with
    ``jax.eval_shape``, nothing computed).

    Args:
      q: as in ``draw``.
      z: ``[K, *event]``.

    Returns:
      ``[K]`` log q(z_k).
    """
    try:
        batched = jax.eval_shape(lambda: _checks.log_prob(q, z)).shape == z.shape[:1]
    except Exception:  # whatever a q's log_prob raises on a batch of z
        batched = False
    if batched:
        return _checks.log_prob(q, z)
    return jax.vmap(lambda one: _checks.log_prob(q, one))(z)


def _log_mean_exp(log_weights: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(log_weights) - math.log(log_weights.shape[0])


def _with_gradient_of(value: jax.Array, term: jax.Array) -> jax.Array:
    return value + (term - _sg(term))
