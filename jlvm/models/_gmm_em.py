"""Expectation maximization for the Gaussian mixture (``jlvm.models.gmm`` re-exports it):
complete data, and data with missing entries (EM on the observed entries).

E-step: q(z_n) = p(z_n | x_n) (and, with missing entries, the Gaussian of the missing
coordinates given the observed ones, per component); M-step: the closed-form maximizer of
the ELBO from the expected sufficient statistics, for each covariance type the one of
scikit-learn's ``_estimate_gaussian_covariances_{full,diag,spherical,tied}`` (reg_covar
added where it adds it). The parameters' type says which (``_mixture.Covariance``).

Each function checks what is static (shapes, types, a reg_covar given as a number) at
its entry; inside ``fit_em``'s compiled loop those checks cost nothing at run time.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models._mixture import (
    COVARIANCES,
    Covariance,
    covariance_named,
    covariance_of,
    log_joint_table,
    normalizable,
    per_component,
    sizes,
)
from jlvm.models._mixture import HIGHEST as _HIGHEST


def init_from_data(key: jax.Array, X: jax.Array, num_components: int, *,
                   reg_covar: float = 1e-6, covariance_type: str = "full") -> Any:
    """A starting point for EM: K distinct data points as means, equal weights.

    Every component's covariance is the data covariance C + reg_covar I as the type keeps
    it (full and tied: C + reg I; diag: its diagonal; spherical: the mean of its diagonal).

    Args:
      key: PRNG key; picks the means.
      X: ``[N, D]``, finite, N >= max(2, num_components), at least K distinct rows.
      num_components: K, a Python int >= 1.
      reg_covar: >= 0 (> 0 where the data's covariance is singular).
      covariance_type: "full", "diag", "spherical" or "tied".

    Returns:
      The parameters of ``covariance_type``, a ``Params`` ("full"), ``DiagParams`` ("diag"),
      ``SphericalParams`` ("spherical") or ``TiedParams`` ("tied").
    """
    _checks.prng_key(key)
    num_components = _checks.positive_int(num_components, "num_components")
    reg_covar = _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
    family = covariance_named(covariance_type)
    X = _checks.float_array(X, "X")
    if X.ndim != 2 or X.shape[0] < max(num_components, 2) or X.shape[1] < 1:
        raise ValueError(f"X must have shape [N, D] with N >= max(2, num_components="
                         f"{num_components}) (a covariance needs two points), got {X.shape}.")
    _checks.finite_if_concrete(X, "X")
    distinct = _first_of_equal_rows(X)
    if _checks.is_concrete(distinct) and int(np.sum(distinct)) < num_components:
        raise ValueError(f"X has {int(np.sum(distinct))} distinct rows, "
                         f"fewer than num_components={num_components}.")
    means = _distinct_rows(key, X, distinct, num_components)
    dim = X.shape[1]
    covariance = family.data_covariance(X) + reg_covar * jnp.eye(dim, dtype=X.dtype)
    factor = family.from_full(covariance[None], jnp.ones(1, X.dtype))  # one component's
    if _checks.is_concrete(factor) and (
            not bool(jnp.all(jnp.isfinite(factor)))
            # with nothing added, float32's Cholesky of a singular matrix may "succeed"
            # with a pivot of rounding noise
            or (reg_covar == 0 and _nearly_singular(
                family.eigenvalues(np.asarray(covariance, np.float64))))):
        raise ValueError("the data's covariance is singular (constant or collinear columns "
                         f"of X) and reg_covar={reg_covar} does not lift it: use reg_covar > 0.")
    return family.params(jnp.zeros(num_components, X.dtype), means,
                         jnp.broadcast_to(factor, family.shape(num_components, dim)))


def _first_of_equal_rows(X: jax.Array) -> jax.Array:
    """[N] bool: whether row n of X is the first of the rows equal to it. Where X is
    concrete, by NumPy on the host (a second, -0.0 made 0.0 as == sees it); under jit, by
    sorting the rows lexicographically: the same rows either way."""
    if _checks.is_concrete(X):
        first = np.unique(np.asarray(X) + 0.0, axis=0, return_index=True)[1]
        return jnp.zeros(X.shape[0], bool).at[first].set(True)
    order = _lexicographic_order(X)  # equal rows end up side by side, in their order
    ordered = X[order]
    repeat = jnp.concatenate([jnp.zeros(1, bool),
                              jnp.all(ordered[1:] == ordered[:-1], axis=1)])
    return jnp.zeros(X.shape[0], bool).at[order].set(~repeat)


def _distinct_rows(key: jax.Array, X: jax.Array, distinct: jax.Array,
                   count: int) -> jax.Array:
    """``count`` rows of X drawn without replacement among its distinct rows (a repeated
    row is one candidate: ``distinct`` marks one of each), the same eagerly, under jit and
    under vmap over keys; NaN if X has fewer distinct rows (under jit, where that cannot
    be an error)."""
    rows = jax.random.choice(key, X.shape[0], (count,), replace=False,
                             p=distinct / jnp.sum(distinct))
    return jnp.where(jnp.sum(distinct) >= count, X[rows], jnp.nan)


def _lexicographic_order(X: jax.Array) -> jax.Array:
    """``jnp.lexsort(X.T)`` (the last column the primary key, ties in the rows' order) as D
    stable sorts by one column each, least significant first, in a ``lax.scan``:
    ``lexsort`` compiles one sort of D keys, which took XLA a minute at D = 784."""
    def by_column(order, column):
        return order[jnp.argsort(column[order], stable=True)], None

    order, _ = jax.lax.scan(by_column, jnp.arange(X.shape[0]), X.T)
    return order


def _nearly_singular(eigenvalues: np.ndarray) -> bool:
    """Whether float32 cannot tell a covariance of these eigenvalues from a singular one."""
    return eigenvalues.min() <= 10 * np.finfo(np.float32).eps * max(eigenvalues.max(), 1e-30)


def _regularization(reg_covar: Any) -> Any:
    """reg_covar >= 0 where its value is known (a negative one makes covariances that are
    not positive definite: NaN); a traced one passes, checked where it was a number."""
    if _checks.is_concrete(reg_covar):
        return _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
    return reg_covar


def _data(params: Any, X: Any) -> jax.Array:
    _, dim = sizes(params)
    X = _checks.float_array(X, "X").astype(params.means.dtype)
    if X.ndim != 2 or X.shape[1] != dim or X.shape[0] < 1:
        raise ValueError(f"X must have shape [N, D] with D={dim} and N >= 1, got {X.shape}.")
    return X


def e_step(params: Any, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact posterior for every point.

    With q(z_n) = p(z_n | x_n) the ELBO is tight, so the mean log-likelihood is returned too.

    Args:
      params: mixture parameters of any covariance type.
      X: ``[N, D]``, complete data, N >= 1.

    Returns:
      A tuple ``(log_resp, mean_log_likelihood)``, log responsibilities ``[N, K]`` and the
      scalar mean log p(x_n).
    """
    X = _data(params, X)
    relative, shift = jax.vmap(log_joint_table, in_axes=(None, 0))(params, X)
    log_norm = jax.nn.logsumexp(relative, axis=1, keepdims=True)
    return relative - log_norm, jnp.mean(log_norm[:, 0] - shift)


def m_step(X: jax.Array, log_resp: jax.Array, reg_covar: float,
           covariance_type: str = "full") -> Any:
    """Maximizes the ELBO in the parameters for fixed responsibilities (closed form).

    pi_k = N_k / N, mu_k = sum_n r_nk x_n / N_k, and with
    S_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k, as scikit-learn estimates them:
    full Sigma_k = S_k + reg I; tied Sigma = sum_k N_k S_k / N + reg I; diag
    sigma_kd^2 = (S_k)_dd + reg; spherical sigma_k^2 = mean_d (S_k)_dd + reg.

    Args:
      X: ``[N, D]``.
      log_resp: ``[N, K]`` log responsibilities (``e_step``'s).
      reg_covar: >= 0, added to each covariance's diagonal.
      covariance_type: "full", "diag", "spherical" or "tied".

    Returns:
      The parameters of ``covariance_type``.
    """
    family = covariance_named(covariance_type)
    X = _checks.float_array(X, "X")
    log_resp = _checks.float_array(log_resp, "log_resp")
    if X.ndim != 2 or log_resp.ndim != 2 or log_resp.shape[0] != X.shape[0]:
        raise ValueError(f"X must have shape [N, D] and log_resp [N, K] with the same N, got "
                         f"{X.shape} and {log_resp.shape}.")
    reg_covar = _regularization(reg_covar)
    resp = jnp.exp(log_resp)
    # the 10 eps keeps an emptied component from dividing by zero (as scikit-learn does)
    counts = jnp.sum(resp, axis=0) + 10 * jnp.finfo(resp.dtype).eps
    means = jnp.matmul(resp.T, X, precision=_HIGHEST) / counts[:, None]
    # around the new means: sums of squares, no float32 cancellation
    second = family.second_moments(resp, X[:, None, :] - means[None], None)
    factor = family.from_moments(counts, jnp.zeros_like(means), second, reg_covar)
    return family.params(jnp.log(counts / X.shape[0]), means, factor)


def em_iteration(params: Any, X: jax.Array, reg_covar: float) -> tuple[Any, jax.Array]:
    """One EM iteration: ``e_step``, then ``m_step``.

    Args:
      params, X: as in ``e_step``.
      reg_covar: as in ``m_step``.

    Returns:
      A tuple ``(new_params, mean_log_likelihood)``, the new parameters, of the same
      covariance type, and the scalar mean log p(x) of the OLD ones.
    """
    log_resp, mean_log_likelihood = e_step(params, X)
    return (m_step(_data(params, X), log_resp, reg_covar, covariance_of(params).name),
            mean_log_likelihood)


# floats per block of the masked E-step: each point holds K spreads (full, tied: [D, D]
# conditional covariances; diag, spherical: [D] variances)
_BLOCK_FLOATS = 2**20


def masked_em_iteration(params: Any, X: jax.Array, mask: jax.Array, reg_covar: float,
                        block: int) -> tuple[Any, jax.Array]:
    """One EM iteration on the observed entries (any N, anything missing: ``masked_em_step``).

    E-step, per point n and component k: r_nk = p(k | x_obs), x_hat_nk = x with its
    missing entries at E[x_mis | x_obs, k], C_nk = Cov[x_mis | x_obs, k] (0 outside the
    missing block; diag and spherical: x_hat_nk,mis = mu_k,mis, C_nk = diag(sigma_k,mis^2)).
    M-step, the expected sufficient statistics: mu_k = sum_n r_nk x_hat_nk / N_k and
    S_k = sum_n r_nk [(x_hat_nk - mu_k)(x_hat_nk - mu_k)^T + C_nk] / N_k, turned into the
    type's covariance as ``m_step`` turns its S_k (tied pools them, diag keeps their
    diagonals, spherical their diagonals' means; + reg), so that with nothing missing this
    is ``em_iteration``. Accumulated around the old means (no cancellation in float32) a
    block of points at a time, so memory holds ``block`` x K spreads, not N x K.

    Args:
      params: mixture parameters of any covariance type.
      X: ``[N, D]``, missing entries 0.
      mask: ``[N, D]`` bool, True = observed (all-False rows count for nothing: padding).
      reg_covar: as in ``m_step``.
      block: points per block, a Python int; N must be a multiple of it.

    Returns:
      A tuple ``(new_params, mean_log_likelihood)``, the new parameters and the scalar
      mean log p(x_obs) of the OLD ones, over the rows that observe something.
    """
    num_components, dim = sizes(params)
    family = covariance_of(params)
    reg_covar = _regularization(reg_covar)
    log_weights = jax.nn.log_softmax(params.logits)

    def one(x, observed):
        return per_component(
            lambda mean, factor: family.conditional(x, mean, factor, observed), params)

    def accumulate(totals, rows):
        x, observed = rows
        constants, squared, norms, filled, spreads = jax.vmap(one)(x, observed)  # [B, K]..
        real = jnp.any(observed, axis=1)  # padding rows observe nothing
        table, shift = jax.vmap(normalizable)(log_weights[None] + constants, squared, norms)
        log_norm = jax.nn.logsumexp(table, axis=1)
        resp = jnp.where(real[:, None], jnp.exp(table - log_norm[:, None]), 0.0)
        log_norm = log_norm - shift
        shifted = filled - params.means[None]
        counts, first, second, total = totals
        return (counts + jnp.sum(resp, axis=0),
                first + jnp.einsum("bk,bkd->kd", resp, shifted, precision=_HIGHEST),
                second + family.second_moments(resp, shifted, spreads),
                total + jnp.sum(jnp.where(real, log_norm, 0.0))), None

    dtype = params.means.dtype
    zeros = (jnp.zeros(num_components, dtype), jnp.zeros((num_components, dim), dtype),
             jnp.zeros(family.moment_shape(num_components, dim), dtype), jnp.zeros((), dtype))
    blocks = (X.reshape(-1, block, dim), mask.reshape(-1, block, dim))
    (counts, first, second, total), _ = jax.lax.scan(accumulate, zeros, blocks)
    num_points = jnp.sum(jnp.any(mask, axis=1))
    counts = counts + 10 * jnp.finfo(dtype).eps  # an emptied component: as in m_step
    step = first / counts[:, None]  # mu_new - mu_old
    factor = family.from_moments(counts, step, second, reg_covar)
    new = family.params(jnp.log(counts / num_points), params.means + step, factor)
    return new, total / num_points


@functools.partial(jax.jit, static_argnames=("num_iters", "block"))
def _fit_em(params, X, reg_covar, num_iters, mask=None, block=1):
    def body(current, _):
        if mask is None:
            return em_iteration(current, X, reg_covar)
        return masked_em_iteration(current, X, mask, reg_covar, block)

    return jax.lax.scan(body, params, None, length=num_iters)


def fit_em(params: Any, X: jax.Array, num_iters: int, *, mask: Any = None,
           reg_covar: float = 1e-6, covariance_type: str | None = None) -> tuple[Any, jax.Array]:
    """Expectation maximization for the mixture, compiled as one ``lax.scan``.

    E-step: q(z_n) = p(z_n | x_n), which makes the ELBO equal log p(x).
    M-step: the closed-form maximizer of the ELBO (``m_step``), for the covariance type
    of ``params``: scikit-learn's ``GaussianMixture`` from the same start.
    With ``mask``, EM on the observed entries (``masked_em_iteration``): the missing
    entries are latent too, their conditional Gaussians taken in the E-step.

    Args:
      params: starting parameters (e.g. ``init_from_data``), of any covariance type.
      X: ``[N, D]`` data (with a mask: anything, NaN included, at missing entries).
      num_iters: number of EM iterations (>= 1).
      mask: ``[N, D]`` bool, True = observed; every row must observe something.
      reg_covar: added to each covariance's diagonal, as in scikit-learn.
      covariance_type: None (the type of ``params``), or "full", "diag", "spherical" or
        "tied": a full start of another type is converted first (diag: its diagonal
        variances; spherical: their mean; tied: the covariances' mean weighted by pi).

    Returns:
      A tuple ``(params, trace)``, params after ``num_iters`` M-steps, of the covariance
      type; trace ``[num_iters]``, trace[t] the mean log p(x_n) (log p(x_n,obs) with a
      mask) under the parameters after t M-steps. The trace never decreases.
    """
    num_iters = _checks.positive_int(num_iters, "num_iters")
    X = _data(params, X)
    num_components = params.means.shape[0]
    reg_covar = _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
    if covariance_type is not None:
        params = _converted(params, covariance_named(covariance_type))
    family = covariance_of(params)
    if mask is None:
        _checks.finite_if_concrete(X, "X")
        fitted, trace = _fit_em(params, X, jnp.asarray(reg_covar, X.dtype), num_iters)
    else:
        X, mask, block = _masked_data(X, mask, num_components, family)
        fitted, trace = _fit_em(params, X, jnp.asarray(reg_covar, X.dtype), num_iters,
                                mask, block)
    if _checks.is_concrete(trace) and not all(
            bool(jnp.all(jnp.isfinite(leaf))) for leaf in (*fitted, trace)):
        first = int(jnp.argmin(jnp.isfinite(trace))) if not bool(jnp.all(jnp.isfinite(trace))) \
            else num_iters
        raise ValueError(f"EM broke down at iteration {first}: a component's covariance became "
                         f"singular (it holds too few points, or points that coincide; N="
                         f"{X.shape[0]}, reg_covar={reg_covar}). Use a larger reg_covar or "
                         "fewer components.")
    return fitted, trace


def _converted(params: Any, target: Covariance) -> Any:
    """``params`` as ``target``'s type: themselves, or a full start converted (a
    ValueError naming covariance_type for any other pair)."""
    family = covariance_of(params)
    if family is target:
        return params
    if family is not COVARIANCES["full"]:
        raise ValueError(f"covariance_type={target.name!r} does not match the {family.name} "
                         f"start (gmm.{type(params).__name__}); only a full start (gmm.Params) "
                         "is converted: pass covariance_type=None, or a start of that type "
                         f"(gmm.init_from_data(..., covariance_type={target.name!r})).")
    full = family.covariances(params.scale_tril)
    return target.params(params.logits, params.means,
                         target.from_full(full, jax.nn.softmax(params.logits)))


def masked_em_step(params: Any, X: jax.Array, mask: Any,
                   reg_covar: float) -> tuple[Any, jax.Array]:
    """``masked_em_iteration`` on data of any size N, padded and blocked here.

    Args:
      params, reg_covar: as in ``masked_em_iteration``.
      X: ``[N, D]``, anything (NaN included) at missing entries.
      mask: ``[N, D]`` bool, True = observed; every row must observe something.

    Returns:
      ``(new_params, mean_log_likelihood)``, as ``masked_em_iteration``.
    """
    X = _data(params, X)
    X, mask, block = _masked_data(X, mask, params.means.shape[0], covariance_of(params))
    return masked_em_iteration(params, X, mask, reg_covar, block)


def mean_imputed(X: jax.Array, mask: Any) -> jax.Array:
    """X with each missing entry set to its column's mean over the observed entries.

    A column never observed gets 0. A start for EM, not an estimate.

    Args:
      X: ``[N, D]``; anything (NaN included) at missing entries.
      mask: ``[N, D]`` bool, True = observed.

    Returns:
      ``[N, D]``.
    """
    observed = jnp.asarray(mask)
    counts = jnp.sum(observed, axis=0)
    means = jnp.sum(jnp.where(observed, X, 0.0), axis=0) / jnp.maximum(counts, 1)
    return jnp.where(observed, X, means[None])


def _masked_data(X: jax.Array, mask: Any, num_components: int, family: Covariance):
    """(X with missing entries 0, mask [N', D] bool, block): padded with rows that observe
    nothing to a multiple of ``block`` data points, a block holding about _BLOCK_FLOATS
    floats of spreads."""
    count, dim = X.shape
    if isinstance(mask, (str, bytes)) or not hasattr(mask, "shape"):
        raise TypeError(f"mask must be a boolean array [N, D] (True = observed), got "
                        f"{type(mask).__name__}.")
    if tuple(mask.shape) != (count, dim):
        raise ValueError(f"mask must have X's shape {(count, dim)}, got {tuple(mask.shape)}.")
    if _checks.is_concrete(mask):
        values = np.asarray(mask)
        if values.dtype != bool:
            raise TypeError(f"mask must be boolean (True = observed), got dtype {values.dtype}.")
        empty = np.flatnonzero(~values.any(axis=1))
        if empty.size:
            raise ValueError(f"mask row {int(empty[0])} observes nothing ({empty.size} such "
                             "rows): drop those data points, they carry no information.")
        if _checks.is_concrete(X) and not np.all(np.isfinite(np.asarray(X)[values])):
            raise ValueError("X holds NaN or infinite values at observed entries.")
    elif jnp.result_type(mask) != jnp.bool_:
        raise TypeError(f"mask must be boolean (True = observed), got {jnp.result_type(mask)}.")
    mask = jnp.asarray(mask)
    X = jnp.where(mask, X, 0.0)  # a NaN at a missing entry reaches nothing
    spread = math.prod(family.spread_shape(dim))
    block = max(1, min(count, _BLOCK_FLOATS // (num_components * spread)))
    padding = -count % block
    if padding:
        X = jnp.concatenate([X, jnp.zeros((padding, dim), X.dtype)])
        mask = jnp.concatenate([mask, jnp.zeros((padding, dim), bool)])
    return X, mask, block

