"""Latent variable models as modules of pure functions over a parameter pytree.

- ``gmm``: mixture of Gaussians, scikit-learn's four covariance types (discrete z).
- ``bernoulli_mixture``: mixture of Bernoullis over binary x (discrete z), exact EM.
- ``linear_gaussian``: probabilistic PCA, exact marginal and posterior (the oracle).
- ``autoregressive``: NADE over binary vectors, exact log p(x) (the missing-data example).
- ``vae``: deep latent variable model, p(x|z) from a Flax network, amortized encoder.
- ``protocol``: ``Model``, the NamedTuple of pure functions every learner takes.
- The VAE's families, each by a spec string: ``likelihoods`` (p(x|z): "bernoulli",
  "categorical:M", "gaussian", "gaussian-pixel", "gaussian-fixed:S"), ``priors`` (p(z):
  "normal", "mixture:K"), ``posteriors`` (q as phi <-> distrax: "diagonal", "full") and
  ``flows`` (the "flow" family: coupling layers), ``networks`` (MLP and convolutional).
"""

from jlvm.models import (
    autoregressive,
    bernoulli_mixture,
    flows,
    gmm,
    likelihoods,
    linear_gaussian,
    networks,
    posteriors,
    priors,
    protocol,
    vae,
)
from jlvm.models.protocol import Model

__all__ = ["Model", "autoregressive", "bernoulli_mixture", "flows", "gmm", "likelihoods",
           "linear_gaussian", "networks", "posteriors", "priors", "protocol", "vae"]
