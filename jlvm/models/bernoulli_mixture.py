"""Mixture of Bernoullis: z ~ Categorical(softmax(logits)), x_d | z ~ Bernoulli(sigmoid(
logits_x[z, d])) independently over the D pixels: the lecture's clustering of binary images.

    log p(x, z) = log pi_z + sum_d [x_d l_zd - softplus(l_zd)],   l = logits_x,
    log p(x) = logsumexp_z log p(x, z)        (exact: K terms).

Every per-example function takes ONE observation x: [D] with entries in {0, 1} (with
``mask`` [D], True = observed, only the observed pixels count: the others are summed out,
which for independent pixels means left out; anything, NaN included, may stand there).
``model(K, D)`` is the mixture as a ``jlvm.Model``; ``fit_em`` is exact EM, on the observed
entries where there is a mask. EM (``fit_em``, ``e_step``, ...) lives in
``jlvm.models._bernoulli_em`` and the parameters (``Params``, ``sizes``) in
``jlvm.models._bernoulli_params``; both are re-exported here.
"""

from __future__ import annotations

from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models._bernoulli_em import e_step, em_iteration, fit_em, init_from_data, m_step
from jlvm.models._bernoulli_params import (
    HIGHEST,
    Params,
    _binary,
    _log_likelihoods,
    sizes,
)
from jlvm.models._bernoulli_params import MIN_PROB as _MIN_PROB
from jlvm.models.gmm import _component
from jlvm.models.protocol import Model

# The EM clips with _bernoulli_params.MIN_PROB; it is named again here because the
# reference documents a constant from the "#:" comment where the module assigns it.
#: The M-step clips each pixel probability to [MIN_PROB, 1 - MIN_PROB]: a pixel that is 0 in
#: every training image of a component would otherwise get p = 0, and one test image with
#: that pixel on would have log p(x) = -inf.
MIN_PROB = _MIN_PROB


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
    """log p(x_obs | z): the observed pixels' log-probabilities under component z.

    ``sum_{d observed} log Bernoulli(x_d; sigmoid(logits_x[z, d]))``; -inf for z off [0, K).

    Args:
      params, x, z, mask: as in ``log_joint``.

    Returns:
      Scalar log probability in nats.
    """
    _, inside, value = _component_log_likelihood(params, x, z, mask)
    return jnp.where(inside, value, -jnp.inf)


def log_joint(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """Log joint of one example and one component: ``log pi_z + log p(x_obs | z)``.

    A z outside [0, K) has probability 0: -inf, eagerly and under jit alike.

    Args:
      params: ``Params``.
      x: ``[D]`` in {0, 1}; with a mask, anything (NaN included) at missing entries.
      z: integer scalar, the component.
      mask: ``[D]`` bool (True = observed), or None (all observed).

    Returns:
      Scalar log probability in nats.
    """
    k, inside, value = _component_log_likelihood(params, x, z, mask)
    return jnp.where(inside, jax.nn.log_softmax(params.logits)[k] + value, -jnp.inf)


def log_marginal(params: Params, x: jax.Array, mask: Any = None) -> jax.Array:
    """Exact ``log p(x) = logsumexp_k [log pi_k + log p(x | k)]``.

    With ``mask``: log p(x_obs), the missing pixels summed out.

    Args:
      params, x, mask: as in ``log_joint``.

    Returns:
      Scalar log probability in nats.
    """
    return jax.nn.logsumexp(_table(params, *observation(params, x, mask)))


def posterior(params: Params, x: jax.Array, mask: Any = None) -> distrax.Categorical:
    """p(z | x) (p(z | x_obs) with ``mask``): the responsibilities.

    Args:
      params, x, mask: as in ``log_joint``.

    Returns:
      ``distrax.Categorical`` over the K components, with normalized logits.
    """
    return distrax.Categorical(logits=jax.nn.log_softmax(
        _table(params, *observation(params, x, mask))))


def conditional_mean(params: Params, x: jax.Array, mask: Any) -> jax.Array:
    """E[x | x_obs], exact; observed entries as they are.

    Missing pixel d becomes ``p(x_d = 1 | x_obs) = sum_k p(k | x_obs) sigmoid(logits_x[k, d])``.

    Args:
      params, x: as in ``log_joint``.
      mask: ``[D]`` bool, True = observed; None is a TypeError (it says what to fill in).

    Returns:
      ``[D]``, x with its missing pixels filled in.
    """
    if mask is None:
        raise TypeError("a mask [D] (True = observed) is needed: it says what to fill in.")
    x, m = observation(params, x, mask)
    resp = jax.nn.softmax(_table(params, x, m))
    filled = jnp.matmul(resp, jax.nn.sigmoid(params.logits_x), precision=HIGHEST)
    return jnp.where(m > 0, x, filled)


def conditional_draws(key: jax.Array, params: Params, x: jax.Array, mask: Any,
                      n: int) -> jax.Array:
    """n draws x ~ p(x | x_obs) (multiple imputation).

    k ~ p(k | x_obs), then each missing pixel ~ Bernoulli(sigmoid(logits_x[k, d])).

    Args:
      key, params, n: as in ``sample``.
      x, mask: as in ``conditional_mean``.

    Returns:
      ``[n, D]``, observed entries as given.
    """
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
    """Ancestral sampling: z ~ pi, x_d ~ Bernoulli(sigmoid(logits_x[z, d])).

    Args:
      key: PRNG key.
      params: ``Params``.
      n: number of draws, a Python int >= 1.

    Returns:
      A tuple ``(x, z)``, x ``[n, D]`` of 0.0 and 1.0, z ``[n]`` integers.
    """
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    sizes(params)
    key_z, key_x = jax.random.split(key)
    z = jax.random.categorical(key_z, params.logits, shape=(n,))
    x = jax.random.bernoulli(key_x, jax.nn.sigmoid(params.logits_x[z]))
    return x.astype(params.logits_x.dtype), z

# ---------------------------------------------------------------- as a jlvm.Model


def prior(params: Params) -> distrax.Categorical:
    """p(z) = Categorical(softmax(logits)).

    Args:
      params: ``Params``.

    Returns:
      ``distrax.Categorical`` over the K components.
    """
    sizes(params)
    return distrax.Categorical(logits=params.logits)


def decoder(params: Params, z: jax.Array) -> distrax.Independent:
    """p(x | z) = prod_d Bernoulli(sigmoid(logits_x[z, d])).

    Args:
      params, z: as in ``log_joint``.

    Returns:
      ``distrax.Independent`` of Bernoullis over x ``[D]``; a z outside [0, K) has no
      component: its logits are NaN, eagerly and under jit alike.
    """
    num_components, _ = sizes(params)
    _, inside = _component(z, num_components)
    k = jnp.where(inside, z, num_components)  # out of range even where z < 0: filled NaN
    logits = params.logits_x.at[k].get(mode="fill", fill_value=jnp.nan)
    return distrax.Independent(distrax.Bernoulli(logits=logits), 1)


def model(num_components: int, data_dim: int) -> Model:
    """The mixture of K Bernoulli images over x ``[D]`` as a ``jlvm.Model``.

    ``init(key)`` gives equal weights and pixel logits ~ N(0, 1); the encoder is the exact
    posterior (``posterior``), so importance sampling with it as the proposal is exact;
    ``log_joint``, ``log_likelihood``, ``prior`` and ``decoder`` are this module's functions.

    Args:
      num_components: K, a Python int >= 1.
      data_dim: D, a Python int >= 1.

    Returns:
      ``jlvm.Model``.
    """
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
