"""Checkpoints of a TrainState with orbax: atomic, resumable.

orbax writes each checkpoint into a temporary directory and renames it into place once
complete (its commit marker), so a process killed mid-save leaves the previous checkpoint
as the latest loadable one; unfinished temporaries are ignored and cleaned up.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def _manager(directory: str | os.PathLike, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def save(directory: str | os.PathLike, step: int, state: Any) -> None:
    """Saves ``state`` (any pytree of arrays) as checkpoint ``step`` under ``directory``."""
    with _manager(directory) as manager:
        manager.save(step, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest complete checkpoint's step, or None if there is none."""
    if not pathlib.Path(directory).is_dir():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def restore(directory: str | os.PathLike, like: Any, step: int | None = None) -> Any:
    """Restores checkpoint ``step`` (default: the latest) into the structure of ``like``
    (a state of the same shapes, e.g. a freshly initialized one)."""
    with _manager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {directory}.")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
