"""Which gradient estimator to use: the spread of each one's gradients, measured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jlvm import _checks


class GradientStatistics(NamedTuple):
    """Per-parameter statistics of a gradient g over independent draws.

    Attributes:
      mean: E[g], a pytree shaped like params.
      std: sd[g] (ddof=1), a pytree shaped like params.
      snr: ``|E[g]| / sd[g]``, the signal-to-noise ratio (Rainforth et al., 2018), a pytree
        shaped like params (inf for a constant nonzero gradient, 0 for a zero one): higher
        means fewer draws for the same accuracy.
    """

    mean: Any
    std: Any
    snr: Any


def gradient_statistics(key: jax.Array, objective: Callable[[jax.Array, Any], jax.Array],
                        params: Any, num_draws: int = 1000) -> GradientStatistics:
    """Mean, standard deviation and SNR of ``grad objective(key_i, params)`` over draws.

    Args:
      key: PRNG key; split into ``num_draws`` keys, one gradient each (vmapped).
      objective: ``(key, params) -> scalar``, e.g.
        ``lambda k, phi: jlvm.elbo(k, log_joint, make_q(phi), 4, grad_estimator="stl")``.
      params: where to measure (any pytree).
      num_draws: independent gradients, >= 2.

    Returns:
      ``GradientStatistics(mean, std, snr)``, each a pytree shaped like ``params``, the
      gradients' mean, standard deviation (ddof=1) and ``|mean| / std`` (inf for a constant
      nonzero gradient, 0 for a zero one).
    """
    _checks.prng_key(key)
    if not callable(objective):
        raise TypeError(f"objective must be a function (key, params) -> scalar, got "
                        f"{type(objective).__name__}.")
    num_draws = _checks.positive_int(num_draws, "num_draws")
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2 to measure a spread, got {num_draws}.")
    _checks.numeric_leaves(params, "params")
    if not jax.tree_util.tree_leaves(params) or not all(
            jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
            for leaf in jax.tree_util.tree_leaves(params)):
        raise TypeError("params must be a pytree of floating-point arrays (gradients are "
                        "taken with respect to them).")
    keys = jax.random.split(key, num_draws)
    try:
        value = jax.eval_shape(objective, keys[0], params)
    except Exception as error:  # the user's function: say where it failed
        raise ValueError(f"objective(key, params) failed: {type(error).__name__}: "
                         f"{' '.join(str(error).split())[:300]}") from error
    if getattr(value, "shape", None) != () or not jnp.issubdtype(value.dtype, jnp.floating):
        raise ValueError(f"objective must return a real scalar, got "
                         f"{getattr(value, 'shape', type(value).__name__)}.")
    # compiled as one program: dispatched op by op, a model's hundreds of operations cost
    # far more than the arithmetic of a thousand draws
    grads = jax.jit(jax.vmap(jax.grad(objective, argnums=1), in_axes=(0, None)))(keys, params)
    if all(_checks.is_concrete(g) for g in jax.tree_util.tree_leaves(grads)) and not all(
            bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads)):
        raise ValueError("the objective's gradient is NaN or infinite for some draws; its "
                         "statistics would say nothing (check the objective at params).")
    mean = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), grads)
    std = jax.tree_util.tree_map(lambda g: jnp.std(g, axis=0, ddof=1), grads)
    # zero spread: a constant gradient; its SNR is infinite, or 0 if it is zero (never NaN)
    snr = jax.tree_util.tree_map(
        lambda m, s: jnp.where(s > 0, jnp.abs(m) / jnp.where(s > 0, s, 1.0),
                               jnp.where(m == 0, 0.0, jnp.inf)), mean, std)
    return GradientStatistics(mean, std, snr)
