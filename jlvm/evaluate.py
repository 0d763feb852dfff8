"""Evaluation over whole data sets: log-likelihood by importance sampling, ELBO, IWAE bound,
bits/dim.

Data points are processed ``batch_size`` at a time (``lax.map`` over batches, ``vmap``
within one) and each data point's K draws ``chunk_size`` at a time, so memory is bounded by
batch_size x chunk_size evaluations of the decoder whatever N and K are.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jlvm import _checks, ais, estimators, train
from jlvm._batches import _check_mesh_type, map_over_data, per_model
from jlvm.models import protocol
from jlvm.models.protocol import Model


def _vae_model() -> Model:
    """The built-in VAE's functions (its settings live in its ``vae.Params``)."""
    from jlvm.models import vae

    return vae.model(1, 1)  # init is not used: it is not part of what compiles


def _check_vae_params(params: Any) -> None:
    from jlvm.models import vae

    if not isinstance(params, vae.Params):
        raise TypeError(f"params must be a vae.Params (a model with an encoder), got "
                        f"{type(params).__name__}.")


def _check_mask(X: Any, mask: Any) -> Any:
    """None, a mask [D] shared by every row, or a mask [N, D] of each row's own, as
    booleans (True = observed), with the rules of every mask in jlvm."""
    if mask is None:
        return None
    if np.ndim(mask) == 2:
        if tuple(np.shape(mask)) != tuple(np.shape(X)):
            raise ValueError(f"mask must have shape [D] or X's shape {tuple(np.shape(X))}, "
                             f"got {tuple(np.shape(mask))}.")
        if not _checks.is_concrete(mask):
            if jnp.result_type(mask) != jnp.bool_:
                raise TypeError("mask under jit must be boolean (True = observed).")
            return mask
        rows = [_checks.observation_mask(row, np.shape(X)[1], f"mask row {n}")
                for n, row in enumerate(np.asarray(mask))]
        return jnp.asarray(np.stack(rows))
    return jnp.asarray(_checks.observation_mask(mask, np.shape(X)[1]))


def _check_data(model: Model, params: Any, X: Any, mask: Any) -> tuple[jax.Array, Any]:
    """(X as a float array [N, D] with N >= 1 that the model takes (traced on one row), its
    observed entries finite (and 0/1 for the VAE's Bernoulli likelihood), the mask as a
    boolean array [D] or None); ValueError naming what is wrong."""
    X = _checks.float_array(X, "X")
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must have shape [N, D] with N >= 1, got {X.shape}.")
    data_dim = getattr(params, "data_dim", None)
    if data_dim is not None and X.shape[1] != data_dim:
        raise ValueError(f"X must have shape [N, D] with N >= 1 and D={data_dim}, "
                         f"got {X.shape}.")
    mask = _check_mask(X, mask)
    if _checks.is_concrete(X) and _checks.is_concrete(mask):
        values = np.asarray(X)
        seen = values if mask is None else values[np.broadcast_to(np.asarray(mask, bool),
                                                                  values.shape)]
        if not np.all(np.isfinite(seen)):
            raise ValueError("X holds NaN or infinite values at observed entries; pass mask "
                             "(True = observed) to leave entries out.")
        likelihood = getattr(params, "likelihood", None)
        if isinstance(likelihood, str):  # the built-in VAE's: values it gives no probability
            from jlvm.models import likelihoods

            likelihoods.check_values(likelihoods.parse(likelihood), seen, "X")
    protocol.check_against(model, params, X[0], mask if mask is None or mask.ndim == 1
                           else mask[0])
    if mask is not None:  # a missing entry may hold NaN: it never reaches an arithmetic op
        X = jnp.where(jnp.broadcast_to(mask, X.shape), X, 0.0)
    return X, mask


def _place(mesh: Mesh | None, *trees: Any) -> tuple:
    """The arguments replicated on the mesh's devices (as they are without a mesh)."""
    return trees if mesh is None else train.replicate(trees, mesh)


def _compiled(model: Model, estimator: str, settings: Any, batch_size: int,
              chunk_size: int | None, mesh: Mesh | None, proposal: Callable | None = None):
    """``run(key, params, X, mask, phi) -> [N]``, jitted: one per model and settings (a
    bounded cache of them, ``jlvm._batches.per_model``).

    ``settings``: K for "is", "elbo" and "iwae"; an ``ais.Settings`` for "ais". q is the model's
    encoder, or ``proposal(*phi_n)`` with ``phi`` a pytree of per-row arrays (a q fitted per
    example). ``mask``: None, [D] shared by every row, or [N, D]."""
    return _compile(model, estimator, settings, batch_size, chunk_size, mesh, proposal)


def _per_row(model, params, estimator, settings, chunk_size, proposal):
    """(key, x, mask, phi_n) -> the estimate for one row."""
    def one(k, x, observed, row_phi):
        log_joint = functools.partial(protocol.log_joint, model, params, x, mask=observed)

        def q():  # only where the estimator draws from q (AIS may start at the prior)
            return (protocol.encoder(model, params, x, observed) if proposal is None
                    else proposal(*row_phi))

        if estimator == "ais":
            start = model.prior(params) if settings.initial == "prior" else q()
            return ais.log_marginal_ais(k, log_joint, start, settings.num_steps,
                                        num_chains=settings.num_chains, **settings.options())
        if estimator == "exact":  # every z of the prior's finite support, chunk by chunk
            support = estimators.enumerable_support(model.prior(params))
            return estimators.log_marginal_exact(log_joint, support, chunk_size=chunk_size)
        if estimator == "is":
            return estimators.log_marginal_is(k, log_joint, q(), settings,
                                              chunk_size=chunk_size)
        fn = estimators.elbo if estimator == "elbo" else estimators.iwae_bound
        return fn(k, log_joint, q(), settings)
    return one


@per_model
def _compile(model, estimator, settings, batch_size, chunk_size, mesh, proposal):
    def run(key, params, X, mask, phi):
        shared = mask if mask is not None and mask.ndim == 1 else None
        own = mask if mask is not None and mask.ndim == 2 else None
        per_row = _per_row(model, params, estimator, settings, chunk_size, proposal)

        def one(k, row):
            x, row_mask, row_phi = row
            return per_row(k, x, shared if row_mask is None else row_mask, row_phi)

        return map_over_data(one, key, (X, own, phi), batch_size, mesh)

    return jax.jit(run)


def _evaluate(estimator, key, model, params, X, num_samples, batch_size, chunk_size, mask,
              mesh, proposal=None, phi=None):
    protocol.check(model, *(() if proposal is not None else ("encoder",)))
    num_samples = _checks.positive_int(num_samples, "num_samples")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if estimator == "is":
        chunk_size = min(num_samples if chunk_size is None
                         else _checks.positive_int(chunk_size, "chunk_size"), num_samples)
    else:
        chunk_size = None
    _check_mesh_type(mesh)
    train.check_mesh(mesh, batch_size)
    _checks.prng_key(key)
    X, mask = _check_data(model, params, X, mask)
    params, X, mask, phi = _place(mesh, params, X, mask, phi)
    run = _compiled(model, estimator, num_samples, batch_size, chunk_size, mesh, proposal)
    return run(key, params, X, mask, phi)


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
    """The draws per data point that ``log_likelihood(..., chunk_size=...)`` makes at once
    so that its temporaries (batch_size x chunk_size evaluations of log_joint) stay within
    ``budget_bytes``: at most ``most`` and ``num_samples``, at least 1. The chunk changes
    the memory and the speed, never the values.

    Cheap where memory is no concern: ``most`` draws when every value one log_joint
    computes, times batch_size x most, fits (traced, nothing compiled). Otherwise XLA's
    count of the temporaries (compiled memory analysis) at a probe of 8 draws, scaled
    linearly: a conv VAE on 28x28 images holds 10 GB at 500 draws of 100 images."""
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
    """log p(x_n) by importance sampling with K draws from the model's encoder, for every
    row of X [N, D]: [N].

    ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, z_k ~ q(z | x), chunk_size draws at a time.
    With ``mask`` [D] (True = observed; the same for every row) or [N, D] (each row its
    own), log p(x_obs) (the model's log_joint and encoder take the mask; anything, NaN
    included, may stand at missing entries). With ``mesh``, batches are split over its
    devices (see ``map_over_data``); the values do not change.
    """
    return _evaluate("is", key, model, params, X, num_samples, batch_size, chunk_size, mask,
                     mesh)


def elbo(key: jax.Array, model: Model, params: Any, X: jax.Array, num_samples: int = 1, *,
         batch_size: int = 500, mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """The ELBO of every row of X with the encoder's q: [N] (K draws each); ``mask`` and
    ``mesh`` as in ``log_likelihood``."""
    return _evaluate("elbo", key, model, params, X, num_samples, batch_size, None, mask, mesh)


def iwae_bound(key: jax.Array, model: Model, params: Any, X: jax.Array, num_samples: int, *,
               batch_size: int = 500, mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """The IWAE bound ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` of every row of X: [N];
    ``mask`` and ``mesh`` as in ``log_likelihood``."""
    return _evaluate("iwae", key, model, params, X, num_samples, batch_size, None, mask, mesh)


def log_likelihood_ais(key: jax.Array, model: Model, params: Any, X: jax.Array,
                       num_steps: int, *, num_chains: int = 16, initial: str = "prior",
                       batch_size: int = 100, mask: Any = None, mesh: Mesh | None = None,
                       schedule: Any = "sigmoidal", num_leapfrog: int = 10,
                       step_size: Any = None) -> jax.Array:
    """log p(x_n) by forward annealed importance sampling (``jlvm.log_marginal_ais``) for
    every row of X [N, D]: [N], each a stochastic lower bound with E[exp(value)] = p(x_n).

    The path runs from ``initial``: ``"prior"`` (``model.prior(params)``) or ``"encoder"``
    (the model's q(z | x_n), usually much closer to p(z | x_n): fewer steps for the same
    accuracy) to p(z | x_n), with ``num_chains`` chains of ``num_steps`` HMC moves per row;
    ``schedule``, ``num_leapfrog`` and ``step_size`` as in ``log_marginal_ais`` (step sizes
    tuned on a pilot per row unless given). ``mask``, ``batch_size`` and ``mesh`` as in
    ``log_likelihood``; row n's value depends only on (key, n, x_n), not on the batching.
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
    """Exact log p(x_n) = logsumexp_z log p(x_n, z) over every z of the prior's finite
    support, for every row of X [N, D]: [N]. No draws.

    For a model whose ``prior(params)`` has a finite support small enough to enumerate
    (``jlvm.estimators.enumerable_support``: binary z [L] with L <= 24, a categorical z):
    the VAE with ``prior="bernoulli"`` at small L, a model of your own. ``chunk_size``
    values of z at a time (default: about 2**24 / (batch_size * D)); within a batch each
    chunk's decoder runs once for every row (vmap leaves what does not depend on x
    unbatched), so the cost is 2**L decoder passes per batch, not per row. ``mask``,
    ``batch_size`` and ``mesh`` as in ``log_likelihood``. For another support, vmap
    ``jlvm.log_marginal_exact`` over the rows yourself.
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
    """``log_likelihood`` for the built-in VAE's ``vae.Params`` (missing pixels are summed
    out exactly and the encoder sees them as 0): [N]."""
    _check_vae_params(params)
    return log_likelihood(key, _vae_model(), params, X, num_samples, batch_size=batch_size,
                          chunk_size=chunk_size, mask=mask, mesh=mesh)


def vae_elbo(key: jax.Array, params: Any, X: jax.Array, num_samples: int = 1, *,
             batch_size: int = 500, mask: Any = None, mesh: Mesh | None = None) -> jax.Array:
    """``elbo`` for the built-in VAE's ``vae.Params``: [N]."""
    _check_vae_params(params)
    return elbo(key, _vae_model(), params, X, num_samples, batch_size=batch_size, mask=mask,
                mesh=mesh)


def vae_iwae_bound(key: jax.Array, params: Any, X: jax.Array, num_samples: int, *,
                   batch_size: int = 500, mask: Any = None,
                   mesh: Mesh | None = None) -> jax.Array:
    """``iwae_bound`` for the built-in VAE's ``vae.Params``: [N]."""
    _check_vae_params(params)
    return iwae_bound(key, _vae_model(), params, X, num_samples, batch_size=batch_size,
                      mask=mask, mesh=mesh)


def bits_per_dim(log_likelihood_nats: float, data_dim: int) -> float:
    """-log2 p(x) / D: nats per example to bits per dimension, for a log-probability of
    discrete data (<= 0); a density's log (which can be positive) has no such reading."""
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
    """Mean and standard error of per-example values [N]; the standard error is None for
    one value (it is undefined, and NaN is not JSON)."""
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
