"""Learning algorithms, each a function returning ``jlvm.train.Learner(init, step)``.

``amortized``, ``semi_amortized`` and ``svi`` take a ``jlvm.Model`` (pure functions over
any params pytree); nothing here knows a model's class.

- ``amortized``: the VAE (ELBO) or IWAE objective over encoder and decoder jointly.
- ``semi_amortized``: the encoder's q refined per data point by a few gradient steps.
- ``svi``: one variational parameter set per data point, optimized in an inner loop.
- ``em``: expectation maximization for a mixture (Gaussian by default, or
  ``family=jlvm.models.bernoulli_mixture``).
- ``missing_svi``: the lecture's SVI for binary data with missing entries (a mean-field
  Bernoulli phi^i per data point, fitted by the score function until it converges);
  ``missing_exact``: the same model by exact maximum likelihood over every completion.
"""

from jlvm.inference.amortized import amortized, semi_amortized
from jlvm.inference.em import em
from jlvm.inference.incomplete import MissingSVIParams, missing_exact, missing_svi
from jlvm.inference.svi import SVIParams, svi

__all__ = ["MissingSVIParams", "SVIParams", "amortized", "em", "missing_exact", "missing_svi",
           "semi_amortized", "svi"]
