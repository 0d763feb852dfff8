"""Learning a model of binary vectors from incomplete data: the missing entries are latent.

The lecture's algorithm (stochastic variational inference, one phi^i per data point), for a
``jlvm.Model`` whose z is the missing entries of x (``jlvm.missing.completion_model``):

1. take a batch of data points x^i; their missing entries are z^i;
2. for each, ascend ELBO(x^i; theta, phi^i) = E_q[log p(x_obs^i, z; theta) - log q(z; phi^i)]
   in phi^i, q a mean-field Bernoulli over the missing entries and the gradient the score
   function's (z is discrete), until the stopping rule says it has converged;
3. take one optimizer step on theta along grad_theta ELBO(x^i; theta, phi^{i,*}).

``missing_exact`` learns the same model by exact maximum likelihood, sum_i log sum_z
p(x_obs^i, z; theta) over every completion: the oracle where few entries are missing.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jlvm import _checks, estimators
from jlvm import missing as _missing
from jlvm.inference.svi import _check_batch
from jlvm.models import protocol
from jlvm.models.protocol import Model
from jlvm.train import Learner, TrainState, keep_if_finite


class MissingSVIParams(NamedTuple):
    """The parameters ``missing_svi`` learns.

    Attributes:
      model: theta, the model's params.
      logits: ``[N, D]`` (x's dtype), the table of phi^i: q(z; phi^i) = prod over x^i's
        missing d of Bernoulli(z_d; sigmoid(logits[i, d])); the observed entries' logits
        are unused. They start at 0 (1/2), and each visit starts where the last left off.
    """

    model: Any
    logits: jax.Array


def _fit_phi(log_joint, logits, mask, key, *, num_samples, learning_rate, window, tolerance,
             max_windows):
    """phi* for ONE data point: Adam on the score-function ELBO gradient, ``window`` steps
    at a time, until the mean ELBO of a window exceeds the previous window's by no more
    than max(tolerance, 2 standard errors of the difference) -- the ELBO has stopped
    rising by more than its noise -- or ``max_windows`` windows have run.

    Returns (logits*, steps taken, converged before the cap, ELBO at the start, ELBO at
    the end): the two ELBOs from the same draws, so their difference is the gain.
    """
    optimizer = optax.adam(learning_rate)

    def elbo(current, k):
        return estimators.elbo(k, log_joint, _missing.masked_mean_field_bernoulli(current, mask),
                               num_samples, grad_estimator="score_function")

    def one_window(current, opt_state, k):
        def body(carry, step_key):
            current, opt_state = carry
            value, grads = jax.value_and_grad(lambda c: -elbo(c, step_key))(current)
            updates, opt_state = optimizer.update(grads, opt_state, current)
            return (optax.apply_updates(current, updates), opt_state), -value

        (current, opt_state), values = jax.lax.scan(body, (current, opt_state),
                                                    jax.random.split(k, window))
        return current, opt_state, jnp.mean(values), jnp.std(values, ddof=1) / math.sqrt(window)

    def keep_going(carry):
        _, _, _, windows, _, _, done = carry
        return (~done) & (windows < max_windows)

    def body(carry):
        current, opt_state, k, windows, previous, previous_se, _ = carry
        k, window_key = jax.random.split(k)
        current, opt_state, mean, se = one_window(current, opt_state, window_key)
        noise = 2.0 * jnp.sqrt(se**2 + previous_se**2)
        done = mean - previous <= jnp.maximum(tolerance, noise)
        return current, opt_state, k, windows + 1, mean, se, done

    loop_key, eval_key = jax.random.split(key)
    logits = jax.lax.stop_gradient(logits)
    start = (logits, optimizer.init(logits), loop_key, jnp.zeros((), jnp.int32),
             jnp.array(-jnp.inf, logits.dtype), jnp.zeros((), logits.dtype), jnp.array(False))
    fitted, _, _, windows, _, _, done = jax.lax.while_loop(keep_going, body, start)
    return (fitted, windows * window, done, elbo(logits, eval_key), elbo(fitted, eval_key))


def _binary_batch(x, mask) -> None:
    """Concrete batches: 0/1 at the observed entries (under jit they pass unchecked)."""
    if _checks.is_concrete(x) and _checks.is_concrete(mask):
        values, observed = np.asarray(x), np.asarray(mask)
        if not np.all((values[observed] == 0) | (values[observed] == 1)):
            raise ValueError("x must hold 0/1 values at its observed entries (these learners "
                             "treat the missing entries as binary latents).")


def missing_svi(model: Model, optimizer: optax.GradientTransformation, num_data: int, *,
                num_samples: int = 16, inner_learning_rate: float = 0.3, window: int = 20,
                tolerance: float = 0.01, max_inner_steps: int = 500) -> Learner:
    """The lecture's SVI for binary data with missing entries (module docstring).

    Args:
      model: a ``jlvm.Model`` whose ``log_joint(params, x, z, mask)`` reads z [D] (0/1) at
        the missing entries, e.g. ``jlvm.missing.completion_model(init, log_prob)``.
      optimizer: optax optimizer for theta.
      num_data: N, the size of the phi table (data points are addressed by index).
      num_samples: K >= 2 draws per score-function ELBO estimate (the leave-one-out
        baseline needs another draw).
      inner_learning_rate: Adam's step for phi^i (a fresh Adam state per visit; phi^i
        itself starts where the last visit left it, at 1/2 on the first).
      window, tolerance: the stopping rule (``_fit_phi``): windows of ``window`` steps;
        stop when a window's mean ELBO rises by no more than max(``tolerance`` nats, two
        standard errors) over the previous window's. With the defaults the fitted q's
        exact ELBO ends about 0.02 nats below the best of the family (5 missing bits,
        90 fits, the largest shortfall 0.08; ``window=10`` gives 0.04, ``inner_learning_rate
        =0.1`` 0.06): the noise of a constant step, not a count of steps.
      max_inner_steps: the cap on one visit's steps (rounded up to whole windows).

    Returns:
      ``Learner`` whose batches are ``(index [B] int, x [B, D], mask [B, D] bool)``, True
      = observed; ``step`` reports ``loss``, ``elbo`` (at phi*, nats per example),
      ``elbo_before_inner``, ``inner_gain``, ``inner_steps`` and ``inner_steps_max`` (the
      mean and largest over the batch), ``inner_converged`` (the share that stopped before
      the cap) and ``finite``.
    """
    protocol.check(model)
    _checks.optimizer(optimizer)
    num_data = _checks.positive_int(num_data, "num_data")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2: the score function's leave-one-out "
                         f"baseline needs another draw, got {num_samples}.")
    inner_learning_rate = _checks.positive_number(inner_learning_rate, "inner_learning_rate")
    window = _checks.positive_int(window, "window")
    if window < 2:
        raise ValueError(f"window must be >= 2 (a window's standard error needs two steps), "
                         f"got {window}.")
    tolerance = _checks.positive_number(tolerance, "tolerance")
    max_inner_steps = _checks.positive_int(max_inner_steps, "max_inner_steps")
    max_windows = -(-max_inner_steps // window)
    settings = dict(num_samples=num_samples, learning_rate=float(inner_learning_rate),
                    window=window, tolerance=float(tolerance), max_windows=max_windows)

    def checked(batch):
        index, x, mask = _check_batch(batch)
        if mask is None:
            raise TypeError("missing_svi's batches are (index [B], x [B, D], mask [B, D]): "
                            "without a mask nothing is missing and there is no q to fit.")
        _binary_batch(x, mask)
        return index, x, mask

    def init(key: jax.Array, batch) -> TrainState:
        _checks.prng_key(key)
        params_key, state_key = jax.random.split(key)
        theta = model.init(params_key)
        _checks.numeric_leaves(theta, "model.init(key)")
        _, x, mask = checked(batch)
        _check_model(model, theta, x, mask)
        params = MissingSVIParams(theta, jnp.zeros((num_data, x.shape[1]), x.dtype))
        return TrainState(params, optimizer.init(theta), jnp.zeros((), jnp.int32), state_key)

    def step(state: TrainState, batch):
        if not isinstance(state, TrainState) or not isinstance(state.params, MissingSVIParams):
            raise TypeError(f"state must be the TrainState of missing_svi's init, got "
                            f"{type(state).__name__}.")
        index, x, mask = checked(batch)
        x = jnp.where(mask, x, 0.0)  # a NaN at a missing entry reaches nothing
        key, inner_key, theta_key = jax.random.split(state.key, 3)
        params = state.params
        # an index outside [0, N) reads NaN: the loss is not finite and the step not taken
        index = jnp.where((index >= 0) & (index < num_data), index, num_data)
        logits = params.logits.at[index].get(mode="fill", fill_value=jnp.nan)
        fixed = jax.lax.stop_gradient(params.model)

        def fit(xi, mi, li, k):
            return _fit_phi(lambda z: model.log_joint(fixed, xi, z, mi), li, mi, k, **settings)

        fitted, steps, converged, before, after = jax.vmap(fit)(
            x, mask, logits, jax.random.split(inner_key, x.shape[0]))
        fitted = jax.lax.stop_gradient(fitted)

        def loss_fn(theta):
            def one(xi, mi, li, k):
                q = _missing.masked_mean_field_bernoulli(li, mi)
                return estimators.elbo(k, lambda z: model.log_joint(theta, xi, z, mi), q,
                                       num_samples, grad_estimator="score_function")

            return -jnp.mean(jax.vmap(one)(x, mask, fitted,
                                           jax.random.split(theta_key, x.shape[0])))

        loss, grads = jax.value_and_grad(loss_fn)(params.model)
        updates, opt_state = optimizer.update(grads, state.opt_state, params.model)
        new_params = MissingSVIParams(optax.apply_updates(params.model, updates),
                                      params.logits.at[index].set(fitted, mode="drop"))
        new, finite = keep_if_finite(loss, TrainState(new_params, opt_state, state.step + 1,
                                                      key), state._replace(key=key), grads)
        return new, {"loss": loss, "elbo": jnp.mean(after),
                     "elbo_before_inner": jnp.mean(before), "inner_gain": jnp.mean(after - before),
                     "inner_steps": jnp.mean(steps.astype(jnp.float32)),
                     "inner_steps_max": jnp.max(steps),
                     "inner_converged": jnp.mean(converged.astype(jnp.float32)),
                     "finite": finite}

    return Learner(init, step)


def _check_model(model: Model, theta: Any, x: jax.Array, mask: jax.Array) -> None:
    """log_joint(theta, x, z [D], mask) must be a scalar: traced only, nothing compiled."""
    value = jax.eval_shape(lambda p, xi, mi: model.log_joint(p, xi, jnp.zeros_like(xi), mi),
                           theta, x[0], mask[0])
    if getattr(value, "shape", None) != ():
        raise ValueError(f"model.log_joint(params, x, z, mask) must return a scalar for one x "
                         f"and one z of shape {tuple(x.shape[1:])}, got "
                         f"{getattr(value, 'shape', type(value).__name__)}.")


def missing_exact(model: Model, optimizer: optax.GradientTransformation, max_missing: int
                  ) -> Learner:
    """Exact maximum likelihood from incomplete binary data: one optimizer step per batch on

        loss(theta) = -(1/B) sum_i log sum_z p(x_obs^i, z; theta),

    the sum over every completion z of x^i's missing entries
    (``jlvm.missing.log_marginal_enumerated``), so 2^max_missing terms per example.

    Args:
      model: as for ``missing_svi``.
      optimizer: optax optimizer for theta.
      max_missing: the most entries any example misses (a Python int; a row missing more
        is an error where the batch is concrete, a non-finite loss under jit, which stops
        training).

    Returns:
      ``Learner`` whose batches are ``(x [B, D], mask [B, D] bool)``; ``step`` reports
      ``loss``, ``log_likelihood`` (mean exact log p(x_obs) before the step) and ``finite``.
    """
    protocol.check(model)
    _checks.optimizer(optimizer)
    max_missing = _checks.positive_int(max_missing, "max_missing")
    if max_missing > estimators.MAX_SUPPORT_BITS:
        raise ValueError(f"max_missing must be <= {estimators.MAX_SUPPORT_BITS} (2^m "
                         f"completions are summed), got {max_missing}.")

    def checked(batch):
        x, mask = protocol.split_batch(batch)
        if mask is None:
            raise TypeError("missing_exact's batches are (x [B, D], mask [B, D]).")
        _binary_batch(x, mask)
        if _checks.is_concrete(mask):
            most = int(np.max(np.sum(~np.asarray(mask), axis=1)))
            if most > max_missing:
                raise ValueError(f"a row of the batch's mask leaves {most} entries missing, "
                                 f"more than max_missing={max_missing}.")
        return x, mask

    def log_likelihood(theta, x, mask):
        x = jnp.where(mask, x, 0.0)
        return jax.vmap(lambda xi, mi: _missing.log_marginal_enumerated(
            lambda z: model.log_joint(theta, xi, z, mi), xi, mi, max_missing))(x, mask)

    def init(key: jax.Array, batch) -> TrainState:
        _checks.prng_key(key)
        params_key, state_key = jax.random.split(key)
        theta = model.init(params_key)
        _checks.numeric_leaves(theta, "model.init(key)")
        x, mask = checked(batch)
        _check_model(model, theta, x, mask)
        return TrainState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32), state_key)

    def step(state: TrainState, batch):
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState (from learner.init), got "
                            f"{type(state).__name__}.")
        x, mask = checked(batch)
        loss, grads = jax.value_and_grad(
            lambda theta: -jnp.mean(log_likelihood(theta, x, mask)))(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1,
                         state.key)
        new, finite = keep_if_finite(loss, new, state, grads)
        return new, {"loss": loss, "log_likelihood": -loss, "finite": finite}

    return Learner(init, step)
