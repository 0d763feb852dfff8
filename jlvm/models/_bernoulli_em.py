"""Expectation maximization for the mixture of Bernoullis (``jlvm.models.bernoulli_mixture``
re-exports it): exact EM, on the observed entries where there is a mask.

E-step: the exact responsibilities r_nk = p(z_n = k | x_n,obs); M-step: their closed-form
maximizer, the pixel probabilities clipped to [MIN_PROB, 1 - MIN_PROB]; ``init_from_data``
gives a start. Each public function checks its data once at its entry (``_data``); the
private ones after it take checked arrays, so ``fit_em``'s compiled loop checks nothing.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models._bernoulli_params import (
    HIGHEST,
    MIN_PROB,
    Params,
    _binary,
    _log_likelihoods,
    sizes,
)


def _data(params: Params, X: Any, mask: Any) -> tuple[jax.Array, jax.Array]:
    """(X [N, D] with missing entries 0, M [N, D] floats), checked once: X binary at its
    observed entries, mask boolean of X's shape with no row that observes nothing."""
    _, dim = sizes(params)
    X = _checks.float_array(X, "X").astype(params.logits_x.dtype)
    if X.ndim != 2 or X.shape[1] != dim or X.shape[0] < 1:
        raise ValueError(f"X must have shape [N, D] with D={dim} and N >= 1, got {X.shape}.")
    if mask is None:
        _binary(X, "X")
        return X, jnp.ones_like(X)
    if isinstance(mask, (str, bytes)) or not hasattr(mask, "shape"):
        raise TypeError(f"mask must be a boolean array [N, D] (True = observed), got "
                        f"{type(mask).__name__}.")
    if tuple(mask.shape) != X.shape:
        raise ValueError(f"mask must have X's shape {X.shape}, got {tuple(mask.shape)}.")
    if jnp.result_type(mask) != jnp.bool_:
        raise TypeError(f"mask must be boolean (True = observed), got "
                        f"{jnp.result_type(mask)}.")
    if _checks.is_concrete(mask):
        values = np.asarray(mask)
        empty = np.flatnonzero(~values.any(axis=1))
        if empty.size:
            raise ValueError(f"mask row {int(empty[0])} observes nothing ({empty.size} such "
                             "rows): drop those data points, they carry no information.")
        if _checks.is_concrete(X):
            _binary(np.asarray(X)[values], "X at observed entries")
    mask = jnp.asarray(mask)
    return jnp.where(mask, X, 0.0), mask.astype(X.dtype)


def e_step(params: Params, X: jax.Array, mask: Any = None) -> tuple[jax.Array, jax.Array]:
    """The exact posterior of every point.

    Args:
      params: ``Params``.
      X: ``[N, D]`` in {0, 1} (anything, NaN included, at missing entries).
      mask: ``[N, D]`` bool (True = observed; every row observes something), or None.

    Returns:
      A tuple ``(log_resp, mean_log_likelihood)``, log responsibilities ``[N, K]`` and the
      scalar mean log p(x_obs).
    """
    X, M = _data(params, X, mask)
    return _e_step(params, X, M)


def _e_step(params, X, M):
    table = jax.nn.log_softmax(params.logits)[None] + _log_likelihoods(params, X, M)
    log_norm = jax.nn.logsumexp(table, axis=1, keepdims=True)
    return table - log_norm, jnp.mean(log_norm)


def m_step(X: jax.Array, log_resp: jax.Array, mask: Any = None) -> Params:
    """The ELBO's maximizer for fixed responsibilities r (closed form).

    ``pi_k = sum_n r_nk / N``, ``p_kd = sum_n r_nk m_nd x_nd / sum_n r_nk m_nd``, each p_kd
    then clipped to [MIN_PROB, 1 - MIN_PROB] (``MIN_PROB`` = 1e-6); a pixel no point of
    component k observes gets p_kd = 1/2.

    Args:
      X, mask: as in ``e_step``.
      log_resp: ``[N, K]`` log responsibilities r (``e_step``'s).

    Returns:
      ``Params``.
    """
    log_resp = _checks.float_array(log_resp, "log_resp")
    X = _checks.float_array(X, "X")
    if X.ndim != 2 or log_resp.ndim != 2 or log_resp.shape[0] != X.shape[0]:
        raise ValueError(f"X must have shape [N, D] and log_resp [N, K] with the same N, got "
                         f"{X.shape} and {log_resp.shape}.")
    placeholder = Params(jnp.zeros(log_resp.shape[1], X.dtype),
                         jnp.zeros((log_resp.shape[1], X.shape[1]), X.dtype))
    X, M = _data(placeholder, X, mask)
    return _m_step(X, M, log_resp)


def _m_step(X, M, log_resp):
    resp = jnp.exp(log_resp)
    # the 10 eps keeps an emptied component's weight off log 0 (as scikit-learn does)
    counts = jnp.sum(resp, axis=0) + 10 * jnp.finfo(resp.dtype).eps
    ones = jnp.matmul(resp.T, X * M, precision=HIGHEST)  # [K, D]
    seen = jnp.matmul(resp.T, M, precision=HIGHEST)
    prob = jnp.where(seen > 0, ones / jnp.where(seen > 0, seen, 1.0), 0.5)
    prob = jnp.clip(prob, MIN_PROB, 1 - MIN_PROB)
    return Params(logits=jnp.log(counts / X.shape[0]),
                  logits_x=jnp.log(prob) - jnp.log1p(-prob))


def em_iteration(params: Params, X: jax.Array,
                 mask: Any = None) -> tuple[Params, jax.Array]:
    """One EM iteration: ``e_step``, then ``m_step``.

    Args:
      params, X, mask: as in ``e_step``.

    Returns:
      A tuple ``(new_params, mean_log_likelihood)``, the new ``Params`` and the scalar mean
      log p(x_obs) of the OLD ones.
    """
    X, M = _data(params, X, mask)
    return _em_iteration(params, X, M)


def _em_iteration(params, X, M):
    log_resp, mean_log_likelihood = _e_step(params, X, M)
    return _m_step(X, M, log_resp), mean_log_likelihood


@functools.partial(jax.jit, static_argnames="num_iters")
def _fit_em(params, X, M, num_iters):
    return jax.lax.scan(lambda current, _: _em_iteration(current, X, M), params, None,
                        length=num_iters)


def fit_em(params: Params, X: jax.Array, num_iters: int, *,
           mask: Any = None) -> tuple[Params, jax.Array]:
    """Expectation maximization, compiled as one ``lax.scan``.

    E-step: r_nk = p(z_n = k | x_n,obs), which makes the ELBO equal log p(x_obs). M-step:
    ``m_step`` (pixel probabilities clipped to [1e-6, 1 - 1e-6]). With ``mask`` the
    missing pixels are summed out of the likelihood, so each iteration is the exact EM step
    for the observed data: p_kd = sum_n r_nk m_nd x_nd / sum_n r_nk m_nd.

    Args:
      params: the start (e.g. ``init_from_data``).
      X: ``[N, D]`` binary data (with a mask: anything, NaN included, at missing entries).
      num_iters: number of EM iterations (>= 1).
      mask: ``[N, D]`` bool, True = observed; every row must observe something.

    Returns:
      A tuple ``(params, trace)``, params after ``num_iters`` M-steps; trace ``[num_iters]``,
      trace[t] the mean log p(x_n,obs) under the parameters after t M-steps. It never
      decreases (up to float32 rounding and the clipping, which binds only where a
      probability would be within 1e-6 of 0 or 1).
    """
    num_iters = _checks.positive_int(num_iters, "num_iters")
    X, M = _data(params, X, mask)
    return _fit_em(params, X, M, num_iters)


def init_from_data(key: jax.Array, X: jax.Array, num_components: int, *,
                   mask: Any = None) -> Params:
    """A start for EM: equal weights, pixel probabilities between data points and the mean.

    Component k's are halfway between a data point chosen at random (without replacement)
    and the data's pixel means, ``p_k = (x_{n_k} + xbar) / 2``, so that the components
    start apart (unless the chosen rows coincide) and none starts at a probability of 0 or
    1 where the data has any variety.

    Args:
      key: PRNG key; picks the data points.
      X: ``[N, D]`` binary, N >= num_components.
      num_components: K, a Python int >= 1.
      mask: as in ``e_step``; missing entries count at their column's observed mean.

    Returns:
      ``Params`` (probabilities clipped to [MIN_PROB, 1 - MIN_PROB]).
    """
    _checks.prng_key(key)
    num_components = _checks.positive_int(num_components, "num_components")
    X = _checks.float_array(X, "X")
    if X.ndim != 2 or X.shape[0] < num_components or X.shape[1] < 1:
        raise ValueError(f"X must have shape [N, D] with N >= num_components="
                         f"{num_components}, got {X.shape}.")
    placeholder = Params(jnp.zeros(num_components, X.dtype),
                         jnp.zeros((num_components, X.shape[1]), X.dtype))
    X, M = _data(placeholder, X, mask)
    means = jnp.sum(X, axis=0) / jnp.maximum(jnp.sum(M, axis=0), 1)
    X = jnp.where(M > 0, X, means[None])
    rows = jax.random.choice(key, X.shape[0], (num_components,), replace=False)
    prob = jnp.clip(0.5 * (X[rows] + means[None]), MIN_PROB, 1 - MIN_PROB)
    return Params(jnp.zeros(num_components, X.dtype), jnp.log(prob) - jnp.log1p(-prob))
