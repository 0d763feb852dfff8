"""The mixture of Bernoullis' parameters, their checks and its table of log-likelihoods,
shared by ``jlvm.models.bernoulli_mixture`` and its EM (``jlvm.models._bernoulli_em``): both
import this module, and bernoulli_mixture imports (and re-exports) the EM, never the other
way round.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks

# Exact float32 on every device (no TF32 matmuls on GPUs): the tests compare with oracles.
HIGHEST = jax.lax.Precision.HIGHEST
# The M-step's clip of each pixel probability; bernoulli_mixture.MIN_PROB (its public name,
# with its reference entry) says why.
MIN_PROB = 1e-6


class Params(NamedTuple):
    """Mixture-of-Bernoullis parameters.

    Attributes:
      logits: ``[K]``, the mixing weights' unnormalized logits (pi = softmax(logits)),
        finite or -inf (a weight of 0).
      logits_x: ``[K, D]``, each component's finite pixel logits:
        p(x_d = 1 | z = k) = sigmoid(logits_x[k, d]).
    """

    logits: jax.Array
    logits_x: jax.Array


def sizes(params: Any) -> tuple[int, int]:
    """(K, D) of a ``Params`` whose arrays fit together; where they are concrete, also that
    they define a mixture (static checks at trace time, nothing under jit)."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be a bernoulli_mixture.Params(logits, logits_x), got "
                        f"{type(params).__name__}.")
    _checks.numeric_leaves(params, "params")
    if jnp.ndim(params.logits_x) != 2 or 0 in jnp.shape(params.logits_x):
        raise ValueError(f"params.logits_x must have shape [K, D] with K, D >= 1, got "
                         f"{jnp.shape(params.logits_x)}.")
    num_components, dim = jnp.shape(params.logits_x)
    if jnp.shape(params.logits) != (num_components,):
        raise ValueError(f"params.logits must have shape [K]=({num_components},), got "
                         f"{jnp.shape(params.logits)}.")
    if all(_checks.is_concrete(leaf) for leaf in params):
        logits, logits_x = (np.asarray(leaf) for leaf in params)
        if np.any(np.isnan(logits)) or np.any(np.isposinf(logits)) or \
                np.all(np.isneginf(logits)):
            raise ValueError("params.logits must be finite or -inf (a weight of 0), not NaN "
                             "or +inf, and not all -inf.")
        if not np.all(np.isfinite(logits_x)):
            raise ValueError("params.logits_x must be finite (a pixel probability of exactly "
                             "0 or 1 would make a single pixel's log-probability -inf).")
    return num_components, dim


def _binary(values: Any, name: str) -> None:
    """Concrete values must be 0 or 1 (the likelihood is a probability of binary pixels)."""
    if _checks.is_concrete(values):
        values = np.asarray(values)
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(f"{name} must hold 0 or 1 (binary pixels), got values such as "
                             f"{values[(values != 0) & (values != 1)].ravel()[:3].tolist()}.")


def _log_likelihoods(params: Params, X: jax.Array, M: jax.Array) -> jax.Array:
    """log p(x_n,obs | z = k) for a stack: X, M [N, D] (missing entries 0 in both) -> [N, K].

    sum_d m_d [x_d l_kd - softplus(l_kd)]: two matrix products, so K = 100 components of
    D = 784 pixels cost what one [N, D] x [D, K] product costs.
    """
    logits_x = params.logits_x
    return (jnp.matmul(X * M, logits_x.T, precision=HIGHEST)
            - jnp.matmul(M, jax.nn.softplus(logits_x).T, precision=HIGHEST))
