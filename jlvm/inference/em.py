"""EM for the mixtures (the Gaussian and the Bernoulli one) with the shared Learner
interface."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm.models import gmm, protocol
from jlvm.train import Learner, TrainState, keep_if_finite

_REG_COVAR = 1e-6
_COVARIANCE_TYPE = "full"


class _Family(NamedTuple):
    """What EM needs of a mixture, its settings bound: ``init(key, X, mask)`` -> params
    (X [N, D], mask None or bool [N, D]); ``iteration(params, X, mask)`` -> (new params,
    mean log p(x_obs) under the OLD ones); ``data_dim(params)`` -> D."""

    init: Callable[[jax.Array, jax.Array, Any], Any]
    iteration: Callable[[Any, jax.Array, Any], tuple[Any, jax.Array]]
    data_dim: Callable[[Any], int]


def _gaussian(num_components: int, reg_covar: float, covariance_type: str) -> _Family:
    """The Gaussian mixture: ``reg_covar`` added to every covariance's diagonal, its
    covariances of ``covariance_type``; with a mask, a start from the column-mean-imputed
    data and ``gmm.masked_em_step``."""

    def init(key, X, mask):
        start = X if mask is None else gmm.mean_imputed(X, mask)
        return gmm.init_from_data(key, start, num_components, reg_covar=reg_covar,
                                  covariance_type=covariance_type)

    def iteration(params, X, mask):
        if mask is None:
            return gmm.em_iteration(params, X, reg_covar)
        return gmm.masked_em_step(params, X, mask, reg_covar)

    return _Family(init, iteration, lambda params: params.means.shape[-1])


def _of_module(family: ModuleType, num_components: int) -> _Family:
    """A mixture module with ``init_from_data(key, X, K, *, mask)``,
    ``em_iteration(params, X, mask)`` and ``sizes(params) -> (K, D)`` (as
    ``jlvm.models.bernoulli_mixture``), which has no settings beyond K."""
    missing = [name for name in ("init_from_data", "em_iteration", "sizes")
               if not callable(getattr(family, name, None))]
    if missing:
        raise TypeError(f"family must be a mixture module with init_from_data, em_iteration "
                        f"and sizes (as jlvm.models.bernoulli_mixture), got "
                        f"{getattr(family, '__name__', type(family).__name__)} without "
                        f"{', '.join(missing)}.")
    return _Family(
        lambda key, X, mask: family.init_from_data(key, X, num_components, mask=mask),
        family.em_iteration, lambda params: family.sizes(params)[1])


def em(num_components: int, *, reg_covar: float = _REG_COVAR,
       covariance_type: str = _COVARIANCE_TYPE, family: ModuleType | None = None) -> Learner:
    """EM for a mixture as a Learner.

    ``init`` picks starting parameters from the batch (the family's ``init_from_data``);
    each ``step(state, batch)`` is one full EM iteration on the whole batch. The Gaussian
    mixture uses ``gmm.init_from_data`` and ``gmm.em_iteration``; with a mask
    ``gmm.masked_em_step``, from a start drawn from the column-mean-imputed data.

    Args:
      num_components: K >= 1 mixture components.
      reg_covar: Gaussian mixture only: >= 0, added to every covariance's diagonal.
      covariance_type: Gaussian mixture only: ``"full"``, ``"diag"``, ``"spherical"`` or
        ``"tied"`` (scikit-learn's names). Another family takes neither setting: a value
        other than the default is a ValueError.
      family: the mixture, a module of functions: ``jlvm.models.gmm`` when None, or
        ``jlvm.models.bernoulli_mixture``, or any module with ``init_from_data(key, X, K,
        *, mask)``, ``em_iteration(params, X, mask)`` and ``sizes(params) -> (K, D)``.

    Returns:
      ``Learner``; ``init(key, batch)`` and ``step(state, batch)`` take the data X
      ``[N, D]``, or ``(X, mask)`` with mask ``[N, D]`` bool (True = observed) for EM on
      the observed entries. The step reports ``log_likelihood``, the mean log p(x)
      (log p(x_obs) with a mask) under the parameters BEFORE the step, which equals the
      ELBO after the E-step (reported as ``elbo`` too), and ``finite``: whether the
      step's numbers were finite (else the old parameters are kept).
    """
    num_components = _checks.positive_int(num_components, "num_components")
    if family is None or family is gmm:
        reg_covar = _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
        covariance_type = _checks.one_of(covariance_type, "covariance_type",
                                         gmm.COVARIANCE_TYPES)
        mixture = _gaussian(num_components, reg_covar, covariance_type)
    else:
        mixture = _of_module(family, num_components)
        given = [f"{name}={value!r}" for name, value, default in (
            ("reg_covar", reg_covar, _REG_COVAR),
            ("covariance_type", covariance_type, _COVARIANCE_TYPE)) if value != default]
        if given:
            raise ValueError(f"{', '.join(given)} applies to the Gaussian mixture only, not to "
                             f"family {family.__name__}; leave it at its default.")

    def init(key: jax.Array, batch) -> TrainState:
        _checks.prng_key(key)
        X, mask = protocol.split_batch(batch)
        params_key, state_key = jax.random.split(key)
        params = mixture.init(params_key, X, mask)
        return TrainState(params, (), jnp.zeros((), jnp.int32), state_key)

    def step(state: TrainState, batch):
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState (from learner.init), got "
                            f"{type(state).__name__}.")
        X, mask = protocol.split_batch(batch)
        dim = mixture.data_dim(state.params)
        if X.shape[1] != dim:
            raise ValueError(f"batch must be the data X [N, D] with N >= 1 and the mixture's "
                             f"D={dim}, got {X.shape}.")
        params, log_likelihood = mixture.iteration(state.params, X, mask)
        # a Gaussian component whose covariance became singular gives NaN parameters: they
        # never replace the old ones, and ``finite`` tells the training loop to stop
        finite = jnp.isfinite(log_likelihood) & jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(params)]))
        new = TrainState(params, (), state.step + 1, state.key)
        new, finite = keep_if_finite(jnp.where(finite, log_likelihood, jnp.nan), new, state)
        return new, {"log_likelihood": log_likelihood, "elbo": log_likelihood, "finite": finite}

    return Learner(init, step)
