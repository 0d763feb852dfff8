"""Evaluation over whole data sets: log-likelihood by importance sampling, ELBO, IWAE bound,
bits/dim.

Data points are processed ``batch_size`` at a time (``lax.map`` over batches, ``vmap``
within one) and each data point's K draws ``chunk_size`` at a time, so memory is bounded by
batch_size x chunk_size evaluations of the decoder whatever N and K are. The checks of the
data and that compiled loop, which every estimator here runs on, live in
``jlvm._evaluate_core``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jlvm import _checks, ais, estimators, train
from jlvm._batches import _check_mesh_type
from jlvm._evaluate_core import _check_data, _compiled, _evaluate, _place
from jlvm._evaluate_core import _check_mask as _check_mask
from jlvm._evaluate_core import _compile as _compile  # tests, benchmarks: its cache
from jlvm._evaluate_core import _per_row as _per_row
from jlvm.models import protocol
from jlvm.models.protocol import Model

__all__ = ["bits_per_dim", "chunk_size_for", "elbo", "iwae_bound", "log_likelihood",
           "log_likelihood_ais", "log_likelihood_exact", "summary", "vae_elbo",
           "vae_iwae_bound", "vae_log_likelihood"]


def _vae_model() -> Model:
    """The built-in VAE's functions (its settings live in its ``vae.Params``)."""
    from jlvm.models import vae

    return vae.model(1, 1)  # init is not used: it is not part of what compiles


def _check_vae_params(params: Any) -> None:
    from jlvm.models import vae

    if not isinstance(params, vae.Params):
        raise TypeError(f"params must be a vae.Params (a model with an encoder), got "
                        f"{type(params).__name__}.")


CHUNK_BUDGET_BYTES = 2**30  # chunk_size_for's default: temporaries of one log_likelihood
CHUNK_MOST = 500  # ...and its largest chunk (more draws at once are no faster)


def _traced_bytes(jaxpr) -> int:
    """The bytes of every value a program (and the programs nested in it) computes: an
    upper bound on what it holds at once."""
    total = 0
    for equation in train.equations(jaxpr):
        for var in equation.outvars:
            aval = getattr(var, "aval", None)
            dtype = getattr(aval, "dtype", None)
            if hasattr(aval, "shape") and isinstance(dtype, np.dtype):  # not PRNG keys
                total += math.prod(aval.shape) * dtype.itemsize
    return total


def chunk_size_for(model: Model, params: Any, X: jax.Array, num_samples: int, *,
                   batch_size: int = 100, mask: Any = None,
                   budget_bytes: int = CHUNK_BUDGET_BYTES, most: int = CHUNK_MOST) -> int:
    """A ``chunk_size`` for ``log_likelihood`` whose temporaries fit ``budget_bytes``.

    The draws per data point made at once so that batch_size x chunk_size evaluations of
    log_joint stay within the budget; the chunk changes the memory and the speed, never the
    values. Cheap where memory is no concern: ``most`` draws when every value one log_joint
    computes, times batch_size x most, fits (traced, nothing compiled). Otherwise XLA's
    count of the temporaries (compiled memory analysis) at a probe of 8 draws, scaled
    linearly: a conv VAE on 28x28 images holds 10 GB at 500 draws of 100 images.

    Args:
      model, params, X, num_samples, batch_size, mask: as in ``log_likelihood``.
      budget_bytes: bytes the temporaries may take, >= 1.
      most: the largest chunk, >= 1.

    Returns:
      An int in [1, min(most, num_samples)].
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    most = _checks.positive_int(most, "most")
    budget_bytes = _checks.positive_int(budget_bytes, "budget_bytes", maximum=2**62)
    X, mask = _check_data(model, params, X[:batch_size],
                          mask[:batch_size] if mask is not None and np.ndim(mask) == 2
                          else mask)
    x, one_mask = X[0], mask if mask is None or mask.ndim == 1 else mask[0]
    z = protocol.latent_example(model, params, x, one_mask)
    jaxpr = jax.make_jaxpr(lambda p, x, z: protocol.log_joint(model, p, x, z, one_mask))(
        params, x, z).jaxpr
    largest = min(most, num_samples)
    if batch_size * largest * max(_traced_bytes(jaxpr), 1) <= budget_bytes:
        return largest
    probe = min(8, num_samples)
    run = _compiled(model, "is", probe, batch_size, probe, None)
    analysis = run.lower(jax.random.PRNGKey(0), params, X, mask, None).compile(
    ).memory_analysis()
    if analysis is None:  # a backend that does not say
        return largest
    per_draw = max(analysis.temp_size_in_bytes / probe, 1.0)
    return max(1, min(largest, int(budget_bytes // per_draw)))


def log_likelihood(key: jax.Array, model: Model, params: Any, X: jax.Array,
                   num_samples: int, *, batch_size: int = 100, chunk_size: int | None = 500,
                   mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """log p(x_n) by importance sampling from the model's encoder, for every row of X.

    ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, z_k ~ q(z | x), chunk_size draws at a time.

    Args:
      key: PRNG key; row n's value depends only on (key, n, x_n), not on the batching.
      model: a ``jlvm.Model`` with an encoder.
      params: the model's parameters.
      X: ``[N, D]`` data, N >= 1; anything, NaN included, may stand at missing entries.
      num_samples: K >= 1 draws per row.
      batch_size: rows at a time (``lax.map`` over batches, ``vmap`` within one).
      chunk_size: draws per row at a time (at most K; None for K); see ``chunk_size_for``.
      mask: None, or bool ``[D]`` (True = observed; the same for every row) or ``[N, D]``
        (each row its own): log p(x_obs) (the model's log_joint and encoder take the mask).
      mesh: None, or a ``data_mesh`` whose devices split each batch (see ``map_over_data``;
        batch_size a multiple of their number); the values do not change.

    Returns:
      ``[N]`` estimates in nats.
    """
    return _evaluate("is", key, model, params, X, num_samples, batch_size, chunk_size, mask,
                     mesh)


def elbo(key: jax.Array, model: Model, params: Any, X: jax.Array, num_samples: int = 1, *,
         batch_size: int = 500, mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """The ELBO of every row of X with the encoder's q, K draws each.

    Args:
      key, model, params, X, batch_size, mask, mesh: as in ``log_likelihood``.
      num_samples: K >= 1.

    Returns:
      ``[N]`` estimates in nats.
    """
    return _evaluate("elbo", key, model, params, X, num_samples, batch_size, None, mask, mesh)


def iwae_bound(key: jax.Array, model: Model, params: Any, X: jax.Array, num_samples: int, *,
               batch_size: int = 500, mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """The IWAE bound ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` of every row of X.

    Args:
      key, model, params, X, num_samples, batch_size, mask, mesh: as in ``log_likelihood``.

    Returns:
      ``[N]`` estimates in nats.
    """
    return _evaluate("iwae", key, model, params, X, num_samples, batch_size, None, mask, mesh)


def log_likelihood_ais(key: jax.Array, model: Model, params: Any, X: jax.Array,
                       num_steps: int, *, num_chains: int = 16, initial: str = "prior",
                       batch_size: int = 100, mask: Any = None, mesh: Mesh | None = None,
                       schedule: Any = "sigmoidal", num_leapfrog: int = 10,
                       step_size: Any = None) -> jax.Array:
    """log p(x_n) by forward AIS (``jlvm.log_marginal_ais``) for every row of X.

    Args:
      key, model, params, X, batch_size, mask, mesh: as in ``log_likelihood``.
      num_steps: T >= 1 HMC moves per chain.
      num_chains: C >= 1 chains per row.
      initial: where the path to p(z | x_n) starts: ``"prior"`` (``model.prior(params)``)
        or ``"encoder"`` (the model's q(z | x_n), usually much closer to p(z | x_n): fewer
        steps for the same accuracy).
      schedule, num_leapfrog, step_size: as in ``log_marginal_ais`` (step sizes tuned on a
        pilot per row unless given).

    Returns:
      ``[N]`` estimates in nats, each a stochastic lower bound with E[exp(value)] = p(x_n).
    """
    settings = ais.Settings.checked(initial, num_steps, num_chains, schedule, num_leapfrog,
                                    step_size)
    protocol.check(model, "prior" if initial == "prior" else "encoder")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    _check_mesh_type(mesh)
    train.check_mesh(mesh, batch_size)
    _checks.prng_key(key)
    X, mask = _check_data(model, params, X, mask)
    params, X, mask = _place(mesh, params, X, mask)
    return _compiled(model, "ais", settings, batch_size, None, mesh)(key, params, X, mask,
                                                                      None)


EXACT_TEMPORARY_VALUES = 2**24  # log_likelihood_exact's default: chunk x batch x D values


def log_likelihood_exact(model: Model, params: Any, X: jax.Array, *, batch_size: int = 100,
                         chunk_size: int | None = None, mask: Any = None,
                         mesh: Mesh | None = None) -> jax.Array:
    """Exact ``log p(x_n) = logsumexp_z log p(x_n, z)`` for every row of X; no draws.

    z runs over the prior's finite support. Within a batch each chunk's decoder runs once
    for every row (vmap leaves what does not depend on x unbatched), so the cost is 2**L
    decoder passes per batch, not per row. For another support, vmap
    ``jlvm.log_marginal_exact`` over the rows yourself.

    Args:
      model: a ``jlvm.Model`` whose ``prior(params)`` has a finite support small enough to
        enumerate (``jlvm.estimators.enumerable_support``: binary z ``[L]`` with L <= 24, a
        categorical z): the VAE with ``prior="bernoulli"`` at small L, a model of your own.
      params, X, batch_size, mask, mesh: as in ``log_likelihood``.
      chunk_size: values of z at a time (at most the support's size); None for about
        2**24 / (batch_size * D).

    Returns:
      ``[N]`` values in nats.

    Raises:
      ValueError: the prior has no finite support to enumerate.
    """
    protocol.check(model, "prior")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    _check_mesh_type(mesh)
    train.check_mesh(mesh, batch_size)
    X, mask = _check_data(model, params, X, mask)
    support = estimators.enumerable_support(model.prior(params))
    if support is None:
        raise ValueError(f"model.prior(params) must have a finite support to enumerate (a "
                         f"factorized Bernoulli or a categorical), got "
                         f"{type(model.prior(params)).__name__}; use log_likelihood "
                         f"(importance sampling) or log_likelihood_ais.")
    size = int(support.shape[0])
    chunk_size = (max(1, EXACT_TEMPORARY_VALUES // (batch_size * X.shape[1]))
                  if chunk_size is None else _checks.positive_int(chunk_size, "chunk_size"))
    chunk_size = min(chunk_size, size)
    params, X, mask = _place(mesh, params, X, mask)
    return _compiled(model, "exact", size, batch_size, chunk_size, mesh)(
        jax.random.PRNGKey(0), params, X, mask, None)


def vae_log_likelihood(key: jax.Array, params: Any, X: jax.Array, num_samples: int, *,
                       batch_size: int = 100, chunk_size: int | None = 500,
                       mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """``log_likelihood`` for the built-in VAE (missing pixels summed out exactly).

    Args:
      params: a ``vae.Params``; its encoder sees missing pixels as 0.
      key, X, num_samples, batch_size, chunk_size, mask, mesh: as in ``log_likelihood``.

    Returns:
      ``[N]`` estimates in nats.
    """
    _check_vae_params(params)
    return log_likelihood(key, _vae_model(), params, X, num_samples, batch_size=batch_size,
                          chunk_size=chunk_size, mask=mask, mesh=mesh)


def vae_elbo(key: jax.Array, params: Any, X: jax.Array, num_samples: int = 1, *,
             batch_size: int = 500, mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """``elbo`` for the built-in VAE.

    Args:
      params: a ``vae.Params``.
      key, X, num_samples, batch_size, mask, mesh: as in ``elbo``.

    Returns:
      ``[N]`` estimates in nats.
    """
    _check_vae_params(params)
    return elbo(key, _vae_model(), params, X, num_samples, batch_size=batch_size, mask=mask,
                mesh=mesh)


def vae_iwae_bound(key: jax.Array, params: Any, X: jax.Array, num_samples: int, *,
                   batch_size: int = 500, mask: Any = None,
                   mesh: Mesh | None = None) -> jax.Array:
    """``iwae_bound`` for the built-in VAE.

    Args:
      params: a ``vae.Params``.
      key, X, num_samples, batch_size, mask, mesh: as in ``iwae_bound``.

    Returns:
      ``[N]`` estimates in nats.
    """
    _check_vae_params(params)
    return iwae_bound(key, _vae_model(), params, X, num_samples, batch_size=batch_size,
                      mask=mask, mesh=mesh)


def bits_per_dim(log_likelihood_nats: float, data_dim: int) -> float:
    """``-log2 p(x) / D``: nats per example to bits per dimension.

    Args:
      log_likelihood_nats: log p(x) of discrete data in nats, finite and <= 0 (a
        density's log, which can be positive, has no such reading).
      data_dim: D >= 1, an int.

    Returns:
      A float >= 0.
    """
    data_dim = _checks.positive_int(data_dim, "data_dim")
    if isinstance(log_likelihood_nats, (bool, str, bytes)) or not isinstance(
            log_likelihood_nats, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"log_likelihood_nats must be a number, got {log_likelihood_nats!r}.")
    value = float(log_likelihood_nats)
    if not (math.isfinite(value) and value <= 0):
        raise ValueError(f"log_likelihood_nats must be a finite log-probability (<= 0), got "
                         f"{value}.")
    return -value / (data_dim * math.log(2))


def summary(values: Any) -> tuple[float, float | None]:
    """Mean and standard error of per-example values.

    Args:
      values: ``[N]`` finite numbers, N >= 1.

    Returns:
      ``(mean, standard_error)`` as floats; the standard error is None for one value (it
      is undefined, and NaN is not JSON).
    """
    try:
        values = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"values must be numbers [N], got {type(values).__name__}.") from None
    if values.ndim != 1 or values.shape[0] < 1:
        raise ValueError(f"values must have shape [N] with N >= 1, got {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError("values hold NaN or infinite numbers; a mean of them says nothing.")
    if values.shape[0] == 1:
        return float(values[0]), None
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.shape[0]))
