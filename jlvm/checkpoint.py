"""Checkpoints of a TrainState with orbax: atomic, resumable, damage-tolerant.

orbax writes each checkpoint into a temporary directory and renames it into place once
complete (its commit marker), so a process killed mid-save leaves the previous checkpoint
as the latest loadable one; unfinished temporaries are ignored and cleaned up. A checkpoint
damaged afterwards (a truncated file, lost metadata, an emptied step folder) is found when
it is read: ``restore_intact`` then falls back to the newest checkpoint that reads.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import operator
import os
import pathlib
import re
import sys
import warnings
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or none could be read; the message is one line."""


@contextlib.contextmanager
def _quiet():
    """orbax reports a failure through absl logging as well as by raising, with tracebacks
    of hundreds of lines; the exception alone carries what the caller needs."""
    _drop_reports_of_abandoned_io()
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    except Exception:
        gc.collect()  # what the failure abandoned goes now, unreported
        raise
    finally:
        logger.setLevel(level)


def _is_closed_loop_report(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and "Event loop is closed" in str(error)


def _drop_reports_of_abandoned_io() -> None:
    """When orbax fails mid-read or mid-write, tensorstore's callbacks into the asyncio tasks
    it abandons report the same failure again, from other threads and at exit too ("Event
    loop is closed", "Task exception was never retrieved", "coroutine ... was never
    awaited"): the caller has the exception already. From the first checkpoint operation on,
    those reports, and only they, are dropped."""
    if getattr(sys.excepthook, "_jlvm", False):
        return
    logging.getLogger("asyncio").addFilter(
        lambda record: "exception was never retrieved" not in record.getMessage())
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                            category=RuntimeWarning)
    previous_excepthook, previous_unraisable = sys.excepthook, sys.unraisablehook

    def excepthook(kind, error, traceback):
        if not _is_closed_loop_report(error):
            previous_excepthook(kind, error, traceback)

    def unraisablehook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)  # an abandoned orbax coroutine
        if not (_is_closed_loop_report(unraisable.exc_value)
                or (code is not None and "orbax" in code.co_filename)):
            previous_unraisable(unraisable)

    excepthook._jlvm = True
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


def _manager(directory: str | os.PathLike, *, create: bool = False,
             local: bool = False) -> ocp.CheckpointManager:
    extra = {}
    if local:
        # reading the list of steps is this process's business: orbax would otherwise
        # wait at a barrier for every process of a jax.distributed run, and hang where
        # one process asks alone (e.g. the writer deciding what to keep after an error)
        import jax

        this = jax.process_index()
        extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
            primary_host=this, active_processes={this})
    # the two newest are kept: one to fall back to if the newest is damaged
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False,
                                           create=create, **extra)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def _reason(error: BaseException) -> str:
    """The gist of an orbax/tensorstore error on one line: the operating system's reason
    where tensorstore names one (``os_error_code='28'`` is "No space left on device"),
    else the end of the message, where tensorstore puts the cause."""
    text = re.sub(r"\s+", " ", f"{type(error).__name__}: {error}").strip()
    code = re.search(r"os_error_code='(\d+)'", text)
    if code:
        return os.strerror(int(code.group(1)))
    text = re.sub(r" \[tensorstore_spec[^\]]*\]", "", text)
    return text if len(text) <= 200 else "..." + text[-197:]


def save(directory: str | os.PathLike, step: int, state: Any) -> None:
    """Saves ``state`` as checkpoint ``step`` under ``directory``.

    Steps only grow: a ``step`` at or below the newest one is refused (orbax would skip it
    silently). The two newest checkpoints are kept, older ones deleted.

    Args:
      directory: the checkpoint folder (created if missing).
      step: an int >= 0 (NumPy's and JAX's integers too, not a bool), above every saved step.
      state: any pytree of arrays, e.g. a ``TrainState``.

    Raises:
      ValueError: ``step`` is not an int >= 0.
      CheckpointError: ``step`` is not above the newest one, or the checkpoint cannot be
        written (one line: the path and the reason, e.g. a full disk); the earlier
        checkpoints are then left as they were.
    """
    given = step
    try:  # any integer (NumPy's and JAX's too), not a bool
        step = None if isinstance(step, bool) else operator.index(step)
    except TypeError:
        step = None
    if step is None or step < 0:
        raise ValueError(f"step must be an int >= 0, got {given!r}.")
    existing = steps(directory)
    if existing and step <= existing[-1]:
        raise CheckpointError(f"checkpoint {step} cannot be written in {directory}: its newest "
                              f"checkpoint is {existing[-1]} (steps only grow).")
    try:
        with _quiet(), _manager(directory, create=True) as manager:
            manager.save(step, args=ocp.args.StandardSave(state))
            manager.wait_until_finished()
    except Exception as error:  # orbax and tensorstore raise many types for one failure
        raise CheckpointError(f"could not write checkpoint {step} in {directory} "
                              f"({_reason(error)}); the earlier checkpoints are intact."
                              ) from error


def steps(directory: str | os.PathLike) -> list[int]:
    """The steps of every complete (committed) checkpoint, oldest first.

    Args:
      directory: the checkpoint folder; one that does not exist holds none.

    Returns:
      A sorted ``list[int]``, empty if there is none.
    """
    if not pathlib.Path(directory).is_dir():
        return []
    with _quiet(), _manager(directory, local=True) as manager:
        return sorted(manager.all_steps())


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest complete checkpoint's step.

    Args:
      directory: the checkpoint folder.

    Returns:
      An int, or None if there is no complete checkpoint.
    """
    found = steps(directory)
    return found[-1] if found else None


def restore(directory: str | os.PathLike, like: Any, step: int | None = None) -> Any:
    """Restores checkpoint ``step`` into the structure of ``like``.

    Args:
      directory: the checkpoint folder.
      like: a state of the same structure, shapes and dtypes (e.g. a freshly initialized
        one); only its shapes and dtypes are read.
      step: the checkpoint to read; None for the latest.

    Returns:
      The saved state, a pytree of ``like``'s structure.

    Raises:
      FileNotFoundError: there is no complete checkpoint.
      CheckpointError: there is no checkpoint ``step``.
      CheckpointMismatch: its arrays' names, shapes or dtypes differ from ``like``'s.
      Exception: whatever orbax raises if it is damaged (``restore_intact`` falls back
        instead).
    """
    if not pathlib.Path(directory).is_dir():
        raise FileNotFoundError(f"no complete checkpoint in {directory}.")
    with _quiet(), _manager(directory) as manager:
        found = sorted(manager.all_steps())
        step = (found[-1] if found else None) if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {directory}.")
        if step not in found:
            raise CheckpointError(f"no checkpoint {step} in {directory} (it has "
                                  f"{', '.join(map(str, found)) or 'none'}).")
        _check_fits(directory, step, like)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint whose arrays do not fit the expected state (another model's
    checkpoint, or an edited config.json): not damage, so there is nothing to fall back to."""


def _path_name(path: tuple) -> str:
    """A leaf's path as plain names ("params.decoder.net.layers.0.kernel.value"), the same
    for a live pytree and for orbax's metadata of its saved copy."""
    names = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                names.append(str(getattr(entry, attribute)))
                break
    return ".".join(names)


def _check_fits(directory: str | os.PathLike, step: int, like: Any) -> None:
    """``CheckpointMismatch`` naming the first array of checkpoint ``step`` whose name,
    shape or dtype differs from ``like``'s (orbax would convert a dtype silently: a float
    into an integer loses its fraction); silent when the metadata cannot be read (then
    restoring fails, and says why)."""
    try:
        with _quiet(), ocp.StandardCheckpointer() as reader:
            stored_tree = reader.metadata(
                pathlib.Path(directory, str(step), "default").absolute()).item_metadata
    except Exception:  # unreadable metadata is damage, which restore reports
        return
    stored = {_path_name(p): tuple(leaf.shape)
              for p, leaf in jax.tree_util.tree_leaves_with_path(stored_tree)
              if hasattr(leaf, "shape")}
    expected = {_path_name(p): tuple(getattr(leaf, "shape", ()))
                for p, leaf in jax.tree_util.tree_leaves_with_path(like)}
    # arrays missing from the metadata may be damage (restoring then says so); an array
    # of another shape, or one this state does not have, is a different model
    differing = [name for name in stored
                 if name not in expected or stored[name] != expected[name]]
    if differing:
        name = sorted(differing, key=lambda n: (not n.startswith("params"), n))[0]
        want = expected.get(name, "no such array")
        raise CheckpointMismatch(
            f"checkpoint {step} in {directory} does not fit this run's settings: {name} "
            f"is {stored[name]} there and {want} here (config.json edited, or another "
            "model's checkpoint?).")
    stored_types = {_path_name(p): getattr(leaf, "dtype", None)
                    for p, leaf in jax.tree_util.tree_leaves_with_path(stored_tree)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(like):
        name, dtype = _path_name(path), getattr(leaf, "dtype", None)
        there = stored_types.get(name)
        if dtype is not None and there is not None and str(there) != str(dtype):
            raise CheckpointMismatch(
                f"checkpoint {step} in {directory} does not fit this state: {name} is "
                f"{there} there and {dtype} here (restoring would convert it silently; "
                "another model's checkpoint?).")


class Restored(NamedTuple):
    """What ``restore_intact`` read.

    Attributes:
      step: the step of the checkpoint restored, an int.
      state: its contents, a pytree of ``like``'s structure.
      damaged: ``(step, reason)`` for each newer checkpoint that could not be read, newest
        first (empty where the newest was read); reason is one line.
    """

    step: int
    state: Any
    damaged: list[tuple[int, str]]


def restore_intact(directory: str | os.PathLike, like: Any) -> Restored:
    """The newest checkpoint under ``directory`` that reads, and the damaged ones above it.

    Args:
      directory, like: as in ``restore``.

    Returns:
      ``Restored(step, state, damaged)``, the checkpoint read, its contents, and
      ``(step, reason)`` for each newer one that could not be read, newest first.

    Raises:
      CheckpointError: there is no checkpoint at all, or none that reads (naming each
        checkpoint and why it failed).
      CheckpointMismatch: a checkpoint does not fit ``like`` (not damage: no fall back).
    """
    found = steps(directory)
    if not found:
        raise CheckpointError(f"no complete checkpoint in {directory}.")
    damaged = []
    for step in reversed(found):
        _check_fits(directory, step, like)
        try:
            return Restored(step, restore(directory, like, step), damaged)
        except Exception as error:  # any failure to read means: try the one before
            damaged.append((step, _reason(error)))
    listed = "; ".join(f"checkpoint {step}: {reason}" for step, reason in damaged)
    raise CheckpointError(f"no intact checkpoint in {directory} ({listed}).")
