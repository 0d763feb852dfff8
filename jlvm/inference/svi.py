"""Stochastic variational inference with one variational parameter set per data point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jlvm import _checks
from jlvm.inference import _local
from jlvm.models import vae
from jlvm.train import Learner, TrainState, keep_if_finite


def _check_batch(batch) -> tuple[jax.Array, jax.Array]:
    """SVI's batches: (index [B] integers, x [B, D]), B >= 1 (shapes are static)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"svi batches are (index [B], x [B, D]) pairs, got "
                        f"{type(batch).__name__}.")
    index, x = batch
    if not (hasattr(index, "dtype") and jnp.issubdtype(index.dtype, jnp.integer)
            and index.ndim == 1):
        raise TypeError(f"the index of an svi batch must be a vector of integers [B], got "
                        f"{getattr(index, 'dtype', type(index).__name__)} of shape "
                        f"{getattr(index, 'shape', None)}.")
    if not hasattr(x, "shape") or x.ndim != 2 or x.shape[0] != index.shape[0] or not x.shape[0]:
        raise ValueError(f"an svi batch needs x [B, D] with the index's B={index.shape[0]} "
                         f">= 1 rows, got {getattr(x, 'shape', type(x).__name__)}.")
    return index, x


class SVIParams(NamedTuple):
    """model: the decoder's ``vae.Params`` (theta); mean, log_scale: [N, L] the table of
    per-datapoint q(z; phi^i) = N(mean[i], diag exp(log_scale[i])^2)."""

    model: Any
    mean: jax.Array
    log_scale: jax.Array


def svi(init_params: Callable[[jax.Array], vae.Params], optimizer: optax.GradientTransformation,
        num_data: int, *, inner_steps: int = 20, inner_learning_rate: float = 0.05,
        num_samples: int = 1) -> Learner:
    """Non-amortized SVI, as in the lecture's algorithm.

    For a batch of data points i: starting from the stored phi^i, take ``inner_steps``
    Adam steps of gradient ascent on ELBO(x_i; theta, phi^i) (vmapped over the batch), store
    phi^{i,*}, then take one optimizer step on theta with the gradient of the batch ELBO at
    phi^{i,*}. The encoder in ``vae.Params`` is not used.

    Args:
      init_params: key -> ``vae.Params`` (its decoder is theta).
      optimizer: optax optimizer for theta.
      num_data: N, the size of the phi table (data points are addressed by index).
      inner_steps, inner_learning_rate: the per-datapoint inner optimization.
      num_samples: draws per ELBO estimate.

    Returns:
      ``Learner`` whose batches are ``(index [B] int32, x [B, D])``; ``step`` reports
      ``loss``, ``elbo`` (at phi*, nats per example), ``elbo_before_inner`` and
      ``inner_gain`` (= elbo - elbo_before_inner), and ``finite``.
    """
    if not callable(init_params):
        raise TypeError(f"init_params must be a function key -> params, got "
                        f"{type(init_params).__name__}.")
    _checks.optimizer(optimizer)
    num_data = _checks.positive_int(num_data, "num_data")
    inner_learning_rate = _checks.positive_number(inner_learning_rate, "inner_learning_rate")
    inner_steps = _checks.positive_int(inner_steps, "inner_steps")
    num_samples = _checks.positive_int(num_samples, "num_samples")

    def init(key: jax.Array, batch) -> TrainState:
        _checks.prng_key(key)
        del batch
        params_key, state_key = jax.random.split(key)
        model = init_params(params_key)
        # phi^i starts at the prior N(0, I)
        params = SVIParams(model, jnp.zeros((num_data, model.latent_dim)),
                           jnp.zeros((num_data, model.latent_dim)))
        return TrainState(params, optimizer.init(model), jnp.zeros((), jnp.int32), state_key)

    def step(state: TrainState, batch):
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState (from learner.init), got "
                            f"{type(state).__name__}.")
        index, x = _check_batch(batch)
        key, inner_key, theta_key = jax.random.split(state.key, 3)
        params = state.params
        # an index outside [0, N) reads NaN (JAX would wrap a negative one and clamp a large
        # one to the last row): the loss is then not finite, the step is not taken, and
        # training stops with a message
        index = jnp.where((index >= 0) & (index < num_data), index, num_data)
        phi = (params.mean.at[index].get(mode="fill", fill_value=jnp.nan),
               params.log_scale.at[index].get(mode="fill", fill_value=jnp.nan))
        refined, before, after = jax.vmap(
            lambda xi, mean, log_scale, k: _local.refine(
                params.model, xi, (mean, log_scale), k, inner_steps=inner_steps,
                inner_learning_rate=inner_learning_rate, num_samples=num_samples)
        )(x, *phi, jax.random.split(inner_key, x.shape[0]))
        refined = jax.lax.stop_gradient(refined)

        def loss_fn(model):
            keys = jax.random.split(theta_key, x.shape[0])
            values = jax.vmap(lambda xi, m, s, k: _local.local_elbo(model, xi, (m, s), k,
                                                                    num_samples))(
                x, *refined, keys)
            return -jnp.mean(values)

        loss, grads = jax.value_and_grad(loss_fn)(params.model)
        updates, opt_state = optimizer.update(grads, state.opt_state, params.model)
        new_params = SVIParams(optax.apply_updates(params.model, updates),
                               params.mean.at[index].set(refined[0], mode="drop"),
                               params.log_scale.at[index].set(refined[1], mode="drop"))
        new = TrainState(new_params, opt_state, state.step + 1, key)
        new = keep_if_finite(loss, new, state._replace(key=key))
        return new, {"loss": loss, "elbo": jnp.mean(after), "elbo_before_inner": jnp.mean(before),
                     "inner_gain": jnp.mean(after - before), "finite": jnp.isfinite(loss)}

    return Learner(init, step)
