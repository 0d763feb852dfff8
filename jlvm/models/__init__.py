"""Latent variable models as modules of pure functions over a parameter pytree.

- ``gmm``: mixture of full-covariance Gaussians (discrete z).
- ``linear_gaussian``: probabilistic PCA, exact marginal and posterior (the oracle).
- ``vae``: deep latent variable model, p(x|z) from a Flax network, amortized encoder.
"""

from jlvm.models import gmm, linear_gaussian, vae

__all__ = ["gmm", "linear_gaussian", "vae"]
