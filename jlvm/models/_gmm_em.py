"""Expectation maximization for the Gaussian mixture (``jlvm.models.gmm`` re-exports it):
complete data, and data with missing entries (EM on the observed entries).

E-step: q(z_n) = p(z_n | x_n) (and, with missing entries, the Gaussian of the missing
coordinates given the observed ones, per component); M-step: the closed-form maximizer of
the ELBO from the expected sufficient statistics.

Each function checks what is static (shapes, types, a reg_covar given as a number) at
its entry; inside ``fit_em``'s compiled loop those checks cost nothing at run time.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks
from jlvm.models._gaussian import conditional_gaussian
from jlvm.models._mixture import HIGHEST as _HIGHEST
from jlvm.models._mixture import Params, log_joint_table, normalizable, sizes


def init_from_data(key: jax.Array, X: jax.Array, num_components: int, *,
                   reg_covar: float = 1e-6) -> Params:
    """A starting point for EM: K distinct data points as means, the data covariance for
    every component, equal weights. X: [N, D]."""
    _checks.prng_key(key)
    num_components = _checks.positive_int(num_components, "num_components")
    reg_covar = _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
    X = _checks.float_array(X, "X")
    if X.ndim != 2 or X.shape[0] < max(num_components, 2) or X.shape[1] < 1:
        raise ValueError(f"X must have shape [N, D] with N >= max(2, num_components="
                         f"{num_components}) (a covariance needs two points), got {X.shape}.")
    _checks.finite_if_concrete(X, "X")
    if _checks.is_concrete(X) and np.unique(np.asarray(X), axis=0).shape[0] < num_components:
        raise ValueError(f"X has {np.unique(np.asarray(X), axis=0).shape[0]} distinct rows, "
                         f"fewer than num_components={num_components}.")
    means = _distinct_rows(key, X, num_components)
    dim = X.shape[1]
    covariance = jnp.cov(X, rowvar=False).reshape(dim, dim) + reg_covar * jnp.eye(dim)
    scale_tril = jnp.linalg.cholesky(covariance)
    if _checks.is_concrete(scale_tril) and (
            not bool(jnp.all(jnp.isfinite(scale_tril)))
            # with nothing added, float32's Cholesky of a singular matrix may "succeed"
            # with a pivot of rounding noise
            or (reg_covar == 0 and _nearly_singular(np.asarray(covariance, np.float64)))):
        raise ValueError("the data's covariance is singular (constant or collinear columns "
                         f"of X) and reg_covar={reg_covar} does not lift it: use reg_covar > 0.")
    return Params(
        logits=jnp.zeros(num_components, X.dtype),
        means=means,
        scale_tril=jnp.broadcast_to(scale_tril[None], (num_components, dim, dim)),
    )


def _distinct_rows(key: jax.Array, X: jax.Array, count: int) -> jax.Array:
    """``count`` rows of X drawn without replacement among its distinct rows (a repeated
    row is one candidate), the same eagerly, under jit and under vmap over keys; NaN if
    X has fewer distinct rows (under jit, where that cannot be an error)."""
    order = jnp.lexsort(X.T)  # equal rows end up side by side
    ordered = X[order]
    repeat = jnp.concatenate([jnp.zeros(1, bool),
                              jnp.all(ordered[1:] == ordered[:-1], axis=1)])
    distinct = jnp.zeros(X.shape[0], bool).at[order].set(~repeat)
    rows = jax.random.choice(key, X.shape[0], (count,), replace=False,
                             p=distinct / jnp.sum(distinct))
    return jnp.where(jnp.sum(distinct) >= count, X[rows], jnp.nan)


def _nearly_singular(covariance: np.ndarray) -> bool:
    """Whether float32 cannot tell ``covariance`` from a singular matrix."""
    eigenvalues = np.linalg.eigvalsh(covariance)
    return eigenvalues.min() <= 10 * np.finfo(np.float32).eps * max(eigenvalues.max(), 1e-30)


def _regularization(reg_covar: Any) -> Any:
    """reg_covar >= 0 where its value is known (a negative one makes covariances that are
    not positive definite: NaN); a traced one passes, checked where it was a number."""
    if _checks.is_concrete(reg_covar):
        return _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
    return reg_covar


def _data(params: Params, X: Any) -> jax.Array:
    _, dim = sizes(params)
    X = _checks.float_array(X, "X").astype(params.means.dtype)
    if X.ndim != 2 or X.shape[1] != dim or X.shape[0] < 1:
        raise ValueError(f"X must have shape [N, D] with D={dim} and N >= 1, got {X.shape}.")
    return X


def e_step(params: Params, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact posterior for every point: (log responsibilities [N, K], mean log p(x) scalar).

    With q(z_n) = p(z_n | x_n) the ELBO is tight, so the mean log-likelihood is returned too.
    """
    X = _data(params, X)
    relative, shift = jax.vmap(log_joint_table, in_axes=(None, 0))(params, X)
    log_norm = jax.nn.logsumexp(relative, axis=1, keepdims=True)
    return relative - log_norm, jnp.mean(log_norm[:, 0] - shift)


def m_step(X: jax.Array, log_resp: jax.Array, reg_covar: float) -> Params:
    """Maximizes the ELBO in the parameters for fixed responsibilities (closed form).

    pi_k = N_k / N, mu_k = sum_n r_nk x_n / N_k,
    Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I.

    X: [N, D], log_resp: [N, K], reg_covar >= 0.
    """
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
    centered = X[None, :, :] - means[:, None, :]
    covariances = jnp.einsum("nk,kni,knj->kij", resp, centered, centered,
                             precision=_HIGHEST) / counts[:, None, None]
    dim = X.shape[1]
    covariances = covariances + reg_covar * jnp.eye(dim, dtype=X.dtype)[None]
    return Params(
        logits=jnp.log(counts / X.shape[0]),
        means=means,
        scale_tril=jnp.linalg.cholesky(covariances),
    )


def em_iteration(params: Params, X: jax.Array, reg_covar: float) -> tuple[Params, jax.Array]:
    """One EM iteration: returns the new parameters and the mean log p(x) of the OLD ones."""
    log_resp, mean_log_likelihood = e_step(params, X)
    return m_step(_data(params, X), log_resp, reg_covar), mean_log_likelihood


# data points per block of the masked E-step: each holds K [D, D] conditional covariances
_BLOCK_FLOATS = 2**20


def masked_em_iteration(params: Params, X: jax.Array, mask: jax.Array, reg_covar: float,
                        block: int) -> tuple[Params, jax.Array]:
    """One EM iteration on the observed entries: returns the new parameters and the mean
    log p(x_obs) of the OLD ones. X: [N, D] (missing entries 0), mask: [N, D] bool;
    N a multiple of ``block`` (rows with an all-False mask row count for nothing: padding).
    ``masked_em_step`` takes data of any size, with anything at missing entries.

    E-step, per point n and component k: r_nk = p(k | x_obs), x_hat_nk = x with its
    missing entries at E[x_mis | x_obs, k], C_nk = Cov[x_mis | x_obs, k] (0 outside the
    missing block). M-step, the expected sufficient statistics:
    mu_k = sum_n r_nk x_hat_nk / N_k,
    Sigma_k = sum_n r_nk [(x_hat_nk - mu_k)(x_hat_nk - mu_k)^T + C_nk] / N_k + reg I,
    accumulated around the old means (no cancellation in float32) a block of points at a
    time, so memory holds ``block`` x K covariances, not N x K.
    """
    num_components, dim = sizes(params)
    reg_covar = _regularization(reg_covar)
    log_weights = jax.nn.log_softmax(params.logits)

    def one(x, observed):
        return jax.vmap(lambda mean, tril: conditional_gaussian(x, mean, tril, observed))(
            params.means, params.scale_tril)

    def accumulate(totals, rows):
        x, observed = rows
        constants, squared, norms, filled, covariances = jax.vmap(one)(x, observed)  # [B, K]..
        real = jnp.any(observed, axis=1)  # padding rows observe nothing
        table, shift = jax.vmap(normalizable)(log_weights[None] + constants, squared, norms)
        log_norm = jax.nn.logsumexp(table, axis=1)
        resp = jnp.where(real[:, None], jnp.exp(table - log_norm[:, None]), 0.0)
        log_norm = log_norm - shift
        shifted = filled - params.means[None]
        counts, first, second, total = totals
        second = second + jnp.einsum("bk,bki,bkj->kij", resp, shifted, shifted,
                                     precision=_HIGHEST) \
            + jnp.einsum("bk,bkij->kij", resp, covariances, precision=_HIGHEST)
        return (counts + jnp.sum(resp, axis=0),
                first + jnp.einsum("bk,bkd->kd", resp, shifted, precision=_HIGHEST),
                second, total + jnp.sum(jnp.where(real, log_norm, 0.0))), None

    dtype = params.means.dtype
    zeros = (jnp.zeros(num_components, dtype), jnp.zeros((num_components, dim), dtype),
             jnp.zeros((num_components, dim, dim), dtype), jnp.zeros((), dtype))
    blocks = (X.reshape(-1, block, dim), mask.reshape(-1, block, dim))
    (counts, first, second, total), _ = jax.lax.scan(accumulate, zeros, blocks)
    num_points = jnp.sum(jnp.any(mask, axis=1))
    counts = counts + 10 * jnp.finfo(dtype).eps  # an emptied component: as in m_step
    step = first / counts[:, None]  # mu_new - mu_old
    covariances = (second / counts[:, None, None] - step[:, :, None] * step[:, None, :]
                   + reg_covar * jnp.eye(dim, dtype=dtype)[None])
    covariances = 0.5 * (covariances + jnp.swapaxes(covariances, 1, 2))
    new = Params(logits=jnp.log(counts / num_points), means=params.means + step,
                 scale_tril=jnp.linalg.cholesky(covariances))
    return new, total / num_points


@functools.partial(jax.jit, static_argnames=("num_iters", "block"))
def _fit_em(params, X, reg_covar, num_iters, mask=None, block=1):
    def body(current, _):
        if mask is None:
            return em_iteration(current, X, reg_covar)
        return masked_em_iteration(current, X, mask, reg_covar, block)

    return jax.lax.scan(body, params, None, length=num_iters)


def fit_em(params: Params, X: jax.Array, num_iters: int, *, mask: Any = None,
           reg_covar: float = 1e-6) -> tuple[Params, jax.Array]:
    """Expectation maximization for the mixture, compiled as one ``lax.scan``.

    E-step: q(z_n) = p(z_n | x_n), which makes the ELBO equal log p(x).
    M-step: the closed-form maximizer of the ELBO (``m_step``).
    With ``mask``, EM on the observed entries (``masked_em_iteration``): the missing
    entries are latent too, their conditional Gaussians taken in the E-step.

    Args:
      params: starting parameters (e.g. ``init_from_data``).
      X: [N, D] data (with a mask: anything, NaN included, at missing entries).
      num_iters: number of EM iterations (>= 1).
      mask: [N, D] bool, True = observed; every row must observe something.
      reg_covar: added to each covariance's diagonal, as in scikit-learn.

    Returns:
      (params after ``num_iters`` M-steps, trace [num_iters] where trace[t] is the mean
      log p(x_n) (log p(x_n,obs) with a mask) under the parameters after t M-steps). The
      trace never decreases.
    """
    num_iters = _checks.positive_int(num_iters, "num_iters")
    X = _data(params, X)
    num_components = params.means.shape[0]
    reg_covar = _checks.positive_number(reg_covar, "reg_covar", allow_zero=True)
    if mask is None:
        _checks.finite_if_concrete(X, "X")
        fitted, trace = _fit_em(params, X, jnp.asarray(reg_covar, X.dtype), num_iters)
    else:
        X, mask, block = _masked_data(X, mask, num_components)
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


def masked_em_step(params: Params, X: jax.Array, mask: Any,
                   reg_covar: float) -> tuple[Params, jax.Array]:
    """``masked_em_iteration`` on data of any size N: X [N, D] (anything at missing
    entries), mask [N, D] bool. Returns the new parameters and the mean log p(x_obs) of the
    old ones."""
    X = _data(params, X)
    X, mask, block = _masked_data(X, mask, params.means.shape[0])
    return masked_em_iteration(params, X, mask, reg_covar, block)


def mean_imputed(X: jax.Array, mask: Any) -> jax.Array:
    """X with each missing entry set to its column's mean over the observed entries (0 for
    a column never observed): a start for EM, not an estimate."""
    observed = jnp.asarray(mask)
    counts = jnp.sum(observed, axis=0)
    means = jnp.sum(jnp.where(observed, X, 0.0), axis=0) / jnp.maximum(counts, 1)
    return jnp.where(observed, X, means[None])


def _masked_data(X: jax.Array, mask: Any, num_components: int):
    """(X with missing entries 0, mask [N', D] bool, block): padded with rows that observe
    nothing to a multiple of ``block`` data points."""
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
    block = max(1, min(count, _BLOCK_FLOATS // (num_components * dim * dim)))
    padding = -count % block
    if padding:
        X = jnp.concatenate([X, jnp.zeros((padding, dim), X.dtype)])
        mask = jnp.concatenate([mask, jnp.zeros((padding, dim), bool)])
    return X, mask, block

