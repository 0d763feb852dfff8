"""The arguments every entry point of ``jlvm.runs`` shares, handled the same way by each:
counts and seeds (checked, a ``RunError`` naming the option), ``warn`` (printed to stderr by
default) and ``distributed`` (``start_distributed``, re-exported by ``jlvm.runs``)."""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable
from typing import Any

from jlvm.runs._config import SEED_LIMIT
from jlvm.runs._errors import RunError

Warn = Callable[[str], None]


def _stderr_warning(message: str) -> None:
    print(f"jlvm: warning: {message}", file=sys.stderr)


def start_distributed(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None) -> bool:
    """Starts JAX's multi-process runtime; call it before anything else touches devices.

    Args:
      coordinator, num_processes, process_id: ``jax.distributed.initialize``'s
        ``coordinator_address``, ``num_processes``, ``process_id``; None: found by JAX
        itself (on SLURM, Open MPI, Kubernetes or Cloud TPU).

    Returns:
      Whether this process writes the files (process 0). A failed start is a ``RunError``.
    """
    import jax

    given = {"coordinator_address": coordinator, "num_processes": num_processes,
             "process_id": process_id}
    try:
        jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
    except (ValueError, RuntimeError, TypeError) as error:
        raise RunError(f"--distributed: jax.distributed.initialize() failed: "
                       f"{' '.join(str(error).split())}") from None
    return jax.process_index() == 0


def _positive(name: str, value: Any, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise RunError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}.")
    if value > maximum:
        raise RunError(f"--{name.replace('_', '-')} must be at most {maximum}, got {value}.")
    return int(value)


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or \
            not 0 <= seed < SEED_LIMIT:
        raise RunError(f"--seed must be an integer in [0, {SEED_LIMIT - 1}], got {seed!r}.")
    return int(seed)
