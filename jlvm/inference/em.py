"""EM for the Gaussian mixture with the shared Learner interface."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm.models import gmm, protocol
from jlvm.train import Learner, TrainState, keep_if_finite


def em(num_components: int, *, reg_covar: float = 1e-6,
       covariance_type: str = "full") -> Learner:
    """EM as a Learner: ``init`` picks starting parameters of ``covariance_type`` ("full",
    "diag", "spherical" or "tied", scikit-learn's names) from the batch
    (``gmm.init_from_data``); each ``step(state, batch)`` is one full EM iteration, where
    the batch is the data X [N, D], or (X, mask [N, D] bool, True = observed) for EM on the
    observed entries (``gmm.masked_em_iteration``; a start from the column-mean-imputed
    data).

    Metrics: ``log_likelihood``, the mean log p(x) (log p(x_obs) with a mask) under the
    parameters BEFORE the step, which equals the ELBO after the E-step (reported as
    ``elbo`` too).
    """
    num_components = _checks.positive_int(num_components, "num_components")
    reg_covar = _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
    covariance_type = _checks.one_of(covariance_type, "covariance_type", gmm.COVARIANCE_TYPES)

    def init(key: jax.Array, batch) -> TrainState:
        _checks.prng_key(key)
        X, mask = protocol.split_batch(batch)
        params_key, state_key = jax.random.split(key)
        start = X if mask is None else gmm.mean_imputed(X, mask)
        params = gmm.init_from_data(params_key, start, num_components, reg_covar=reg_covar,
                                    covariance_type=covariance_type)
        return TrainState(params, (), jnp.zeros((), jnp.int32), state_key)

    def step(state: TrainState, batch):
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState (from learner.init), got "
                            f"{type(state).__name__}.")
        X, mask = protocol.split_batch(batch)
        dim = state.params.means.shape[-1]
        if X.shape[1] != dim:
            raise ValueError(f"batch must be the data X [N, D] with N >= 1 and the mixture's "
                             f"D={dim}, got {X.shape}.")
        if mask is None:
            params, log_likelihood = gmm.em_iteration(state.params, X, reg_covar)
        else:
            params, log_likelihood = gmm.masked_em_step(state.params, X, mask, reg_covar)
        # a component whose covariance became singular gives NaN parameters: they never
        # replace the old ones, and ``finite`` tells the training loop to stop
        finite = jnp.isfinite(log_likelihood) & jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(leaf)) for leaf in params]))
        new = TrainState(params, (), state.step + 1, state.key)
        new, finite = keep_if_finite(jnp.where(finite, log_likelihood, jnp.nan), new, state)
        return new, {"log_likelihood": log_likelihood, "elbo": log_likelihood, "finite": finite}

    return Learner(init, step)
