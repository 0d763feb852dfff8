"""Per-datapoint variational parameters phi and their inner optimization.

phi is a tuple of unconstrained arrays and ``rebuild(*phi)`` its distrax q (see
``jlvm.models.posteriors``): SVI keeps one phi per data point, semi-amortized inference
starts from the encoder's.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from jlvm import estimators

_sg = jax.lax.stop_gradient


def local_elbo(log_joint: Callable, phi, rebuild: Callable, key: jax.Array,
               num_samples: int) -> jax.Array:
    """ELBO(x; theta, phi) for one data point (reparameterized); ``log_joint``: z -> log
    p(x, z) with x and theta bound."""
    return estimators.elbo(key, log_joint, rebuild(*phi), num_samples)


def refine(log_joint: Callable, phi, rebuild: Callable, key: jax.Array, *, inner_steps: int,
           inner_learning_rate: float, num_samples: int):
    """Gradient ascent on ELBO(phi) for one data point with theta fixed (Adam, fresh state;
    ``log_joint`` must hold theta fixed, e.g. through ``jax.lax.stop_gradient``).

    Returns (phi*, ELBO at the start, ELBO at the end), the two ELBOs estimated with the
    same draws so that their difference is the gain of the refinement, not noise.
    """
    optimizer = optax.adam(inner_learning_rate)

    def body(carry, step_key):
        current, opt_state = carry
        grads = jax.grad(lambda p: -local_elbo(log_joint, p, rebuild, step_key,
                                               num_samples))(current)
        updates, opt_state = optimizer.update(grads, opt_state, current)
        return (optax.apply_updates(current, updates), opt_state), None

    loop_key, eval_key = jax.random.split(key)
    phi = _sg(phi)
    (refined, _), _ = jax.lax.scan(body, (phi, optimizer.init(phi)),
                                   jax.random.split(loop_key, inner_steps))
    before = local_elbo(log_joint, phi, rebuild, eval_key, num_samples)
    after = local_elbo(log_joint, refined, rebuild, eval_key, num_samples)
    return refined, before, after
