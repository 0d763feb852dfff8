"""Amortized variational inference (the VAE, IWAE) and semi-amortized inference."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jlvm import _checks, estimators, gradients
from jlvm.inference import _local
from jlvm.models import vae
from jlvm.train import Learner, TrainState, keep_if_finite

OBJECTIVES = ("elbo", "iwae")
ELBO_FORMS = ("joint", "entropy", "kl")


def _bound(objective: str, num_samples: int, grad_estimator: str, elbo_form: str):
    def bound(params: vae.Params, key: jax.Array, x: jax.Array) -> jax.Array:
        q = vae.encoder(params, x)
        if elbo_form == "kl":
            return estimators.elbo_with_kl(key, functools.partial(vae.log_likelihood, params, x),
                                           q, vae.prior(params), num_samples)
        log_joint = functools.partial(vae.log_joint, params, x)
        if elbo_form == "entropy":
            return estimators.elbo_with_entropy(key, log_joint, q, num_samples)
        fn = estimators.elbo if objective == "elbo" else estimators.iwae_bound
        return fn(key, log_joint, q, num_samples, grad_estimator=grad_estimator)

    return bound


def _step(loss_fn, optimizer):
    """A train step from ``loss_fn(params, key, batch) -> (loss, metrics)``: one optimizer
    update, and the state kept as it was if the loss is not finite."""

    def step(state: TrainState, batch: jax.Array):
        _check_state(state)
        _check_batch(batch)
        key, step_key = jax.random.split(state.key)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params,
                                                                            step_key, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1,
                         key)
        new = keep_if_finite(loss, new, state._replace(key=key))
        return new, {"loss": loss, **metrics, "finite": jnp.isfinite(loss)}

    return step


def _check_state(state) -> None:
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState (from learner.init), got "
                        f"{type(state).__name__}.")


def _check_batch(batch) -> None:
    """A batch of data points x [B, D] with B >= 1 (its shape is static: checked at once)."""
    if not hasattr(batch, "shape") or len(batch.shape) != 2 or batch.shape[0] < 1:
        raise ValueError(f"batch must be an array x [B, D] with B >= 1, got "
                         f"{getattr(batch, 'shape', type(batch).__name__)}.")


def _init(init_params, optimizer):
    def init(key: jax.Array, batch: jax.Array) -> TrainState:
        _checks.prng_key(key)
        del batch  # the architecture is fixed by init_params
        params_key, state_key = jax.random.split(key)
        params = init_params(params_key)
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), state_key)

    return init


def amortized(init_params: Callable[[jax.Array], vae.Params],
              optimizer: optax.GradientTransformation, *, objective: str = "elbo",
              num_samples: int = 1, grad_estimator: str = "reparam",
              elbo_form: str = "joint") -> Learner:
    """The VAE: maximize the bound over decoder theta and encoder phi jointly.

    Per data point, objective "elbo": (1/K) sum_k log p(x, z_k) - log q_phi(z_k | x);
    "iwae": log (1/K) sum_k p(x, z_k) / q_phi(z_k | x). The loss is minus the batch mean.

    Args:
      init_params: key -> ``vae.Params`` (e.g. ``functools.partial(vae.init, data_dim=784,
        latent_dim=50)``).
      optimizer: an optax optimizer over all parameters.
      objective: "elbo" or "iwae".
      num_samples: K draws per data point.
      grad_estimator: as for ``jlvm.elbo`` / ``jlvm.iwae_bound`` ("dreg" for IWAE).
      elbo_form: objective "elbo" only: "joint" (``jlvm.elbo``), "entropy"
        (``jlvm.elbo_with_entropy``, H(q) analytic) or "kl" (``jlvm.elbo_with_kl``,
        log p(x|z) - KL(q || p(z)), the KL analytic). The same bound in expectation; the
        analytic forms differentiate the Gaussian terms exactly, so their gradients are
        reparameterized ones with less noise in the encoder's scale. They take
        ``grad_estimator="reparam"``.

    Returns:
      ``Learner``; ``step(state, x [B, D])`` reports ``loss`` and the bound in nats per
      example under its own name (``elbo`` or ``iwae_bound``), and ``finite``.
    """
    if not callable(init_params):
        raise TypeError(f"init_params must be a function key -> params, got "
                        f"{type(init_params).__name__}.")
    _checks.optimizer(optimizer)
    _checks.one_of(objective, "objective", OBJECTIVES)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    allowed = gradients.ELBO_ESTIMATORS if objective == "elbo" else gradients.IWAE_ESTIMATORS
    _checks.one_of(grad_estimator, "grad_estimator", allowed)
    _checks.one_of(elbo_form, "elbo_form", ELBO_FORMS)
    if elbo_form != "joint" and objective != "elbo":
        raise ValueError(f"elbo_form={elbo_form!r} is a form of the ELBO; objective "
                         f"{objective!r} takes elbo_form='joint'.")
    if elbo_form != "joint" and grad_estimator != "reparam":
        raise ValueError(f"elbo_form={elbo_form!r} takes grad_estimator='reparam', got "
                         f"{grad_estimator!r} (the analytic term has no draws to reweight).")
    bound = _bound(objective, num_samples, grad_estimator, elbo_form)
    metric = "elbo" if objective == "elbo" else "iwae_bound"

    def loss_fn(params, key, batch):
        keys = jax.random.split(key, batch.shape[0])
        value = jnp.mean(jax.vmap(bound, in_axes=(None, 0, 0))(params, keys, batch))
        return -value, {metric: value}

    return Learner(_init(init_params, optimizer), _step(loss_fn, optimizer))


def semi_amortized(init_params: Callable[[jax.Array], vae.Params],
                   optimizer: optax.GradientTransformation, *, inner_steps: int = 10,
                   inner_learning_rate: float = 0.05, num_samples: int = 1) -> Learner:
    """Semi-amortized inference: the encoder's q(z|x) refined per data point.

    phi_0 = encoder(x); phi* = phi_0 after ``inner_steps`` Adam steps on ELBO(phi) with the
    decoder fixed. The decoder is trained on ELBO(theta; phi*), the encoder on its own
    ELBO(phi_0) (decoder held fixed in that term). ``amortization_gap`` = ELBO(phi*) -
    ELBO(phi_0), same draws: how much the encoder leaves on the table.

    Returns:
      ``Learner``; ``step(state, x [B, D])`` reports ``loss``, ``elbo`` (refined),
      ``elbo_amortized``, ``amortization_gap`` (nats per example) and ``finite``.
    """
    if not callable(init_params):
        raise TypeError(f"init_params must be a function key -> params, got "
                        f"{type(init_params).__name__}.")
    _checks.optimizer(optimizer)
    inner_steps = _checks.positive_int(inner_steps, "inner_steps")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    inner_learning_rate = _checks.positive_number(inner_learning_rate, "inner_learning_rate")

    def loss_fn(params: vae.Params, key, batch):
        keys = jax.random.split(key, batch.shape[0])
        fixed_decoder = params.replace(decoder=jax.lax.stop_gradient(params.decoder))

        def per_example(x, k):
            refine_key, decoder_key, encoder_key = jax.random.split(k, 3)
            q = vae.encoder(params, x)
            phi0 = (q.mean(), jnp.log(q.stddev()))
            refined, before, after = _local.refine(
                params, x, phi0, refine_key, inner_steps=inner_steps,
                inner_learning_rate=inner_learning_rate, num_samples=num_samples)
            decoder_term = _local.local_elbo(params, x, jax.lax.stop_gradient(refined),
                                             decoder_key, num_samples)
            encoder_term = estimators.elbo(
                encoder_key, functools.partial(vae.log_joint, fixed_decoder, x),
                vae.encoder(params, x), num_samples)
            return decoder_term + encoder_term, (after, before)

        objective, (after, before) = jax.vmap(per_example)(batch, keys)
        metrics = {"elbo": jnp.mean(after), "elbo_amortized": jnp.mean(before),
                   "amortization_gap": jnp.mean(after - before)}
        return -jnp.mean(objective), metrics

    return Learner(_init(init_params, optimizer), _step(loss_fn, optimizer))
