"""Partially observed data: missing entries of x treated as latent variables.

With a model of the full joint p(x) (e.g. ``models.autoregressive``), hide the entries
where ``mask`` is False: they become a latent z, the rest is the observation, and

    log p(x_obs) = log sum_z p(x_obs, z)

is estimated with the ordinary estimators (``jlvm.log_marginal_exact`` over
``jlvm.binary_support(M)`` when 2**M terms fit, ``log_marginal_naive``, ``log_marginal_is``,
``elbo``). The mask is static: it fixes which entries z holds and so z's shape [M].

For models whose likelihood factorizes over pixels given another latent (the VAE decoders)
no enumeration is needed: leaving the missing pixels out of the product marginalizes them
exactly (``models.vae.log_likelihood(..., mask=mask)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jlvm import _checks, estimators


def check_mask(mask: Any, data_dim: int, *, need_missing: bool = True) -> np.ndarray:
    """Validates a concrete observation mask, True where observed.

    The rules of every mask in jlvm (``vae.log_joint``, ``evaluate``): the shape ``[D]``,
    0/1 values, something observed; here also, with ``need_missing``, something missing,
    and the mask must be concrete since it fixes the shape of the latent z. Raises
    ``ValueError`` naming ``mask``.

    Args:
      mask: ``[D]`` booleans (or 0/1 numbers), concrete (not traced).
      data_dim: D, the length of x.
      need_missing: also require at least one missing entry (mask False).

    Returns:
      The mask as a NumPy bool array ``[D]``.
    """
    if not _checks.is_concrete(mask):
        raise ValueError("mask must be concrete (a NumPy or JAX array outside jit): it fixes "
                         "the shape of the latent z.")
    mask = np.asarray(_checks.observation_mask(mask, data_dim))
    if need_missing and mask.all():
        raise ValueError("mask leaves nothing missing: use the model's own log-likelihood.")
    return mask


def complete(x: jax.Array, z: jax.Array, mask: Any) -> jax.Array:
    """The full vector: observed entries from x, missing ones (in index order) from z.

    Args:
      x: ``[D]`` real; its entries where ``mask`` is False are ignored.
      z: ``[M]`` one value per missing entry (M: the number of False in ``mask``).
      mask: ``[D]`` concrete, True where observed (``check_mask``).

    Returns:
      ``[D]`` in x's dtype.
    """
    x = _checks.float_array(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x must have shape [D], got {x.shape}.")
    mask = check_mask(mask, x.shape[0])
    missing = np.flatnonzero(~mask)
    z = _checks.float_array(z, "z") if not hasattr(z, "dtype") else jnp.asarray(z)
    _checks.shape_is(z, "z", (missing.size,), "[M] (one value per missing entry)")
    _checks.finite_if_concrete(z, "z")
    return x.at[missing].set(z.astype(x.dtype))


def log_joint_with_missing(log_prob: Callable[[jax.Array], jax.Array], x: jax.Array,
                           mask: Any) -> Callable[[jax.Array], jax.Array]:
    """``z -> log p(x_obs, z)`` from a model of the full vector, ``log_prob(x_full)``.

    Args:
      log_prob: ``x [D] -> log p(x)`` of the fully observed model, e.g.
        ``functools.partial(autoregressive.log_prob, params)``.
      x: ``[D]`` an observation; its entries where ``mask`` is False are ignored.
      mask: ``[D]`` concrete booleans, True where observed.

    Returns:
      The function ``z -> log p(x_obs, z)``, z ``[M]`` the missing entries in index order.
    """
    if not callable(log_prob):
        raise TypeError(f"log_prob must be a function x [D] -> log p(x), got "
                        f"{type(log_prob).__name__}.")
    x = _checks.float_array(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x must have shape [D], got {x.shape}.")
    mask = check_mask(mask, x.shape[0])
    if _checks.is_concrete(x) and not np.all(np.isfinite(np.asarray(x)[mask])):
        raise ValueError("x holds NaN or infinite values at observed entries (mask True).")
    return lambda z: log_prob(complete(x, z, mask))


def mean_field_bernoulli(logits: jax.Array) -> distrax.Independent:
    """Mean-field Bernoulli ``q(z; phi) = prod_i phi_i^{z_i} (1 - phi_i)^{1 - z_i}``.

    phi = sigmoid(logits); one binary z.

    Args:
      logits: ``[M]`` real.

    Returns:
      ``distrax.Independent`` over z ``[M]`` (batch_shape ()).
    """
    return distrax.Independent(distrax.Bernoulli(logits=logits), 1)


class MeanFieldFit(NamedTuple):
    """What ``fit_mean_field`` gives for one data point.

    Attributes:
      logits: ``[M]``, the fitted variational logits (phi = sigmoid(logits)).
      elbo: ``[num_steps]``, each step's ELBO estimate, taken before its update.
    """

    logits: jax.Array
    elbo: jax.Array


def _fit_mean_field(key, log_joint, logits, num_steps, num_samples, learning_rate):
    optimizer = optax.adam(learning_rate)

    def negative_elbo(current, step_key):
        return -estimators.elbo(step_key, log_joint, mean_field_bernoulli(current), num_samples,
                                grad_estimator="score_function")

    def step(carry, step_key):
        current, opt_state = carry
        value, grads = jax.value_and_grad(negative_elbo)(current, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, current)
        return (optax.apply_updates(current, updates), opt_state), -value

    (logits, _), trace = jax.lax.scan(step, (logits, optimizer.init(logits)),
                                      jax.random.split(key, num_steps))
    return MeanFieldFit(logits, trace)


def fit_mean_field(key: jax.Array, log_joint: Callable[[jax.Array], jax.Array], num_latent: int,
                   *, num_steps: int = 300, num_samples: int = 16, learning_rate: float = 0.1,
                   init_logits: jax.Array | None = None) -> MeanFieldFit:
    """Stochastic variational inference for ONE data point's mean-field Bernoulli q.

    Maximizes ELBO(phi) = E_q[log p(x, z) - log q(z; phi)] by Adam on the score-function
    gradient (leave-one-out baseline over ``num_samples`` draws); z is discrete, so the
    reparameterization trick does not apply. The steps run as one ``lax.scan``; wrap the
    call in ``jax.jit`` and ``jax.vmap`` over data points (one phi each).

    Args:
      key: PRNG key.
      log_joint: ``z [M] -> log p(x, z)``, e.g. from ``log_joint_with_missing``.
      num_latent: M, the number of binary latents.
      num_steps: Adam steps.
      num_samples: draws per step, >= 2 (the baseline leaves one out).
      learning_rate: Adam's step size.
      init_logits: ``[M]`` starting logits; zeros (phi = 0.5) by default.

    Returns:
      ``MeanFieldFit(logits, elbo)`` with the fitted logits ``[M]`` and the ELBO estimate of
      each step, before its update, ``[num_steps]``.
    """
    _checks.prng_key(key)
    num_latent = _checks.positive_int(num_latent, "num_latent")
    learning_rate = _checks.positive_number(learning_rate, "learning_rate")
    num_steps = _checks.positive_int(num_steps, "num_steps")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError("num_samples must be >= 2: the leave-one-out baseline needs another "
                         f"draw, got {num_samples}.")
    logits = (jnp.zeros(num_latent) if init_logits is None
              else _checks.float_array(init_logits, "init_logits"))
    _checks.shape_is(logits, "init_logits", (num_latent,), "[M]")
    _checks.finite_if_concrete(logits, "init_logits")
    _checks.model_output(log_joint, jax.ShapeDtypeStruct((num_latent,), jnp.int32), "log_joint",
                         f"one z of {num_latent} bits")
    return _fit_mean_field(key, log_joint, logits, num_steps, num_samples, float(learning_rate))


# -------------------------------------------- missing binary entries, masks under jit


def completion_model(init: Callable[[jax.Array], Any],
                     log_prob: Callable[[Any, jax.Array], jax.Array]) -> Any:
    """A ``jlvm.Model`` whose latent z is the missing entries of x.

    Built from a model of the full binary vector::

        log_joint(params, x, z, mask) = log p(x_obs, z) = log_prob(params, where(mask, x, z))

    z: ``[D]`` 0/1, of which only the missing entries (mask False) are read; without a mask
    every entry is observed and z is not read. Unlike ``log_joint_with_missing`` the mask
    may vary from row to row under ``vmap``: this is the form the learners
    (``inference.missing_svi``, ``inference.missing_exact``) take.

    Args:
      init: ``key -> params`` of the full model.
      log_prob: ``(params, x_full) -> log p(x)``, x_full ``[D]`` (``autoregressive.log_prob``).

    Returns:
      ``Model(init, log_joint)`` with the ``log_joint`` above (a z not of x's shape is a
      ``ValueError``).
    """
    from jlvm.models.protocol import Model

    if not callable(init) or not callable(log_prob):
        raise TypeError(f"init and log_prob must be functions (key -> params and "
                        f"(params, x [D]) -> log p(x)), got {type(init).__name__} and "
                        f"{type(log_prob).__name__}.")

    def log_joint(params, x, z, mask=None):
        x = jnp.asarray(x)
        if mask is None:
            return log_prob(params, x)
        z = jnp.asarray(z, x.dtype)
        if z.shape != x.shape:
            raise ValueError(f"z must have x's shape {x.shape} (one value per entry, read "
                             f"where the mask is False), got {z.shape}.")
        return log_prob(params, jnp.where(mask, x, z))

    return Model(init, log_joint)


def log_marginal_enumerated(log_joint: Callable[[jax.Array], jax.Array], x: jax.Array,
                            mask: jax.Array, max_missing: int) -> jax.Array:
    """Exact log p(x_obs) by enumeration, for any m <= ``max_missing`` missing entries.

    ``log sum_z p(x_obs, z)`` over the 2^m completions z of x's m missing entries; the mask
    may be traced (rows of a ``vmap`` with different masks).

    Every completion is counted once: the 2^max_missing patterns fill the first
    ``max_missing`` missing positions, and patterns that set a bit past the m-th are left
    out. A row with m > max_missing gives NaN under jit (an error when the mask is
    concrete), never a partial sum.

    Args:
      log_joint: ``z [D] -> log p(x_obs, z)`` with x and the parameters bound, z read only
        where ``mask`` is False (e.g. ``functools.partial(completion_model(...).log_joint,
        params, x, mask=mask)``).
      x: ``[D]`` the observation (anything at missing entries).
      mask: ``[D]`` bool, True = observed.
      max_missing: M, a Python int <= ``estimators.MAX_SUPPORT_BITS``.

    Returns:
      Scalar log p(x_obs) in nats; NaN where m > max_missing (under jit).
    """
    max_missing = _checks.positive_int(max_missing, "max_missing")
    x = _checks.float_array(x, "x")
    if x.ndim != 1:
        raise ValueError(f"x must have shape [D], got {x.shape}.")
    mask = _checks.observation_mask(mask, x.shape[0])
    if _checks.is_concrete(mask) and int(np.sum(~np.asarray(mask))) > max_missing:
        raise ValueError(f"mask leaves {int(np.sum(~np.asarray(mask)))} entries missing, more "
                         f"than max_missing={max_missing}: 2^m completions are summed.")
    max_missing = min(max_missing, x.shape[0])
    support = estimators.binary_support(max_missing)            # [2^M, M]
    slots = jnp.argsort(mask, stable=True)[:max_missing]        # missing entries first
    count = x.shape[0] - jnp.sum(mask)
    used = jnp.arange(max_missing) < count
    once = jnp.all((support == 0) | used[None, :], axis=1)      # no bit set past the m-th
    base = jnp.where(mask, x, 0.0)

    def one(bits):
        return log_joint(base.at[slots].set(jnp.where(used, bits, base[slots])))

    values = jax.vmap(one)(support)
    total = jax.nn.logsumexp(jnp.where(once, values, -jnp.inf))
    return jnp.where(count <= max_missing, total, jnp.nan)


def masked_mean_field_bernoulli(logits: jax.Array, mask: jax.Array) -> distrax.Independent:
    """Mean-field Bernoulli q over the MISSING entries of one z ``[D]``.

    ``q(z; phi) = prod over missing d of Bernoulli(z_d; sigmoid(logits_d))``: observed
    entries (mask True) are a point mass at 0 that adds nothing to log q and takes no
    gradient, so q's entropy and score are those of the missing entries alone.

    Args:
      logits: ``[D]`` real, read where ``mask`` is False.
      mask: ``[D]`` bool, True = observed (may be traced).

    Returns:
      ``distrax.Independent`` over z ``[D]`` (batch_shape ()).
    """
    return distrax.Independent(distrax.Bernoulli(logits=jnp.where(mask, -_POINT_MASS,
                                                                  logits)), 1)


# a logit whose Bernoulli is 0 with probability 1 - e^-1e4: exactly 0 and log q = 0 in float32
_POINT_MASS = 1e4


# ----------------------------------------------------------------------- imputation


class Imputation(NamedTuple):
    """What ``impute`` gives for one x ``[D]``.

    Attributes:
      mean: ``[D]``, x with every missing entry replaced by E[x_d | x_obs] (observed entries
        as given).
      draws: ``[M, D]`` draws x ~ p(x | x_obs) (sampling importance resampling; observed
        entries as given), or None where ``num_draws`` M is 0.
      effective_sample_size: the scalar ESS of the K normalized importance weights (how
        many of the draws z_k the estimate rests on).
    """

    mean: jax.Array
    draws: jax.Array | None
    effective_sample_size: jax.Array


def impute(key: jax.Array, model: Any, params: Any, x: jax.Array, mask: Any,
           num_samples: int = 1000, *, num_draws: int = 0, q: Any = None,
           chunk_size: int = 500) -> Imputation:
    """Imputes the missing entries of ONE x under a latent variable model.

    Self-normalized importance sampling with z_k ~ q(z | x_obs) (the model's encoder, or
    ``q``): w_k = p(x_obs, z_k) / q(z_k | x_obs), and::

        E[x_mis | x_obs] = E_{p(z | x_obs)} E[x_mis | z] ~ sum_k w_k E[x_mis | z_k] / sum_k w_k,

    E[x | z] being the mean of ``model.decoder(params, z)``; the K draws are summed
    ``chunk_size`` at a time (a running, shift-invariant logsumexp). With ``num_draws`` M,
    multiple imputation: z resampled in proportion to w (sampling importance resampling),
    then x_mis ~ p(x_mis | z).

    Args:
      key: PRNG key.
      model: a ``jlvm.Model`` with ``decoder`` (and ``encoder`` unless ``q`` is given);
        its functions take the mask.
      params: the model's parameters.
      x: ``[D]``, anything (NaN included) at missing entries.
      mask: ``[D]`` bool, True = observed.
      num_samples: K >= 1 draws of q.
      num_draws: M >= 0 draws of multiple imputation.
      q: a proposal over z to use instead of the encoder's (e.g. a q fitted per example).
      chunk_size: draws summed at a time, to bound memory (capped at K).

    Returns:
      ``Imputation(mean, draws, effective_sample_size)`` with mean ``[D]``, draws ``[M, D]``
      (None where M = 0) and the scalar ESS of the K weights (see ``Imputation``).
    """
    from jlvm import gradients
    from jlvm.models import protocol

    protocol.check(model, "decoder", *(("encoder",) if q is None else ()))
    _checks.prng_key(key)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    chunk_size = min(_checks.positive_int(chunk_size, "chunk_size"), num_samples)
    num_draws = _checks.nonnegative_int(num_draws, "num_draws")
    x = _checks.float_array(x, "x")
    mask = _checks.observation_mask(mask, x.shape[0])
    x = jnp.where(mask, x, 0.0)  # a NaN at a missing entry reaches nothing
    if q is None:
        q = protocol.encoder(model, params, x, mask)
    _check_decoder(model, params, q, x)
    draw_key, resample_key = jax.random.split(key)

    def chunk(indices):
        z, log_q = gradients.draw_with_keys(gradients.draw_keys(draw_key, indices), q)
        log_w = jax.vmap(lambda zk: protocol.log_joint(model, params, x, zk, mask))(z) - log_q
        means = jax.vmap(lambda zk: model.decoder(params, zk).mean())(z)
        # the last chunk's indices past K are not draws: weight 0
        return jnp.where(indices < num_samples, log_w, -jnp.inf), means

    def accumulate(carry, indices):  # (max log w, sum e^{log w - max}, weighted mean sum)
        top, total, weighted = carry
        log_w, means = chunk(indices)
        new_top = jnp.maximum(top, jnp.max(log_w))
        # while every weight so far is 0 (log w = -inf), shift by 0: -inf - -inf is NaN
        shift = jnp.where(jnp.isfinite(new_top), new_top, 0.0)
        scale, weights = jnp.exp(top - shift), jnp.exp(log_w - shift)
        # a draw of weight 0 adds 0, even where its E[x | z] is not a number
        means = jnp.where(weights[:, None] > 0, means, 0.0)
        return (new_top, total * scale + jnp.sum(weights),
                weighted * scale + weights @ means), log_w

    chunks = -(-num_samples // chunk_size)
    indices = jnp.arange(chunks * chunk_size).reshape(chunks, chunk_size)
    start = (jnp.array(-jnp.inf, x.dtype), jnp.zeros((), x.dtype), jnp.zeros_like(x))
    (_, total, weighted), log_w = jax.lax.scan(accumulate, start, indices)
    log_w = log_w.reshape(-1)[:num_samples]
    mean = jnp.where(mask, x, weighted / total)
    draws = None
    if num_draws:
        choose_key, sample_key = jax.random.split(resample_key)
        chosen = jax.random.categorical(choose_key, log_w, shape=(num_draws,))
        # draw k is a function of (draw_key, k): recomputed, not kept
        z, _ = gradients.draw_with_keys(gradients.draw_keys(draw_key, chosen), q)
        samples = jax.vmap(lambda k, zk: _checks.sample(model.decoder(params, zk), k, 1)[0])(
            jax.random.split(sample_key, num_draws), z)
        draws = jnp.where(mask[None], x[None], samples.astype(x.dtype))
    return Imputation(mean, draws, estimators.effective_sample_size(log_w))


def _check_decoder(model: Any, params: Any, q: Any, x: jax.Array) -> None:
    """``model.decoder(params, z)`` at a draw of q must be a distrax distribution over x
    [D] (its mean is E[x | z]): an array would pass its own ``mean()``, one number, as
    every entry's imputation. Traced only (``jax.eval_shape``): nothing runs."""
    import distrax

    def check(params, z):
        p = model.decoder(params, z)
        if not isinstance(p, distrax.Distribution):
            raise TypeError(f"model.decoder(params, z) must return a distrax distribution "
                            f"p(x | z) over x [D] (its mean is E[x | z]), got "
                            f"{type(p).__name__}.")
        if jnp.shape(p.mean()) != x.shape:
            raise ValueError(f"model.decoder(params, z) must be a distribution over x of "
                             f"shape {x.shape}; its mean has shape {jnp.shape(p.mean())}.")
        return jnp.zeros(())

    z = jax.eval_shape(lambda: _checks.sample(q, jax.random.PRNGKey(0), 1)[0])
    jax.eval_shape(check, params, z)
