"""The Gaussian mixture (``--model gmm``), a ``jlvm.Model`` whose encoder is its exact
posterior p(k | x), trained by EM (``jlvm.inference.em``): one full-batch EM iteration an
epoch, its covariances of ``--covariance-type`` (scikit-learn's full, diag, spherical or
tied; the checkpoint holds that type's parameters). Everything about it is exact: log p(x)
and the ELBO at q = p(z | x) (they are equal), the responsibilities, E[x_mis | x_obs]."""

from __future__ import annotations

import numpy as np

from jlvm.runs._errors import RunError
from jlvm.runs.kinds import Built, Kind

# gmm.COVARIANCE_TYPES, spelled out: checking a configuration starts no JAX
COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def _check(config) -> None:
    if config.likelihood is not None:
        raise RunError("--likelihood does not apply to --model gmm (its components are "
                       "Gaussians).")
    if config.covariance_type not in COVARIANCE_TYPES:
        raise RunError(f"--covariance-type must be one of {', '.join(COVARIANCE_TYPES)} "
                       f"(scikit-learn's names), got {config.covariance_type!r}.")


def _build(config, data, stored, warn) -> Built:
    import functools

    import jax
    import jax.numpy as jnp

    from jlvm import inference
    from jlvm.models import gmm
    from jlvm.runs import _figures

    X = data.train_x
    count, dim = X.shape
    if config.components > count:
        raise RunError(f"--components ({config.components}) must be at most the {count} "
                       f"training examples of {data.dataset.name}.")
    learner = inference.em(config.components, reg_covar=config.reg_covar,
                           covariance_type=config.covariance_type)

    def observed(X, mask):
        return jnp.ones(np.shape(X), bool) if mask is None else jnp.asarray(mask)

    @jax.jit
    def log_marginals(params, X, mask):
        return jax.vmap(gmm.log_marginal, in_axes=(None, 0, 0))(params, X, mask)

    def bounds(state, X, mask, key, rows=None):
        return {"log_likelihood": log_marginals(state.params, X, observed(X, mask))}

    def evaluator(state, settings):
        def block(key, X, mask):
            exact = log_marginals(state.params, X, observed(X, mask))
            # the ELBO at q = p(z | x) is log p(x)
            return {"log_likelihood": exact, "elbo": exact}

        return block

    @jax.jit
    def responsibilities(params, X, mask):
        return jax.vmap(lambda x, m: jax.nn.softmax(gmm.posterior(params, x, m).logits))(
            X, mask)

    def encode(state, X, mask, key, num_samples):
        resp = np.asarray(responsibilities(state.params, X, observed(X, mask)))
        return ({"responsibilities": resp, "component": resp.argmax(axis=1).astype(np.int32)},
                "p(k | x), exact")

    @functools.partial(jax.jit, static_argnums=4)
    def conditional(params, keys, X, mask, num_draws):
        mean = jax.vmap(gmm.conditional_mean, in_axes=(None, 0, 0))(params, X, mask)
        if not num_draws:
            return mean, None
        draws = jax.vmap(lambda k, x, m: gmm.conditional_draws(k, params, x, m, num_draws))(
            keys, X, mask)
        return mean, jnp.swapaxes(draws, 0, 1)

    def impute(state, X, mask, key, num_samples, num_draws):
        mean, draws = conditional(state.params, jax.random.split(key, np.shape(X)[0]),
                                  jnp.asarray(X), observed(X, mask), num_draws)
        arrays = {"x": np.asarray(mean)}
        if num_draws:
            arrays["draws"] = np.asarray(draws)
        return arrays, "E[x_mis | x_obs], exact"

    def sample(state, key, n, images=False):
        return np.asarray(gmm.sample(key, state.params, n)[0]), "draws x ~ p(x)"

    def scores(state, X, mask, labels):
        from jlvm.runs.kinds.bernoulli_mixture import adjusted_rand_index

        resp = responsibilities(state.params, jnp.asarray(X), observed(X, mask))
        return {"adjusted_rand_index": round(adjusted_rand_index(
            np.asarray(resp).argmax(axis=1), labels), 4)}

    def figures(state, view, records, key):
        from jlvm import plots

        resp = np.asarray(responsibilities(state.params, jnp.asarray(view.test),
                                           observed(view.test, None)))
        codes = resp.argmax(axis=1)
        centered = np.asarray(view.test) - np.asarray(view.test).mean(0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        shown = _figures.RECONSTRUCTED
        return {
            "samples.png": _figures.samples_figure(sample(state, key, 64), view),
            "reconstructions.png": _figures.reconstruction_figure(
                view.test[:shown], np.asarray(state.params.means)[codes[:shown]], view,
                "mean of the most probable component"),
            "latent.png": plots.latent_scatter(
                centered @ vt[:2].T, codes, axis_names=("PC 1 of x", "PC 2 of x"),
                colour_label="most probable component k",
                title=f"{view.title}: test data (2 principal components of x), a GMM has "
                      "no continuous z")}

    return Built(model=gmm.model(config.components, dim, config.covariance_type),
                 learner=learner, batch_size=count,
                 reported=(("log_likelihood", "log p(x)"),), likelihood_type="density",
                 params=lambda state: state.params,
                 train_data=lambda X, mask: X if mask is None else (X, mask),
                 bounds=bounds, evaluator=evaluator, exact=True, encode=encode,
                 impute=impute, sample=sample, figures=figures, facts={},
                 scores=scores)


KIND = Kind(
    settings=("components", "reg_covar", "covariance_type"),
    # an EM "epoch" is one iteration: 100 unless given
    defaults=lambda given, facts: {"epochs": 100},
    check=_check,
    build=_build,
    data_parallel=False,
    describe="a Gaussian mixture fitted by EM (exact log p(x))")
