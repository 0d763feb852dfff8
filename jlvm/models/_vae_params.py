"""Building the VAE's parameters (``jlvm.models.vae`` re-exports what is public here): the
``Params`` pytree, the check of the settings, and the initial weights of ``init`` and of
the lecture's example (``lecture_example``).

The model's functions (``log_joint``, ``encoder``, ...) and ``model(...)``, which binds
them to ``init``, stay in ``jlvm.models.vae``; this module never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx, struct

from jlvm import _checks
from jlvm.models import likelihoods, networks, posteriors, priors

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
      latent_dim: L, the dimension of z.
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

    Returns:
      ``Params`` with these settings as its static fields.
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

    ``mu_theta(z) = sigmoid(A z + c)``, ``Sigma_theta(z) = diag(exp(sigmoid(B z + d)))``,
    theta = (A, B, c, d), with an MLP Gaussian encoder for amortized inference.

    Args:
      key: PRNG key for the initial weights.
      latent_dim, data_dim: L and D, Python ints >= 1.
      encoder_hidden_dims: the encoder MLP's hidden widths (tanh).

    Returns:
      ``Params``, likelihood "gaussian", posterior "diagonal", prior "normal".
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
