"""Annealed importance sampling (Neal, 2001) and reverse AIS, the two halves of bidirectional
Monte Carlo (Grosse et al., 2015), as functions of ``(log_joint, initial)``.

The path from ``initial`` (a normalized distrax distribution over one z: the prior, or an
encoder's q) to the posterior p(z | x) is geometric,

    log f_b(z) = (1 - b) log initial(z) + b log p(x, z),   0 = b_0 < b_1 < ... < b_T = 1,

so f_0 = initial (normalizer 1) and f_1 = p(x, z) (normalizer p(x)). A forward chain starts
at z_0 ~ initial and, for t = 1..T, gains

    log w += (b_t - b_{t-1}) [log p(x, z_{t-1}) - log initial(z_{t-1})]

BEFORE it moves z_{t-1} -> z_t by a transition that leaves f_{b_t} invariant (blackjax's
Hamiltonian Monte Carlo with its Metropolis correction; the move at b_T = 1 would change no
weight and is not made). Then E[w] = p(x) for every T, schedule and step size fixed in
advance, and ``log mean_c w_c`` is a stochastic lower bound of log p(x). Run backwards from
exact posterior draws, the same chain has E[w] = 1 / p(x): a stochastic upper bound. On
data simulated from the model the two bracket log p(x) (the BDMC sandwich).

Three mistakes break E[w] = p(x), and each is avoided here: step sizes adapted along the
estimating chains' own paths (here they come from the caller or from a pilot run on chains
of its own, and are frozen before the estimating chains start); the increment taken after
the transition instead of before; a transition without its Metropolis correction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import hmc

from jlvm import _ais_options, _checks
from jlvm._batches import map_over_data, per_model

LogJoint = Callable[[jax.Array], jax.Array]

# the options, checked before anything is traced (jlvm/_ais_options.py)
schedule, SCHEDULES, STARTS, Settings = (_ais_options.schedule, _ais_options.SCHEDULES,
                                         _ais_options.STARTS, _ais_options.Settings)
_betas, _step_sizes = _ais_options._betas, _ais_options._step_sizes

TARGET_ACCEPTANCE = 0.65  # HMC's usual target (Neal, 2011), and BDMC's
PILOT_STEPS = 50  # a pilot on fewer temperatures has too few to adapt: it is refined
PILOT_CHAINS = 8
INITIAL_STEP_SIZE = 0.1  # in units of initial's standard deviations (the mass matrix)
ADAPTATION_RATE = 1.0  # log step size += rate * (acceptance - target), once per temperature


def _event(key: Any, log_joint: Any, initial: Any) -> jax.ShapeDtypeStruct:
    """One draw of ``initial`` (shape and dtype only), after checking that it is a
    continuous distribution over one z and that ``log_joint`` maps such a z to a scalar
    that can be differentiated (nothing drawn, nothing compiled)."""
    _checks.prng_key(key)
    if not callable(log_joint):
        raise TypeError(f"log_joint must be a function z -> log p(x, z), got "
                        f"{type(log_joint).__name__}.")
    _checks.scalar_distribution(initial, "initial")
    try:
        z = jax.eval_shape(lambda k: _checks.sample(initial, k, 1)[0], key)
    except Exception as error:
        raise ValueError(f"initial could not draw a latent value: {error}") from error
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise ValueError(f"initial must be a continuous distribution (HMC moves z along the "
                         f"gradient of log p(x, z)); this one draws {z.dtype} values. For a "
                         "discrete z, use jlvm.log_marginal_exact or jlvm.log_marginal_is.")
    _checks.model_output(log_joint, z, "log_joint", f"one draw of initial (z of shape "
                                                    f"{tuple(z.shape)})")
    try:
        jax.eval_shape(jax.grad(lambda z: log_joint(z) + initial.log_prob(z)), z)
    except Exception as error:
        raise ValueError("log_joint and initial.log_prob must be differentiable in z (HMC "
                         f"follows their gradient): {error}") from error
    return z


def _inverse_mass(initial: Any, size: int, dtype: Any) -> jax.Array:
    """initial's variances [size] where it has them (z moves in units of initial's
    standard deviations: a preconditioner fixed before any chain runs), else ones."""
    try:
        with jax.numpy_rank_promotion("allow"):
            variance = jnp.reshape(initial.variance(), (-1,)).astype(dtype)
    except (NotImplementedError, AttributeError, TypeError, ValueError):
        return jnp.ones((size,), dtype)
    if variance.shape != (size,):
        return jnp.ones((size,), dtype)
    usable = jnp.all(jnp.isfinite(variance) & (variance > 0))
    return jnp.where(usable, variance, jnp.ones_like(variance))


class _Path:
    """log f_b on flat z [n] for one example, with its gradient and its two parts."""

    def __init__(self, log_joint: LogJoint, initial: Any, shape: tuple[int, ...]):
        self.log_joint, self.initial, self.shape = log_joint, initial, shape

    def parts(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(log p(x, z), log initial(z)) at one flat z."""
        z = jnp.reshape(z, self.shape)
        with jax.numpy_rank_promotion("allow"):
            return self.log_joint(z), self.initial.log_prob(z)

    def density(self, b: jax.Array) -> LogJoint:
        def log_f(z):
            log_p, log_initial = self.parts(z)
            return (1.0 - b) * log_initial + b * log_p
        return log_f

    def state(self, b: jax.Array, z: jax.Array):
        """(blackjax's HMC state at temperature b, log p(x, z), log initial(z)): one pass."""
        def with_parts(z):
            log_p, log_initial = self.parts(z)
            return (1.0 - b) * log_initial + b * log_p, (log_p, log_initial)
        (log_f, (log_p, log_initial)), grad = jax.value_and_grad(with_parts, has_aux=True)(z)
        return hmc.HMCState(z, log_f, grad), log_p, log_initial


def _increment(log_p: jax.Array, log_initial: jax.Array, step: jax.Array) -> jax.Array:
    """(b_t - b_{t-1}) [log p(x, z) - log initial(z)]; -inf where p(x, z) = 0."""
    return jnp.where(jnp.isneginf(log_p), -jnp.inf, step * (log_p - log_initial))


def _chains(key: jax.Array, path: _Path, z: jax.Array, betas: jax.Array,
            step_sizes: jax.Array | None, inverse_mass: jax.Array, num_leapfrog: int,
            adapt: bool = False):
    """Chains z [C, n] along temperatures ``betas`` [S + 1] (from where they stand, at
    betas[0]): for i = 1..S the increment at betas[i], then (for i < S) an HMC move leaving
    f_{betas[i]} invariant with step size ``step_sizes[i - 1]``.

    Returns (log w [C], the step size of each move [S - 1], mean acceptance [S - 1]). With
    ``adapt`` (the pilot only), ``step_sizes`` is None and each move's step size follows
    the acceptance of the moves before it."""
    kernel = hmc.build_kernel()
    num_chains = z.shape[0]

    def move(carry, inputs):
        z, log_w, log_step = carry
        b_prev, b, given, k = inputs
        state, log_p, log_initial = jax.vmap(path.state, (None, 0))(b, z)
        log_w = log_w + _increment(log_p, log_initial, b - b_prev)
        size = jnp.exp(log_step) if adapt else given
        new, info = jax.vmap(lambda kk, s: kernel(kk, s, path.density(b), size, inverse_mass,
                                                  num_leapfrog))(
            jax.random.split(k, num_chains), state)
        acceptance = jnp.mean(info.acceptance_rate)
        if adapt:
            log_step = log_step + ADAPTATION_RATE * (acceptance - TARGET_ACCEPTANCE)
        return (new.position, log_w, log_step), (size, acceptance)

    moves = betas.shape[0] - 2
    given = jnp.zeros((moves,), z.dtype) if step_sizes is None else step_sizes
    start = (z, jnp.zeros((num_chains,), z.dtype),
             jnp.asarray(math.log(INITIAL_STEP_SIZE), z.dtype))
    (z, log_w, _), (sizes, acceptance) = jax.lax.scan(
        move, start, (betas[:-2], betas[1:-1], given, jax.random.split(key, moves)))
    log_p, log_initial = jax.vmap(path.parts)(z)
    log_w = log_w + _increment(log_p, log_initial, betas[-1] - betas[-2])
    return log_w, sizes, acceptance


def _setup(key, log_joint, initial, num_steps, schedule_, num_leapfrog):
    num_steps = _checks.positive_int(num_steps, "num_steps")
    num_leapfrog = _checks.positive_int(num_leapfrog, "num_leapfrog")
    z = _event(key, log_joint, initial)
    betas = _betas(schedule_, num_steps)
    size = math.prod(z.shape)
    path = _Path(log_joint, initial, tuple(z.shape))
    return num_steps, num_leapfrog, z, betas, path, _inverse_mass(initial, size, z.dtype)


def _draw_initial(key: jax.Array, initial: Any, num_chains: int, size: int) -> jax.Array:
    return jnp.reshape(_checks.sample(initial, key, num_chains), (num_chains, size))


def _pilot(key, path, initial, betas, num_chains, num_leapfrog, inverse_mass, dtype):
    """Step sizes for moves at every b_1..b_T [T]: a pilot AIS run on ``num_chains`` chains
    of its own, its step size following its acceptance, on at least ``PILOT_STEPS``
    temperatures (the schedule refined by interpolation), read off at the schedule's b."""
    num_steps = betas.shape[0] - 1
    pilot = betas
    if num_steps < PILOT_STEPS:
        pilot = np.interp(np.linspace(0.0, num_steps, PILOT_STEPS + 1),
                          np.arange(num_steps + 1), betas)
    draw_key, run_key = jax.random.split(key)
    z = _draw_initial(draw_key, initial, num_chains, inverse_mass.shape[0])
    # the pilot's last temperature, 1, gets a move too, so that every b_t has a step size
    pilot = np.concatenate([pilot, [1.0]])
    _, sizes, _ = _chains(run_key, path, z, jnp.asarray(pilot, dtype), None, inverse_mass,
                          num_leapfrog, adapt=True)
    moved_at = jnp.asarray(pilot[1:-1], dtype)
    return jnp.exp(jnp.interp(jnp.asarray(betas[1:], dtype), moved_at, jnp.log(sizes)))


def tune_step_sizes(key: jax.Array, log_joint: LogJoint, initial: Any, num_steps: int, *,
                    schedule: Any = "sigmoidal", num_leapfrog: int = 10,
                    num_chains: int = PILOT_CHAINS) -> jax.Array:
    """HMC step sizes for the moves at b_1..b_T, from a pilot run.

    The pilot is an AIS run of its own (``num_chains`` chains from ``initial``, key ``key``)
    whose step size, in units of initial's standard deviations, follows its chains'
    acceptance towards 0.65 from one temperature to the next, on at least 50 temperatures;
    the step size at each b of the schedule is read off (interpolated in log). The
    estimating chains then run with these sizes frozen: they never see their own
    acceptance, which would break E[w] = p(x). ``log_marginal_ais(key, ...)`` without
    ``step_size`` equals ``log_marginal_ais(key, ..., step_size=tune_step_sizes(
    jax.random.split(key)[0], ...))``.

    Args:
      key: PRNG key of the pilot (its initial draws and its moves).
      log_joint, initial, num_steps, schedule, num_leapfrog: as in ``log_marginal_ais``.
      num_chains: the pilot's chains, >= 1.

    Returns:
      ``[num_steps]`` step sizes in initial's dtype, the last for b_T = 1 (unused by AIS).
    """
    num_chains = _checks.positive_int(num_chains, "num_chains")
    _, num_leapfrog, z, betas, path, inverse_mass = _setup(key, log_joint, initial, num_steps,
                                                           schedule, num_leapfrog)
    return _pilot(key, path, initial, betas, num_chains, num_leapfrog, inverse_mass, z.dtype)


def _sizes_or_pilot(key, step_size, num_steps, path, initial, betas, num_leapfrog,
                    inverse_mass, dtype):
    sizes = _step_sizes(step_size, num_steps)
    if sizes is None:
        sizes = _pilot(key, path, initial, betas, PILOT_CHAINS, num_leapfrog, inverse_mass,
                       dtype)
    return sizes.astype(dtype)


def log_marginal_ais(key: jax.Array, log_joint: LogJoint, initial: Any, num_steps: int, *,
                     num_chains: int = 16, schedule: Any = "sigmoidal", num_leapfrog: int = 10,
                     step_size: Any = None) -> jax.Array:
    """Forward AIS estimate of log p(x): ``log (1/C) sum_c w_c``, E[w_c] = p(x).

    A stochastic lower bound of log p(x) (E[result] <= log p(x), by Jensen), whose gap
    closes as ``num_steps`` grows. One step is importance sampling with ``initial`` as
    proposal. Cost: ``num_chains x num_steps x (num_leapfrog + 1)`` gradients of
    log_joint, and the pilot's when ``step_size`` is None.

    Args:
      key: PRNG key (split into the pilot's and the chains').
      log_joint: ``z -> log p(x, z)`` for one z, differentiable in z.
      initial: distrax distribution over one continuous z (batch_shape ()): the prior, or
        an encoder's q(z | x). Its variances, where it has them, are HMC's inverse mass.
      num_steps: T >= 1 temperatures after b_0 = 0.
      num_chains: C >= 1 independent chains.
      schedule: ``"sigmoidal"``, ``"geometric"`` (see ``schedule``) or the temperatures
        [T + 1] themselves, rising from exactly 0 to exactly 1.
      num_leapfrog: leapfrog steps of each HMC move.
      step_size: None (``tune_step_sizes`` on a pilot, then frozen), a number, or [T]
        step sizes of the moves at b_1..b_T (the last is unused: no move is made at b = 1).

    Returns:
      Scalar estimate in nats.
    """
    num_chains = _checks.positive_int(num_chains, "num_chains")
    num_steps, num_leapfrog, z, betas, path, inverse_mass = _setup(
        key, log_joint, initial, num_steps, schedule, num_leapfrog)
    pilot_key, draw_key, run_key = jax.random.split(key, 3)
    sizes = _sizes_or_pilot(pilot_key, step_size, num_steps, path, initial, betas,
                            num_leapfrog, inverse_mass, z.dtype)
    chains = _draw_initial(draw_key, initial, num_chains, inverse_mass.shape[0])
    log_w, _, _ = _chains(run_key, path, chains, jnp.asarray(betas, z.dtype), sizes[:-1],
                          inverse_mass, num_leapfrog)
    return _checks.finite_result(jax.nn.logsumexp(log_w) - math.log(num_chains),
                                 "log_marginal_ais")


def log_marginal_ais_reverse(key: jax.Array, log_joint: LogJoint, initial: Any,
                             z_posterior: jax.Array, num_steps: int, *,
                             schedule: Any = "sigmoidal", num_leapfrog: int = 10,
                             step_size: Any = None) -> jax.Array:
    """Reverse AIS estimate of log p(x): ``-log (1/C) sum_c w_c``, E[w_c] = 1 / p(x).

    The forward path run backwards, from exact posterior draws to ``initial``: for
    t = T..1 the increment (b_{t-1} - b_t)[log p(x, z) - log initial(z)], then (t > 1) an
    HMC move leaving f_{b_{t-1}} invariant. A stochastic UPPER bound of log p(x) when the
    draws are exact, e.g. on data simulated from the model with the z that generated it.

    Args:
      key, log_joint, initial, num_steps, schedule, num_leapfrog, step_size: as in
        ``log_marginal_ais`` (the same key gives the same pilot step sizes).
      z_posterior: ``[C, *event]`` exact draws from p(z | x), one chain each. They may repeat
        (one draw repeated C times is valid: each chain's weight is unbiased on its own).

    Returns:
      Scalar estimate in nats.
    """
    num_steps, num_leapfrog, z, betas, path, inverse_mass = _setup(
        key, log_joint, initial, num_steps, schedule, num_leapfrog)
    z_posterior = _checks.float_array(z_posterior, "z_posterior")
    if z_posterior.ndim != 1 + len(z.shape) or tuple(z_posterior.shape[1:]) != tuple(z.shape) \
            or z_posterior.shape[0] < 1:
        raise ValueError(f"z_posterior must have shape [num_chains, *event] with event "
                         f"{tuple(z.shape)} (initial's), got {tuple(z_posterior.shape)}.")
    _checks.finite_if_concrete(z_posterior, "z_posterior")
    num_chains = z_posterior.shape[0]
    pilot_key, _, run_key = jax.random.split(key, 3)
    sizes = _sizes_or_pilot(pilot_key, step_size, num_steps, path, initial, betas,
                            num_leapfrog, inverse_mass, z.dtype)
    chains = jnp.reshape(z_posterior.astype(z.dtype), (num_chains, -1))
    log_w, _, _ = _chains(run_key, path, chains, jnp.asarray(betas[::-1].copy(), z.dtype),
                          sizes[:-1][::-1], inverse_mass, num_leapfrog)
    return _checks.finite_result(math.log(num_chains) - jax.nn.logsumexp(log_w),
                                 "log_marginal_ais_reverse")


class Sandwich(NamedTuple):
    """What ``bdmc`` returns: the simulated data and the two bounds of each row's log p(x).

    Attributes:
      x: ``[N, D]`` float, drawn from the model: z_n ~ p(z), x_n ~ p(x | z_n).
      z: ``[N, *event]``, the z that generated each row: an exact posterior draw.
      lower: ``[N]`` nats, forward AIS: E[exp(lower)] = p(x_n).
      upper: ``[N]`` nats, reverse AIS from z_n: E[exp(-upper)] = 1 / p(x_n).
    """

    x: jax.Array
    z: jax.Array
    lower: jax.Array
    upper: jax.Array


def bdmc(key: jax.Array, model: Any, params: Any, num_examples: int, num_steps: int, *,
         num_chains: int = 16, initial: str = "encoder", batch_size: int = 100,
         schedule: Any = "sigmoidal", num_leapfrog: int = 10,
         step_size: Any = None) -> Sandwich:
    """Bidirectional Monte Carlo (Grosse et al., 2015) on data simulated from a model.

    Draws (z_n, x_n) from the model (``model.prior`` and ``model.decoder``), then brackets
    each log p(x_n): forward AIS from ``initial`` below, reverse AIS from z_n (an exact draw
    of p(z | x_n), repeated for ``num_chains`` chains) above, with the same pilot step
    sizes. ``mean(upper - lower)`` bounds, in expectation, how far the forward AIS at these
    settings is from log p(x) on data like the model's own (Wu et al., 2017).

    Args:
      key: PRNG key (split into the simulation's and the bounds').
      model: a ``jlvm.Model`` with ``prior``, ``decoder`` (and ``encoder`` for "encoder").
      params: the model's parameters.
      num_examples: N >= 1 simulated rows.
      num_steps, num_chains, schedule, num_leapfrog, step_size: as in ``log_marginal_ais``.
      initial: ``"encoder"`` (the model's q(z | x_n)) or ``"prior"``: forward AIS's start.
      batch_size: rows bounded at a time (a vmap of this many, to bound memory).

    Returns:
      ``Sandwich(x, z, lower, upper)`` with x ``[N, D]``, z ``[N, *event]`` and the bounds
      ``[N]`` in nats (see ``Sandwich``).
    """
    from jlvm.models import protocol

    settings = Settings.checked(initial, num_steps, num_chains, schedule, num_leapfrog,
                                step_size)
    protocol.check(model, "prior", "decoder", *(("encoder",) if initial == "encoder" else ()))
    num_examples = _checks.positive_int(num_examples, "num_examples")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    _checks.prng_key(key)
    simulate_key, bounds_key = jax.random.split(key)
    x, z, lower, upper = _bdmc_program(model, settings, batch_size)(
        jax.random.split(simulate_key, num_examples), bounds_key, params)
    return Sandwich(x, z, lower, upper)


@per_model
def _bdmc_program(model, settings, batch_size):
    """bdmc's ``run(simulate_keys [N], key, params) -> (x, z, lower, upper)``, jitted: one
    per model and settings (``jlvm._batches.per_model``), not one per call."""
    from jlvm.models import protocol

    initial, num_steps, num_chains = settings.initial, settings.num_steps, settings.num_chains
    options = settings.options()

    def run(simulate_keys, bounds_key, params):
        def simulate(k):
            z_key, x_key = jax.random.split(k)
            z = _checks.sample(model.prior(params), z_key, 1)[0]
            return _checks.sample(model.decoder(params, z), x_key, 1)[0], z

        x, z = jax.vmap(simulate)(simulate_keys)
        x = x.astype(jnp.result_type(float))

        def one(k, row):
            x_n, z_n = row
            log_joint = functools.partial(protocol.log_joint, model, params, x_n)
            start = (protocol.encoder(model, params, x_n) if initial == "encoder"
                     else model.prior(params))
            if options["step_size"] is None:  # one pilot for both directions (each would
                # run the same one, from the same key)
                sizes = tune_step_sizes(jax.random.split(k, 3)[0], log_joint, start,
                                        num_steps, schedule=options["schedule"],
                                        num_leapfrog=options["num_leapfrog"])
                options_n = {**options, "step_size": sizes}
            else:
                options_n = options
            return jnp.stack([
                log_marginal_ais(k, log_joint, start, num_steps, num_chains=num_chains,
                                 **options_n),
                log_marginal_ais_reverse(k, log_joint, start,
                                         jnp.repeat(z_n[None], num_chains, 0), num_steps,
                                         **options_n)])

        bounds = map_over_data(one, bounds_key, (x, z), batch_size)
        return x, z, bounds[:, 0], bounds[:, 1]

    return jax.jit(run)
