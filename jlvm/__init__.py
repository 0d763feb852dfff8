"""jlvm: latent variable models as pure JAX functions.

Estimators take ``log_joint(z) -> log p(x, z)`` for one z and a distrax ``q``; batching
is ``jax.vmap``, compilation ``jax.jit``, gradients ``jax.grad``.
"""

from jlvm import data, diagnostics, missing, models
from jlvm.diagnostics import GradientStatistics, gradient_statistics
from jlvm.estimators import (
    binary_support,
    effective_sample_size,
    elbo,
    elbo_with_entropy,
    elbo_with_kl,
    importance_log_weights,
    iwae_bound,
    log_marginal_exact,
    log_marginal_is,
    log_marginal_naive,
)

__version__ = "0.1.0"

__all__ = [
    "GradientStatistics",
    "binary_support",
    "data",
    "diagnostics",
    "effective_sample_size",
    "elbo",
    "elbo_with_entropy",
    "elbo_with_kl",
    "gradient_statistics",
    "importance_log_weights",
    "iwae_bound",
    "log_marginal_exact",
    "log_marginal_is",
    "log_marginal_naive",
    "missing",
    "models",
]
