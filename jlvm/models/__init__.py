"""Latent variable models as modules of pure functions over a parameter pytree.

- ``gmm``: mixture of full-covariance Gaussians (discrete z).
- ``linear_gaussian``: probabilistic PCA, exact marginal and posterior (the oracle).
- ``autoregressive``: NADE over binary vectors, exact log p(x) (the missing-data example).
- ``vae``: deep latent variable model, p(x|z) from a Flax network, amortized encoder.
"""

from jlvm.models import autoregressive, gmm, linear_gaussian, vae

__all__ = ["autoregressive", "gmm", "linear_gaussian", "vae"]
