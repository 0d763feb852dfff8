"""Pure train steps and compiled epochs, shared by every learning algorithm.

Every algorithm (``inference.amortized``, ``inference.svi``, ``inference.semi_amortized``,
``inference.em``) returns a ``Learner(init, step)``:

    state = learner.init(key, first_batch)           # TrainState
    state, metrics = learner.step(state, batch)      # pure; jit it, scan it

An epoch draws a permutation with a key split from the state and runs ``lax.scan`` over
batches gathered from it on device, in chunks so that a progress bar can advance without a
Python call per step (on CPU, a step that convolves is called once per batch instead: XLA
runs convolutions slowly inside a loop there). ``make_epoch`` also trains many seeds at
once (``jax.vmap`` over a stacked state) and splits batches over devices (a
``jax.sharding.Mesh`` from ``data_mesh``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jlvm import _checks

Batch = Any
Metrics = dict
DATA_AXIS = "data"  # the mesh axis that batches are split over


class TrainState(NamedTuple):
    """Everything that changes during training.

    Attributes:
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

    Attributes:
      init: ``init(key, batch) -> TrainState``, the state before the first step (``batch``,
        a first batch, is what the model is checked against).
      step: ``step(state, batch) -> (state, metrics)``, one step; ``metrics`` a dict of
        scalars with a bool ``finite`` (False: the old parameters were kept).
    """

    init: Callable[[jax.Array, Batch], TrainState]
    step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def all_finite(*trees: Any) -> jax.Array:
    """Whether every floating-point entry of every leaf of ``trees`` is finite.

    Args:
      trees: any number of pytrees of arrays (integer leaves count as finite).

    Returns:
      A bool scalar array (True when there is no floating-point leaf).
    """
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(trees)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def keep_if_finite(loss: jax.Array, new: TrainState, old: TrainState,
                   grads: Any = None) -> tuple[TrainState, jax.Array]:
    """The new state where the loss (and every entry of ``grads``) is finite, else the old.

    A NaN or infinite loss or gradient must never reach the parameters: a gradient can be
    NaN while the loss is finite (a user's log_joint that multiplies a NaN at a missing
    entry by 0, an overflow on one draw). The step's metrics report ``finite`` and the
    training loop stops with a message.

    Args:
      loss: the step's scalar loss.
      new, old: the ``TrainState`` after and before the step.
      grads: the step's gradients (any pytree), or None to check the loss alone.

    Returns:
      ``(state, finite)``, ``new``, or ``old`` with ``new.step`` (the step is counted);
      ``finite`` a bool scalar saying which.
    """
    finite = jnp.isfinite(loss) & all_finite(grads)
    chosen = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
    return chosen._replace(step=new.step), finite


def num_batches(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder of a shuffled epoch is dropped).

    Args:
      num_examples: N, the training examples.
      batch_size: examples per batch, an int in [1, N] (else ValueError).

    Returns:
      ``N // batch_size``, an int.
    """
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if batch_size > num_examples:
        raise ValueError(f"batch_size must be <= the number of training examples "
                         f"({num_examples}), got {batch_size}.")
    return num_examples // batch_size


def _batch_indices(key: jax.Array, count: int, batch_size: int) -> jax.Array:
    """A random permutation of range(count), cut into [num_batches, batch_size] rows."""
    batches = num_batches(count, batch_size)
    return jax.random.permutation(key, count)[: batches * batch_size].reshape(batches,
                                                                             batch_size)


def _rows(data: Any) -> int:
    """N, the number of rows every leaf of ``data`` holds."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves or not all(hasattr(leaf, "shape") and len(leaf.shape) >= 1
                             for leaf in leaves):
        raise ValueError(f"data must be an array, or a pytree of arrays, with a leading axis "
                         f"of rows, got {type(data).__name__}.")
    counts = {leaf.shape[0] for leaf in leaves}
    if len(counts) != 1:
        raise ValueError(f"every array in data must have the same number of rows, got "
                         f"{sorted(counts)}.")
    return counts.pop()


def shuffled_batches(key: jax.Array, data: Any, batch_size: int) -> Any:
    """A random permutation of the rows of ``data``, cut into batches.

    These are the batches ``make_epoch`` trains on for the same key.

    Args:
      key: PRNG key of the permutation.
      data: an array or pytree of arrays, each with the same leading axis N.
      batch_size: rows per batch, in [1, N].

    Returns:
      ``data``'s structure with leaves ``[N // batch_size, batch_size, ...]``; the last
      N mod batch_size rows of the permutation are dropped.
    """
    _checks.prng_key(key)
    count = _rows(data)
    order = _batch_indices(key, count, batch_size)
    return jax.tree_util.tree_map(lambda leaf: leaf[order], data)


def data_mesh(num_devices: int | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis ``jax.sharding.Mesh`` named "data" for data-parallel training.

    Args:
      num_devices: how many of ``jax.devices()`` (every process's devices, after
        ``jax.distributed.initialize()``) to use; None for all of them.
      devices: the devices themselves, instead of ``num_devices``.

    Returns:
      A ``Mesh`` over those devices with the single axis ``"data"``.
    """
    if devices is not None:
        if num_devices is not None:
            raise ValueError("give num_devices or devices, not both.")
        devices = list(devices)
        if not devices or not all(isinstance(d, jax.Device) for d in devices):
            raise ValueError(f"devices must be one or more JAX devices (e.g. "
                             f"jax.devices()[:2]), got {devices!r}.")
    else:
        available = jax.devices()
        if num_devices is None:
            num_devices = len(available)
        num_devices = _checks.positive_int(num_devices, "num_devices")
        if num_devices > len(available):
            raise ValueError(f"num_devices must be <= the {len(available)} devices JAX sees "
                             f"({available[0].platform}), got {num_devices}.")
        devices = available[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_mesh(mesh: Mesh | None, batch_size: int) -> None:
    """ValueError unless ``mesh`` is None or has a "data" axis that divides ``batch_size``.

    Args:
      mesh: a ``jax.sharding.Mesh`` (see ``data_mesh``), or None.
      batch_size: rows per batch.
    """
    if mesh is None:
        return
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {DATA_AXIS!r} (see data_mesh), got "
                         f"axes {mesh.axis_names}.")
    shards = mesh.shape[DATA_AXIS]
    if batch_size % shards:
        raise ValueError(f"batch_size must be a multiple of the mesh's {shards} devices, got "
                         f"{batch_size}.")


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` placed whole on every device of ``mesh``.

    Args:
      tree: any pytree of arrays.
      mesh: a ``jax.sharding.Mesh`` (e.g. from ``data_mesh``).

    Returns:
      ``tree`` with each leaf a ``jax.Array`` replicated on the mesh (``PartitionSpec()``).
    """
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def make_epoch(learner: Learner, batch_size: int, *, chunk_steps: int = 50,
               progress: Callable[[int], None] | None = None, mesh: Mesh | None = None,
               num_seeds: int | None = None):
    """``epoch(state, data) -> (state, metrics)`` running one shuffled pass over ``data``.

    ``data`` is any pytree of arrays with N rows; each step's batch is gathered on device
    from a permutation drawn with a key split from ``state.key``. The steps run as
    ``lax.scan``, ``chunk_steps`` steps per compiled call (on CPU, a step that convolves is
    one compiled call per batch: XLA convolves slowly inside loops there); ``progress(n)``
    (e.g. a tqdm bar's ``update``) is told after each chunk.

    Args:
      learner: a ``Learner(init, step)``.
      batch_size: rows per step, in [1, N]; the last N mod batch_size rows are dropped.
      chunk_steps: steps per compiled call (and per ``progress`` call).
      progress: None, or a function told the number of steps done after each chunk.
      mesh: data parallelism: with a ``data_mesh``, state and data are replicated on its
        devices (``replicate`` the data once beforehand, or each epoch copies it) and every
        batch is split over them along the "data" axis (``batch_size`` must be a multiple
        of the device count). XLA inserts the gradient all-reduce; the
        results equal a one-device run up to the order of floating-point sums.
      num_seeds: S independent runs at once: every leaf of ``state`` has a leading axis S
        (``jax.vmap(learner.init, in_axes=(0, None))(keys, batch)``), each run shuffles
        with its own key, and metrics are [num_steps, S]. Run s equals the single run
        started from the same key.

    Returns:
      ``epoch(state, data) -> (state, metrics)``, a ``TrainState`` and the steps' metrics
      dict, each value stacked per step: ``[num_steps]`` (``[num_steps, S]``).
    """
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function of the number of steps done (e.g. a "
                        f"tqdm bar's update), got {type(progress).__name__}.")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see data_mesh) or None, got "
                        f"{type(mesh).__name__}.")
    chunk_steps = _checks.positive_int(chunk_steps, "chunk_steps")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if num_seeds is not None:
        num_seeds = _checks.positive_int(num_seeds, "num_seeds")
    check_mesh(mesh, batch_size)
    if not (callable(getattr(learner, "init", None)) and callable(getattr(learner, "step", None))):
        raise TypeError(f"learner must be a jlvm.train.Learner(init, step), got "
                        f"{type(learner).__name__}.")
    step = learner.step if num_seeds is None else jax.vmap(learner.step)
    batch_spec = PartitionSpec(DATA_AXIS) if num_seeds is None else PartitionSpec(None,
                                                                                 DATA_AXIS)

    def shuffle_one(state, count):
        key, shuffle_key = jax.random.split(state.key)
        return state._replace(key=key), _batch_indices(shuffle_key, count, batch_size)

    @functools.partial(jax.jit, static_argnums=1)
    def shuffle(state, count):
        if num_seeds is None:
            return shuffle_one(state, count)
        state, order = jax.vmap(shuffle_one, in_axes=(0, None))(state, count)
        return state, jnp.swapaxes(order, 0, 1)  # [steps, S, batch]: scan over steps

    def body(state, data, rows):
        batch = jax.tree_util.tree_map(lambda leaf: leaf[rows], data)
        if mesh is not None:
            batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, batch_spec))
        return step(state, batch)

    @jax.jit
    def run_chunk(state, data, order):
        return jax.lax.scan(lambda state, rows: body(state, data, rows), state, order)

    one_step = jax.jit(body)

    def run_steps(state, data, order):
        # one compiled step per batch, from Python: see _slow_in_a_loop
        outputs = []
        for rows in order:
            state, metrics = one_step(state, data, rows)
            outputs.append(metrics)
        return state, jax.tree_util.tree_map(lambda *steps: jnp.stack(steps), *outputs)

    in_python: list[bool] = []  # decided at the first epoch, from the step's program

    def epoch(state: TrainState, data: Any) -> tuple[TrainState, Metrics]:
        count = _rows(data)
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState (from learner.init), got "
                            f"{type(state).__name__}.")
        if num_seeds is not None and state.step.shape != (num_seeds,):
            raise ValueError(f"state must hold num_seeds={num_seeds} runs (a leading axis on "
                             f"every leaf), got state.step of shape {state.step.shape}.")
        if num_seeds is None and jnp.shape(state.step) != ():
            raise ValueError(f"state holds {jnp.shape(state.step)[0]} runs (a leading axis on "
                             "every leaf): pass num_seeds to make_epoch.")
        if mesh is not None:
            state, data = replicate((state, data), mesh)
        state, order = shuffle(state, count)
        total = order.shape[0]
        if not in_python:
            in_python.append(_slow_in_a_loop(body, state, data, order[0]))
        run = run_steps if in_python[0] else run_chunk
        pieces = []
        for start in range(0, total, chunk_steps):
            state, metrics = run(state, data, order[start:start + chunk_steps])
            pieces.append(metrics)
            if progress is not None:
                jax.block_until_ready(metrics)
                progress(min(chunk_steps, total - start))
        merged = jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts), *pieces)
        return state, merged

    return epoch


def equations(jaxpr):
    """Every equation of ``jaxpr`` and of the programs nested in it (scan, cond, pjit...).

    Args:
      jaxpr: a ``Jaxpr`` (e.g. ``jax.make_jaxpr(f)(x).jaxpr``).

    Yields:
      Each ``JaxprEqn``, depth first, an equation before those nested in it.
    """
    for equation in jaxpr.eqns:
        yield equation
        for value in equation.params.values():
            for inner in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def _primitives(jaxpr) -> set[str]:
    """The names of every primitive in ``jaxpr`` and in the programs nested in it."""
    return {equation.primitive.name for equation in equations(jaxpr)}


def _slow_in_a_loop(body: Callable, *arguments: Any) -> bool:
    """Whether the step runs faster called once per batch than inside ``lax.scan``: on CPU,
    when it convolves. XLA's CPU backend computes convolutions inside a loop's body without
    its fast kernels (jax-ml/jax#12868): a conv VAE's step written with ``lax.conv`` took
    2.9 s scanned and 0.22 s jitted alone, against which a Python call per step costs
    nothing. (jlvm's own conv nets are matrix products, ``jlvm.models.networks._conv``, and
    stay scanned; this is for a user's model that convolves.)"""
    if jax.default_backend() != "cpu":
        return False
    return "conv_general_dilated" in _primitives(jax.make_jaxpr(body)(*arguments).jaxpr)


def to_host(tree: Any) -> Any:
    """Every leaf as a NumPy array in this process's memory.

    Also for arrays that span several processes (after ``jax.distributed.initialize()``),
    which NumPy cannot read directly: those are gathered from every process first.

    Args:
      tree: any pytree of arrays.

    Returns:
      ``tree`` with every leaf a ``numpy.ndarray``.
    """
    from jax.experimental import multihost_utils

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if leaf.sharding.is_fully_replicated:  # every process holds all of it
                return np.asarray(leaf.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree_util.tree_map(one, tree)


def summarize(metrics: Metrics) -> dict[str, float]:
    """Per-epoch means of stacked per-step metrics, as Python floats.

    Args:
      metrics: name -> per-step values (e.g. ``[num_steps]``), none empty (else ValueError).

    Returns:
      ``dict[str, float]``, name -> the mean over every entry.
    """
    empty = [name for name, values in metrics.items() if np.size(values) == 0]
    if empty:
        raise ValueError(f"metrics {empty} hold no steps: nothing to average.")
    return {name: float(np.mean(np.asarray(values))) for name, values in metrics.items()}


