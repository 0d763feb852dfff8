"""Deep latent variable model (the VAE's generative model and its amortized encoder).

    z ~ N(0, I_L),   x | z ~ p_theta(x | z)   (a Flax network gives its parameters)
    likelihood "bernoulli": p(x|z) = prod_d Bernoulli(x_d; sigmoid(f_theta(z)_d))  (binary images)
    likelihood "gaussian":  p(x|z) = N(x; mu_theta(z), diag sigma_theta(z)^2)
    encoder:                q_phi(z|x) = N(z; m_phi(x), diag s_phi(x)^2)

``Params`` is a pytree of arrays (decoder and encoder states) with the network structure
as static metadata, so ``jax.grad``, optax and ``jax.jit`` see plain arrays and the
functions here stay pure: ``log_joint(params, x, z)`` for ONE x: [D] and z: [L].
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jlvm import _checks
from jlvm.models import networks, posteriors
from jlvm.models._gaussian import normal_log_prob_elementwise, standard_normal_log_prob
from jlvm.models.protocol import Model

LIKELIHOODS = ("bernoulli", "gaussian")
POSTERIORS = posteriors.FAMILIES  # the encoder's family: "diagonal" or "full"


class Params(struct.PyTreeNode):
    """VAE parameters: array leaves in ``decoder``/``encoder``, structure as static fields.

    decoder: nnx.State of the decoder network (theta).
    encoder: nnx.State of the encoder network (phi).
    likelihood: "bernoulli" or "gaussian" (static).
    data_dim, latent_dim: D and L (static).
    posterior: the encoder's family, "diagonal" or "full" (static; runs written before it
      existed are diagonal).
    """

    decoder: nnx.State
    encoder: nnx.State
    decoder_graph: Any = struct.field(pytree_node=False)
    encoder_graph: Any = struct.field(pytree_node=False)
    likelihood: str = struct.field(pytree_node=False)
    data_dim: int = struct.field(pytree_node=False)
    latent_dim: int = struct.field(pytree_node=False)
    posterior: str = struct.field(pytree_node=False, default="diagonal")


def _from_modules(decoder_module, encoder_module, likelihood, data_dim, latent_dim,
                  posterior="diagonal") -> Params:
    decoder_graph, decoder_state = nnx.split(decoder_module)
    encoder_graph, encoder_state = nnx.split(encoder_module)
    return Params(decoder=decoder_state, encoder=encoder_state, decoder_graph=decoder_graph,
                  encoder_graph=encoder_graph, likelihood=likelihood, data_dim=data_dim,
                  latent_dim=latent_dim, posterior=posterior)


def _settings(data_dim, latent_dim, hidden_dims, likelihood, activation, posterior):
    """The VAE's settings checked: (data_dim, latent_dim, hidden_dims) as Python ints."""
    _checks.one_of(likelihood, "likelihood", LIKELIHOODS)
    _checks.one_of(activation, "activation", tuple(networks.ACTIVATIONS))
    _checks.one_of(posterior, "posterior", POSTERIORS)
    return (_checks.positive_int(data_dim, "data_dim"),
            _checks.positive_int(latent_dim, "latent_dim"),
            _checks.dims(hidden_dims, "hidden_dims"))


def init(key: jax.Array, data_dim: int, latent_dim: int, *,
         hidden_dims: Sequence[int] = (200, 200), likelihood: str = "bernoulli",
         activation: str = "tanh", posterior: str = "diagonal") -> Params:
    """MLP decoder L -> hidden_dims -> D and MLP encoder D -> reversed(hidden_dims) -> q's
    parameters (2L for the diagonal family, L + L(L+1)/2 for the full one).

    Args:
      key: PRNG key for the initial weights.
      data_dim: D, pixels per image.
      latent_dim: L.
      hidden_dims: widths of the decoder's hidden layers (the encoder mirrors them).
      likelihood: "bernoulli" (binary data) or "gaussian" (real-valued data).
      activation: one of ``networks.ACTIVATIONS``.
      posterior: the encoder's q, "diagonal" (N(m, diag s^2)) or "full" (N(m, S S^T), S
        a Cholesky factor from the network: ``jlvm.models.posteriors``).
    """
    _checks.prng_key(key)
    data_dim, latent_dim, hidden_dims = _settings(data_dim, latent_dim, hidden_dims,
                                                  likelihood, activation, posterior)
    key_decoder, key_encoder = jax.random.split(key)
    decoder_class = (networks.BernoulliDecoder if likelihood == "bernoulli"
                     else networks.GaussianDecoder)
    decoder_module = decoder_class(latent_dim, hidden_dims, data_dim, activation,
                                   rngs=nnx.Rngs(key_decoder))
    encoder_class = (networks.GaussianEncoder if posterior == "diagonal"
                     else networks.FullGaussianEncoder)
    encoder_module = encoder_class(data_dim, hidden_dims[::-1], latent_dim, activation,
                                   rngs=nnx.Rngs(key_encoder))
    return _from_modules(decoder_module, encoder_module, likelihood, data_dim, latent_dim,
                         posterior)


def lecture_example(key: jax.Array, *, latent_dim: int = 2, data_dim: int = 2,
                    encoder_hidden_dims: Sequence[int] = (64,)) -> Params:
    """The lecture's two-dimensional Gaussian example as a ready model.

    mu_theta(z) = sigmoid(A z + c), Sigma_theta(z) = diag(exp(sigmoid(B z + d))),
    theta = (A, B, c, d), with an MLP Gaussian encoder for amortized inference.
    """
    _checks.prng_key(key)
    latent_dim = _checks.positive_int(latent_dim, "latent_dim")
    data_dim = _checks.positive_int(data_dim, "data_dim")
    encoder_hidden_dims = _checks.dims(encoder_hidden_dims, "encoder_hidden_dims")
    key_decoder, key_encoder = jax.random.split(key)
    decoder_module = networks.SigmoidGaussianDecoder(latent_dim, data_dim,
                                                     rngs=nnx.Rngs(key_decoder))
    encoder_module = networks.GaussianEncoder(data_dim, encoder_hidden_dims, latent_dim,
                                              "tanh", rngs=nnx.Rngs(key_encoder))
    return _from_modules(decoder_module, encoder_module, "gaussian", data_dim, latent_dim)


def model(data_dim: int, latent_dim: int, *, hidden_dims: Sequence[int] = (200, 200),
          likelihood: str = "bernoulli", activation: str = "tanh",
          posterior: str = "diagonal") -> Model:
    """The VAE as a ``jlvm.Model``: ``init`` is ``vae.init`` with these settings, and
    ``log_joint``, ``encoder``, ``log_likelihood``, ``prior`` and ``decoder`` are this
    module's functions. Arguments as for ``init`` (checked here, at once)."""
    data_dim, latent_dim, hidden_dims = _settings(data_dim, latent_dim, hidden_dims,
                                                  likelihood, activation, posterior)
    return _as_model(functools.partial(init, data_dim=data_dim, latent_dim=latent_dim,
                                       hidden_dims=hidden_dims, likelihood=likelihood,
                                       activation=activation, posterior=posterior))


def lecture_model(*, latent_dim: int = 2, data_dim: int = 2,
                  encoder_hidden_dims: Sequence[int] = (64,)) -> Model:
    """``lecture_example`` as a ``jlvm.Model`` (arguments as there)."""
    latent_dim = _checks.positive_int(latent_dim, "latent_dim")
    data_dim = _checks.positive_int(data_dim, "data_dim")
    encoder_hidden_dims = _checks.dims(encoder_hidden_dims, "encoder_hidden_dims")
    return _as_model(functools.partial(lecture_example, latent_dim=latent_dim,
                                       data_dim=data_dim,
                                       encoder_hidden_dims=encoder_hidden_dims))


def _as_model(init_fn) -> Model:
    return Model(init=init_fn, log_joint=log_joint, encoder=encoder,
                 log_likelihood=log_likelihood, prior=prior, decoder=decoder)


def _check_params(params: Any) -> None:
    if not isinstance(params, Params):
        raise TypeError(f"params must be a vae.Params (from vae.init), got "
                        f"{type(params).__name__}.")
    _checks.one_of(params.likelihood, "params.likelihood", LIKELIHOODS)
    _checks.one_of(params.posterior, "params.posterior", POSTERIORS)


def _decode(params: Params, z: jax.Array) -> tuple[jax.Array, ...]:
    _check_params(params)
    z = _checks.float_array(z, "z")
    _checks.shape_is(z, "z", (params.latent_dim,), "[L]")
    _checks.finite_if_concrete(z, "z")
    return nnx.merge(params.decoder_graph, params.decoder)(z)


def prior(params: Params) -> distrax.MultivariateNormalDiag:
    """p(z) = N(0, I_L)."""
    _check_params(params)
    return distrax.MultivariateNormalDiag(jnp.zeros(params.latent_dim),
                                          jnp.ones(params.latent_dim))


def decoder(params: Params, z: jax.Array) -> distrax.Distribution:
    """p_theta(x | z) for one z: [L], a distrax distribution over x: [D]."""
    outputs = _decode(params, z)
    if params.likelihood == "bernoulli":
        return distrax.Independent(distrax.Bernoulli(logits=outputs[0]), 1)
    mean, log_scale = outputs
    return distrax.MultivariateNormalDiag(mean, jnp.exp(log_scale))


def _observed(params: Params, x: Any, mask: Any) -> Any:
    """Checks one observation x [D] and its mask; returns the mask as booleans (None for
    complete data), with the rules of every mask in jlvm (``_checks.observation_mask``).

    Where x and the mask are concrete, the observed entries must be finite, and 0/1 for
    the Bernoulli likelihood (any other value has no probability under it); entries at
    missing positions may hold anything, NaN included.
    """
    _check_params(params)
    _checks.shape_is(x, "x", (params.data_dim,), "[D]")
    observed = None if mask is None else _checks.observation_mask(mask, params.data_dim)
    if not (_checks.is_concrete(x) and _checks.is_concrete(observed)):
        return observed
    values = np.asarray(x)
    if values.dtype.kind not in "biuf":
        raise TypeError(f"x must hold real numbers, got dtype {values.dtype}.")
    seen = values if observed is None else values[np.asarray(observed)]
    if not np.all(np.isfinite(seen)):
        raise ValueError("x holds NaN or infinite values at observed entries; mark missing "
                         "entries with a mask (True = observed).")
    if params.likelihood == "bernoulli" and not np.all((seen == 0) | (seen == 1)):
        raise ValueError("x must hold 0/1 values at observed entries for the Bernoulli "
                         "likelihood (binary images).")
    return observed


def encoder(params: Params, x: jax.Array, mask: Any = None) -> distrax.Distribution:
    """q_phi(z | x) for one x: [D]: N(m_phi(x), diag s_phi(x)^2) (``params.posterior``
    "diagonal") or N(m_phi(x), S_phi(x) S_phi(x)^T) with S lower triangular ("full").

    With a ``mask`` [D] (True = observed) the encoder sees x with missing pixels set to 0
    (whatever they held, NaN included): a practical choice for an encoder trained on
    complete data, not an exact posterior.
    """
    x = _checks.float_array(x, "x")
    observed = _observed(params, x, mask)
    if observed is not None:
        x = jnp.where(observed, x, 0.0)
    mean, scale = nnx.merge(params.encoder_graph, params.encoder)(x)
    return posteriors.build(params.posterior)(mean, scale)


def log_likelihood(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p_theta(x | z) for x: [D], z: [L]; with ``mask`` [D], of the observed pixels only.

    Bernoulli: sum_d x_d l_d - softplus(l_d), the stable form of x log s + (1-x) log(1-s).
    Given z the pixels are independent, so leaving a missing pixel out of the sum is
    summing it out exactly: log p(x_obs | z) = sum_{d observed} log p(x_d | z).
    """
    x = _checks.float_array(x, "x")
    observed = _observed(params, x, mask)
    outputs = _decode(params, z)
    if observed is not None:
        # a missing pixel may hold anything, NaN included: replaced before any arithmetic,
        # since jnp.where after it would still pass 0 * NaN = NaN to the gradient
        x = jnp.where(observed, x, 0.0)
    if params.likelihood == "bernoulli":
        logits = outputs[0]
        per_pixel = x * logits - jax.nn.softplus(logits)
    else:
        mean, log_scale = outputs
        per_pixel = normal_log_prob_elementwise(x, mean, log_scale)
    if observed is not None:
        per_pixel = jnp.where(observed, per_pixel, 0.0)
    return jnp.sum(per_pixel)


def log_joint(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p(x_obs, z) = log N(z; 0, I) + log p_theta(x_obs | z). x: [D], z: [L].

    ``mask`` [D] (True = observed), default all observed. Bind it with
    ``functools.partial(vae.log_joint, params, x, mask=mask)`` and every estimator in
    ``jlvm`` estimates log p(x_obs).
    """
    z = _checks.float_array(z, "z")
    return standard_normal_log_prob(z) + log_likelihood(params, x, z, mask)


def sample(key: jax.Array, params: Params, n: int) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling z ~ p(z), x ~ p(x|z). Returns (x [n, D], z [n, L])."""
    _checks.prng_key(key)
    _check_params(params)
    n = _checks.positive_int(n, "n")
    key_z, key_x = jax.random.split(key)
    z = jax.random.normal(key_z, (n, params.latent_dim))
    keys = jax.random.split(key_x, n)
    x = jax.vmap(lambda k, z_i: _checks.sample(decoder(params, z_i), k, 1)[0])(keys, z)
    return x.astype(z.dtype), z


def mean_image(params: Params, z: jax.Array) -> jax.Array:
    """E[x | z]: the Bernoulli probabilities or the Gaussian mean, [D]. For pictures."""
    outputs = _decode(params, z)
    if params.likelihood == "bernoulli":
        return jax.nn.sigmoid(outputs[0])
    return outputs[0]


