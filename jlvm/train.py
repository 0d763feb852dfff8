"""Pure train steps and compiled epochs, shared by every learning algorithm.

Every algorithm (``inference.amortized``, ``inference.svi``, ``inference.semi_amortized``,
``inference.em``) returns a ``Learner(init, step)``:

    state = learner.init(key, first_batch)           # TrainState
    state, metrics = learner.step(state, batch)      # pure; jit it, scan it

An epoch shuffles the data with a key split from the state and runs ``lax.scan`` over its
batches, in chunks so that a progress bar can advance without a Python call per step.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks

Batch = Any
Metrics = dict


class TrainState(NamedTuple):
    """Everything that changes during training.

    params: the model (and, for amortized inference, the encoder; for SVI, the table of
      per-datapoint variational parameters).
    opt_state: the optax optimizer state (``()`` where there is none, as in EM).
    step: number of steps taken, an int32 scalar.
    key: the PRNG key the next step splits.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class Learner(NamedTuple):
    """A learning algorithm as two pure functions.

    init: (key, batch) -> TrainState.
    step: (TrainState, batch) -> (TrainState, metrics dict of scalars).
    """

    init: Callable[[jax.Array, Batch], TrainState]
    step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def keep_if_finite(loss: jax.Array, new: TrainState, old: TrainState) -> TrainState:
    """The new state where the loss is finite, else the old one (with the step counted).

    A NaN or infinite loss must never reach the parameters; the step's metrics report it
    (``finite``) and the training loop stops with a message.
    """
    finite = jnp.isfinite(loss)
    chosen = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    return chosen._replace(step=new.step)


def num_batches(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder of a shuffled epoch is dropped)."""
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > num_examples:
        raise ValueError(f"batch_size must be <= the number of training examples "
                         f"({num_examples}), got {batch_size}.")
    return num_examples // batch_size


def shuffled_batches(key: jax.Array, data: Any, batch_size: int) -> Any:
    """A random permutation of the rows of ``data`` (any pytree, leading axis N) cut into
    [num_batches, batch_size, ...] batches; the last N mod batch_size rows are dropped."""
    count = jax.tree_util.tree_leaves(data)[0].shape[0]
    batches = num_batches(count, batch_size)
    order = jax.random.permutation(key, count)[: batches * batch_size]
    return jax.tree_util.tree_map(
        lambda leaf: leaf[order].reshape((batches, batch_size) + leaf.shape[1:]), data)


def make_epoch(learner: Learner, batch_size: int, *, chunk_steps: int = 50,
               progress: Callable[[int], None] | None = None):
    """``epoch(state, data) -> (state, metrics)`` running one shuffled pass over ``data``.

    The steps run as ``lax.scan`` over on-device batches, ``chunk_steps`` steps per
    compiled call; ``progress(n)`` (e.g. a tqdm bar's ``update``) is told after each chunk.
    Returned metrics are stacked per step: each a [num_steps] array.
    """
    chunk_steps = _checks.positive_int(chunk_steps, "chunk_steps")

    @jax.jit
    def shuffle(state, data):
        key, shuffle_key = jax.random.split(state.key)
        return state._replace(key=key), shuffled_batches(shuffle_key, data, batch_size)

    @jax.jit
    def run_chunk(state, batches):
        return jax.lax.scan(learner.step, state, batches)

    def epoch(state: TrainState, data: Any) -> tuple[TrainState, Metrics]:
        state, batches = shuffle(state, data)
        total = jax.tree_util.tree_leaves(batches)[0].shape[0]
        pieces = []
        for start in range(0, total, chunk_steps):
            chunk = jax.tree_util.tree_map(lambda b: b[start:start + chunk_steps], batches)
            state, metrics = run_chunk(state, chunk)
            pieces.append(metrics)
            if progress is not None:
                jax.block_until_ready(metrics)
                progress(min(chunk_steps, total - start))
        merged = jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts), *pieces)
        return state, merged

    return epoch


def summarize(metrics: Metrics) -> dict[str, float]:
    """Per-epoch means of stacked per-step metrics, as Python floats."""
    return {name: float(np.mean(np.asarray(values))) for name, values in metrics.items()}


