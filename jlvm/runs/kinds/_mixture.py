"""What the two mixture kinds (``gmm``, ``bernoulli-mixture``) share: a finite z, so that
log p(x), the responsibilities p(k | x) and E[x_mis | x_obs] are exact, through the family
module's ``log_marginal``, ``posterior``, ``conditional_mean`` and ``conditional_draws``."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


def adjusted_rand_index(components, labels) -> float:
    """The adjusted Rand index of a clustering ``components`` [n] against ``labels`` [n]:
    1 for the same partition, about 0 for a random one (scikit-learn's)."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(labels), np.asarray(components)))


class Exact(NamedTuple):
    """A mixture's exact parts, as ``Built`` takes them (``jlvm.runs.kinds``), plus
    ``components_of(state, X, mask) -> [n]``, each row's most probable component."""

    bounds: Any
    evaluator: Any
    encode: Any
    impute: Any
    scores: Any
    components_of: Any


def exact(family) -> Exact:
    """The exact parts of a mixture whose model module is ``family`` (``jlvm.models.gmm``,
    ``jlvm.models.bernoulli_mixture``), each compiled once."""
    import functools

    import jax
    import jax.numpy as jnp

    def observed(X, mask):
        return jnp.ones(np.shape(X), bool) if mask is None else jnp.asarray(mask)

    @jax.jit
    def log_marginals(params, X, mask):
        return jax.vmap(family.log_marginal, in_axes=(None, 0, 0))(params, X, mask)

    def bounds(state, X, mask, key, rows=None):
        return {"log_likelihood": log_marginals(state.params, X, observed(X, mask))}

    def evaluator(state, settings):
        def block(key, X, mask):
            exact = log_marginals(state.params, X, observed(X, mask))
            # the ELBO at q = p(k | x) is log p(x)
            return {"log_likelihood": exact, "elbo": exact}

        return block

    @jax.jit
    def responsibilities(params, X, mask):
        return jax.vmap(lambda x, m: jax.nn.softmax(family.posterior(params, x, m).logits))(
            X, mask)

    def encode(state, X, mask, key, num_samples):
        resp = np.asarray(responsibilities(state.params, jnp.asarray(X), observed(X, mask)))
        return ({"responsibilities": resp, "component": resp.argmax(axis=1).astype(np.int32)},
                "p(k | x), exact")

    def components_of(state, X, mask):
        return np.asarray(responsibilities(state.params, jnp.asarray(X),
                                           observed(X, mask))).argmax(axis=1)

    @functools.partial(jax.jit, static_argnums=4)
    def conditional(params, keys, X, mask, num_draws):
        mean = jax.vmap(family.conditional_mean, in_axes=(None, 0, 0))(params, X, mask)
        if not num_draws:
            return mean, None
        draws = jax.vmap(lambda k, x, m: family.conditional_draws(k, params, x, m, num_draws))(
            keys, X, mask)
        return mean, jnp.swapaxes(draws, 0, 1)

    def impute(state, X, mask, key, num_samples, num_draws):
        mean, draws = conditional(state.params, jax.random.split(key, np.shape(X)[0]),
                                  jnp.asarray(X), observed(X, mask), num_draws)
        arrays = {"x": np.asarray(mean)}
        if num_draws:
            arrays["draws"] = np.asarray(draws)
        return arrays, "E[x_mis | x_obs], exact"

    def scores(state, X, mask, labels):
        return {"adjusted_rand_index": round(adjusted_rand_index(
            components_of(state, X, mask), labels), 4)}

    return Exact(bounds=bounds, evaluator=evaluator, encode=encode, impute=impute,
                 scores=scores, components_of=components_of)
