"""Eager validation of static arguments and guarded access to distrax.

Everything here runs at trace time on Python ints and static shapes, so a bad argument
raises a ``ValueError`` naming it before anything is compiled, and never becomes a NaN.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp


def positive_int(value: Any, name: str) -> int:
    """Returns ``value`` as a Python int >= 1, else raises ``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive Python int, got {value!r}.")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a positive Python int (it fixes an array shape), "
            f"got {value!r} of type {type(value).__name__}."
        ) from None
    if as_int < 1:
        raise ValueError(f"{name} must be >= 1, got {as_int}.")
    return as_int


def one_of(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """Returns ``value`` if it is one of ``allowed``, else raises ``ValueError``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    return value


def shape_is(array: Any, name: str, expected: tuple[int, ...], what: str) -> None:
    """Raises ``ValueError`` unless ``array`` has exactly the static ``expected`` shape."""
    shape = jnp.shape(array)
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {what}={tuple(expected)}, got {tuple(shape)}.")


def scalar_distribution(q: Any, name: str = "q") -> None:
    """A proposal must describe ONE latent value: batch_shape () (vmap over data points)."""
    batch_shape = getattr(q, "batch_shape", None)
    if batch_shape is None or not hasattr(q, "log_prob"):
        raise ValueError(f"{name} must be a distrax.Distribution, got {type(q).__name__}.")
    if tuple(batch_shape) != ():
        raise ValueError(
            f"{name} must have batch_shape () (one latent value per event; vmap over data "
            f"points instead), got batch_shape {tuple(batch_shape)}."
        )


# distrax broadcasts a sample axis against parameters internally, which trips
# jax_numpy_rank_promotion="raise"; we allow it only inside these two calls so that
# jlvm's own code stays checked under "raise".
def sample_and_log_prob(q: Any, key: jax.Array, num_samples: int):
    """Draws ``num_samples`` values from ``q``: returns (z [K, *event], log q(z) [K])."""
    with jax.numpy_rank_promotion("allow"):
        return q.sample_and_log_prob(seed=key, sample_shape=(num_samples,))


def log_prob(q: Any, z: jax.Array) -> jax.Array:
    """log q(z) for a batch of values z [K, *event] -> [K]."""
    with jax.numpy_rank_promotion("allow"):
        return q.log_prob(z)


def sample(q: Any, key: jax.Array, num_samples: int) -> jax.Array:
    with jax.numpy_rank_promotion("allow"):
        return q.sample(seed=key, sample_shape=(num_samples,))
