"""What a run needs of a ``jlvm.Model`` with a q(z | x) per example, for any such model.

The q is the model's encoder (the VAE, IWAE, semi-amortized inference, a model of your
own), or a q fitted to each example from scratch (SVI, which has no encoder): a
``Proposal``. Given one, ``built`` makes every function of a ``Built`` once, jitted
closures over the model: bounds by ``jlvm.evaluate``, log p(x) by importance sampling,
features E_q[z | x], imputation by ``jlvm.missing.impute``, draws and figures through the
model's ``prior`` and ``decoder`` where it has them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from jlvm.runs._errors import RunError
from jlvm.runs.kinds import Built, Evaluation, View

ENCODE_ROWS = 500  # rows encoded in one compiled call
IMPUTE_ROWS = 50  # rows imputed in one compiled call (each holds a chunk of K draws)
IMPUTE_CHUNK = 200  # draws per row held at once while imputing
FIGURE_DRAWS = 1000  # draws behind E_q[z | x] where q has no closed-form mean
RECONSTRUCTED = 10  # test examples reconstructed in reconstructions.png


class Proposal(NamedTuple):
    """Where an example's q(z | x) comes from.

    q: (phi_n) -> a distrax q for one example, or None: the model's encoder.
    fit: (params, X, mask or None, key) -> phi, a pytree of per-row arrays (a q fitted to
      each row), or None.
    stored: (state, rows) -> phi of those training rows as the learner keeps them, or None.
    what: the q in words.
    """

    q: Callable | None = None
    fit: Callable | None = None
    stored: Callable | None = None
    what: str = "the encoder's q(z | x)"


def _mask_rows(mask: Any, shape: tuple) -> Any:
    import jax.numpy as jnp

    return jnp.ones(shape, bool) if mask is None else jnp.asarray(mask)


ENCODER = Proposal()  # the model's own encoder


def _rows(tree, rows):
    """Rows ``rows`` of every leaf of ``tree`` (None stays None)."""
    import jax

    return jax.tree_util.tree_map(lambda a: a[rows], tree)


def built(model, learner, *, batch_size: int, reported, likelihood_type: str, facts: dict,
          iwae_samples: int | None = None, proposal: Proposal = ENCODER,
          params: Callable = lambda state: state.params, train_data=None) -> Built:
    """A ``Built`` for ``model`` trained by ``learner``. ``reported``: (metric, what it is)
    pairs, the trained bound first; the per-epoch bounds are the ELBO (one draw) and, with
    ``iwae_samples`` K, the IWAE bound with K draws."""
    import jax
    import jax.numpy as jnp

    from jlvm import evaluate, missing
    from jlvm.models import posteriors, protocol

    def phi_of(model_params, X, mask, key):
        return None if proposal.fit is None else proposal.fit(model_params, X, mask, key)

    def on_rows(estimator, key, model_params, X, mask, count, phi, **options):
        return evaluate._evaluate(estimator, key, model, model_params, X, count,
                                  options.pop("batch_size", 500), options.pop("chunk_size",
                                                                              None),
                                  mask, options.pop("mesh", None), proposal.q, phi)

    def bounds(state, X, mask, key, rows=None):
        model_params = params(state)
        if rows is not None and proposal.stored is not None:
            phi = proposal.stored(state, rows)
        else:
            phi = phi_of(model_params, X, mask, jax.random.fold_in(key, 2))
        out = {"elbo": on_rows("elbo", key, model_params, X, mask, 1, phi)}
        if iwae_samples is not None:
            out["iwae_bound"] = on_rows("iwae", jax.random.fold_in(key, 1), model_params, X,
                                        mask, iwae_samples, phi)
        return out

    def evaluator(state, settings: Evaluation):
        model_params = params(state)
        chosen = [settings.chunk_size]

        def block(key, X, mask):
            fit_key, is_key, elbo_key = jax.random.split(key, 3)
            phi = phi_of(model_params, X, mask, fit_key)
            if chosen[0] is None:  # as many draws as fit the memory budget, chosen once
                chosen[0] = (evaluate.chunk_size_for(
                    model, model_params, X, settings.num_samples,
                    batch_size=settings.batch_size, mask=mask) if proposal.q is None
                    else min(evaluate.CHUNK_MOST, settings.num_samples))
            return {"log_likelihood": on_rows("is", is_key, model_params, X, mask,
                                              settings.num_samples, phi,
                                              batch_size=settings.batch_size,
                                              chunk_size=chosen[0], mesh=settings.mesh),
                    "elbo": on_rows("elbo", elbo_key, model_params, X, mask, 1, phi,
                                    batch_size=settings.batch_size, mesh=settings.mesh)}

        return block

    def q_of(model_params, x, mask, phi):
        return (protocol.encoder(model, model_params, x, mask) if proposal.q is None
                else proposal.q(*phi))

    @functools.partial(jax.jit, static_argnums=4)
    def _moments(model_params, X, mask, keys, num_samples, phi):
        return jax.vmap(lambda x, m, k, p: posteriors.moments(q_of(model_params, x, m, p), k,
                                                              num_samples))(X, mask, keys, phi)

    def codes(state, X, mask, key, num_samples):
        """(E_q[z | x] [N, L], sd [N, L], exact)."""
        model_params = params(state)
        X = jnp.asarray(X)
        masks = _mask_rows(mask, X.shape)
        fit_key, draw_key = jax.random.split(key)
        phi = phi_of(model_params, X, mask, fit_key)
        first = jax.tree_util.tree_map(lambda a: a[0], phi)
        exact = posteriors.closed_form_moments(q_of(model_params, X[0], masks[0],
                                                    first)) is not None
        keys = jax.random.split(draw_key, X.shape[0])
        pieces = [_moments(model_params, X[rows], masks[rows], keys[rows], num_samples,
                           _rows(phi, rows))
                  for rows in (slice(i, i + ENCODE_ROWS)
                               for i in range(0, X.shape[0], ENCODE_ROWS))]
        return (np.concatenate([np.asarray(p[0]) for p in pieces]),
                np.concatenate([np.asarray(p[1]) for p in pieces]), exact)

    def encode(state, X, mask, key, num_samples):
        mean, scale, exact = codes(state, X, mask, key, num_samples)
        how = "exact" if exact else (f"Monte Carlo over {num_samples} draws (its moments "
                                     "have no closed form)")
        return ({"mean": mean, "scale": scale},
                f"E_q[z | x] and standard deviations of {proposal.what}, {how}")

    @functools.partial(jax.jit, static_argnums=(5, 6))
    def _impute(model_params, keys, X, mask, phi, num_samples, num_draws):
        def one(k, x, m, p):
            q = None if proposal.q is None else proposal.q(*p)
            return missing.impute(k, model, model_params, x, m, num_samples,
                                  num_draws=num_draws, q=q,
                                  chunk_size=min(num_samples, IMPUTE_CHUNK))

        return jax.vmap(one)(keys, X, mask, phi)

    def impute(state, X, mask, key, num_samples, num_draws):
        if model.decoder is None:
            raise RunError("this model has no decoder: imputation needs "
                           "model.decoder(params, z) -> p(x | z).")
        model_params = params(state)
        X, M = jnp.asarray(X), _mask_rows(mask, np.shape(X))
        phi = phi_of(model_params, X, M, jax.random.fold_in(key, 1))
        keys = jax.random.split(key, X.shape[0])  # row n's draws: keys[n], whatever N is
        pieces = []
        for start in range(0, X.shape[0], IMPUTE_ROWS):
            rows = slice(start, start + IMPUTE_ROWS)
            pieces.append(jax.tree_util.tree_map(np.asarray, _impute(
                model_params, keys[rows], X[rows], M[rows], _rows(phi, rows), num_samples,
                num_draws)))
        arrays = {"x": np.concatenate([p.mean for p in pieces]),
                  "effective_sample_size": np.concatenate([p.effective_sample_size
                                                           for p in pieces])}
        if num_draws:
            arrays["draws"] = np.swapaxes(np.concatenate([p.draws for p in pieces]), 0, 1)
        return arrays, (f"E[x_mis | x_obs] by self-normalized importance sampling, K="
                        f"{num_samples} draws of {proposal.what}")

    sample = None
    if model.decoder is not None and model.prior is not None:
        @functools.partial(jax.jit, static_argnums=(2, 3))
        def _draw(model_params, key, n, means):
            from jlvm import _checks

            prior_key, x_key = jax.random.split(key)
            z = _checks.sample(model.prior(model_params), prior_key, n)
            if means:  # the mean image E[x | z] shows a digit best
                return jax.vmap(lambda zk: model.decoder(model_params, zk).mean())(z)
            return jax.vmap(lambda k, zk: _checks.sample(model.decoder(model_params, zk), k,
                                                         1)[0])(jax.random.split(x_key, n), z)

        def sample(state, key, n, images=False):
            drawn = np.asarray(_draw(params(state), key, n, bool(images)))
            return drawn, ("E[x | z] (the means of p(x | z)), z ~ p(z)" if images
                           else "draws x ~ p(x)")

    def figures(state, view: View, records, key):
        from jlvm import plots
        from jlvm.runs import _figures

        out = {}
        if sample is not None:
            out["samples.png"] = _figures.samples_figure(sample(state, key, 64,
                                                                view.image_shape is not None),
                                                         view)
        mean, _, exact = codes(state, view.test, None, key, FIGURE_DRAWS)
        estimate = "" if exact else f", a mean of {FIGURE_DRAWS} draws"
        out["latent.png"] = plots.latent_scatter(
            mean.reshape(mean.shape[0], -1), view.labels, colour_label="class label",
            title=f"{view.title}: E_q[z | x] of test data{estimate}")
        if model.decoder is not None:
            shown = jnp.asarray(mean[:RECONSTRUCTED])
            rebuilt = np.asarray(jax.vmap(lambda z: model.decoder(params(state), z).mean())(
                shown))
            out["reconstructions.png"] = _figures.reconstruction_figure(
                view.test[:RECONSTRUCTED], rebuilt, view,
                f"E[x | z], z = E_q[z | x] ({proposal.what})")
        return out

    return Built(model=model, learner=learner, batch_size=batch_size, reported=reported,
                 likelihood_type=likelihood_type, params=params,
                 train_data=train_data or (lambda X, mask: X if mask is None else (X, mask)),
                 bounds=bounds, evaluator=evaluator, exact=False, encode=encode,
                 impute=impute, sample=sample, figures=figures, facts=facts)
