"""NADE: a fully observed autoregressive model of binary vectors (Larochelle & Murray, 2011).

    p(x) = prod_d Bernoulli(x_d; sigmoid(b_d + V_d . h_d)),   h_d = sigmoid(c + W[:, :d] x_{<d})

Every pixel is observed, so log p(x) is exact and training is plain maximum likelihood.
It is the "model of the joint distribution" of the missing-pixels example: hide some pixels
and they become latent variables whose sum must be taken (``jlvm.missing``).
All functions take ONE x: [D] with 0/1 values, in raster order.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jlvm import _checks


class Params(NamedTuple):
    """A NADE's weights (the module docstring's formula).

    Attributes:
      W: ``[H, D]``, the input weights: h_d = sigmoid(c + W[:, :d] x_{<d}).
      c: ``[H]``, the hidden bias.
      V: ``[D, H]``, the output weights: row d maps h_d to pixel d's logit.
      b: ``[D]``, the output bias: logit p(x_d = 1 | x_{<d}) = b_d + V_d . h_d.
    """

    W: jax.Array
    c: jax.Array
    V: jax.Array
    b: jax.Array


def init(key: jax.Array, data_dim: int, hidden_dim: int = 64) -> Params:
    """Small random weights (scale 1/sqrt(fan-in)); biases zero.

    Args:
      key: PRNG key.
      data_dim: D >= 1, a Python int.
      hidden_dim: H >= 1, a Python int.

    Returns:
      ``Params`` with W ``[H, D]``, c ``[H]``, V ``[D, H]``, b ``[D]``.
    """
    _checks.prng_key(key)
    data_dim = _checks.positive_int(data_dim, "data_dim")
    hidden_dim = _checks.positive_int(hidden_dim, "hidden_dim")
    key_w, key_v = jax.random.split(key)
    return Params(
        W=jax.random.normal(key_w, (hidden_dim, data_dim)) / jnp.sqrt(data_dim),
        c=jnp.zeros(hidden_dim),
        V=jax.random.normal(key_v, (data_dim, hidden_dim)) / jnp.sqrt(hidden_dim),
        b=jnp.zeros(data_dim),
    )


def _check_params(params: Any) -> int:
    """The NADE's D, after checking that its arrays fit together."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be an autoregressive.Params(W, c, V, b), got "
                        f"{type(params).__name__}.")
    _checks.numeric_leaves(params, "params")
    if jnp.ndim(params.W) != 2:
        raise ValueError(f"params.W must have shape [H, D], got {jnp.shape(params.W)}.")
    hidden, data_dim = jnp.shape(params.W)
    for name, shape in (("c", (hidden,)), ("V", (data_dim, hidden)), ("b", (data_dim,))):
        if jnp.shape(getattr(params, name)) != shape:
            raise ValueError(f"params.{name} must have shape {shape} to fit W [H, D]="
                             f"{(hidden, data_dim)}, got {jnp.shape(getattr(params, name))}.")
    for name in Params._fields:
        _checks.finite_if_concrete(getattr(params, name), f"params.{name}")
    return data_dim


def conditional_logits(params: Params, x: jax.Array) -> jax.Array:
    """The logits ``logit p(x_d = 1 | x_{<d})`` for every d, all at once (teacher forcing).

    The hidden pre-activations a_d = c + sum_{j<d} W[:, j] x_j are an exclusive cumulative
    sum, so the whole vector costs O(D H) rather than O(D^2 H).

    Args:
      params: ``Params``.
      x: one observation ``[D]`` (0/1 values; not checked here).

    Returns:
      Logits ``[D]``.
    """
    x = _checks.float_array(x, "x")
    _checks.shape_is(x, "x", (_check_params(params),), "[D]")
    contributions = x[:, None] * params.W.T  # [D, H]: x_j W[:, j]
    exclusive = jnp.cumsum(contributions, axis=0) - contributions
    hidden = jax.nn.sigmoid(params.c[None, :] + exclusive)
    return params.b + jnp.sum(params.V * hidden, axis=1)


def log_prob(params: Params, x: jax.Array) -> jax.Array:
    """Exact log likelihood of one binary vector.

    ``log p(x) = sum_d [x_d l_d - softplus(l_d)]``, l = ``conditional_logits(params, x)``.

    Args:
      params: ``Params``.
      x: one observation ``[D]`` in {0, 1}; an x with another value has probability 0:
        -inf, eagerly and under jit alike (NaN stays NaN).

    Returns:
      Scalar log p(x) in nats.
    """
    logits = conditional_logits(params, x)
    value = jnp.sum(x * logits - jax.nn.softplus(logits))
    # behind a barrier: where x is a constant of the program (data a jitted closure holds)
    # XLA would otherwise fold this test over every row at compile time, seconds a program
    seen = jax.lax.optimization_barrier(x)
    binary = jnp.all((seen == 0) | (seen == 1))
    return jnp.where(binary | jnp.any(jnp.isnan(seen)), value, -jnp.inf)


def sample(key: jax.Array, params: Params, n: int) -> jax.Array:
    """Ancestral sampling, one pixel at a time in raster order.

    Args:
      key: PRNG key.
      params: ``Params``.
      n: number of draws >= 1, a Python int.

    Returns:
      ``[n, D]`` float32 array of 0/1 values.
    """
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    data_dim = _check_params(params)

    def one(key):
        def step(carry, inputs):
            activation, = carry
            d, pixel_key = inputs
            logit = params.b[d] + params.V[d] @ jax.nn.sigmoid(activation)
            pixel = jax.random.bernoulli(pixel_key, jax.nn.sigmoid(logit)).astype(jnp.float32)
            return (activation + pixel * params.W[:, d],), pixel

        keys = jax.random.split(key, data_dim)
        _, pixels = jax.lax.scan(step, (params.c,), (jnp.arange(data_dim), keys))
        return pixels

    return jax.vmap(one)(jax.random.split(key, n))


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      params: the fitted ``Params``.
      train_log_likelihood: ``[num_steps]``, the mean log p(x) (nats) of each step's
        batch, before its update.
    """

    params: Params
    train_log_likelihood: jax.Array


@functools.partial(jax.jit, static_argnames=("num_steps", "batch_size", "learning_rate"))
def _fit(key, params, X, num_steps, batch_size, learning_rate):
    optimizer = optax.adam(learning_rate)
    batch_log_prob = jax.vmap(log_prob, in_axes=(None, 0))

    def loss(p, batch):
        return -jnp.mean(batch_log_prob(p, batch))

    def step(carry, step_key):
        p, opt_state = carry
        rows = jax.random.choice(step_key, X.shape[0], (batch_size,), replace=False)
        value, grads = jax.value_and_grad(loss)(p, X[rows])
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), -value

    (params, _), trace = jax.lax.scan(step, (params, optimizer.init(params)),
                                      jax.random.split(key, num_steps))
    return FitResult(params, trace)


def fit(key: jax.Array, params: Params, X: jax.Array, *, num_steps: int = 3000,
        batch_size: int = 100, learning_rate: float = 3e-3) -> FitResult:
    """Maximum likelihood by Adam on minibatches, compiled as one ``lax.scan``.

    Args:
      key: PRNG key for the minibatches.
      params: starting parameters (``init``).
      X: ``[N, D]`` training data of 0/1 values.
      num_steps: Adam steps >= 1, a Python int.
      batch_size: rows per step, in [1, N], drawn without replacement within a batch.
      learning_rate: Adam's step size > 0.

    Returns:
      A ``FitResult`` of ``params`` (the fitted ``Params``) and ``train_log_likelihood``
      ``[num_steps]``, the mean log p(x) of each step's batch (before its update).
    """
    _checks.prng_key(key)
    num_steps = _checks.positive_int(num_steps, "num_steps")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    learning_rate = _checks.positive_number(learning_rate, "learning_rate")
    X = _checks.float_array(X, "X").astype(jnp.float32)
    _check_params(params)
    if X.ndim != 2 or X.shape[1] != params.b.shape[0]:
        raise ValueError(f"X must have shape [N, D] with D={params.b.shape[0]}, got {X.shape}.")
    if batch_size > X.shape[0]:
        raise ValueError(f"batch_size must be <= N={X.shape[0]}, got {batch_size}.")
    if _checks.is_concrete(X) and not bool(jnp.all((X == 0) | (X == 1))):
        raise ValueError("X must hold 0/1 values (NADE models binary vectors).")
    return _fit(key, params, X, num_steps, batch_size, float(learning_rate))
