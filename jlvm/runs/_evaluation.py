"""Bounds and log-likelihoods of a trained run, per example: during training (on a fixed
subset) and for ``jlvm evaluate`` (importance sampling on a whole split)."""

from __future__ import annotations

import functools
import math
import sys
import time
from typing import Any

import numpy as np

from jlvm.runs import _interrupt
from jlvm.runs._config import RunError
from jlvm.runs._setup import Setup, model_params

EVAL_BLOCK_BATCHES = 10  # evaluation reports progress every this many batches
SVI_TEST_STEPS_FACTOR = 5  # a q fitted per test point takes 5x the training inner steps


def _fresh_q(setup: Setup, state, X, key, steps: int, mask=None):
    """For SVI (no encoder): a Gaussian q per row of X fitted from the prior, to log p(x_obs,
    z) where ``mask`` [N, D] (True = observed) is given."""
    import jax
    import jax.numpy as jnp

    from jlvm.inference import _local
    from jlvm.models import posteriors, vae

    model = jax.lax.stop_gradient(state.params.model)

    def one(x, observed, k):
        zeros = jnp.zeros(model.latent_dim)
        log_joint = functools.partial(vae.log_joint, model, x,
                                      mask=None if mask is None else observed)
        refined, _, _ = _local.refine(log_joint, (zeros, zeros), posteriors.diagonal, k,
                                      inner_steps=steps,
                                      inner_learning_rate=setup.config.inner_learning_rate,
                                      num_samples=1)
        return refined

    observed = jnp.ones(X.shape, bool) if mask is None else jnp.asarray(mask)
    return jax.jit(jax.vmap(one))(X, observed, jax.random.split(key, X.shape[0]))


def svi_codes(setup: Setup, state, X, key):
    """E_q[z | x] of a q fitted per row of X (SVI has no encoder)."""
    return _fresh_q(setup, state, X, key, SVI_TEST_STEPS_FACTOR * setup.config.inner_steps)[0]


def train_bounds(setup: Setup, state, rows: np.ndarray, split: str, key) -> dict[str, Any]:
    """Per-example bounds [n] of the rows ``rows`` of ``split``, nats, by name:

    ``elbo`` (K=1, the encoder's q; for SVI the stored q of a training point, a freshly
    fitted one elsewhere), ``iwae_bound`` (IWAE runs, their K) and, for the GMM,
    ``log_likelihood`` (exact: the ELBO at q = p(z|x))."""
    import jax
    import jax.numpy as jnp

    from jlvm import estimators, evaluate
    from jlvm.models import gmm, posteriors, vae

    config = setup.config
    if split == "train":  # what the run trains on: the examples it uses, with its holes
        X = setup.train_x[rows]
        mask = None if setup.train_mask is None else setup.train_mask[rows]
    else:
        X, mask = jnp.asarray(getattr(setup.dataset, split)[rows]), None
    if config.model == "gmm":
        observed = jnp.ones(X.shape, bool) if mask is None else mask
        return {"log_likelihood": jax.jit(jax.vmap(gmm.log_marginal, in_axes=(None, 0, 0)))(
            state.params, X, observed)}
    params = model_params(setup, state)
    if config.model != "svi":
        bounds = {"elbo": evaluate.vae_elbo(key, params, X, mask=mask)}
        if config.model == "iwae":
            bounds["iwae_bound"] = evaluate.vae_iwae_bound(jax.random.fold_in(key, 1), params,
                                                           X, config.num_samples, mask=mask)
        return bounds
    if split == "train":  # the stored phi^i of these training points
        mean, log_scale = state.params.mean[rows], state.params.log_scale[rows]
    else:
        mean, log_scale = _fresh_q(setup, state, X, key,
                                   SVI_TEST_STEPS_FACTOR * config.inner_steps, mask)
    observed = jnp.ones(X.shape, bool) if mask is None else mask
    local = jax.vmap(lambda x, o, m, s, k: estimators.elbo(
        k, functools.partial(vae.log_joint, params, x, mask=o), posteriors.diagonal(m, s), 1))
    return {"elbo": jax.jit(local)(X, observed, mean, log_scale,
                                   jax.random.split(key, X.shape[0]))}


def _svi_bounds(params, num_samples, chunk_size, key, row):
    """(IS log p(x_obs), ELBO) for one row (x, mask, mean, log_scale) of a fitted
    per-point q."""
    import jax
    import jax.numpy as jnp

    from jlvm import estimators
    from jlvm.models import posteriors, vae

    x, observed, mean, log_scale = row
    q = posteriors.diagonal(mean, log_scale)
    log_joint = functools.partial(vae.log_joint, params, x, mask=observed)
    is_key, elbo_key = jax.random.split(key)
    return jnp.stack([
        estimators.log_marginal_is(is_key, log_joint, q, num_samples,
                                   chunk_size=min(chunk_size, num_samples)),
        estimators.elbo(elbo_key, log_joint, q, 1)])


def evaluation_mask(setup: Setup, missing: str, shape: tuple[int, int], seed: int):
    """The evaluation's mask [N, D] (True = observed) for ``--missing``, or None: halves of
    images, or entries missing completely at random with probability P (drawn with
    ``seed``); rows that would observe nothing observe their first entry."""
    from jlvm.runs import _missing

    if missing == "none":
        return None
    kind, _ = _missing.parse_missing(missing)
    if kind in ("top-half", "bottom-half") and not setup.dataset.image_shape:
        raise RunError(f"--missing {kind} needs image data; {setup.config.data} holds "
                       "vectors (try --missing mcar:P).")
    mask = _missing.mask_for(missing, shape, setup.dataset.image_shape, seed)
    mask[~mask.any(axis=1), 0] = True
    return mask


def evaluate_split(setup: Setup, state, X, key, *, num_samples: int,
                   chunk_size: int | None, batch_size: int, missing: str, mesh,
                   seed: int = 0) -> dict[str, Any]:
    """IS log-likelihood and ELBO of one trained model on the rows X, as a JSON-ready dict
    (means and standard errors over the rows, nats per example); with ``missing``, of the
    observed entries, log p(x_obs). ``chunk_size`` None: ``evaluate.chunk_size_for``'s."""
    import jax
    import jax.numpy as jnp

    from jlvm import evaluate, train
    from jlvm.models import gmm

    config = setup.config
    X = jnp.asarray(X)
    mask = evaluation_mask(setup, missing, tuple(X.shape), seed)
    started = time.perf_counter()
    if config.model == "gmm":
        observed = jnp.ones(X.shape, bool) if mask is None else jnp.asarray(mask)
        log_likelihood = jax.jit(jax.vmap(gmm.log_marginal, in_axes=(None, 0, 0)))(
            state.params, X, observed)
        elbo = log_likelihood  # exact: the ELBO at q = p(z | x) is log p(x)
    elif config.model == "svi":
        params = model_params(setup, state)
        # no encoder: each point gets its own q fitted from the prior, then IS with it
        mean, log_scale = _fresh_q(setup, state, X, key,
                                   SVI_TEST_STEPS_FACTOR * config.inner_steps, mask)
        observed = jnp.ones(X.shape, bool) if mask is None else jnp.asarray(mask)
        chunk = min(evaluate.CHUNK_MOST if chunk_size is None else chunk_size, num_samples)
        svi_is = functools.partial(_svi_bounds, params, num_samples, chunk)
        bounds = jax.jit(lambda k, r: evaluate.map_over_data(svi_is, k, r, batch_size))(
            key, (X, observed, mean, log_scale))
        log_likelihood, elbo = bounds[:, 0], bounds[:, 1]
    else:
        from tqdm import tqdm

        params = state.params
        if chunk_size is None:
            chunk_size = evaluate.chunk_size_for(evaluate._vae_model(), params, X,
                                                 num_samples, batch_size=batch_size,
                                                 mask=mask)
        # blocks of rows, so that a long evaluation shows progress (one compiled
        # function serves every full block)
        block = EVAL_BLOCK_BATCHES * batch_size
        is_key, elbo_key = jax.random.split(key)
        pieces = []
        with tqdm(total=X.shape[0], unit="example", desc="importance sampling",
                  file=sys.stderr, disable=None) as bar:
            for index, start in enumerate(range(0, X.shape[0], block)):
                rows = X[start:start + block]
                pieces.append(train.to_host(evaluate.vae_log_likelihood(
                    jax.random.fold_in(is_key, index), params, rows, num_samples,
                    batch_size=batch_size, chunk_size=chunk_size, mask=mask, mesh=mesh)))
                bar.update(rows.shape[0])
                _interrupt.check("nothing was written.")
        log_likelihood = np.concatenate(pieces)
        elbo = evaluate.vae_elbo(elbo_key, params, X, mask=mask, mesh=mesh,
                                 batch_size=batch_size)
    log_likelihood, elbo = train.to_host((log_likelihood, elbo))
    if not (np.all(np.isfinite(log_likelihood)) and np.all(np.isfinite(elbo))):
        raise RunError("evaluation gave a non-finite log-likelihood or ELBO for some "
                       "examples; the checkpoint's parameters may be damaged.")
    seconds = time.perf_counter() - started
    ll_mean, ll_se = evaluate.summary(log_likelihood)
    elbo_mean, elbo_se = evaluate.summary(elbo)
    observed = X.shape[1] if mask is None else float(mask.sum() / mask.shape[0])
    result = {
        "num_examples": int(X.shape[0]),
        "num_samples": num_samples if config.model != "gmm" else None,
        "log_likelihood": round(ll_mean, 4), "log_likelihood_se": _round(ll_se),
        "elbo": round(elbo_mean, 4), "elbo_se": _round(elbo_se),
        "gap": round(ll_mean - elbo_mean, 4),
        "missing": missing,
        "likelihood_type": setup.likelihood_type,
        # bits per dimension compare probabilities of discrete data; a density has none
        "bits_per_dim": (round(-ll_mean / (observed * math.log(2)), 5)
                         if setup.likelihood_type == "probability" and ll_mean <= 0 else None),
        "seconds": round(seconds, 3)}
    if config.model == "gmm":
        result["exact"] = True  # log p(x) by enumeration over the components
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
