"""The surrogates for discrete q, whose gradients need no path through z: the score
function with its leave-one-out baseline (``elbo_score_function``), VIMCO for the IWAE
bound (``iwae_score_function``) and DisARM for factorized Bernoulli q (``elbo_disarm``),
with the checks DisARM's arguments need. ``jlvm.gradients`` re-exports them and lists them
in its tables.
"""

from __future__ import annotations

from typing import Any

import distrax
import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm._draws import (
    _log_mean_exp,
    _sg,
    _with_gradient_of,
    draw,
    draw_keys,
    log_joints,
    log_probs,
)


def _leave_one_out_mean(values: jax.Array) -> jax.Array:
    """b_k = mean_{j != k} values_j: a baseline independent of draw k, so it adds no bias.
    A -inf among the others makes b_k -inf; one at k itself leaves b_k finite (summing
    the -inf and subtracting it again would give NaN)."""
    count = values.shape[0]
    if count == 1:
        return jnp.zeros_like(values)
    dead = values == -jnp.inf
    finite = jnp.where(dead, 0.0, values)
    others = (jnp.sum(finite) - finite) / (count - 1)
    return jnp.where(jnp.sum(dead) - dead > 0, -jnp.inf, others)


# --------------------------------------------------------------------------- ELBO


def elbo_score_function(key, log_joint, q, num_samples):
    """REINFORCE: grad = E[(f(z) - b) grad log q(z)] + E[grad f(z)], f = log p(x,z) - log q(z).

    z carries no gradient (discrete q welcome). b is the leave-one-out mean of f over the
    other K-1 draws, independent of draw k, so the estimator stays unbiased. A draw of
    f = -inf makes the ELBO -inf, as for every estimator (not NaN: its learning signal,
    infinite, is left out of the surrogate's value).

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.elbo`` (checked there).

    Returns:
      Scalar, the Monte Carlo ELBO; its ``jax.grad`` is this estimator.
    """
    z, _ = draw(key, q, num_samples)
    z = _sg(z)
    log_q = log_probs(q, z)
    f = log_joints(log_joint, z) - log_q
    learning_signal = _sg(f - _leave_one_out_mean(f))
    learning_signal = jnp.where(jnp.isfinite(learning_signal), learning_signal, 0.0)
    return _with_gradient_of(jnp.mean(f), jnp.mean(learning_signal * log_q))


def factorized_bernoulli(q: Any) -> distrax.Bernoulli:
    """The ``distrax.Bernoulli`` inside a factorized Bernoulli q (DisARM's q).

    Args:
      q: ``distrax.Bernoulli`` itself (one bit) or ``distrax.Independent`` layers around
        one, with batch_shape (). Anything else is a ``ValueError`` naming q.

    Returns:
      The inner ``distrax.Bernoulli``, whose logits ``[*event]`` are q's.
    """
    inner = q
    while isinstance(inner, distrax.Independent):
        inner = inner.distribution
    if not isinstance(inner, distrax.Bernoulli) or tuple(getattr(q, "batch_shape", ())) != ():
        what = f"distrax.{type(q).__name__}" if isinstance(q, distrax.Distribution) else (
            type(q).__name__)
        if inner is not q:
            what += f" over {type(inner).__name__}"
        if tuple(getattr(q, "batch_shape", ())) != ():
            what += f" with batch_shape {tuple(q.batch_shape)}"
        raise ValueError(
            'q must be a factorized Bernoulli for grad_estimator="disarm": distrax.Bernoulli '
            "or distrax.Independent(distrax.Bernoulli(logits=[L]), 1), with batch_shape () "
            f'(one z per q); got {what}. Use "reparam" for a continuous q and '
            '"score_function" for other discrete ones.')
    return inner


def even_num_samples(num_samples: int) -> int:
    """``num_samples`` if it is even, else a ``ValueError`` naming it (DisARM's pairs).

    Args:
      num_samples: K, the number of draws.

    Returns:
      ``num_samples`` unchanged.
    """
    if num_samples % 2:
        raise ValueError(f"num_samples counts draws; DisARM draws antithetic pairs, so it "
                         f"must be even, got {num_samples}.")
    return num_samples


def elbo_disarm(key, log_joint, q, num_samples):
    """DisARM gradient for a factorized Bernoulli q with logits a ``[L]``.

    Dong, Mnih & Tucker, 2020, "DisARM: An Antithetic Gradient Estimator for Binary Latent
    Variables". ``num_samples`` counts draws: P = num_samples / 2 antithetic pairs. Pair j
    shares one u ~ U(0, 1)^L (key ``fold_in(key, j)``)::

        b = 1[u < sigmoid(a)],   b~ = 1[1 - u < sigmoid(a)],

    each marginally ~ q, the two as negatively correlated as possible. With
    f(z) = log p(x, z) - log q(z), the gradient for a is the pairs' mean of::

        g_i = 1/2 (f(b) - f(b~)) (-1)^{b~_i} 1[b_i != b~_i] sigmoid(|a_i|),

    unbiased for grad_a E_q[f] with f held fixed (the ARM estimator with the antithetic
    partner's noise integrated out). The value is the mean of f over all 2P draws, the
    same Monte Carlo ELBO as every estimator's; parameters inside ``log_joint`` get the
    mean of grad log p(x, z_k) over the draws.

    z: ``[2P, *event]`` in q's sample dtype, draw 2j = b and 2j + 1 = b~ of pair j.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.elbo`` (q factorized Bernoulli, K even).

    Returns:
      Scalar, the Monte Carlo ELBO; its ``jax.grad`` is DisARM's for q's logits.
    """
    logits = factorized_bernoulli(q).logits
    num_pairs = num_samples // 2
    u = jax.vmap(lambda k: jax.random.uniform(k, logits.shape, logits.dtype))(
        draw_keys(key, jnp.arange(num_pairs)))
    threshold = _sg(jax.nn.sigmoid(logits))[None]
    b, b_tilde = u < threshold, 1.0 - u < threshold
    z = jnp.stack([b, b_tilde], axis=1).reshape(num_samples, *logits.shape)
    # q.sample's dtype (int32 unless q was built with another): log_joint sees the z it
    # sees with every other estimator (shapes only: nothing is drawn)
    z = z.astype(jax.eval_shape(lambda k: _checks.sample(q, k, 1), key).dtype)
    # log q's own gradient, E_q[grad_a log q(z)] = 0, is left out: it would add noise only
    log_q = _sg(log_probs(q, z))
    f = log_joints(log_joint, z) - log_q
    pairs = _sg(f).reshape(num_pairs, 2)
    # a draw of f = -inf makes the value -inf (as for every estimator); its infinite (or,
    # both draws -inf, NaN) difference is left out of the gradient rather than spread as NaN
    difference = pairs[:, 0] - pairs[:, 1]
    difference = jnp.where(jnp.isfinite(difference), difference, 0.0)
    differs = b != b_tilde
    sign = jnp.where(b_tilde, -1.0, 1.0).astype(logits.dtype)
    weight = _sg(jax.nn.sigmoid(jnp.abs(logits)))[None]
    shape = (num_pairs,) + (1,) * logits.ndim
    per_pair = jnp.where(differs, 0.5 * difference.reshape(shape) * sign * weight, 0.0)
    signal = jnp.mean(per_pair, axis=0)
    # logits of +-inf (a point mass) never differ within a pair: 0, not 0 * inf
    term = jnp.sum(jnp.where(signal != 0, signal * logits, 0.0))
    return _with_gradient_of(jnp.mean(f), term)


# --------------------------------------------------------------------------- IWAE


def iwae_score_function(key, log_joint, q, num_samples):
    """Score-function IWAE gradient with the VIMCO leave-one-out baseline (Mnih & Rezende 2016).

    For draw k the baseline replaces log w_k by the mean of the other log-weights; it does
    not depend on z_k, so the estimator stays unbiased. Where every other draw has weight
    0 the baseline is -inf and draw k's learning signal infinite: it is left out.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.iwae_bound`` (checked there).

    Returns:
      Scalar, the IWAE bound; its ``jax.grad`` is this estimator.
    """
    z, _ = draw(key, q, num_samples)
    z = _sg(z)
    log_q = log_probs(q, z)
    log_w = log_joints(log_joint, z) - log_q
    bound = _log_mean_exp(log_w)
    if num_samples == 1:
        learning_signal = _sg(jnp.broadcast_to(bound, log_w.shape))
    else:
        held_out = _sg(log_w)
        replaced = _leave_one_out_mean(held_out)
        # row k: the log-weights with entry k replaced by the mean of the others
        swapped = jnp.where(jnp.eye(num_samples, dtype=bool), replaced[:, None],
                            jnp.broadcast_to(held_out[None, :], (num_samples, num_samples)))
        baselines = jax.vmap(_log_mean_exp)(swapped)
        learning_signal = _sg(bound - baselines)
    learning_signal = jnp.where(jnp.isfinite(learning_signal), learning_signal, 0.0)
    return _with_gradient_of(bound, jnp.sum(learning_signal * log_q))
