"""Estimators of log p(x) and its lower bounds, as functions of ``(log_joint, q)``.

``log_joint``: a pure function ``z -> log p(x, z)`` for ONE latent value z, with x and the
model parameters bound (``functools.partial(model.log_joint, params, x)``).
``q``: a ``distrax.Distribution`` with ``batch_shape ()`` whose event is one z.

Batching over data points is the caller's ``jax.vmap``; compilation is ``jax.jit``;
gradients are ``jax.grad`` of the returned scalar.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm import gradients as _gradients
from jlvm.gradients import draw as _draw
from jlvm.gradients import log_joints as _log_joints

LogJoint = Callable[[jax.Array], jax.Array]

# binary_support materializes 2**num_bits rows; past this it no longer fits in memory.
MAX_SUPPORT_BITS = 24
# supports up to this many rows are checked for repeated rows (a sort: cheap up to here)
MAX_CHECKED_SUPPORT = 2**20


def elbo(key: jax.Array, log_joint: LogJoint, q: Any, num_samples: int = 1, *,
         grad_estimator: str = "reparam") -> jax.Array:
    """Monte Carlo ELBO (Jensen's bound), joint form.

    ``(1/K) sum_k [log p(x, z_k) - log q(z_k)]``, z_k ~ q: unbiased for
    ELBO(q) = log p(x) - KL(q || p(z|x)) <= log p(x).

    Args:
      key: PRNG key.
      log_joint: ``z -> log p(x, z)``, z: ``[*event]`` -> scalar.
      q: distrax distribution over one z (batch_shape ()).
      num_samples: K >= 1, a Python int.
      grad_estimator: ``"reparam"`` (pathwise), ``"score_function"`` (REINFORCE with a
        leave-one-out baseline; for discrete q), ``"stl"`` (sticking the landing) or
        ``"disarm"`` (antithetic pairs, Dong, Mnih & Tucker 2020; for a factorized
        Bernoulli q: ``distrax.Bernoulli`` or ``distrax.Independent`` of one, and an even
        num_samples, which counts draws: num_samples / 2 pairs). The returned value is the
        same Monte Carlo estimate for all of them; only ``jax.grad`` of it differs.

    Returns:
      Scalar estimate in nats.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    _checks.one_of(grad_estimator, "grad_estimator", _gradients.ELBO_ESTIMATORS)
    if grad_estimator == "disarm":
        _gradients.even_num_samples(num_samples)
        _gradients.factorized_bernoulli(q)
    _checks.proposal_and_model(key, log_joint, q, pathwise=_pathwise(grad_estimator))
    return _checks.finite_result(
        _gradients.ELBO_SURROGATES[grad_estimator](key, log_joint, q, num_samples), "elbo")


def iwae_bound(key: jax.Array, log_joint: LogJoint, q: Any, num_samples: int, *,
               grad_estimator: str = "reparam") -> jax.Array:
    """Importance weighted bound (Burda et al., 2016).

    ``log (1/K) sum_k p(x, z_k) / q(z_k)``, z_k ~ q, computed with ``logsumexp``.
    Its expectation rises with K from the ELBO (K=1) towards log p(x).

    Args:
      key, log_joint, q: as in ``elbo``.
      num_samples: K >= 1.
      grad_estimator: ``"reparam"``, ``"dreg"`` (doubly reparameterized: squared weights
        for q's parameters, ordinary IWAE gradient for the model's) or ``"score_function"``
        (VIMCO leave-one-out baseline; for discrete q).

    Returns:
      Scalar estimate in nats.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    _checks.one_of(grad_estimator, "grad_estimator", _gradients.IWAE_ESTIMATORS)
    _checks.proposal_and_model(key, log_joint, q, pathwise=_pathwise(grad_estimator))
    return _checks.finite_result(
        _gradients.IWAE_SURROGATES[grad_estimator](key, log_joint, q, num_samples),
        "iwae_bound")


def elbo_with_entropy(key: jax.Array, log_joint: LogJoint, q: Any,
                      num_samples: int = 1) -> jax.Array:
    """ELBO in its entropy form: ``(1/K) sum_k log p(x, z_k) + H(q)``, H analytic.

    Same expectation as ``elbo``. Not always lower variance: at q = p(z|x) the joint form
    is exact for every draw, while this form keeps the noise of log p(x, z).

    Args:
      key, log_joint, q, num_samples: as in ``elbo`` (pathwise gradients; H(q) analytic).

    Returns:
      Scalar estimate in nats.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    _checks.proposal_and_model(key, log_joint, q, pathwise="reparam")
    z, _ = _draw(key, q, num_samples)
    return _checks.finite_result(
        jnp.mean(_log_joints(log_joint, z)) + _analytic(lambda: q.entropy(), "q's entropy",
                                                        "jlvm.elbo"), "elbo_with_entropy")


def elbo_with_kl(key: jax.Array, log_likelihood: LogJoint, q: Any, prior: Any,
                 num_samples: int = 1) -> jax.Array:
    """ELBO in its KL form: ``(1/K) sum_k log p(x | z_k) - KL(q || p(z))``, KL analytic.

    The autoencoder reading: expected reconstruction log-likelihood minus a KL to the prior.

    Args:
      key, num_samples: as in ``elbo`` (gradients are pathwise).
      log_likelihood: ``z -> log p(x | z)``, z: ``[*event]`` -> scalar.
      q, prior: distrax distributions over the same z with a registered KL (e.g. Gaussians).

    Returns:
      Scalar estimate in nats.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    _checks.proposal_and_model(key, log_likelihood, q, name="log_likelihood", pathwise="reparam")
    _checks.scalar_distribution(prior, "prior")
    if tuple(q.event_shape) != tuple(prior.event_shape):
        raise ValueError(f"q and prior must be distributions over the same z: event shapes "
                         f"{tuple(q.event_shape)} and {tuple(prior.event_shape)}.")
    z, _ = _draw(key, q, num_samples)

    def kl():
        with jax.numpy_rank_promotion("allow"):
            return q.kl_divergence(prior)

    return _checks.finite_result(jnp.mean(_log_joints(log_likelihood, z)) - _analytic(
        kl, f"KL({type(q).__name__} || {type(prior).__name__})",
        "jlvm.elbo or jlvm.elbo_with_entropy with log p(x, z)"), "elbo_with_kl")


def _pathwise(grad_estimator: str) -> str | None:
    """The estimators that differentiate through z: they need a continuous q (the score
    function and DisARM never differentiate a draw)."""
    return None if grad_estimator in ("score_function", "disarm") else grad_estimator


def _analytic(compute: Callable[[], jax.Array], what: str, instead: str) -> jax.Array:
    """A closed-form term of an ELBO form; ValueError where distrax has none."""
    try:
        return compute()
    except NotImplementedError:
        raise ValueError(f"{what} has no closed form in distrax; use {instead}, which "
                         "estimates it from the draws.") from None


def importance_log_weights(key: jax.Array, log_joint: LogJoint, q: Any,
                           num_samples: int) -> jax.Array:
    """Importance log-weights ``log p(x, z_k) - log q(z_k)``, z_k ~ q: for diagnostics, plots.

    Args:
      key, log_joint, q: as in ``elbo``.
      num_samples: K >= 1.

    Returns:
      ``[K]`` log-weights; -inf where p(x, z_k) = 0.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    _checks.proposal_and_model(key, log_joint, q)
    z, log_q = _draw(key, q, num_samples)
    return _checks.finite_result(_log_joints(log_joint, z) - log_q, "importance_log_weights",
                                 allow_inf=True)


def effective_sample_size(log_weights: jax.Array) -> jax.Array:
    """Kish's effective sample size of importance weights, from their logs.

    ``ESS = (sum_k w_k)^2 / sum_k w_k^2`` in [1, K]; near 1 means one draw dominates and
    the importance sampling estimate is unreliable. Computed from log-weights shifted by
    their maximum, so adding a constant to every log-weight changes nothing (equal
    log-weights give K whether they are -1e30 or 1e6). Infinite weights dominate every
    finite one and count as equals (ESS = their number); if every weight is 0 there is no
    effective sample (ESS = 0).

    Args:
      log_weights: ``[K]`` real, K >= 1 (a concrete NaN is a ``ValueError``).

    Returns:
      Scalar ESS, in [1, K], or as above for infinite or all-zero weights.
    """
    log_weights = _checks.float_array(log_weights, "log_weights")
    if log_weights.ndim != 1 or log_weights.shape[0] < 1:
        raise ValueError(
            f"log_weights must have shape [K] with K >= 1, got {tuple(log_weights.shape)}."
        )
    top = jnp.max(log_weights)
    shifted = log_weights - jnp.where(jnp.isfinite(top), top, 0.0)
    finite_case = jnp.exp(2.0 * jax.nn.logsumexp(shifted) - jax.nn.logsumexp(2.0 * shifted))
    infinite = jnp.sum(jnp.isposinf(log_weights)).astype(log_weights.dtype)
    if _checks.is_concrete(log_weights) and bool(jnp.any(jnp.isnan(log_weights))):
        raise ValueError("log_weights hold NaN: a weight that is not a number has no "
                         "effective sample size.")
    return jnp.where(infinite > 0, infinite,
                     jnp.where(jnp.isneginf(top), jnp.zeros_like(top), finite_case))


def _chunked_logsumexp(log_values: Callable[[jax.Array], jax.Array], count: int,
                       chunk_size: int | None) -> jax.Array:
    """logsumexp_i log_values(i) over i = 0..count-1, chunk by chunk.

    ``log_values`` maps a vector of indices [n] to their terms [n]. A running (max, scaled
    sum) pair keeps only one chunk's terms, and one chunk's indices, in memory; the result
    is the same sum as one logsumexp over everything.
    """
    if chunk_size is None or chunk_size >= count:
        return jax.nn.logsumexp(log_values(jnp.arange(count)))
    num_chunks = -(-count // chunk_size)

    def body(carry, chunk):
        running_max, running_sum = carry
        indices = chunk * chunk_size + jnp.arange(chunk_size)
        # the last chunk's surplus indices repeat the last term and are masked out
        values = jnp.where(indices < count, log_values(jnp.minimum(indices, count - 1)),
                           -jnp.inf)
        new_max = jnp.maximum(running_max, jnp.max(values))
        # while every term so far is -inf (p = 0), shift by 0 rather than by -inf
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        running_sum = (running_sum * jnp.exp(running_max - shift)
                       + jnp.sum(jnp.exp(values - shift)))
        return (new_max, running_sum), None

    dtype = jax.eval_shape(log_values, jnp.arange(chunk_size)).dtype
    start = (jnp.array(-jnp.inf, dtype), jnp.array(0.0, dtype))
    (final_max, final_sum), _ = jax.lax.scan(body, start, jnp.arange(num_chunks))
    shift = jnp.where(jnp.isfinite(final_max), final_max, 0.0)
    return shift + jnp.log(final_sum)


def log_marginal_is(key: jax.Array, log_joint: LogJoint, q: Any, num_samples: int, *,
                    chunk_size: int | None = None) -> jax.Array:
    """Importance sampling estimate of log p(x).

    ``log (1/K) sum_k p(x, z_k) / q(z_k)``, z_k ~ q. The average inside the log is
    unbiased for p(x); its log is consistent for log p(x) (biased low for finite K).

    Args:
      key, log_joint, q: as in ``elbo``.
      num_samples: K >= 1.
      chunk_size: if given, the K draws are made and summed ``chunk_size`` at a time with
        a running logsumexp, so memory is O(chunk_size) whatever K is. The estimator, and
        for a given key the draws themselves, are the same with or without chunking.

    Returns:
      Scalar estimate in nats.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    if chunk_size is not None:
        chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    _checks.proposal_and_model(key, log_joint, q)

    def log_weights(indices):
        z, log_q = _gradients.draw_with_keys(_gradients.draw_keys(key, indices), q)
        return _log_joints(log_joint, z) - log_q

    total = _chunked_logsumexp(log_weights, num_samples, chunk_size)
    return _checks.finite_result(total - math.log(num_samples), "log_marginal_is")


def _support(support: Any, log_joint: LogJoint) -> tuple[jax.Array, int]:
    """support as an array of real or integer latent values with at least one row, and
    checked against ``log_joint`` on its first row (``jax.eval_shape``; nothing runs)."""
    if isinstance(support, (str, bytes)):
        raise TypeError(f"support must be an array of latent values, got {support!r}.")
    try:
        support = jnp.asarray(support)
    except (TypeError, ValueError) as error:
        raise TypeError(f"support must be an array of latent values, got "
                        f"{type(support).__name__} ({error}).") from None
    if not (jnp.issubdtype(support.dtype, jnp.integer) or jnp.issubdtype(support.dtype,
                                                                          jnp.floating)
            or support.dtype == jnp.bool_):
        raise TypeError(f"support must hold integer or real latent values, got dtype "
                        f"{support.dtype}.")
    if support.ndim < 1 or support.shape[0] < 1:
        raise ValueError(
            "support must be an array whose leading axis enumerates latent values and has at "
            f"least one row, got shape {tuple(support.shape)}."
        )
    _checks.model_output(log_joint, jax.ShapeDtypeStruct(support.shape[1:], support.dtype),
                         "log_joint", f"one row of support (shape {tuple(support.shape[1:])}, "
                         f"dtype {support.dtype})")
    size = int(support.shape[0])
    if _checks.is_concrete(support) and size <= MAX_CHECKED_SUPPORT:
        rows = np.asarray(support).reshape(size, -1)
        if np.unique(rows, axis=0).shape[0] != size:
            raise ValueError("support has duplicate rows: each latent value must appear once "
                             "(a repeated value would be counted twice).")
    return support, size


def log_marginal_naive(key: jax.Array, log_joint: LogJoint, support: jax.Array,
                       num_samples: int) -> jax.Array:
    """Naive Monte Carlo with the uniform proposal over a finite support.

    ``log|Z| + log (1/K) sum_k p(x, z_k)``, z_k uniform over the rows of ``support``
    (with replacement). Unbiased for p(x) but, when few z explain x, its variance is huge:
    uniform draws almost never hit the likely completions.

    Args:
      key: PRNG key.
      log_joint: ``z -> log p(x, z)``.
      support: ``[|Z|, *event]`` every latent value, one per row.
      num_samples: K >= 1.

    Returns:
      Scalar estimate in nats.
    """
    num_samples = _checks.positive_int(num_samples, "num_samples")
    _checks.prng_key(key)
    support, size = _support(support, log_joint)
    rows = jax.random.randint(key, (num_samples,), 0, size)
    log_p = _log_joints(log_joint, support[rows])
    return _checks.finite_result(
        math.log(size) + jax.nn.logsumexp(log_p) - math.log(num_samples), "log_marginal_naive")


def log_marginal_exact(log_joint: LogJoint, support: jax.Array, *,
                       chunk_size: int | None = None) -> jax.Array:
    """Exact log p(x) by enumeration: ``logsumexp_z log p(x, z)`` over every row of support.

    Args:
      log_joint: ``z -> log p(x, z)``.
      support: ``[|Z|, *event]`` every latent value, one per row (e.g. ``binary_support(n)``).
      chunk_size: evaluate that many rows at a time (running logsumexp) for large supports.

    Returns:
      Scalar log p(x) in nats.
    """
    support, size = _support(support, log_joint)
    if chunk_size is not None:
        chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    total = _chunked_logsumexp(lambda rows: _log_joints(log_joint, support[rows]), size,
                               chunk_size)
    return _checks.finite_result(total, "log_marginal_exact")


def binary_support(num_bits: int, dtype: Any = jnp.float32) -> jax.Array:
    """Every bit pattern of length ``num_bits``, one per row.

    Row i is the binary expansion of i, most significant bit first (row 0 all zeros,
    row 2**n - 1 all ones).

    Args:
      num_bits: n >= 0, at most ``MAX_SUPPORT_BITS`` (24; more is a ``ValueError``).
      dtype: integer, real or boolean (float32 by default: models multiply by z).

    Returns:
      ``[2**num_bits, num_bits]`` 0/1 values in ``dtype``.
    """
    num_bits = _checks.nonnegative_int(num_bits, "num_bits")
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy/JAX dtype, got {dtype!r}.") from None
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
            or dtype == jnp.bool_):
        raise TypeError(f"dtype must be an integer, real or boolean dtype, got {dtype}.")
    if num_bits > MAX_SUPPORT_BITS:
        raise ValueError(
            f"num_bits must be <= {MAX_SUPPORT_BITS} (2**num_bits rows are materialized), "
            f"got {num_bits}; use importance sampling for larger latent spaces."
        )
    index = jnp.arange(2**num_bits, dtype=jnp.int32)[:, None]
    shifts = jnp.arange(num_bits - 1, -1, -1, dtype=jnp.int32)[None, :]
    return ((index >> shifts) & 1).astype(dtype)


def enumerable_support(distribution: Any) -> jax.Array | None:
    """Every value of z under ``distribution``, one per row, where its support is finite.

    Args:
      distribution: a distrax distribution over one z (batch_shape ()).

    Returns:
      For a factorized Bernoulli over L bits z ``[*event]`` (``distrax.Independent`` of a
      ``distrax.Bernoulli``, or one bit), ``binary_support(L)`` as ``[2**L, *event]``
      (float32). For a ``distrax.Categorical`` over K values, ``[K]`` indices; for n
      independent ones (``distrax.Independent``, event ``[*event]``), every combination,
      ``[K**n, *event]`` int32 indices in lexicographic order. More rows than
      ``2**MAX_SUPPORT_BITS`` is a ``ValueError`` (use importance sampling). Anything
      else gives None.
    """
    import distrax

    inner = distribution
    while isinstance(inner, distrax.Independent):
        inner = inner.distribution
    if tuple(getattr(distribution, "batch_shape", (None,))) != ():
        return None
    if not isinstance(inner, distrax.Categorical | distrax.Bernoulli):
        return None
    event = tuple(distribution.event_shape)
    coordinates = math.prod(event)
    values = inner.num_categories if isinstance(inner, distrax.Categorical) else 2
    if coordinates * math.log2(values) > MAX_SUPPORT_BITS:
        raise ValueError(f"z has {coordinates} coordinates of {values} values each: "
                         f"{values}**{coordinates} values are too many to enumerate (at most "
                         f"2**{MAX_SUPPORT_BITS}); use importance sampling.")
    if isinstance(inner, distrax.Bernoulli):
        return binary_support(coordinates).reshape((2**coordinates, *event))
    # every combination of the n coordinates' indices, the last varying fastest
    grids = jnp.meshgrid(*[jnp.arange(values, dtype=jnp.int32)] * coordinates, indexing="ij")
    return jnp.stack([g.reshape(-1) for g in grids], axis=-1).reshape((-1, *event))
