"""Amortized variational inference (the VAE, IWAE) and semi-amortized inference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jlvm import _checks, estimators, gradients
from jlvm.inference import _local
from jlvm.models import posteriors, protocol
from jlvm.models.protocol import Model
from jlvm.train import Learner, TrainState, keep_if_finite

OBJECTIVES = ("elbo", "iwae")
ELBO_FORMS = ("joint", "entropy", "kl")
IWAE_SAMPLES = 5  # amortized(objective="iwae")'s K unless given


def _bound(model: Model, objective: str, num_samples: int, grad_estimator: str,
           elbo_form: str):
    """bound(params, key, x [D], mask [D] or None) -> the per-example objective."""

    def bound(params, key: jax.Array, x: jax.Array, mask=None) -> jax.Array:
        q = protocol.encoder(model, params, x, mask)
        if elbo_form == "kl":
            return estimators.elbo_with_kl(
                key, functools.partial(protocol.log_likelihood, model, params, x, mask=mask),
                q, model.prior(params), num_samples)
        log_joint = functools.partial(protocol.log_joint, model, params, x, mask=mask)
        if elbo_form == "entropy":
            return estimators.elbo_with_entropy(key, log_joint, q, num_samples)
        fn = estimators.elbo if objective == "elbo" else estimators.iwae_bound
        return fn(key, log_joint, q, num_samples, grad_estimator=grad_estimator)

    return bound


def _per_example(fn, params, key, batch):
    """``fn(params, key_i, x_i, mask_i)`` for every example of ``batch`` (x, or (x, mask)),
    each with its own key: the stacked results. A missing entry reaches ``fn`` as 0,
    whatever the batch held there (NaN included): a model's functions never see it, so a
    ``log_joint`` that multiplies x before it masks cannot turn a NaN into a gradient."""
    x, mask = protocol.split_batch(batch)
    keys = jax.random.split(key, x.shape[0])
    if mask is None:
        return jax.vmap(fn, in_axes=(None, 0, 0))(params, keys, x)
    x = jnp.where(mask, x, jnp.zeros((), x.dtype))
    return jax.vmap(fn, in_axes=(None, 0, 0, 0))(params, keys, x, mask)


def _step(loss_fn, optimizer):
    """A train step from ``loss_fn(params, key, batch) -> (loss, metrics)``: one optimizer
    update, and the state kept as it was if the loss is not finite."""

    def step(state: TrainState, batch):
        _check_state(state)
        protocol.split_batch(batch)
        key, step_key = jax.random.split(state.key)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params,
                                                                            step_key, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1,
                         key)
        new, finite = keep_if_finite(loss, new, state._replace(key=key), grads)
        return new, {"loss": loss, **metrics, "finite": finite}

    return step


def _check_state(state) -> None:
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState (from learner.init), got "
                        f"{type(state).__name__}.")


def init_params(model: Model, key: jax.Array, batch) -> object:
    """``model.init(key)``, checked against the first example of ``batch`` (x, or (x,
    mask); None skips the check) by tracing only: a q over several z, or a log_joint that
    is not a scalar, is named before anything compiles."""
    params = model.init(key)
    protocol.check_params(params)
    if batch is not None:
        x, mask = protocol.split_batch(batch)
        protocol.check_against(model, params, x[0], None if mask is None else mask[0])
    return params


def _init(model: Model, optimizer, bound=None):
    """``init(key, batch)``; with ``bound``, also traced on the first example (shapes only),
    so that an ELBO form the model cannot take (an analytic KL or entropy that distrax does
    not have) is named here rather than in the first step."""

    def init(key: jax.Array, batch) -> TrainState:
        _checks.prng_key(key)
        params_key, state_key = jax.random.split(key)
        params = init_params(model, params_key, batch)
        if bound is not None and batch is not None:
            x, mask = protocol.split_batch(batch)
            jax.eval_shape(lambda p: bound(p, state_key, x[0],
                                           None if mask is None else mask[0]), params)
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), state_key)

    return init


def amortized(model: Model, optimizer: optax.GradientTransformation, *,
              objective: str = "elbo",
              num_samples: int | None = None, grad_estimator: str = "reparam",
              elbo_form: str = "joint") -> Learner:
    """The VAE: maximize the bound over decoder theta and encoder phi jointly.

    Per data point, objective "elbo": (1/K) sum_k log p(x, z_k) - log q_phi(z_k | x);
    "iwae": log (1/K) sum_k p(x, z_k) / q_phi(z_k | x). The loss is minus the batch mean.

    Args:
      model: a ``jlvm.Model`` with an encoder (e.g. ``vae.model(data_dim=784,
        latent_dim=50)``, or one of your own); its params may be any pytree.
      optimizer: an optax optimizer over all parameters.
      objective: "elbo" or "iwae".
      num_samples: K draws per data point; default 1 for the ELBO (2, one antithetic pair,
        for grad_estimator="disarm") and 5 for the IWAE
        bound (whose K=1 is the ELBO: the name would not say what is trained).
      grad_estimator: as for ``jlvm.elbo`` / ``jlvm.iwae_bound`` ("dreg" for IWAE).
      elbo_form: objective "elbo" only: "joint" (``jlvm.elbo``), "entropy"
        (``jlvm.elbo_with_entropy``, H(q) analytic) or "kl" (``jlvm.elbo_with_kl``,
        log p(x|z) - KL(q || p(z)), the KL analytic). The same bound in expectation; the
        analytic forms differentiate the Gaussian terms exactly, so their gradients are
        reparameterized ones with less noise in the encoder's scale. They take
        ``grad_estimator="reparam"`` and a closed form distrax has (a flow q has no
        analytic entropy, a mixture prior no analytic KL): ``init`` names what is missing.

    Returns:
      ``Learner``; ``step(state, batch)`` with batch x [B, D] or (x [B, D], mask [B, D]
      bool, True = observed) reports ``loss`` and the bound in nats per example under its
      own name (``elbo`` or ``iwae_bound``), and ``finite``.
    """
    protocol.check(model, "encoder")
    _checks.optimizer(optimizer)
    _checks.one_of(objective, "objective", OBJECTIVES)
    if num_samples is None:
        # DisARM's draws come in antithetic pairs: one pair unless told otherwise
        num_samples = IWAE_SAMPLES if objective == "iwae" else (
            2 if grad_estimator == "disarm" else 1)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    if grad_estimator == "disarm":  # refused at once, not at the first step's trace
        gradients.even_num_samples(num_samples)
    allowed = gradients.ELBO_ESTIMATORS if objective == "elbo" else gradients.IWAE_ESTIMATORS
    _checks.one_of(grad_estimator, "grad_estimator", allowed)
    _checks.one_of(elbo_form, "elbo_form", ELBO_FORMS)
    if elbo_form != "joint" and objective != "elbo":
        raise ValueError(f"elbo_form={elbo_form!r} is a form of the ELBO; objective "
                         f"{objective!r} takes elbo_form='joint'.")
    if elbo_form != "joint" and grad_estimator != "reparam":
        raise ValueError(f"elbo_form={elbo_form!r} takes grad_estimator='reparam', got "
                         f"{grad_estimator!r} (the analytic term has no draws to reweight).")
    if elbo_form == "kl":
        protocol.check(model, "encoder", "log_likelihood", "prior")
    bound = _bound(model, objective, num_samples, grad_estimator, elbo_form)
    metric = "elbo" if objective == "elbo" else "iwae_bound"

    def loss_fn(params, key, batch):
        value = jnp.mean(_per_example(bound, params, key, batch))
        return -value, {metric: value}

    return Learner(_init(model, optimizer, bound if elbo_form != "joint" else None),
                   _step(loss_fn, optimizer))


def semi_amortized(model: Model, optimizer: optax.GradientTransformation, *,
                   inner_steps: int = 10, inner_learning_rate: float = 0.05,
                   num_samples: int = 1) -> Learner:
    """Semi-amortized inference: the encoder's q(z|x) refined per data point.

    phi_0 = the encoder's parameters of q(z|x) (``posteriors.parameters``: a diagonal or
    full-covariance Gaussian, or a flow on one, whose bijector is kept); phi* = phi_0 after
    ``inner_steps`` Adam steps on ELBO(phi) with the model fixed. The decoder is trained on
    ELBO(theta; phi*), the encoder on its own ELBO(phi_0) (the model held fixed in that
    term). ``amortization_gap`` = ELBO(phi*) - ELBO(phi_0), same draws: how much the
    encoder leaves on the table.

    Args:
      model: a ``jlvm.Model`` with an encoder, as in ``amortized``.
      optimizer: an optax optimizer over all parameters (decoder and encoder).
      inner_steps: Adam steps per data point, >= 1.
      inner_learning_rate: the inner Adam's learning rate, > 0.
      num_samples: K >= 1 reparameterized draws per ELBO estimate (inner steps and both
        terms of the loss).

    Returns:
      ``Learner``; ``step(state, batch)`` with batch x ``[B, D]`` or (x ``[B, D]``, mask
      ``[B, D]`` bool, True = observed) reports ``loss``, ``elbo`` (refined),
      ``elbo_amortized``, ``amortization_gap`` (nats per example) and ``finite``.
    """
    protocol.check(model, "encoder")
    _checks.optimizer(optimizer)
    inner_steps = _checks.positive_int(inner_steps, "inner_steps")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    inner_learning_rate = _checks.positive_number(inner_learning_rate, "inner_learning_rate")

    def per_example(params, key, x, mask=None):
        refine_key, decoder_key, encoder_key = jax.random.split(key, 3)
        q = protocol.encoder(model, params, x, mask)
        fixed = jax.lax.stop_gradient(params)
        # phi_0 and the family's rebuild from the encoder held fixed: a flow's bijector
        # (part of the encoder) then gets no gradient from the refined term
        phi0, rebuild = posteriors.parameters(protocol.encoder(model, fixed, x, mask))
        fixed_log_joint = functools.partial(protocol.log_joint, model, fixed, x, mask=mask)
        refined, before, after = _local.refine(
            fixed_log_joint, phi0, rebuild, refine_key, inner_steps=inner_steps,
            inner_learning_rate=inner_learning_rate, num_samples=num_samples)
        # theta's term: the refined q held fixed; phi's term: the model held fixed
        decoder_term = _local.local_elbo(
            functools.partial(protocol.log_joint, model, params, x, mask=mask),
            jax.lax.stop_gradient(refined), rebuild, decoder_key, num_samples)
        encoder_term = estimators.elbo(encoder_key, fixed_log_joint, q, num_samples)
        return decoder_term + encoder_term, (after, before)

    def loss_fn(params, key, batch):
        objective, (after, before) = _per_example(per_example, params, key, batch)
        metrics = {"elbo": jnp.mean(after), "elbo_amortized": jnp.mean(before),
                   "amortization_gap": jnp.mean(after - before)}
        return -jnp.mean(objective), metrics

    return Learner(_init(model, optimizer), _step(loss_fn, optimizer))
