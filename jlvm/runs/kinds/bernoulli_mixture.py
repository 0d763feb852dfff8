"""The mixture of Bernoullis (``--model bernoulli-mixture``) for binary data, a
``jlvm.Model`` whose encoder is its exact posterior p(k | x), trained by EM
(``jlvm.inference.em`` with ``family=bernoulli_mixture``): one full-batch EM iteration an
epoch. Everything about it is exact: log p(x) and the ELBO at q = p(k | x) (they are
equal), the responsibilities, E[x_mis | x_obs]. Its figures show the components' pixel
probabilities and the clusters' sizes, and, where the data has labels, the clustering's
agreement with them (the adjusted Rand index, which ``jlvm evaluate`` reports too)."""

from __future__ import annotations

import numpy as np

from jlvm.runs._errors import RunError
from jlvm.runs.kinds import Built, Kind, _mixture


def _check(config) -> None:
    if config.likelihood is not None:
        raise RunError("--likelihood does not apply to --model bernoulli-mixture (its "
                       "components are products of Bernoullis).")


def _build(config, data, stored, warn) -> Built:
    import jax

    from jlvm import inference
    from jlvm.models import bernoulli_mixture
    from jlvm.runs import _data, _figures

    if data.levels != 2:
        what = "real-valued" if data.levels is None else f"on {data.levels} gray levels"
        raise RunError(f"--model bernoulli-mixture needs binary data (0/1); --data "
                       f"{_data.describe(config.data)} is {what} (try --model gmm, or a "
                       f"binary data set such as digits).")
    X = data.train_x
    count, dim = X.shape
    if config.components > count:
        raise RunError(f"--components ({config.components}) must be at most the {count} "
                       f"training examples of {data.dataset.name}.")
    learner = inference.em(config.components, family=bernoulli_mixture)

    parts = _mixture.exact(bernoulli_mixture)

    def sample(state, key, n, images=False):
        draws, components = bernoulli_mixture.sample(key, state.params, n)
        if images:  # binary draws are noise to the eye; their component's probabilities
            return (np.asarray(jax.nn.sigmoid(state.params.logits_x[components])),
                    "mean images p(x_d = 1 | k), k ~ p(k)")
        return np.asarray(draws), "draws x ~ p(x)"

    def figures(state, view, records, key):
        from jlvm import plots

        weights = np.asarray(jax.nn.softmax(state.params.logits))
        probabilities = np.asarray(jax.nn.sigmoid(state.params.logits_x))
        codes = parts.components_of(state, view.test, None)
        order = np.argsort(-weights, kind="stable")
        agreement = ("" if view.labels is None else
                     f", adjusted Rand index with the labels "
                     f"{_mixture.adjusted_rand_index(codes, view.labels):.3f}")
        shown = _figures.RECONSTRUCTED
        result = {
            "samples.png": _figures.samples_figure(sample(state, key, 64,
                                                          view.image_shape is not None),
                                                   view),
            "reconstructions.png": _figures.reconstruction_figure(
                view.test[:shown], probabilities[codes[:shown]], view,
                "p(x_d = 1 | k) of the most probable component k"),
            "cluster_sizes.png": plots.cluster_sizes(
                weights, codes, title=f"{view.title}: {len(codes)} test examples"
                                      f"{agreement}")}
        if view.image_shape:
            result["components.png"] = plots.image_grid(
                probabilities[order], view.image_shape,
                columns=min(8, len(order)),
                title=f"{view.title}: components p(x_d = 1 | k), by mixing weight pi_k "
                      f"(largest first: {weights[order[0]]:.3f} ... "
                      f"{weights[order[-1]]:.3f})")
        return result

    return Built(model=bernoulli_mixture.model(config.components, dim), learner=learner,
                 batch_size=count, reported=(("log_likelihood", "log p(x)"),),
                 likelihood_type="probability", params=lambda state: state.params,
                 train_data=lambda X, mask: X if mask is None else (X, mask),
                 bounds=parts.bounds, evaluator=parts.evaluator, exact=True,
                 encode=parts.encode, impute=parts.impute, sample=sample, figures=figures,
                 facts={}, scores=parts.scores)


KIND = Kind(
    settings=("components",),
    # an EM "epoch" is one iteration: 100 unless given
    defaults=lambda given, facts: {"epochs": 100},
    check=_check,
    build=_build,
    data_parallel=False,
    describe="a mixture of Bernoullis for binary data, fitted by EM (exact log p(x))")
