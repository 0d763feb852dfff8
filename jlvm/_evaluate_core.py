"""What every estimator of ``jlvm.evaluate`` runs on: the checks of a data set and its
mask, and the per-row estimator, compiled once per model and settings and mapped over the
rows in batches (``jlvm._batches.map_over_data``).

``jlvm.evaluate`` imports these; they are private to it.
"""

from __future__ import annotations

import functools
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
