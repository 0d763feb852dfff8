"""Mixture of Bernoullis: z ~ Categorical(softmax(logits)), x_d | z ~ Bernoulli(sigmoid(
logits_x[z, d])) independently over the D pixels: the lecture's clustering of binary images.

    log p(x, z) = log pi_z + sum_d [x_d l_zd - softplus(l_zd)],   l = logits_x,
    log p(x) = logsumexp_z log p(x, z)        (exact: K terms).

Every per-example function takes ONE observation x: [D] with entries in {0, 1} (with
``mask`` [D], True = observed, only the observed pixels count: the others are summed out,
which for independent pixels means left out; anything, NaN included, may stand there).
``model(K, D)`` is the mixture as a ``jlvm.Model``; ``fit_em`` is exact EM, on the observed
entries where there is a mask.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models.gmm import _component
from jlvm.models.protocol import Model

# Exact float32 on every device (no TF32 matmuls on GPUs): the tests compare with oracles.
HIGHEST = jax.lax.Precision.HIGHEST
#: The M-step clips each pixel probability to [MIN_PROB, 1 - MIN_PROB]: a pixel that is 0 in
#: every training image of a component would otherwise get p = 0, and one test image with
#: that pixel on would have log p(x) = -inf.
MIN_PROB = 1e-6


class Params(NamedTuple):
    """Mixture-of-Bernoullis parameters.

    logits: [K] unnormalized log mixing weights (pi = softmax(logits)).
    logits_x: [K, D] each component's pixel logits, p(x_d = 1 | z = k) = sigmoid(logits_x[k, d]).
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


def observation(params: Params, x: Any, mask: Any = None) -> tuple[jax.Array, jax.Array]:
    """(x [D] as floats with missing entries 0, mask [D] as floats: 1 observed, 0 missing),
    checked once at a public function's entry."""
    _, dim = sizes(params)
    x = _checks.float_array(x, "x").astype(params.logits_x.dtype)
    _checks.shape_is(x, "x", (dim,), "[D]")
    if mask is None:
        _binary(x, "x")
        return x, jnp.ones(dim, x.dtype)
    mask = jnp.asarray(_checks.observation_mask(mask, dim))
    if _checks.is_concrete(x) and _checks.is_concrete(mask):
        _binary(np.asarray(x)[np.asarray(mask)], "x at observed entries")
    return jnp.where(mask, x, 0.0), mask.astype(x.dtype)


def _log_likelihoods(params: Params, X: jax.Array, M: jax.Array) -> jax.Array:
    """log p(x_n,obs | z = k) for a stack: X, M [N, D] (missing entries 0 in both) -> [N, K].

    sum_d m_d [x_d l_kd - softplus(l_kd)]: two matrix products, so K = 100 components of
    D = 784 pixels cost what one [N, D] x [D, K] product costs.
    """
    logits_x = params.logits_x
    return (jnp.matmul(X * M, logits_x.T, precision=HIGHEST)
            - jnp.matmul(M, jax.nn.softplus(logits_x).T, precision=HIGHEST))


def _table(params: Params, x: jax.Array, m: jax.Array) -> jax.Array:
    """log p(x_obs, z = k) for every k: [K]."""
    return jax.nn.log_softmax(params.logits) + _log_likelihoods(params, x[None], m[None])[0]


def _component_log_likelihood(params, x, z, mask):
    """(k, whether z is a component, log p(x_obs | z = k)), checked once."""
    x, m = observation(params, x, mask)
    k, inside = _component(z, params.logits.shape[0])
    logits_x = params.logits_x[k]
    return k, inside, jnp.sum(m * (x * logits_x - jax.nn.softplus(logits_x)))


def log_likelihood(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p(x_obs | z) = sum_{d observed} log Bernoulli(x_d; sigmoid(logits_x[z, d])).
    x: [D], z: integer scalar; -inf for a z outside [0, K)."""
    _, inside, value = _component_log_likelihood(params, x, z, mask)
    return jnp.where(inside, value, -jnp.inf)


def log_joint(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p(x_obs, z) = log pi_z + log p(x_obs | z). x: [D] in {0, 1}, z: integer scalar;
    ``mask`` [D] (True = observed) or None. A z outside [0, K) has probability 0: -inf,
    eagerly and under jit alike."""
    k, inside, value = _component_log_likelihood(params, x, z, mask)
    return jnp.where(inside, jax.nn.log_softmax(params.logits)[k] + value, -jnp.inf)


def log_marginal(params: Params, x: jax.Array, mask: Any = None) -> jax.Array:
    """Exact log p(x) = logsumexp_k [log pi_k + log p(x | k)]. x: [D] in {0, 1}; with
    ``mask`` [D] (True = observed): log p(x_obs), the missing pixels summed out."""
    return jax.nn.logsumexp(_table(params, *observation(params, x, mask)))


def posterior(params: Params, x: jax.Array, mask: Any = None) -> distrax.Categorical:
    """p(z | x) (p(z | x_obs) with ``mask``): the responsibilities, as a
    ``distrax.Categorical`` with normalized logits."""
    return distrax.Categorical(logits=jax.nn.log_softmax(
        _table(params, *observation(params, x, mask))))


def conditional_mean(params: Params, x: jax.Array, mask: Any) -> jax.Array:
    """E[x | x_obs]: x [D] with every missing pixel at p(x_d = 1 | x_obs) = sum_k
    p(k | x_obs) sigmoid(logits_x[k, d]) (exact); observed entries as they are."""
    if mask is None:
        raise TypeError("a mask [D] (True = observed) is needed: it says what to fill in.")
    x, m = observation(params, x, mask)
    resp = jax.nn.softmax(_table(params, x, m))
    filled = jnp.matmul(resp, jax.nn.sigmoid(params.logits_x), precision=HIGHEST)
    return jnp.where(m > 0, x, filled)


def conditional_draws(key: jax.Array, params: Params, x: jax.Array, mask: Any,
                      n: int) -> jax.Array:
    """n draws x ~ p(x | x_obs) [n, D]: k ~ p(k | x_obs), then each missing pixel ~
    Bernoulli(sigmoid(logits_x[k, d])) (multiple imputation; observed entries as given)."""
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    if mask is None:
        raise TypeError("a mask [D] (True = observed) is needed: it says what to fill in.")
    x, m = observation(params, x, mask)
    key_k, key_x = jax.random.split(key)
    k = jax.random.categorical(key_k, _table(params, x, m), shape=(n,))
    draws = jax.random.bernoulli(key_x, jax.nn.sigmoid(params.logits_x[k])).astype(x.dtype)
    return jnp.where(m[None] > 0, x[None], draws)


def sample(key: jax.Array, params: Params, n: int) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: z ~ pi, x_d ~ Bernoulli(sigmoid(logits_x[z, d])). Returns
    (x [n, D] of 0.0 and 1.0, z [n])."""
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    sizes(params)
    key_z, key_x = jax.random.split(key)
    z = jax.random.categorical(key_z, params.logits, shape=(n,))
    x = jax.random.bernoulli(key_x, jax.nn.sigmoid(params.logits_x[z]))
    return x.astype(params.logits_x.dtype), z


# ---------------------------------------------------------------- EM


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
    """The exact posterior of every point: (log responsibilities [N, K], mean log p(x_obs)).
    X: [N, D] in {0, 1}; mask [N, D] bool or None."""
    X, M = _data(params, X, mask)
    return _e_step(params, X, M)


def _e_step(params, X, M):
    table = jax.nn.log_softmax(params.logits)[None] + _log_likelihoods(params, X, M)
    log_norm = jax.nn.logsumexp(table, axis=1, keepdims=True)
    return table - log_norm, jnp.mean(log_norm)


def m_step(X: jax.Array, log_resp: jax.Array, mask: Any = None) -> Params:
    """The ELBO's maximizer for fixed responsibilities r [N, K] (closed form):

        pi_k = sum_n r_nk / N,   p_kd = sum_n r_nk m_nd x_nd / sum_n r_nk m_nd,

    each p_kd then clipped to [MIN_PROB, 1 - MIN_PROB] (``MIN_PROB`` = 1e-6); a pixel no
    point of component k observes gets p_kd = 1/2. X [N, D] in {0, 1} (anything at missing
    entries), mask [N, D] bool or None (all observed).
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
    """One EM iteration: (the new parameters, the mean log p(x_obs) of the OLD ones)."""
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
      X: [N, D] binary data (with a mask: anything, NaN included, at missing entries).
      num_iters: number of EM iterations (>= 1).
      mask: [N, D] bool, True = observed; every row must observe something.

    Returns:
      (params after ``num_iters`` M-steps, trace [num_iters]): trace[t] is the mean
      log p(x_n,obs) under the parameters after t M-steps. It never decreases (up to
      float32 rounding and the clipping, which binds only where a probability would be
      within 1e-6 of 0 or 1).
    """
    num_iters = _checks.positive_int(num_iters, "num_iters")
    X, M = _data(params, X, mask)
    return _fit_em(params, X, M, num_iters)


def init_from_data(key: jax.Array, X: jax.Array, num_components: int, *,
                   mask: Any = None) -> Params:
    """A start for EM: equal weights, and component k's pixel probabilities halfway between
    a data point chosen at random (without replacement) and the data's pixel means,

        p_k = (x_{n_k} + xbar) / 2,

    so that the K components start distinct and none starts at a probability of 0 or 1
    where the data has any variety. X: [N, D] binary, N >= num_components; with ``mask``,
    missing entries are at their column's observed mean.
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


# ---------------------------------------------------------------- as a jlvm.Model


def prior(params: Params) -> distrax.Categorical:
    """p(z) = Categorical(softmax(logits))."""
    sizes(params)
    return distrax.Categorical(logits=params.logits)


def decoder(params: Params, z: jax.Array) -> distrax.Independent:
    """p(x | z) = prod_d Bernoulli(sigmoid(logits_x[z, d])), one distribution over x [D]; a
    z outside [0, K) has no component: its logits are NaN, eagerly and under jit alike."""
    num_components, _ = sizes(params)
    _, inside = _component(z, num_components)
    k = jnp.where(inside, z, num_components)  # out of range even where z < 0: filled NaN
    logits = params.logits_x.at[k].get(mode="fill", fill_value=jnp.nan)
    return distrax.Independent(distrax.Bernoulli(logits=logits), 1)


def model(num_components: int, data_dim: int) -> Model:
    """The mixture of ``num_components`` Bernoulli images over x [data_dim] as a
    ``jlvm.Model``: ``init(key)`` gives equal weights and pixel logits ~ N(0, 1); the
    encoder is the exact posterior (``posterior``), so importance sampling with it as the
    proposal is exact; ``log_joint``, ``log_likelihood``, ``prior`` and ``decoder`` are this
    module's functions."""
    num_components = _checks.positive_int(num_components, "num_components")
    data_dim = _checks.positive_int(data_dim, "data_dim")

    def init(key: jax.Array) -> Params:
        _checks.prng_key(key)
        return Params(jnp.zeros(num_components),
                      jax.random.normal(key, (num_components, data_dim)))

    return Model(init, log_joint, posterior, log_likelihood, prior, decoder)


__all__ = ["MIN_PROB", "Params", "conditional_draws", "conditional_mean", "decoder",
           "e_step", "em_iteration", "fit_em", "init_from_data", "log_joint",
           "log_likelihood", "log_marginal", "m_step", "model", "posterior", "prior",
           "sample"]
