"""Gaussian mixture model: z ~ Categorical(softmax(logits)), x | z ~ N(means[z], L_z L_z^T).

    log p(x, z) = log pi_z + log N(x; mu_z, Sigma_z),   log p(x) = logsumexp_z log p(x, z).

Every function takes ONE observation x: [D] (with ``mask`` [D], True = observed, the
observed entries x_obs and each component's marginal over them); vmap over data points.
``model(K, D)`` is the mixture as a ``jlvm.Model``; EM (``fit_em``, ``e_step``, ...) lives
in ``jlvm.models._gmm_em`` and is re-exported here.
"""

from __future__ import annotations

from typing import Any

import distrax
import jax
import jax.numpy as jnp

from jlvm import _checks
from jlvm.models._gaussian import conditional_gaussian, gaussian_terms
from jlvm.models._gmm_em import (
    e_step,
    em_iteration,
    fit_em,
    init_from_data,
    m_step,
    masked_em_iteration,
    masked_em_step,
    mean_imputed,
)
from jlvm.models._mixture import (
    HIGHEST,
    Params,
    log_joint_table,
    normalizable,
    observation,
    sizes,
)
from jlvm.models.protocol import Model


def _component(z: Any, num_components: int) -> tuple[jax.Array, jax.Array]:
    """(z clipped to [0, K), whether z was in [0, K)): z must be an integer scalar."""
    if isinstance(z, (str, bytes)) or z is None:
        raise TypeError(f"z must be an integer component index, got {z!r}.")
    if jnp.shape(z) != ():
        raise ValueError(f"z must be a scalar component index, got shape {jnp.shape(z)}.")
    if not jnp.issubdtype(jnp.result_type(z), jnp.integer):
        raise TypeError(f"z must be an integer component index in [0, {num_components}), "
                        f"got dtype {jnp.result_type(z)}.")
    # JAX clamps out-of-range indices silently: clipped, and marked impossible
    return jnp.clip(z, 0, num_components - 1), (z >= 0) & (z < num_components)


def _component_log_density(params, x, z, mask):
    """(k, whether z is a component, log N(x_obs; mu_k,obs, Sigma_k,oo)), checked once."""
    x, mask = observation(params, x, mask)
    k, inside = _component(z, params.means.shape[0])
    constant, squared, _ = gaussian_terms(x, params.means[k], params.scale_tril[k], mask)
    return k, inside, constant - 0.5 * squared


def log_likelihood(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p(x_obs | z) = log N(x_obs; mu_z,obs, Sigma_z,oo). x: [D], z: integer scalar;
    -inf for a z outside [0, K) (no such component), eagerly and under jit alike."""
    _, inside, value = _component_log_density(params, x, z, mask)
    return jnp.where(inside, value, -jnp.inf)


def log_joint(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p(x_obs, z) = log pi_z + log N(x_obs; mu_z,obs, Sigma_z,oo). x: [D], z: integer
    scalar; ``mask`` [D] (True = observed) or None (all of x).

    A z outside [0, K) has probability 0: log p(x, z) = -inf, eagerly and under jit alike.
    Only component z's density is computed: enumerating z costs K densities, not K^2.
    For x so far out that float32 cannot hold its squared distance, -inf.
    """
    k, inside, value = _component_log_density(params, x, z, mask)
    return jnp.where(inside, jax.nn.log_softmax(params.logits)[k] + value, -jnp.inf)


def log_marginal(params: Params, x: jax.Array, mask: Any = None) -> jax.Array:
    """Exact log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k)]. x: [D].

    With ``mask`` [D] (True = observed): log p(x_obs), each component's Gaussian
    marginalized to the observed coordinates, N(x_obs; mu_k,obs, Sigma_k,obs,obs).
    For x so far out that float32 cannot hold its squared distances, -inf.
    """
    relative, shift = log_joint_table(params, *observation(params, x, mask))
    return jax.nn.logsumexp(relative) - shift


def posterior(params: Params, x: jax.Array, mask: Any = None) -> distrax.Categorical:
    """p(z | x) (or p(z | x_obs) with ``mask``): the responsibilities, as a
    ``distrax.Categorical`` (logits normalized); a distribution for any finite x."""
    relative, _ = log_joint_table(params, *observation(params, x, mask))
    return distrax.Categorical(logits=jax.nn.log_softmax(relative))


def _conditionals(params: Params, x: jax.Array, mask: Any):
    """Checked x and mask, log p(k | x_obs) [K], and per component E[x | x_obs, k] [K, D]
    and Cov[x_mis | x_obs, k] [K, D, D]."""
    x, mask = observation(params, x, mask)
    if mask is None:
        raise TypeError("a mask [D] (True = observed) is needed: it says what to fill in.")
    constants, squared, norms, filled, covariances = jax.vmap(
        lambda mean, tril: conditional_gaussian(x, mean, tril, mask))(params.means,
                                                                      params.scale_tril)
    relative, _ = normalizable(jax.nn.log_softmax(params.logits) + constants, squared, norms)
    return x, mask, jax.nn.log_softmax(relative), filled, covariances


def conditional_mean(params: Params, x: jax.Array, mask: Any) -> jax.Array:
    """E[x | x_obs]: x [D] with every missing entry replaced by sum_k p(k | x_obs)
    E[x_mis | x_obs, k], the exact conditional mean under the mixture (observed entries
    as they are). ``mask`` [D], True = observed."""
    x, mask, log_resp, filled, _ = _conditionals(params, x, mask)
    resp = jnp.exp(log_resp)
    # a component of weight 0 adds 0, whatever its conditional mean (inf for x far out)
    filled = jnp.where(resp[:, None] > 0, filled, 0.0)
    return jnp.where(mask, x, jnp.matmul(resp, filled, precision=HIGHEST))


def sample(key: jax.Array, params: Params, n: int) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: z ~ pi, x ~ N(mu_z, Sigma_z). Returns (x [n, D], z [n])."""
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    _, dim = sizes(params)
    key_z, key_x = jax.random.split(key)
    z = jax.random.categorical(key_z, params.logits, shape=(n,))
    noise = jax.random.normal(key_x, (n, dim), dtype=params.means.dtype)
    x = params.means[z] + jnp.einsum("nij,nj->ni", params.scale_tril[z], noise,
                                     precision=HIGHEST)
    return x, z


def conditional_draws(key: jax.Array, params: Params, x: jax.Array, mask: Any,
                      n: int) -> jax.Array:
    """n draws x ~ p(x | x_obs) [n, D]: k ~ p(k | x_obs), then x_mis ~ N(E[x_mis | x_obs,
    k], Cov[x_mis | x_obs, k]) (multiple imputation; observed entries as given)."""
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    x, mask, log_resp, filled, covariances = _conditionals(params, x, mask)
    key_k, key_x = jax.random.split(key)
    k = jax.random.categorical(key_k, log_resp, shape=(n,))
    # the conditional covariance is 0 off the missing block: the identity there makes it
    # factorable, and the noise it gives there is discarded below
    factors = jnp.linalg.cholesky(covariances + jnp.diag(mask.astype(x.dtype))[None])
    noise = jax.random.normal(key_x, (n, x.shape[0]), x.dtype)
    draws = filled[k] + jnp.einsum("nij,nj->ni", factors[k], noise, precision=HIGHEST)
    return jnp.where(mask[None], x[None], draws)


# ---------------------------------------------------------------- as a jlvm.Model


def prior(params: Params) -> distrax.Categorical:
    """p(z) = Categorical(softmax(logits))."""
    sizes(params)
    return distrax.Categorical(logits=params.logits)


def decoder(params: Params, z: jax.Array) -> distrax.MultivariateNormalTri:
    """p(x | z) = N(mu_z, L_z L_z^T) over x [D]; a z outside [0, K) has no component: its
    distribution's parameters are NaN, eagerly and under jit alike."""
    num_components, _ = sizes(params)
    _, inside = _component(z, num_components)
    k = jnp.where(inside, z, num_components)  # out of range even where z < 0: filled NaN
    return distrax.MultivariateNormalTri(
        params.means.at[k].get(mode="fill", fill_value=jnp.nan),
        params.scale_tril.at[k].get(mode="fill", fill_value=jnp.nan))


def model(num_components: int, data_dim: int) -> Model:
    """The mixture of ``num_components`` Gaussians over x [data_dim] as a ``jlvm.Model``:
    ``init(key)`` gives means ~ N(0, I), identity covariances and equal weights; the
    encoder is the exact posterior (``posterior``), so importance sampling with it as the
    proposal has zero variance; ``log_joint``, ``log_likelihood``, ``prior`` and
    ``decoder`` are this module's functions."""
    num_components = _checks.positive_int(num_components, "num_components")
    data_dim = _checks.positive_int(data_dim, "data_dim")

    def init(key: jax.Array) -> Params:
        _checks.prng_key(key)
        return Params(jnp.zeros(num_components),
                      jax.random.normal(key, (num_components, data_dim)),
                      jnp.tile(jnp.eye(data_dim), (num_components, 1, 1)))

    return Model(init, log_joint, posterior, log_likelihood, prior, decoder)


__all__ = ["Params", "conditional_draws", "conditional_mean", "decoder", "e_step",
           "em_iteration", "fit_em", "init_from_data", "log_joint", "log_likelihood",
           "log_marginal", "m_step", "masked_em_iteration", "masked_em_step", "mean_imputed",
           "model", "posterior", "prior", "sample"]
