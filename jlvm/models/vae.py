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
from jlvm.models import likelihoods, networks, posteriors, priors
from jlvm.models._gaussian import standard_normal_log_prob
from jlvm.models.protocol import Model

LIKELIHOODS = likelihoods.NAMES  # specs: see jlvm.models.likelihoods.parse
POSTERIORS = posteriors.ENCODER_FAMILIES  # the encoder's family
PRIORS = priors.NAMES
ARCHITECTURES = networks.ARCHITECTURES


class Params(struct.PyTreeNode):
    """VAE parameters: array leaves in ``decoder``/``encoder``, structure as static fields.

    Attributes:
      decoder: nnx.State of the generative model (theta): the decoder network, a per-pixel
        log-scale ("gaussian-pixel"), a learned prior's parameters ("mixture:K",
        "bernoulli").
      encoder: nnx.State of the encoder network (phi), with a flow's coupling layers.
      likelihood: its spec, e.g. "bernoulli" or "categorical:17" (static).
      data_dim, latent_dim: D and L (static).
      posterior: the encoder's family, "diagonal", "full", "flow" or "bernoulli" (static;
        runs written before the field existed are diagonal).
      latent_prior: "normal", "mixture:K" or "bernoulli" (static).
      architecture: "mlp" or "conv" (static).
      encoder_sees_mask: whether the encoder's input is (x with missing entries 0, mask),
        for models learned from incomplete data, rather than x alone (static).
    """

    decoder: nnx.State
    encoder: nnx.State
    decoder_graph: Any = struct.field(pytree_node=False)
    encoder_graph: Any = struct.field(pytree_node=False)
    likelihood: str = struct.field(pytree_node=False)
    data_dim: int = struct.field(pytree_node=False)
    latent_dim: int = struct.field(pytree_node=False)
    posterior: str = struct.field(pytree_node=False, default="diagonal")
    latent_prior: str = struct.field(pytree_node=False, default="normal")
    architecture: str = struct.field(pytree_node=False, default="mlp")
    encoder_sees_mask: bool = struct.field(pytree_node=False, default=False)


def _settings(data_dim, latent_dim, hidden_dims, likelihood, activation, posterior, prior,
              architecture, image_shape, encoder_sees_mask):
    """The VAE's settings checked once, as plain values: (data_dim, latent_dim,
    hidden_dims, likelihood spec string, prior spec string, image_shape or None,
    encoder_sees_mask)."""
    likelihood = str(likelihoods.parse(likelihood))
    prior = str(priors.parse(prior))
    _checks.one_of(activation, "activation", tuple(networks.ACTIVATIONS))
    _checks.one_of(posterior, "posterior", POSTERIORS)
    _checks.one_of(architecture, "architecture", ARCHITECTURES)
    data_dim = _checks.positive_int(data_dim, "data_dim")
    latent_dim = _checks.positive_int(latent_dim, "latent_dim")
    hidden_dims = _checks.dims(hidden_dims, "hidden_dims")
    if image_shape is not None:
        image_shape = _checks.dims(image_shape, "image_shape")
        if len(image_shape) != 2 or image_shape[0] * image_shape[1] != data_dim:
            raise ValueError(f"image_shape must be (height, width) with height * width = "
                             f"data_dim = {data_dim}, got {image_shape}.")
    if architecture == "conv" and image_shape is None:
        raise ValueError("architecture='conv' needs image_shape=(height, width): "
                         "convolutions are for images.")
    if architecture == "conv" and not hidden_dims:
        raise ValueError("hidden_dims must hold at least one channel count for "
                         "architecture='conv' (one stride-2 convolution each), got ().")
    if (prior == "bernoulli") != (posterior in posteriors.DISCRETE):
        raise ValueError(
            f"prior='bernoulli' (binary z) and posterior='bernoulli' go together: log p(x, z) "
            f"- log q(z | x) needs p and q over the same space, z in {{0,1}}^L or R^L; got "
            f"prior={prior!r} with posterior={posterior!r}.")
    if not isinstance(encoder_sees_mask, (bool, np.bool_)):
        raise TypeError(f"encoder_sees_mask must be a bool (True or False), got "
                        f"{encoder_sees_mask!r} of type {type(encoder_sees_mask).__name__}.")
    return (data_dim, latent_dim, hidden_dims, likelihood, prior, image_shape,
            bool(encoder_sees_mask))


def init(key: jax.Array, data_dim: int, latent_dim: int, *,
         hidden_dims: Sequence[int] = (200, 200), likelihood: str = "bernoulli",
         activation: str = "tanh", posterior: str = "diagonal", prior: str = "normal",
         architecture: str = "mlp", image_shape: Sequence[int] | None = None,
         encoder_sees_mask: bool = False) -> Params:
    """A decoder z -> p(x | z) and an encoder x -> q(z | x), with their initial weights.

    Args:
      key: PRNG key for the initial weights.
      data_dim: D, pixels per image.
      latent_dim: L.
      hidden_dims: "mlp": the decoder's hidden widths (the encoder mirrors them; () for
        linear nets); "conv": the encoder's channel counts, at least one, one stride-2
        convolution each (the decoder mirrors them with transposed convolutions).
      likelihood: a spec of ``jlvm.models.likelihoods``: "bernoulli" (binary data),
        "gaussian", "gaussian-pixel", "gaussian-fixed:S" or "categorical:M".
      activation: one of ``networks.ACTIVATIONS``.
      posterior: the encoder's q: "diagonal" (N(m, diag s^2)), "full" (N(m, S S^T), S a
        Cholesky factor from the network), "flow" (affine coupling layers on a diagonal
        Gaussian, conditioned on x) or "bernoulli" (independent bits, logits from the
        network; with prior "bernoulli" only): ``jlvm.models.posteriors``.
      prior: "normal" (N(0, I)), "mixture:K" (learned; ``jlvm.models.priors``) or
        "bernoulli" (z in {0,1}^L, learned logits; with posterior "bernoulli"). Binary z
        trains with ``grad_estimator="disarm"`` or "score_function"; log p(x) is exact by
        enumeration where L <= 20 (``jlvm.evaluate.log_likelihood_exact``).
      architecture: "mlp" or "conv" (needs ``image_shape``).
      image_shape: (height, width) with height * width = D, for "conv".
      encoder_sees_mask: a bool: the encoder takes the mask beside x (missing entries 0),
        so that it can tell a missing pixel from a 0: for learning from incomplete data.
    """
    _checks.prng_key(key)
    data_dim, latent_dim, hidden_dims, likelihood, prior, image_shape, encoder_sees_mask = \
        _settings(data_dim, latent_dim, hidden_dims, likelihood, activation, posterior, prior,
                  architecture, image_shape, encoder_sees_mask)
    key_decoder, key_encoder, key_prior = jax.random.split(key, 3)
    spec = likelihoods.parse(likelihood)
    net = networks.decoder_net(architecture, latent_dim, hidden_dims, data_dim,
                               likelihoods.network_rows(spec), activation, image_shape,
                               rngs=nnx.Rngs(key_decoder))
    prior_spec = priors.parse(prior)
    prior_module = (None if prior_spec.name == "normal"
                    else priors.BernoulliPrior(latent_dim) if prior_spec.name == "bernoulli"
                    else priors.MixturePrior(prior_spec.components, latent_dim,
                                             rngs=nnx.Rngs(key_prior)))
    decoder_module = networks.Decoder(net, likelihood, data_dim, prior_module)
    encoder_dims = hidden_dims if architecture == "conv" else hidden_dims[::-1]
    encoder_net = networks.encoder_net(
        architecture, data_dim, encoder_dims,
        posteriors.num_outputs(posterior, latent_dim, networks.FLOW_CONTEXT), activation,
        image_shape, rngs=nnx.Rngs(key_encoder), in_channels=2 if encoder_sees_mask else 1)
    # a flow's coupling layers are as wide as the last hidden layer (linear nets: the
    # Encoder's default width)
    widths = {"flow_hidden": hidden_dims[-1]} if hidden_dims else {}
    encoder_module = networks.Encoder(encoder_net, posterior, latent_dim, **widths,
                                      activation=activation,
                                      rngs=nnx.Rngs(jax.random.fold_in(key_encoder, 1)))
    return _from_modules(decoder_module, encoder_module, likelihood, data_dim, latent_dim,
                         posterior=posterior, latent_prior=prior, architecture=architecture,
                         encoder_sees_mask=encoder_sees_mask)


def _from_modules(decoder_module, encoder_module, likelihood, data_dim, latent_dim,
                  **static) -> Params:
    decoder_graph, decoder_state = nnx.split(decoder_module)
    encoder_graph, encoder_state = nnx.split(encoder_module)
    return Params(decoder=decoder_state, encoder=encoder_state, decoder_graph=decoder_graph,
                  encoder_graph=encoder_graph, likelihood=likelihood, data_dim=data_dim,
                  latent_dim=latent_dim, **static)


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
    encoder_net = networks.MLP(data_dim, encoder_hidden_dims, 2 * latent_dim, "tanh",
                               rngs=nnx.Rngs(key_encoder))
    encoder_module = networks.Encoder(encoder_net, "diagonal", latent_dim)
    return _from_modules(decoder_module, encoder_module, "gaussian", data_dim, latent_dim)


def model(data_dim: int, latent_dim: int, *, hidden_dims: Sequence[int] = (200, 200),
          likelihood: str = "bernoulli", activation: str = "tanh",
          posterior: str = "diagonal", prior: str = "normal", architecture: str = "mlp",
          image_shape: Sequence[int] | None = None, encoder_sees_mask: bool = False) -> Model:
    """The VAE as a ``jlvm.Model``: ``init`` is ``vae.init`` with these settings, and
    ``log_joint``, ``encoder``, ``log_likelihood``, ``prior`` and ``decoder`` are this
    module's functions. Arguments as for ``init`` (checked here, at once)."""
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
    """p(z): N(0, I_L), the learned mixture of Gaussians of a "mixture:K" prior, or the
    learned product of Bernoullis over {0,1}^L of a "bernoulli" prior."""
    _, prior_spec = _check_params(params)
    if prior_spec.name == "normal":
        return priors.standard_normal(params.latent_dim)
    return nnx.merge(params.decoder_graph, params.decoder).prior()


def decoder(params: Params, z: jax.Array) -> distrax.Distribution:
    """p_theta(x | z) for one z: [L], a distrax distribution over x: [D]."""
    spec, _ = _check_params(params)
    return likelihoods.distribution(spec, _decode(params, _latent(params, z)))


def encoder(params: Params, x: jax.Array, mask: Any = None) -> distrax.Distribution:
    """q_phi(z | x) for one x: [D], of the family ``params.posterior``: N(m(x), diag
    s(x)^2) ("diagonal"), N(m(x), S(x) S(x)^T) with S lower triangular ("full"), or that
    diagonal Gaussian through coupling layers conditioned on x ("flow").

    With a ``mask`` [D] (True = observed) the encoder sees x with missing pixels set to 0
    (whatever they held, NaN included), and, where ``params.encoder_sees_mask``, the mask
    too (as MIWAE's encoder does), so that a missing pixel is not read as a 0.
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
    """log p_theta(x | z) for x: [D], z: [L]; with ``mask`` [D], of the observed pixels only.

    Given z the pixels are independent, so leaving a missing pixel out of the sum is
    summing it out exactly: log p(x_obs | z) = sum_{d observed} log p(x_d | z). An
    observed value the likelihood cannot take (not 0/1 for the Bernoulli, off the gray
    levels for the categorical) has probability 0: -inf, eagerly and under jit alike.
    """
    spec, _ = _check_params(params)
    x, observed = _observed(params, x, mask)
    return _log_likelihood(params, spec, x, _latent(params, z), observed)


def log_joint(params: Params, x: jax.Array, z: jax.Array, mask: Any = None) -> jax.Array:
    """log p(x_obs, z) = log p(z) + log p_theta(x_obs | z). x: [D], z: [L].

    ``mask`` [D] (True = observed), default all observed. Bind it with
    ``functools.partial(vae.log_joint, params, x, mask=mask)`` and every estimator in
    ``jlvm`` estimates log p(x_obs).
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
    """n draws z ~ p(z): [n, L] (float32 0/1 for a "bernoulli" prior)."""
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
    """Ancestral sampling z ~ p(z), x ~ p(x|z). Returns (x [n, D], z [n, L])."""
    _checks.prng_key(key)
    key_z, key_x = jax.random.split(key)
    z = sample_latents(key_z, params, n)
    x = jax.vmap(lambda k, z_i: _checks.sample(decoder(params, z_i), k, 1)[0])(
        jax.random.split(key_x, z.shape[0]), z)
    return x.astype(jnp.result_type(float)), z


def mean_image(params: Params, z: jax.Array) -> jax.Array:
    """E[x | z]: the Bernoulli probabilities, the Gaussian mean or the expected gray level,
    [D]. For pictures."""
    spec, _ = _check_params(params)
    return likelihoods.mean(spec, _decode(params, _latent(params, z)))
