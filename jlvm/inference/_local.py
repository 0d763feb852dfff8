"""Per-datapoint Gaussian variational parameters and their inner optimization."""

from __future__ import annotations

import functools

import distrax
import jax
import jax.numpy as jnp
import optax

from jlvm import estimators
from jlvm.models import vae

_sg = jax.lax.stop_gradient


def gaussian_q(mean: jax.Array, log_scale: jax.Array) -> distrax.MultivariateNormalDiag:
    """q(z; phi) = N(mean, diag exp(log_scale)^2) for one data point, phi = (mean, log_scale)."""
    return distrax.MultivariateNormalDiag(mean, jnp.exp(log_scale))


def local_elbo(model: vae.Params, x: jax.Array, phi: tuple[jax.Array, jax.Array],
               key: jax.Array, num_samples: int) -> jax.Array:
    """ELBO(x; theta, phi) for one data point with its own phi (reparameterized)."""
    return estimators.elbo(key, functools.partial(vae.log_joint, model, x), gaussian_q(*phi),
                           num_samples)


def refine(model: vae.Params, x: jax.Array, phi, key: jax.Array, *, inner_steps: int,
           inner_learning_rate: float, num_samples: int):
    """Gradient ascent on ELBO(phi) for one data point with theta fixed (Adam, fresh state).

    Returns (phi*, ELBO at the start, ELBO at the end), the two ELBOs estimated with the
    same draws so that their difference is the gain of the refinement, not noise.
    """
    model = _sg(model)
    optimizer = optax.adam(inner_learning_rate)

    def body(carry, step_key):
        current, opt_state = carry
        grads = jax.grad(lambda p: -local_elbo(model, x, p, step_key, num_samples))(current)
        updates, opt_state = optimizer.update(grads, opt_state, current)
        return (optax.apply_updates(current, updates), opt_state), None

    loop_key, eval_key = jax.random.split(key)
    phi = _sg(phi)
    (refined, _), _ = jax.lax.scan(body, (phi, optimizer.init(phi)),
                                   jax.random.split(loop_key, inner_steps))
    before = local_elbo(model, x, phi, eval_key, num_samples)
    after = local_elbo(model, x, refined, eval_key, num_samples)
    return refined, before, after
