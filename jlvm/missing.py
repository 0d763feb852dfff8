"""Partially observed data: missing entries of x treated as latent variables.

With a model of the full joint p(x) (e.g. ``models.autoregressive``), hide the entries
where ``mask`` is False: they become a latent z, the rest is the observation, and

    log p(x_obs) = log sum_z p(x_obs, z)

is estimated with the ordinary estimators (``jlvm.log_marginal_exact`` over
``jlvm.binary_support(M)`` when 2**M terms fit, ``log_marginal_naive``, ``log_marginal_is``,
``elbo``). The mask is static: it fixes which entries z holds and so z's shape [M].

For models whose likelihood factorizes over pixels given another latent (the VAE decoders)
no enumeration is needed: leaving the missing pixels out of the product marginalizes them
exactly (``models.vae.log_likelihood(..., mask=mask)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jlvm import _checks, estimators


def check_mask(mask: Any, data_dim: int, *, need_missing: bool = True) -> np.ndarray:
    """Validates a concrete observation mask: [D] booleans (or 0/1), True where observed.

    The rules of every mask in jlvm (``vae.log_joint``, ``evaluate``): the shape [D], 0/1
    values, something observed; here also, with ``need_missing``, something missing, and
    the mask must be concrete since it fixes the shape of the latent z. Raises
    ``ValueError`` naming ``mask``. Returns it as a NumPy bool array.
    """
    if not _checks.is_concrete(mask):
        raise ValueError("mask must be concrete (a NumPy or JAX array outside jit): it fixes "
                         "the shape of the latent z.")
    mask = np.asarray(_checks.observation_mask(mask, data_dim))
    if need_missing and mask.all():
        raise ValueError("mask leaves nothing missing: use the model's own log-likelihood.")
    return mask


def complete(x: jax.Array, z: jax.Array, mask: Any) -> jax.Array:
    """The full vector: observed entries from x [D], missing ones (in index order) from z [M]."""
    x = _checks.float_array(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x must have shape [D], got {x.shape}.")
    mask = check_mask(mask, x.shape[0])
    missing = np.flatnonzero(~mask)
    z = _checks.float_array(z, "z") if not hasattr(z, "dtype") else jnp.asarray(z)
    _checks.shape_is(z, "z", (missing.size,), "[M] (one value per missing entry)")
    _checks.finite_if_concrete(z, "z")
    return x.at[missing].set(z.astype(x.dtype))


def log_joint_with_missing(log_prob: Callable[[jax.Array], jax.Array], x: jax.Array,
                           mask: Any) -> Callable[[jax.Array], jax.Array]:
    """``z -> log p(x_obs, z)`` from a model of the full vector, ``log_prob(x_full)``.

    Args:
      log_prob: ``x [D] -> log p(x)`` of the fully observed model, e.g.
        ``functools.partial(autoregressive.log_prob, params)``.
      x: [D] an observation; its entries where ``mask`` is False are ignored.
      mask: [D] concrete booleans, True where observed.
    """
    if not callable(log_prob):
        raise TypeError(f"log_prob must be a function x [D] -> log p(x), got "
                        f"{type(log_prob).__name__}.")
    x = _checks.float_array(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x must have shape [D], got {x.shape}.")
    mask = check_mask(mask, x.shape[0])
    if _checks.is_concrete(x) and not np.all(np.isfinite(np.asarray(x)[mask])):
        raise ValueError("x holds NaN or infinite values at observed entries (mask True).")
    return lambda z: log_prob(complete(x, z, mask))


def mean_field_bernoulli(logits: jax.Array) -> distrax.Independent:
    """q(z; phi) = prod_i phi_i^{z_i} (1 - phi_i)^{1 - z_i}, phi = sigmoid(logits): one z [M]."""
    return distrax.Independent(distrax.Bernoulli(logits=logits), 1)


class MeanFieldFit(NamedTuple):
    """logits: [M] fitted variational logits (phi = sigmoid(logits)); elbo: [num_steps] trace."""

    logits: jax.Array
    elbo: jax.Array


def _fit_mean_field(key, log_joint, logits, num_steps, num_samples, learning_rate):
    optimizer = optax.adam(learning_rate)

    def negative_elbo(current, step_key):
        return -estimators.elbo(step_key, log_joint, mean_field_bernoulli(current), num_samples,
                                grad_estimator="score_function")

    def step(carry, step_key):
        current, opt_state = carry
        value, grads = jax.value_and_grad(negative_elbo)(current, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, current)
        return (optax.apply_updates(current, updates), opt_state), -value

    (logits, _), trace = jax.lax.scan(step, (logits, optimizer.init(logits)),
                                      jax.random.split(key, num_steps))
    return MeanFieldFit(logits, trace)


def fit_mean_field(key: jax.Array, log_joint: Callable[[jax.Array], jax.Array], num_latent: int,
                   *, num_steps: int = 300, num_samples: int = 16, learning_rate: float = 0.1,
                   init_logits: jax.Array | None = None) -> MeanFieldFit:
    """Stochastic variational inference for ONE data point's mean-field Bernoulli q.

    Maximizes ELBO(phi) = E_q[log p(x, z) - log q(z; phi)] by Adam on the score-function
    gradient (leave-one-out baseline over ``num_samples`` draws); z is discrete, so the
    reparameterization trick does not apply. The steps run as one ``lax.scan``; wrap the
    call in ``jax.jit`` and ``jax.vmap`` over data points (one phi each).

    Args:
      key: PRNG key.
      log_joint: ``z [M] -> log p(x, z)``, e.g. from ``log_joint_with_missing``.
      num_latent: M, the number of binary latents.
      num_steps, num_samples, learning_rate: the SVI schedule.
      init_logits: [M] starting logits; zeros (phi = 0.5) by default.
    """
    _checks.prng_key(key)
    num_latent = _checks.positive_int(num_latent, "num_latent")
    learning_rate = _checks.positive_number(learning_rate, "learning_rate")
    num_steps = _checks.positive_int(num_steps, "num_steps")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError("num_samples must be >= 2: the leave-one-out baseline needs another "
                         f"draw, got {num_samples}.")
    logits = (jnp.zeros(num_latent) if init_logits is None
              else _checks.float_array(init_logits, "init_logits"))
    _checks.shape_is(logits, "init_logits", (num_latent,), "[M]")
    _checks.finite_if_concrete(logits, "init_logits")
    _checks.model_output(log_joint, jax.ShapeDtypeStruct((num_latent,), jnp.int32), "log_joint",
                         f"one z of {num_latent} bits")
    return _fit_mean_field(key, log_joint, logits, num_steps, num_samples, float(learning_rate))
