"""Latent variable models as modules of pure functions over a parameter pytree.

- ``gmm``: mixture of full-covariance Gaussians (discrete z).
- ``linear_gaussian``: probabilistic PCA, exact marginal and posterior (the oracle).
- ``autoregressive``: NADE over binary vectors, exact log p(x) (the missing-data example).
- ``vae``: deep latent variable model, p(x|z) from a Flax network, amortized encoder.
- ``protocol``: ``Model``, the NamedTuple of pure functions every learner takes.
- ``posteriors``: variational families (diagonal, full covariance) as phi <-> distrax q.
"""

from jlvm.models import autoregressive, gmm, linear_gaussian, posteriors, protocol, vae
from jlvm.models.protocol import Model

__all__ = ["Model", "autoregressive", "gmm", "linear_gaussian", "posteriors", "protocol",
           "vae"]
