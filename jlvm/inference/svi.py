"""Stochastic variational inference with one variational parameter set per data point."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jlvm import _checks
from jlvm.inference import _local
from jlvm.models import posteriors, protocol
from jlvm.models.protocol import Model
from jlvm.train import Learner, TrainState, keep_if_finite


def _check_batch(batch) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """SVI's batches: (index [B] integers, x [B, D]) or (index, x, mask [B, D] bool, True
    = observed), B >= 1 (shapes are static). Returns (index, x, mask or None)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) in (2, 3)):
        raise TypeError(f"svi batches are (index [B], x [B, D]) or (index, x, mask [B, D]), "
                        f"got {type(batch).__name__}"
                        f"{f' of {len(batch)} items' if isinstance(batch, (tuple, list)) else ''}.")
    index, x = batch[:2]
    mask = batch[2] if len(batch) == 3 else None
    if not (hasattr(index, "dtype") and jnp.issubdtype(index.dtype, jnp.integer)
            and index.ndim == 1):
        raise TypeError(f"the index of an svi batch must be a vector of integers [B], got "
                        f"{getattr(index, 'dtype', type(index).__name__)} of shape "
                        f"{getattr(index, 'shape', None)}.")
    if not hasattr(x, "shape") or x.ndim != 2 or x.shape[0] != index.shape[0] or not x.shape[0]:
        raise ValueError(f"an svi batch needs x [B, D] with the index's B={index.shape[0]} "
                         f">= 1 rows, got {getattr(x, 'shape', type(x).__name__)}.")
    if mask is not None:
        protocol.split_batch((x, mask))  # the same rules as every learner's masks
    return index, x, mask


class SVIParams(NamedTuple):
    """The parameters ``svi`` learns: theta and the table of per-datapoint
    q(z; phi^i) = N(mean[i], S_i S_i^T), every phi^i starting at N(0, I).

    Attributes:
      model: theta, the model's params.
      mean: ``[N, L]``, row i the mean of q(z; phi^i).
      log_scale: ``[N, L]`` for the diagonal family (S_i = diag exp(log_scale[i])), or
        ``[N, L, L]`` for the full one (S_i = ``posteriors.scale_tril(log_scale[i])``: the
        diagonal holds S_i's log-scales, the strict lower triangle S_i's own entries, and
        the upper triangle is unused).
    """

    model: Any
    mean: jax.Array
    log_scale: jax.Array


def _latent_dim(model: Model, params: Any, batch: Any) -> int:
    x = None
    if batch is not None:
        _, x, _ = _check_batch(batch)
    if model.prior is None and x is None:
        raise TypeError("svi needs model.prior, or a first batch and model.encoder, to know "
                        "the shape of z.")
    z = protocol.latent_example(model, params, None if x is None else x[0])
    if len(z.shape) != 1:
        raise ValueError(f"svi's per-datapoint Gaussians are over vectors z [L], got z of "
                         f"shape {tuple(z.shape)}.")
    return z.shape[0]


def svi(model: Model, optimizer: optax.GradientTransformation, num_data: int, *,
        inner_steps: int = 20, inner_learning_rate: float = 0.05, num_samples: int = 1,
        family: str = "diagonal") -> Learner:
    """Non-amortized SVI, as in the lecture's algorithm.

    For a batch of data points i: starting from the stored phi^i, take ``inner_steps``
    Adam steps of gradient ascent on ELBO(x_i; theta, phi^i) (vmapped over the batch), store
    phi^{i,*}, then take one optimizer step on theta with the gradient of the batch ELBO at
    phi^{i,*}. An encoder, if the model has one, is not used.

    Args:
      model: a ``jlvm.Model``; its ``prior`` (or, with a first batch, its encoder) tells
        the shape of z.
      optimizer: optax optimizer for theta.
      num_data: N, the size of the phi table (data points are addressed by index).
      inner_steps, inner_learning_rate: the per-datapoint inner optimization.
      num_samples: draws per ELBO estimate.
      family: "diagonal" or "full" (``jlvm.models.posteriors``): each phi^i starts at
        N(0, I).

    Returns:
      ``Learner`` whose batches are ``(index [B] int32, x [B, D])``, or with a third
      member ``mask [B, D]`` bool (True = observed) for incomplete data, which the model's
      ``log_joint`` then receives, with x at 0 where it is missing (whatever it held, NaN
      included): each phi^i fits q(z | x_obs); ``step`` reports
      ``loss``, ``elbo`` (at phi*, nats per example), ``elbo_before_inner`` and
      ``inner_gain`` (= elbo - elbo_before_inner), and ``finite``.
    """
    protocol.check(model)
    _checks.optimizer(optimizer)
    num_data = _checks.positive_int(num_data, "num_data")
    inner_learning_rate = _checks.positive_number(inner_learning_rate, "inner_learning_rate")
    inner_steps = _checks.positive_int(inner_steps, "inner_steps")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    _checks.one_of(family, "family", posteriors.FAMILIES)
    rebuild = posteriors.build(family)

    def init(key: jax.Array, batch) -> TrainState:
        _checks.prng_key(key)
        params_key, state_key = jax.random.split(key)
        theta = model.init(params_key)
        _checks.numeric_leaves(theta, "model.init(key)")
        if batch is not None:
            _, x, mask = _check_batch(batch)
            protocol.check_against(model, theta, x[0], None if mask is None else mask[0])
        mean, log_scale = posteriors.standard(_latent_dim(model, theta, batch), family)
        # every phi^i starts at N(0, I)
        params = SVIParams(theta, jnp.broadcast_to(mean, (num_data, *mean.shape)),
                           jnp.broadcast_to(log_scale, (num_data, *log_scale.shape)))
        return TrainState(params, optimizer.init(theta), jnp.zeros((), jnp.int32), state_key)

    def step(state: TrainState, batch):
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState (from learner.init), got "
                            f"{type(state).__name__}.")
        index, x, mask = _check_batch(batch)
        if mask is not None:
            # the model never sees what a missing entry held: a model that computes with x
            # before masking would turn a NaN there into NaN gradients (0 * NaN)
            x = jnp.where(mask, x, 0.0)
        key, inner_key, theta_key = jax.random.split(state.key, 3)
        params = state.params
        # an index outside [0, N) reads NaN (JAX would wrap a negative one and clamp a large
        # one to the last row): the loss is then not finite, the step is not taken, and
        # training stops with a message
        index = jnp.where((index >= 0) & (index < num_data), index, num_data)
        phi = (params.mean.at[index].get(mode="fill", fill_value=jnp.nan),
               params.log_scale.at[index].get(mode="fill", fill_value=jnp.nan))
        fixed = jax.lax.stop_gradient(params.model)
        # masks ride along as a per-example argument (None: complete data, nothing passed)
        masks = jnp.ones(x.shape, bool) if mask is None else mask

        def log_joint(theta, xi, mi, z):
            return protocol.log_joint(model, theta, xi, z, None if mask is None else mi)

        refined, before, after = jax.vmap(
            lambda xi, mi, mean, log_scale, k: _local.refine(
                functools.partial(log_joint, fixed, xi, mi), (mean, log_scale),
                rebuild, k, inner_steps=inner_steps, inner_learning_rate=inner_learning_rate,
                num_samples=num_samples)
        )(x, masks, *phi, jax.random.split(inner_key, x.shape[0]))
        refined = jax.lax.stop_gradient(refined)

        def loss_fn(theta):
            keys = jax.random.split(theta_key, x.shape[0])
            values = jax.vmap(lambda xi, mi, m, s, k: _local.local_elbo(
                functools.partial(log_joint, theta, xi, mi), (m, s), rebuild, k,
                num_samples))(x, masks, *refined, keys)
            return -jnp.mean(values)

        loss, grads = jax.value_and_grad(loss_fn)(params.model)
        updates, opt_state = optimizer.update(grads, state.opt_state, params.model)
        new_params = SVIParams(optax.apply_updates(params.model, updates),
                               params.mean.at[index].set(refined[0], mode="drop"),
                               params.log_scale.at[index].set(refined[1], mode="drop"))
        new = TrainState(new_params, opt_state, state.step + 1, key)
        new, finite = keep_if_finite(loss, new, state._replace(key=key), grads)
        return new, {"loss": loss, "elbo": jnp.mean(after), "elbo_before_inner": jnp.mean(before),
                     "inner_gain": jnp.mean(after - before), "finite": finite}

    return Learner(init, step)
