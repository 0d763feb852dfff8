"""jlvm: latent variable models as pure JAX functions.

Estimators take ``log_joint(z) -> log p(x, z)`` for one z and a distrax ``q``; batching
is ``jax.vmap``, compilation ``jax.jit``, gradients ``jax.grad``.

The names below are imported on first use (PEP 562), so ``import jlvm`` and the ``jlvm``
command start without loading JAX until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_NAMES = {
    "GradientStatistics": "jlvm.diagnostics",
    "Model": "jlvm.models.protocol",
    "gradient_statistics": "jlvm.diagnostics",
    "binary_support": "jlvm.estimators",
    "effective_sample_size": "jlvm.estimators",
    "elbo": "jlvm.estimators",
    "elbo_with_entropy": "jlvm.estimators",
    "elbo_with_kl": "jlvm.estimators",
    "importance_log_weights": "jlvm.estimators",
    "iwae_bound": "jlvm.estimators",
    "log_marginal_ais": "jlvm.ais",
    "log_marginal_ais_reverse": "jlvm.ais",
    "log_marginal_exact": "jlvm.estimators",
    "log_marginal_is": "jlvm.estimators",
    "log_marginal_naive": "jlvm.estimators",
}
_SUBMODULES = ("ais", "checkpoint", "data", "diagnostics", "estimators", "evaluate", "gradients",
               "inference", "missing", "models", "plots", "runs", "train")

__all__ = [
    "GradientStatistics",
    "Model",
    "ais",
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
    "log_marginal_ais",
    "log_marginal_ais_reverse",
    "log_marginal_exact",
    "log_marginal_is",
    "log_marginal_naive",
    "missing",
    "models",
    "runs",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"jlvm.{name}")
    else:
        raise AttributeError(f"module 'jlvm' has no attribute {name!r}")
    globals()[name] = value  # the next access is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_SUBMODULES})


if TYPE_CHECKING:  # what static tools and editors see
    from jlvm import ais, data, diagnostics, missing, models, runs
    from jlvm.ais import log_marginal_ais, log_marginal_ais_reverse
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
    from jlvm.models.protocol import Model
