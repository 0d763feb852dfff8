"""Deep latent variable model (the VAE's generative model and its amortized encoder).

    z ~ p(z)                  "normal": N(0, I_L); "mixture:K": a learned mixture of K
                              Gaussians; "bernoulli": z in {0,1}^L, independent features
                              with learned logits (``jlvm.models.priors``)
    x | z ~ p_theta(x | z)    pixels independent given z, their parameters from a network
                              (``jlvm.models.likelihoods``): "bernoulli" (binary images),
                              "gaussian" (mean and scale from z), "gaussian-pixel" (a learned
                              scale per pixel), "gaussian-fixed:S", "categorical:M" (gray
                              levels)
    q_phi(z | x)              "diagonal", "full" (Cholesky factor from the network),
                              "flow" (coupling layers on a diagonal Gaussian), or
                              "bernoulli" (independent bits, with the "bernoulli" prior
                              and no other) (``jlvm.models.posteriors``)

Networks are MLPs or, for images, convolutional (``architecture="conv"``; then
``hidden_dims`` are channel counts). ``Params`` is a pytree of arrays (decoder and encoder
states) with the network structure as static metadata, so ``jax.grad``, optax and
``jax.jit`` see plain arrays and the functions here stay pure: ``log_joint(params, x, z)``
for ONE x: [D] and z: [L]. ``model(...)`` gives the whole thing as a ``jlvm.Model``.
``Params``, ``init`` and ``lecture_example`` (building the parameters) live in
``jlvm.models._vae_params`` and are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jlvm import _checks
from jlvm.models import likelihoods, priors
from jlvm.models._gaussian import standard_normal_log_prob

# vae.LIKELIHOODS, vae.PRIORS and vae.ARCHITECTURES are the settings' names, re-exported
# ("X as X") though nothing here uses them
from jlvm.models._vae_params import ARCHITECTURES as ARCHITECTURES
from jlvm.models._vae_params import LIKELIHOODS as LIKELIHOODS
from jlvm.models._vae_params import POSTERIORS, Params, _settings, init, lecture_example
from jlvm.models._vae_params import PRIORS as PRIORS
from jlvm.models.protocol import Model


def model(data_dim: int, latent_dim: int, *, hidden_dims: Sequence[int] = (200, 200),
          likelihood: str = "bernoulli", activation: str = "tanh",
          posterior: str = "diagonal", prior: str = "normal", architecture: str = "mlp",
          image_shape: Sequence[int] | None = None, encoder_sees_mask: bool = False) -> Model:
    """The VAE as a ``jlvm.Model``, its settings checked here, at once.

    Args:
      data_dim, latent_dim, hidden_dims, likelihood, activation: as in ``init``.
      posterior, prior, architecture, image_shape, encoder_sees_mask: as in ``init``.

    Returns:
      ``jlvm.Model``, ``init(key)`` is ``vae.init`` with these settings; ``log_joint``,
      ``encoder``, ``log_likelihood``, ``prior`` and ``decoder`` are this module's.
    """
    data_dim, latent_dim, hidden_dims, likelihood, prior, image_shape, encoder_sees_mask = \
        _settings(data_dim, latent_dim, hidden_dims, likelihood, activation, posterior, prior,
                  architecture, image_shape, encoder_sees_mask)
    return _as_model(functools.partial(
        init, data_dim=data_dim, latent_dim=latent_dim, hidden_dims=hidden_dims,
        likelihood=likelihood, activation=activation, posterior=posterior, prior=prior,
        architecture=architecture, image_shape=image_shape,
        encoder_sees_mask=encoder_sees_mask))


def lecture_model(*, latent_dim: int = 2, data_dim: int = 2,
                  encoder_hidden_dims: Sequence[int] = (64,)) -> Model:
    """``lecture_example`` as a ``jlvm.Model``.

    Args:
      latent_dim, data_dim, encoder_hidden_dims: as in ``lecture_example``.

    Returns:
      ``jlvm.Model`` whose ``init(key)`` is ``lecture_example`` with these settings.
    """
    latent_dim = _checks.positive_int(latent_dim, "latent_dim")
    data_dim = _checks.positive_int(data_dim, "data_dim")
    encoder_hidden_dims = _checks.dims(encoder_hidden_dims, "encoder_hidden_dims")
    return _as_model(functools.partial(lecture_example, latent_dim=latent_dim,
                                       data_dim=data_dim,
                                       encoder_hidden_dims=encoder_hidden_dims))


def _as_model(init_fn) -> Model:
    return Model(init=init_fn, log_joint=log_joint, encoder=encoder,
                 log_likelihood=log_likelihood, prior=prior, decoder=decoder)


# ------------------------------------------------------------------ the model's functions
# Each public function checks its arguments once, on its first line (static: types, shapes,
# spec strings; and, where an argument is concrete, its values); the private ones after
# them take checked arguments and hold the arithmetic alone.


def _check_params(params: Any) -> tuple[likelihoods.Spec, priors.Spec]:
    """The parsed (likelihood, prior) of a ``vae.Params`` (parsing is cached: a dict
    lookup per call)."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be a vae.Params (from vae.init), got "
                        f"{type(params).__name__}.")
    _checks.one_of(params.posterior, "params.posterior", POSTERIORS)
    return (likelihoods.parse(params.likelihood, "params.likelihood"),
            priors.parse(params.latent_prior, "params.latent_prior"))


def _latent(params: Params, z: Any) -> jax.Array:
    """z [L] as floats (a binary z may come as integers or booleans)."""
    z = _checks.float_array(z, "z")
    _checks.shape_is(z, "z", (params.latent_dim,), "[L]")
    _checks.finite_if_concrete(z, "z")
    return z


def _observed(params: Params, x: Any, mask: Any) -> tuple[jax.Array, Any]:
    """(x [D] with its missing entries 0, the mask as booleans or None for complete data),
    with the rules of every mask in jlvm (``_checks.observation_mask``). Where x and the
    mask are concrete, the observed entries must be finite; entries at missing positions
    may hold anything, NaN included: they are replaced before any arithmetic (a
    ``jnp.where`` after it would still pass 0 * NaN = NaN to the gradient)."""
    x = _checks.float_array(x, "x")
    _checks.shape_is(x, "x", (params.data_dim,), "[D]")
    observed = None if mask is None else _checks.observation_mask(mask, params.data_dim)
    if _checks.is_concrete(x) and _checks.is_concrete(observed):
        seen = np.asarray(x) if observed is None else np.asarray(x)[np.asarray(observed)]
        if not np.all(np.isfinite(seen)):
            raise ValueError("x holds NaN or infinite values at observed entries; mark "
                             "missing entries with a mask (True = observed).")
    if observed is None:
        return x, None
    observed = jnp.asarray(observed)
    return jnp.where(observed, x, 0.0), observed


def _decode(params: Params, z: jax.Array) -> jax.Array:
    """The likelihood's parameters [P, D] at z [L]."""
    return jnp.asarray(nnx.merge(params.decoder_graph, params.decoder)(z))


def prior(params: Params) -> distrax.Distribution:
    """p(z), of ``params.latent_prior``.

    Args:
      params: ``vae.Params``.

    Returns:
      distrax distribution over z ``[L]``, N(0, I_L), the learned mixture of Gaussians of
      a "mixture:K" prior, or the learned product of Bernoullis over {0,1}^L of "bernoulli".
    """
    _, prior_spec = _check_params(params)
    if prior_spec.name == "normal":
        return priors.standard_normal(params.latent_dim)
    return nnx.merge(params.decoder_graph, params.decoder).prior()


def decoder(params: Params, z: jax.Array) -> distrax.Distribution:
    """p_theta(x | z) for one z.

    Args:
      params, z: as in ``log_joint``.

    Returns:
      distrax distribution over x ``[D]``, of the family ``params.likelihood``.
    """
    spec, _ = _check_params(params)
    return likelihoods.distribution(spec, _decode(params, _latent(params, z)))


def encoder(params: Params, x: jax.Array, mask: Any = None) -> distrax.Distribution:
    """q_phi(z | x) for one x, of the family ``params.posterior``.

    N(m(x), diag s(x)^2) ("diagonal"), N(m(x), S(x) S(x)^T) with S lower triangular
    ("full"), that diagonal Gaussian through coupling layers conditioned on x ("flow"), or
    independent bits ("bernoulli"). With a ``mask`` the encoder sees x with missing pixels
    set to 0 (whatever they held, NaN included), and, where ``params.encoder_sees_mask``,
    the mask too (as MIWAE's encoder does), so that a missing pixel is not read as a 0.

    Args:
      params, x, mask: as in ``log_joint``.

    Returns:
      distrax distribution over z ``[L]``.
    """
    _check_params(params)
    x, observed = _observed(params, x, mask)
    if params.encoder_sees_mask:
        seen = jnp.ones_like(x) if observed is None else observed.astype(x.dtype)
        x = jnp.concatenate([x, seen])
    return nnx.merge(params.encoder_graph, params.encoder)(x)


def _log_likelihood(params: Params, spec: likelihoods.Spec, x: jax.Array, z: jax.Array,
                    observed: Any) -> jax.Array:
    per_pixel = likelihoods.pixel_log_probs(spec, _decode(params, z), x)
    if observed is not None:
        per_pixel = jnp.where(observed, per_pixel, 0.0)
    return jnp.sum(per_pixel)


def log_likelihood(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p_theta(x_obs | z): with ``mask``, of the observed pixels only.

    Given z the pixels are independent, so leaving a missing pixel out of the sum is
    summing it out exactly: ``log p(x_obs | z) = sum_{d observed} log p(x_d | z)``. An
    observed value the likelihood cannot take (not 0/1 for the Bernoulli, off the gray
    levels for the categorical) has probability 0: -inf, eagerly and under jit alike.

    Args:
      params, x, z, mask: as in ``log_joint``.

    Returns:
      Scalar log density in nats.
    """
    spec, _ = _check_params(params)
    x, observed = _observed(params, x, mask)
    return _log_likelihood(params, spec, x, _latent(params, z), observed)


def log_joint(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """Log joint of one example: ``log p(x_obs, z) = log p(z) + log p_theta(x_obs | z)``.

    Bind it with ``functools.partial(vae.log_joint, params, x, mask=mask)`` and every
    estimator in ``jlvm`` estimates log p(x_obs).

    Args:
      params: ``vae.Params``.
      x: ``[D]``; with a mask, anything (NaN included) at missing entries.
      z: ``[L]`` (0/1 for a "bernoulli" prior: a z off {0,1}^L gives -inf).
      mask: ``[D]`` bool (True = observed), or None (the default: all observed).

    Returns:
      Scalar log density in nats.
    """
    spec, prior_spec = _check_params(params)
    x, observed = _observed(params, x, mask)
    z = _latent(params, z)
    # N(0, I): a few operations, no distrax bijector
    log_prior = (standard_normal_log_prob(z) if prior_spec.name == "normal"
                 else nnx.merge(params.decoder_graph, params.decoder).prior().log_prob(z))
    if prior_spec.name == "bernoulli":
        # distrax's Bernoulli interpolates between 0 and 1; a z off {0,1} has p(z) = 0,
        # eagerly and under jit alike (as an x the likelihood cannot take)
        binary = jnp.all((z == 0) | (z == 1))
        log_prior = jnp.where(binary, log_prior, -jnp.inf)
    return log_prior + _log_likelihood(params, spec, x, z, observed)


def sample_latents(key: jax.Array, params: Params, n: int) -> jax.Array:
    """n draws z ~ p(z).

    Args:
      key: PRNG key.
      params: ``vae.Params``.
      n: number of draws, a Python int >= 1.

    Returns:
      ``[n, L]`` (float32 0/1 for a "bernoulli" prior).
    """
    _checks.prng_key(key)
    n = _checks.positive_int(n, "n")
    name = _check_params(params)[1].name
    if name == "normal":
        return jax.random.normal(key, (n, params.latent_dim))
    if name == "bernoulli":  # distrax's sample_shape broadcasts implicitly (rank promotion)
        logits = prior(params).distribution.logits
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits)[None, :],
                                    (n, params.latent_dim)).astype(jnp.float32)
    return prior(params).sample(seed=key, sample_shape=(n,))


def sample(key: jax.Array, params: Params, n: int) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling z ~ p(z), x ~ p(x | z).

    Args:
      key, params, n: as in ``sample_latents``.

    Returns:
      A tuple ``(x, z)``, x ``[n, D]`` (floats), z ``[n, L]``.
    """
    _checks.prng_key(key)
    key_z, key_x = jax.random.split(key)
    z = sample_latents(key_z, params, n)
    x = jax.vmap(lambda k, z_i: _checks.sample(decoder(params, z_i), k, 1)[0])(
        jax.random.split(key_x, z.shape[0]), z)
    return x.astype(jnp.result_type(float)), z


def mean_image(params: Params, z: jax.Array) -> jax.Array:
    """E[x | z], for pictures.

    Args:
      params, z: as in ``decoder``.

    Returns:
      ``[D]``, the Bernoulli probabilities, the Gaussian mean or the expected gray level.
    """
    spec, _ = _check_params(params)
    return likelihoods.mean(spec, _decode(params, _latent(params, z)))


__all__ = ["Params", "decoder", "encoder", "init", "lecture_example", "lecture_model",
           "log_joint", "log_likelihood", "mean_image", "model", "prior", "sample",
           "sample_latents"]
