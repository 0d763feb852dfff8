"""The Gaussian mixture (``--model gmm``), a ``jlvm.Model`` whose encoder is its exact
posterior p(k | x), trained by EM (``jlvm.inference.em``): one full-batch EM iteration an
epoch, its covariances of ``--covariance-type`` (scikit-learn's full, diag, spherical or
tied; the checkpoint holds that type's parameters). Everything about it is exact: log p(x)
and the ELBO at q = p(z | x) (they are equal), the responsibilities, E[x_mis | x_obs]."""

from __future__ import annotations

import numpy as np

from jlvm.runs._errors import RunError
from jlvm.runs.kinds import Built, Kind, _mixture

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

    parts = _mixture.exact(gmm)

    def sample(state, key, n, images=False):
        return np.asarray(gmm.sample(key, state.params, n)[0]), "draws x ~ p(x)"

    def figures(state, view, records, key):
        from jlvm import plots

        codes = parts.components_of(state, view.test, None)
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
                 bounds=parts.bounds, evaluator=parts.evaluator, exact=True,
                 encode=parts.encode, impute=parts.impute, sample=sample, figures=figures,
                 facts={}, scores=parts.scores)


KIND = Kind(
    settings=("components", "reg_covar", "covariance_type"),
    # an EM "epoch" is one iteration: 100 unless given
    defaults=lambda given, facts: {"epochs": 100},
    check=_check,
    build=_build,
    data_parallel=False,
    describe="a Gaussian mixture fitted by EM (exact log p(x))")
