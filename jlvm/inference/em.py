"""EM for the Gaussian mixture with the shared Learner interface."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm.models import gmm
from jlvm.train import Learner, TrainState


def em(num_components: int, *, reg_covar: float = 1e-6) -> Learner:
    """EM as a Learner: ``init`` picks starting parameters from the batch
    (``gmm.init_from_data``); each ``step(state, X [N, D])`` is one full EM iteration.

    Metrics: ``log_likelihood``, the mean log p(x) under the parameters BEFORE the step,
    which equals the ELBO after the E-step (reported as ``elbo`` too).
    """
    num_components = _checks.positive_int(num_components, "num_components")
    if not reg_covar >= 0:
        raise ValueError(f"reg_covar must be >= 0, got {reg_covar!r}.")

    def init(key: jax.Array, batch: jax.Array) -> TrainState:
        params_key, state_key = jax.random.split(key)
        params = gmm.init_from_data(params_key, batch, num_components, reg_covar=reg_covar)
        return TrainState(params, (), jnp.zeros((), jnp.int32), state_key)

    def step(state: TrainState, batch: jax.Array):
        params, log_likelihood = gmm.em_iteration(state.params, batch, reg_covar)
        return (TrainState(params, (), state.step + 1, state.key),
                {"log_likelihood": log_likelihood, "elbo": log_likelihood,
                 "finite": jnp.isfinite(log_likelihood)})

    return Learner(init, step)
