"""Surrogate objectives: one value, several gradient estimators.

Each function here returns a scalar whose VALUE is the Monte Carlo estimate of the bound
and whose GRADIENT (under ``jax.grad``) is the named estimator. The device used throughout:

    surrogate = value + (term - stop_gradient(term))

adds ``grad term`` to the gradient and leaves the value as it was. The public entry points
are ``jlvm.elbo`` and ``jlvm.iwae_bound``; these helpers assume validated arguments.

The pathwise estimators (``reparam``, ``stl``, ``dreg``) are defined here; those that need
no path through z, for discrete q (``score_function`` and ``disarm``), in
``jlvm._score_gradients``, and the draws and log densities they all build on in
``jlvm._draws``: both re-exported here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jlvm import _draws
from jlvm._draws import (
    _log_mean_exp,
    _sg,
    _with_gradient_of,
    draw,
    draw_keys,
    draw_with_keys,
    log_joints,
    log_probs,
    path_log_prob,
)
from jlvm._score_gradients import (
    elbo_disarm,
    elbo_score_function,
    even_num_samples,
    factorized_bernoulli,
    iwae_score_function,
)

__all__ = ["ELBO_ESTIMATORS", "ELBO_SURROGATES", "IWAE_ESTIMATORS", "IWAE_SURROGATES",
           "LogJoint", "draw", "draw_keys", "draw_with_keys", "elbo_disarm", "elbo_reparam",
           "elbo_score_function", "elbo_stl", "even_num_samples", "factorized_bernoulli",
           "iwae_dreg", "iwae_reparam", "iwae_score_function", "log_joints", "log_probs",
           "path_log_prob"]

#: What ``log_joint`` is: ONE latent z ``[*event]`` -> the scalar log p(x, z).
LogJoint = _draws.LogJoint

#: The ``grad_estimator`` values ``jlvm.elbo`` takes (the keys of ``ELBO_SURROGATES``).
ELBO_ESTIMATORS = ("reparam", "score_function", "stl", "disarm")
#: The ``grad_estimator`` values ``jlvm.iwae_bound`` takes (the keys of
#: ``IWAE_SURROGATES``).
IWAE_ESTIMATORS = ("reparam", "dreg", "score_function")


def _alive(log_p: jax.Array) -> jax.Array:
    """Which draws have weight > 0 (log p(x, z) > -inf): [K] bool, no gradient."""
    return _sg(log_p) > -jnp.inf


# --------------------------------------------------------------------------- ELBO


def elbo_reparam(key, log_joint, q, num_samples):
    """Pathwise gradient: z = g(eps; phi), differentiate through the sample.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.elbo`` (checked there).

    Returns:
      Scalar, the Monte Carlo ELBO; its ``jax.grad`` is this estimator.
    """
    z, log_q = draw(key, q, num_samples)
    return jnp.mean(log_joints(log_joint, z) - log_q)


def elbo_stl(key, log_joint, q, num_samples):
    """Sticking the landing: drop the score term E[grad_phi log q(z)] (mean zero).

    log q is evaluated with its parameters stopped, so only the path z(phi) carries
    gradient; at q = p(z|x) the integrand log p(x,z) - log q(z) is constant in z and the
    gradient is exactly zero for every draw.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.elbo`` (checked there).

    Returns:
      Scalar, the Monte Carlo ELBO; its ``jax.grad`` is this estimator.
    """
    z, _ = draw(key, q, num_samples)
    return jnp.mean(log_joints(log_joint, z) - path_log_prob(q, z))


# --------------------------------------------------------------------------- IWAE
# A draw of log p(x, z) = -inf has weight 0 in the bound, and the surrogates' own
# arithmetic gives it a zero gradient (no 0 * inf): with a log_joint whose derivatives are
# finite there (-inf written with jnp.where, say) the value and the gradient are those of
# the other draws. Where log_joint's own derivative is infinite at such a draw (an exp that
# overflowed) the gradient is 0 * inf = NaN and stays visible: the learners refuse such a
# step (``finite`` False); evaluating log_joint a second time at a safe z would hide it at
# a quarter more time per IWAE step, for every model. +inf or NaN values stay as they are.


def iwae_reparam(key, log_joint, q, num_samples):
    """Pathwise IWAE gradient: differentiate the bound through the draws z(phi).

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.iwae_bound`` (checked there).

    Returns:
      Scalar, the IWAE bound; its ``jax.grad`` is this estimator.
    """
    z, log_q = draw(key, q, num_samples)
    return _log_mean_exp(log_joints(log_joint, z) - log_q)


def iwae_dreg(key, log_joint, q, num_samples):
    """Doubly reparameterized IWAE gradient (Tucker et al., 2018).

    Variational parameters phi: sum_k wt_k^2 d log w_k / dz_k dz_k/dphi (path only).
    Model parameters theta (inside log_joint): sum_k wt_k grad_theta log p(x, z_k), the
    ordinary IWAE gradient. Squared weights must NOT reach theta; the second term below
    restores the missing (wt - wt^2) share with z stopped, so it touches theta only.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.iwae_bound`` (checked there).

    Returns:
      Scalar, the IWAE bound; its ``jax.grad`` is this estimator.
    """
    z, log_q = draw(key, q, num_samples)
    log_w = log_joints(log_joint, z) - path_log_prob(q, z)
    alive = _alive(log_w)
    normalized = jax.nn.softmax(_sg(log_w))
    log_w_fixed_z = log_joints(log_joint, _sg(z)) - _sg(log_q)
    # a draw of weight 0 adds 0 (not 0 * -inf = NaN) to each sum
    term = (jnp.sum(jnp.where(alive, normalized**2 * log_w, 0.0))
            + jnp.sum(jnp.where(alive, (normalized - normalized**2) * log_w_fixed_z, 0.0)))
    return _with_gradient_of(_sg(_log_mean_exp(log_w)), term)


#: ``grad_estimator`` -> its ELBO surrogate, ``f(key, log_joint, q, num_samples)``.
ELBO_SURROGATES = {
    "reparam": elbo_reparam,
    "stl": elbo_stl,
    "score_function": elbo_score_function,
    "disarm": elbo_disarm,
}

#: ``grad_estimator`` -> its IWAE surrogate, ``f(key, log_joint, q, num_samples)``.
IWAE_SURROGATES = {
    "reparam": iwae_reparam,
    "dreg": iwae_dreg,
    "score_function": iwae_score_function,
}
