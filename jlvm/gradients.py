"""Surrogate objectives: one value, several gradient estimators.

Each function here returns a scalar whose VALUE is the Monte Carlo estimate of the bound
and whose GRADIENT (under ``jax.grad``) is the named estimator. The device used throughout:

    surrogate = value + (term - stop_gradient(term))

adds ``grad term`` to the gradient and leaves the value as it was. The public entry points
are ``jlvm.elbo`` and ``jlvm.iwae_bound``; these helpers assume validated arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

from jlvm import _checks

LogJoint = Callable[[jax.Array], jax.Array]

ELBO_ESTIMATORS = ("reparam", "score_function", "stl", "disarm")
IWAE_ESTIMATORS = ("reparam", "dreg", "score_function")

_sg = jax.lax.stop_gradient


def draw(key: jax.Array, q: Any, num_samples: int) -> tuple[jax.Array, jax.Array]:
    """K independent draws from ``q``, one PRNG key each.

    One key per draw (rather than one call with ``sample_shape=(K,)``) makes draw k depend
    only on (key, k): chunked and unchunked evaluations, the ELBO and the IWAE bound all
    see the same z's for the same key.

    Args:
      key: PRNG key; draw k's own is ``fold_in(key, k)`` (``draw_keys``).
      q: distrax distribution over one z (batch_shape ()).
      num_samples: K >= 1.

    Returns:
      A tuple ``(z, log_q)`` of z ``[K, *event]`` and log q(z) ``[K]``.
    """
    return draw_with_keys(draw_keys(key, jnp.arange(num_samples)), q)


def draw_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    """The key of draw k for each k in ``indices``: ``fold_in(key, k)``.

    Computed where it is needed, so K draws never hold K keys in memory at once (a chunked
    sum holds one chunk's).

    Args:
      key: PRNG key.
      indices: ``[n]`` integer draw indices.

    Returns:
      ``[n]`` keys, stacked like ``key`` (``[n, 2]`` for a raw ``uint32`` key).
    """
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def _diagonal_normal(q: Any) -> tuple[jax.Array, jax.Array] | None:
    """(loc [L], scale [L]) where q is a ``distrax.MultivariateNormalDiag`` (exactly that
    class: every encoder's q), else None.

    Such a q is sampled and scored below with the few array operations it needs; distrax's
    general bijector route gives the same draws and values but several more kernels per
    step, which a train step of 0.1 ms on a GPU (or 2 ms on a CPU) feels.
    """
    if type(q) is distrax.MultivariateNormalDiag:
        return q.loc, q.scale_diag
    return None


def _diagonal_normal_log_prob(u: jax.Array, scale: jax.Array) -> jax.Array:
    """log N(z; loc, diag scale^2) from u = (z - loc) / scale [K, L] -> [K]."""
    return (jnp.sum(-0.5 * u**2 - jnp.log(scale)[None], axis=1)
            - 0.5 * u.shape[1] * math.log(2 * math.pi))


def draw_with_keys(keys: jax.Array, q: Any) -> tuple[jax.Array, jax.Array]:
    """One draw from ``q`` per key in ``keys``.

    Args:
      keys: ``[K]`` PRNG keys (``draw_keys``).
      q: as in ``draw``.

    Returns:
      A tuple ``(z, log_q)`` of z ``[K, *event]`` and log q(z) ``[K]``.
    """
    diagonal = _diagonal_normal(q)
    if diagonal is not None:
        loc, scale = diagonal
        # distrax's own draw for this key: normal(key, (1, L))[0]
        eps = jax.vmap(lambda k: jax.random.normal(k, (1, *loc.shape), loc.dtype)[0])(keys)
        # z = loc + scale * eps; along z(phi), log q(z) = log N(eps; 0, I) - sum log scale
        return loc[None] + scale[None] * eps, _diagonal_normal_log_prob(eps, scale)
    z, log_q = jax.vmap(lambda k: _checks.sample_and_log_prob(q, k, 1))(keys)
    return z[:, 0], log_q[:, 0]


def log_joints(log_joint: LogJoint, z: jax.Array) -> jax.Array:
    """log p(x, z_k) for a stack of z, checking that log_joint returns a scalar.

    Args:
      log_joint: ``z -> log p(x, z)``, z: ``[*event]`` -> scalar (else a ``ValueError``).
      z: ``[K, *event]``.

    Returns:
      ``[K]`` values.
    """
    if jnp.shape(z)[0] == 1:
        # no vmap over a single draw: under an outer vmap over data points its axis of
        # size 1 would make XLA transpose every gradient of the decoder's activations
        values = jnp.expand_dims(log_joint(z[0]), 0)
    else:
        values = jax.vmap(log_joint)(z)
    if jnp.shape(values) != jnp.shape(z)[:1]:
        raise ValueError(
            "log_joint must map ONE latent value z to a scalar log p(x, z); for a stack of "
            f"{jnp.shape(z)[0]} latents it returned shape {jnp.shape(values)[1:]} per latent."
        )
    return values


def path_log_prob(q: Any, z: jax.Array) -> jax.Array:
    """log q(z) whose gradient flows only along the path z(phi), not via q's parameters.

    First-order stop-gradient of q's parameters, written without rebuilding q::

        sg(log q(z)) + sg(grad_z log q(z)) . (z - sg(z))

    has the value log q(z) and the gradient (d log q / dz)(dz / dphi). (Rebuilding q from
    stopped leaves with tree_map is unsafe: distrax bijectors keep bound methods of the
    ORIGINAL objects in their static data, which would leak the parameters' gradient.)

    Args:
      q: as in ``draw``; continuous.
      z: ``[K, *event]`` reparameterized draws of q (a discrete dtype is a ``ValueError``).

    Returns:
      ``[K]`` log q(z).
    """
    if not jnp.issubdtype(jnp.result_type(z), jnp.floating):
        raise ValueError("this grad_estimator differentiates along the sampling path and needs "
                         f"a continuous q; got samples of dtype {jnp.result_type(z)}. Use "
                         'grad_estimator="score_function" for discrete q.')
    fixed = _sg(z)
    diagonal = _diagonal_normal(q)
    if diagonal is not None:
        loc, scale = _sg(diagonal[0])[None], _sg(diagonal[1])[None]
        u = (fixed - loc) / scale
        values, scores = _diagonal_normal_log_prob(u, scale[0]), -u / scale
    else:
        values, scores = jax.vmap(jax.value_and_grad(lambda one: _checks.log_prob(q, one)))(
            fixed)
    displacement = (_sg(scores) * (z - fixed)).reshape(z.shape[0], -1)
    return _sg(values) + jnp.sum(displacement, axis=1)


def log_probs(q: Any, z: jax.Array) -> jax.Array:
    """log q(z_k) for a stack of z.

    In one call where q's ``log_prob`` takes a batch of z, else one draw at a time (a
    flow's coupling layers, distrax's ``MaskedCoupling``, take one z: tried with
    ``jax.eval_shape``, nothing computed).

    Args:
      q: as in ``draw``.
      z: ``[K, *event]``.

    Returns:
      ``[K]`` log q(z_k).
    """
    try:
        batched = jax.eval_shape(lambda: _checks.log_prob(q, z)).shape == z.shape[:1]
    except Exception:  # whatever a q's log_prob raises on a batch of z
        batched = False
    if batched:
        return _checks.log_prob(q, z)
    return jax.vmap(lambda one: _checks.log_prob(q, one))(z)


def _alive(log_p: jax.Array) -> jax.Array:
    """Which draws have weight > 0 (log p(x, z) > -inf): [K] bool, no gradient."""
    return _sg(log_p) > -jnp.inf


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


def _log_mean_exp(log_weights: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(log_weights) - math.log(log_weights.shape[0])


def _with_gradient_of(value: jax.Array, term: jax.Array) -> jax.Array:
    return value + (term - _sg(term))


# --------------------------------------------------------------------------- ELBO


def elbo_reparam(key, log_joint, q, num_samples):
    """Pathwise gradient: z = g(eps; phi), differentiate through the sample.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.elbo`` (checked there).

    Returns:
      Scalar, the Monte Carlo ELBO; its ``jax.grad`` is this estimator.
    """
    z, log_q = draw(key, q, num_samples)
    return jnp.mean(log_joints(log_joint, z) - log_q)


def elbo_stl(key, log_joint, q, num_samples):
    """Sticking the landing: drop the score term E[grad_phi log q(z)] (mean zero).

    log q is evaluated with its parameters stopped, so only the path z(phi) carries
    gradient; at q = p(z|x) the integrand log p(x,z) - log q(z) is constant in z and the
    gradient is exactly zero for every draw.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.elbo`` (checked there).

    Returns:
      Scalar, the Monte Carlo ELBO; its ``jax.grad`` is this estimator.
    """
    z, _ = draw(key, q, num_samples)
    return jnp.mean(log_joints(log_joint, z) - path_log_prob(q, z))


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
# A draw of log p(x, z) = -inf has weight 0 in the bound, and the surrogates' own
# arithmetic gives it a zero gradient (no 0 * inf): with a log_joint whose derivatives are
# finite there (-inf written with jnp.where, say) the value and the gradient are those of
# the other draws. Where log_joint's own derivative is infinite at such a draw (an exp that
# overflowed) the gradient is 0 * inf = NaN and stays visible: the learners refuse such a
# step (``finite`` False); evaluating log_joint a second time at a safe z would hide it at
# a quarter more time per IWAE step, for every model. +inf or NaN values stay as they are.


def iwae_reparam(key, log_joint, q, num_samples):
    """Pathwise IWAE gradient: differentiate the bound through the draws z(phi).

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.iwae_bound`` (checked there).

    Returns:
      Scalar, the IWAE bound; its ``jax.grad`` is this estimator.
    """
    z, log_q = draw(key, q, num_samples)
    return _log_mean_exp(log_joints(log_joint, z) - log_q)


def iwae_dreg(key, log_joint, q, num_samples):
    """Doubly reparameterized IWAE gradient (Tucker et al., 2018).

    Variational parameters phi: sum_k wt_k^2 d log w_k / dz_k dz_k/dphi (path only).
    Model parameters theta (inside log_joint): sum_k wt_k grad_theta log p(x, z_k), the
    ordinary IWAE gradient. Squared weights must NOT reach theta; the second term below
    restores the missing (wt - wt^2) share with z stopped, so it touches theta only.

    Args:
      key, log_joint, q, num_samples: as in ``jlvm.iwae_bound`` (checked there).

    Returns:
      Scalar, the IWAE bound; its ``jax.grad`` is this estimator.
    """
    z, log_q = draw(key, q, num_samples)
    log_w = log_joints(log_joint, z) - path_log_prob(q, z)
    alive = _alive(log_w)
    normalized = jax.nn.softmax(_sg(log_w))
    log_w_fixed_z = log_joints(log_joint, _sg(z)) - _sg(log_q)
    # a draw of weight 0 adds 0 (not 0 * -inf = NaN) to each sum
    term = (jnp.sum(jnp.where(alive, normalized**2 * log_w, 0.0))
            + jnp.sum(jnp.where(alive, (normalized - normalized**2) * log_w_fixed_z, 0.0)))
    return _with_gradient_of(_sg(_log_mean_exp(log_w)), term)


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


ELBO_SURROGATES = {
    "reparam": elbo_reparam,
    "stl": elbo_stl,
    "score_function": elbo_score_function,
    "disarm": elbo_disarm,
}

IWAE_SURROGATES = {
    "reparam": iwae_reparam,
    "dreg": iwae_dreg,
    "score_function": iwae_score_function,
}
