"""Per-example functions over the rows of a data set, batch by batch (and across a mesh's
devices): what every evaluation in ``jlvm.evaluate`` and ``jlvm.ais.bdmc`` maps over the
data; and the cache that compiles each such program once per model and settings."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jlvm import _checks, train


def map_over_data(per_example: Callable[[jax.Array, Any], jax.Array], key: jax.Array,
                  X: Any, batch_size: int, mesh: Mesh | None = None) -> jax.Array:
    """per_example(key_n, x_n) for every row of X [N, D] -> [N, ...], batch by batch. X may
    be a pytree of arrays with N rows each (e.g. (x [N, D], mask [N, D])); x_n is then the
    same pytree of rows.

    With ``mesh`` (``jlvm.train.data_mesh``), each batch is split over the mesh's devices
    along its "data" axis (``batch_size`` must be a multiple of their number); row n's
    value depends only on (key, n, x_n), so the result does not depend on the mesh.
    """
    if not callable(per_example):
        raise TypeError(f"per_example must be a function (key, x) -> value, got "
                        f"{type(per_example).__name__}.")
    _checks.prng_key(key)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    _check_mesh_type(mesh)
    train.check_mesh(mesh, batch_size)
    if not isinstance(X, (tuple, list, dict)) and not hasattr(X, "shape"):
        X = jnp.asarray(_checks.float_array(X, "X"))
    leaves = jax.tree_util.tree_leaves(X)
    if not leaves or any(jnp.ndim(a) < 1 or a.shape[0] != leaves[0].shape[0] for a in leaves) \
            or leaves[0].shape[0] < 1:
        raise ValueError(f"X must have a leading axis of N >= 1 rows (every array of it the "
                         f"same N), got shapes {[jnp.shape(a) for a in leaves]}.")
    count = leaves[0].shape[0]
    batches = -(-count // batch_size)
    keys = jax.random.split(key, batches * batch_size)
    shape = (batches, batch_size)

    def batched(a):  # padded with copies of the first row, cut into batches
        padded = jnp.concatenate([a, jnp.repeat(a[:1], batches * batch_size - count, axis=0)])
        return padded.reshape(shape + a.shape[1:])

    def one_batch(args):
        if mesh is not None:
            args = jax.lax.with_sharding_constraint(
                args, NamedSharding(mesh, PartitionSpec(train.DATA_AXIS)))
        return jax.vmap(per_example)(*args)

    values = jax.lax.map(one_batch, (keys.reshape(shape + keys.shape[1:]),
                                     jax.tree_util.tree_map(batched, X)))
    return values.reshape((batches * batch_size, *values.shape[2:]))[:count]


def _check_mesh_type(mesh: Any) -> None:
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (jlvm.train.data_mesh) or None, "
                        f"got {type(mesh).__name__}.")


COMPILED_MOST = 32  # compiled programs kept per factory, the least recently used dropped first


def model_functions(model: Any) -> Any:
    """What decides an evaluation's program: a ``jlvm.Model``'s functions but ``init``,
    which evaluation never calls and which ``vae.model(...)`` makes anew each time, so that
    two models built alike share one compiled program; None where they cannot be compared
    (then nothing is reused)."""
    functions = model._replace(init=None)
    try:
        hash(functions)
    except TypeError:
        return None
    return functions


def per_model(compile_: Callable[..., Callable]) -> Callable[..., Callable]:
    """``compile_(model, *settings) -> program`` (a jitted function), made once per model
    and settings however often, and with however many fresh but identical models, it is
    asked for, as optax's and blackjax's factories close over theirs: the last
    ``COMPILED_MOST`` are kept, keyed on ``model_functions(model)`` and the (hashable)
    settings; ``compile_`` receives the model with ``init=None``."""
    cached = functools.lru_cache(maxsize=COMPILED_MOST)(compile_)

    @functools.wraps(compile_)
    def compiled(model, *settings):
        functions = model_functions(model)
        return (compile_(model._replace(init=None), *settings) if functions is None
                else cached(functions, *settings))

    compiled.cache_info, compiled.cache_clear = cached.cache_info, cached.cache_clear
    return compiled
