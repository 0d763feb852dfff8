"""Flax NNX networks for the deep latent variable models.

Each network maps ONE input to a vector (Flax layers also accept leading batch axes, but
jlvm's pure functions call them on one example and vmap). Two architectures:

- ``MLP``: in_dim -> hidden widths -> out_dim.
- ``ConvEncoderNet`` / ``ConvDecoderNet``: for images [H, W] (flattened row-major to
  [H*W]): stride-2 3x3 convolutions with the given channel counts, and their mirror of
  stride-2 transposed convolutions. Their parameters are Flax NNX ``Conv`` /
  ``ConvTranspose`` layers; their numbers are computed as matrix products (``_conv``,
  ``_conv_transpose``: the same values and gradients, several times faster on XLA's CPU
  backend, inside ``lax.scan`` too).

The VAE holds its modules as (graphdef, state) in ``jlvm.models.vae.Params`` and rebuilds
them with ``nnx.merge`` inside pure functions, so no jitted function ever sees a Module.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jlvm.models import flows, likelihoods, posteriors

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu,
               "softplus": jax.nn.softplus}
ARCHITECTURES = ("mlp", "conv")


class MLP(nnx.Module):
    """in_dim -> hidden_dims... -> out_dim, activation between layers, linear output."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int,
                 activation: str, *, rngs: nnx.Rngs):
        sizes = [in_dim, *hidden_dims, out_dim]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


def _conv_layer(in_channels: int, out_channels: int, strides: int,
                rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(in_channels, out_channels, kernel_size=(3, 3), strides=(strides, strides),
                    padding="SAME", rngs=rngs)


class ConvEncoderNet(nnx.Module):
    """x [C*H*W] (C images of H*W, one after the other) -> [out_dim]: 3x3 convolutions of
    stride 2 with ``channels`` output channels each (H and W halve, rounding up, at each),
    flattened, then a linear layer."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], out_dim: int,
                 activation: str, *, rngs: nnx.Rngs, in_channels: int = 1):
        self.image_shape = tuple(image_shape)
        self.in_channels = in_channels
        sizes = [in_channels, *channels]
        self.convs = nnx.List([_conv_layer(a, b, 2, rngs) for a, b in itertools.pairwise(sizes)])
        height, width = (math.ceil(n / 2 ** len(channels)) for n in self.image_shape)
        self.out = nnx.Linear(height * width * channels[-1], out_dim, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h = jnp.moveaxis(x.reshape(self.in_channels, *self.image_shape), 0, -1)
        for conv in self.convs:
            h = act(_conv(conv, h))
        return self.out(h.reshape(-1))


def _windows(h: jax.Array, window: tuple[int, int], strides: tuple[int, int],
             pads: Sequence[tuple[int, int]]) -> jax.Array:
    """h [H, W, C] zero-padded by ``pads`` -> its windows [H', W', kh*kw*C], ordered (row
    of the window, column, channel) like a flattened HWIO kernel."""
    (kh, kw), (sh, sw) = window, strides
    h = jnp.pad(h, [*pads, (0, 0)])
    rows, cols = (h.shape[0] - kh) // sh + 1, (h.shape[1] - kw) // sw + 1
    taps = [h[u:u + (rows - 1) * sh + 1:sh, v:v + (cols - 1) * sw + 1:sw]
            for u in range(kh) for v in range(kw)]
    return jnp.concatenate(taps, axis=-1)


def _conv(layer: nnx.Conv, h: jax.Array) -> jax.Array:
    """``layer(h)`` for one map h [H, W, C] -> [H', W', C'] as matrix products, the same
    numbers as Flax's ``Conv``: h's windows [H', W', kh*kw*C] times the kernel
    [kh*kw*C, C'], or, when that is the smaller array (few output channels), h times the
    kernel [C, kh*kw*C'] first and the taps' shifted maps summed.

    Why not ``lax.conv``: XLA's CPU backend convolves without its fast kernels inside a loop
    body (jax-ml/jax#12868) and computes some convolutions' kernel gradients naively; matrix
    products are fast everywhere, and their gradients are matrix products again."""
    kernel = layer.kernel[...]
    (kh, kw), (sh, sw) = kernel.shape[:2], layer.strides
    pads = jax.lax.padtype_to_pads(h.shape[:2], (kh, kw), (sh, sw), "SAME")
    rows, cols = (-(-n // s) for n, s in zip(h.shape[:2], (sh, sw), strict=True))
    if rows * cols * h.shape[-1] <= h.shape[0] * h.shape[1] * kernel.shape[-1]:
        out = jnp.matmul(_windows(h, (kh, kw), (sh, sw), pads),
                         kernel.reshape(-1, kernel.shape[-1]), precision=layer.precision)
    else:  # a matrix-vector product of the windows is slow on XLA's CPU backend
        taps = jnp.matmul(h, jnp.moveaxis(kernel, 2, 0).reshape(h.shape[-1], -1),
                          precision=layer.precision).reshape(*h.shape[:2], kh, kw, -1)
        taps = jnp.pad(taps, [*pads, (0, 0), (0, 0), (0, 0)])
        out = sum(taps[u:u + (rows - 1) * sh + 1:sh, v:v + (cols - 1) * sw + 1:sw, u, v]
                  for u in range(kh) for v in range(kw))
    return out if layer.bias is None else out + layer.bias[...][None, None, :]


def _transpose_padding(kernel: int, stride: int) -> tuple[int, int]:
    # lax.conv_transpose's padding for "SAME": the output is `stride` times the input
    total = kernel + stride - 2
    before = kernel - 1 if stride > kernel - 1 else math.ceil(total / 2)
    return before, total - before


def _phase_taps(kernel: int, stride: int) -> tuple[int, np.ndarray]:
    """One axis of a "SAME" transposed convolution, out[s*i + a] = sum_d h[i + d] k[tap[d, a]]:
    the first offset d0 and tap [D, s] (``kernel`` where no tap applies).

    Flax's transposed convolution is a correlation of h with s - 1 zeros written between
    its pixels and ``_transpose_padding`` around them: out[o] = sum_t dilated[o + t] k[t],
    dilated[p] = h[(p - before) / s] where that is an integer."""
    before, _ = _transpose_padding(kernel, stride)
    offsets = {(a, t): (a + t - before) // stride for a in range(stride)
               for t in range(kernel) if (a + t - before) % stride == 0}
    first = min(offsets.values())
    tap = np.full((max(offsets.values()) - first + 1, stride), kernel)
    for (a, t), d in offsets.items():
        tap[d - first, a] = t
    return first, tap


def _conv_transpose(layer: nnx.ConvTranspose, h: jax.Array) -> jax.Array:
    """``layer(h)`` for one map h [H, W, C] -> [sH, sW, C'] (``padding="SAME"``), computed
    per output phase: pixel (s*i + a, s*j + b) is h's window at (i, j) times the kernel's
    taps that reach it, so all s*s phases are one matrix product of h's windows with a
    kernel [Dh*Dw*C, s*s*C'] gathered from the layer's [kh, kw, C, C'].

    The same numbers as Flax's ``ConvTranspose``, which convolves h with the stride's zeros
    written in: s*s times the multiply-adds, and slow on XLA's CPU backend (see ``_conv``)."""
    kernel = layer.kernel[...]
    (kh, kw), (sh, sw) = kernel.shape[:2], layer.strides
    (first_h, tap_h), (first_w, tap_w) = _phase_taps(kh, sh), _phase_taps(kw, sw)
    # a zero tap at index k for the (offset, phase) pairs that no tap reaches
    padded = jnp.pad(kernel, [(0, 1), (0, 1), (0, 0), (0, 0)])
    phases = padded[tap_h[:, :, None, None], tap_w[None, None, :, :]]  # [Dh, sh, Dw, sw, C, C']
    phases = phases.transpose(0, 2, 4, 1, 3, 5).reshape(-1, sh * sw * kernel.shape[-1])
    pads = [(-first_h, len(tap_h) - 1 + first_h), (-first_w, len(tap_w) - 1 + first_w)]
    out = jnp.matmul(_windows(h, (len(tap_h), len(tap_w)), (1, 1), pads), phases,
                     precision=layer.precision)  # [H, W, sh*sw*C']
    # phase (a, b) to pixels (s*i + a, s*j + b): zeros written between its pixels, the
    # phases summed (a transpose of the product to interleave them is slow on XLA's CPU
    # backend, and so is its gradient's)
    out = out.reshape(*h.shape[:2], sh, sw, -1)
    zero = jnp.zeros((), out.dtype)
    out = sum(jax.lax.pad(out[:, :, a, b], zero, [(a, sh - 1 - a, sh - 1),
                                                   (b, sw - 1 - b, sw - 1), (0, 0, 0)])
              for a in range(sh) for b in range(sw))
    return out if layer.bias is None else out + layer.bias[...][None, None, :]


class ConvDecoderNet(nnx.Module):
    """z [L] -> [rows * H*W]: a linear layer to a small map of ``channels[-1]`` channels,
    ``len(channels)`` transposed convolutions of stride 2 (channels in reverse), a 3x3
    convolution to ``rows`` channels, cropped to [H, W]. The output is ordered row by row of
    the likelihood's parameters: ``out.reshape(rows, H*W)[p]`` is parameter p of every
    pixel."""

    def __init__(self, latent_dim: int, channels: Sequence[int], image_shape: Sequence[int],
                 rows: int, activation: str, *, rngs: nnx.Rngs):
        self.image_shape = tuple(image_shape)
        self.start = tuple(math.ceil(n / 2 ** len(channels)) for n in self.image_shape)
        self.channels = tuple(channels)
        self.inp = nnx.Linear(latent_dim, self.start[0] * self.start[1] * channels[-1],
                              rngs=rngs)
        sizes = [*reversed(channels), channels[0]]
        self.deconvs = nnx.List([
            nnx.ConvTranspose(a, b, kernel_size=(3, 3), strides=(2, 2), padding="SAME",
                              rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.out = _conv_layer(channels[0], rows, 1, rngs)
        self.rows = rows
        self.activation = activation

    def __call__(self, z: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h = act(self.inp(z)).reshape(*self.start, self.channels[-1])
        for deconv in self.deconvs:
            h = act(_conv_transpose(deconv, h))
        height, width = self.image_shape
        out = _conv(self.out, h)[:height, :width]  # [H, W, rows]
        return jnp.moveaxis(out, -1, 0).reshape(-1)


def encoder_net(architecture: str, data_dim: int, hidden_dims: Sequence[int], out_dim: int,
                activation: str, image_shape: Sequence[int] | None, *,
                rngs: nnx.Rngs, in_channels: int = 1) -> nnx.Module:
    """The encoder's network: x ``[C*D]`` (C vectors of D, e.g. an image and its mask) ->
    ``[out_dim]``.

    Args:
      architecture: ``"conv"`` for ``ConvEncoderNet``; anything else (``"mlp"``) an ``MLP``.
      data_dim: D (the MLP's; a conv net reads ``image_shape``).
      hidden_dims: the MLP's hidden widths, or the conv net's channels per layer.
      out_dim: the output size (e.g. ``posteriors.num_outputs``).
      activation: a key of ``ACTIVATIONS``.
      image_shape: ``(H, W)`` with H*W = D for ``"conv"``; None serves for an MLP.
      rngs: the Flax NNX random streams that initialize the parameters.
      in_channels: C, the channels of x (e.g. 2 for an image and its mask).

    Returns:
      An ``nnx.Module``, ``ConvEncoderNet`` or ``MLP``, ``[C*D] -> [out_dim]``.
    """
    if architecture == "conv":
        return ConvEncoderNet(image_shape, hidden_dims, out_dim, activation, rngs=rngs,
                              in_channels=in_channels)
    return MLP(in_channels * data_dim, hidden_dims, out_dim, activation, rngs=rngs)


def decoder_net(architecture: str, latent_dim: int, hidden_dims: Sequence[int],
                data_dim: int, rows: int, activation: str,
                image_shape: Sequence[int] | None, *, rngs: nnx.Rngs) -> nnx.Module:
    """The decoder's network: z ``[L]`` -> ``[rows * D]``, parameter-major.

    ``out.reshape(rows, D)[p]`` is parameter p of every pixel.

    Args:
      architecture: ``"conv"`` for ``ConvDecoderNet`` (the mirror of the convolutional
        encoder); anything else (``"mlp"``) an ``MLP``.
      latent_dim: L, the dimension of z.
      data_dim: D (the MLP's; a conv net gives H*W of ``image_shape``).
      hidden_dims: the MLP's hidden widths, or the conv net's channels.
      rows: P, the rows per pixel (``likelihoods.network_rows``).
      activation, image_shape, rngs: as in ``encoder_net``.

    Returns:
      An ``nnx.Module``, ``ConvDecoderNet`` or ``MLP``, ``[L] -> [rows * D]``.
    """
    if architecture == "conv":
        return ConvDecoderNet(latent_dim, hidden_dims, image_shape, rows, activation,
                              rngs=rngs)
    return MLP(latent_dim, hidden_dims, rows * data_dim, activation, rngs=rngs)


class SigmoidGaussianDecoder(nnx.Module):
    """The lecture's example: mu(z) = sigmoid(A z + c), Sigma(z) = diag(exp(sigmoid(B z + d))).

    theta = (A, B, c, d): ``self.mean_layer`` holds (A, c), ``self.variance_layer`` (B, d).
    Returns [2, D]: the mean and log_scale = sigmoid(B z + d) / 2 (Sigma is the variance),
    the rows of the "gaussian" likelihood (``jlvm.models.likelihoods``).
    """

    def __init__(self, latent_dim, data_dim, *, rngs):
        self.mean_layer = nnx.Linear(latent_dim, data_dim, rngs=rngs)
        self.variance_layer = nnx.Linear(latent_dim, data_dim, rngs=rngs)

    def __call__(self, z):
        mean = jax.nn.sigmoid(self.mean_layer(z))
        log_scale = 0.5 * jax.nn.sigmoid(self.variance_layer(z))
        return jnp.stack([mean, log_scale])


class Decoder(nnx.Module):
    """The generative model's parameters theta: z [L] -> the likelihood's rows [P, D]
    (``jlvm.models.likelihoods``), and, with a mixture prior, the prior's parameters.

    ``net`` gives the rows that depend on z; "gaussian-pixel" appends one learned log-scale
    per pixel and "gaussian-fixed:S" the constant log S, so every Gaussian's rows are
    (mean, log-scale).
    """

    def __init__(self, net: nnx.Module, likelihood: str, data_dim: int,
                 prior: nnx.Module | None = None):
        spec = likelihoods.parse(likelihood)
        self.net = net
        self.likelihood = str(spec)
        self.data_dim = data_dim
        if spec.name == "gaussian-pixel":
            self.log_scale = nnx.Param(jnp.zeros(data_dim))
        if prior is not None:
            self.prior = prior

    def __call__(self, z: jax.Array) -> jax.Array:
        spec = likelihoods.parse(self.likelihood)
        out = self.net(z).reshape(likelihoods.network_rows(spec), self.data_dim)
        if spec.name == "gaussian-pixel":
            out = jnp.concatenate([out, self.log_scale[...][None].astype(out.dtype)])
        elif spec.name == "gaussian-fixed":
            out = jnp.concatenate([out, jnp.full_like(out, math.log(spec.argument))])
        return out


FLOW_LAYERS = 4  # affine coupling layers of the "flow" family
FLOW_CONTEXT = 16  # numbers of x's summary that condition every coupling layer


class Encoder(nnx.Module):
    """x [D] -> q(z | x), a distrax distribution over z [L] of ``posterior``'s family
    (``jlvm.models.posteriors``): ``net`` gives the family's parameters; a flow's coupling
    layers are MLPs of (masked z, C numbers of context from ``net``) -> (shift, log-scale),
    their last layer zero at the start so that the flow starts as the identity."""

    def __init__(self, net: nnx.Module, posterior: str, latent_dim: int, *,
                 flow_hidden: int = 64, activation: str = "tanh",
                 rngs: nnx.Rngs | None = None):
        self.net = net
        self.posterior = posterior
        self.latent_dim = latent_dim
        if posterior == "flow":
            self.activation = activation
            self.couplings = nnx.List([
                MLP(latent_dim + FLOW_CONTEXT, (flow_hidden,), 2 * latent_dim, activation,
                    rngs=rngs) for _ in range(FLOW_LAYERS)])
            for coupling in self.couplings:
                last = coupling.layers[-1]
                last.kernel[...] = jnp.zeros_like(last.kernel[...])
                last.bias[...] = jnp.zeros_like(last.bias[...])

    def __call__(self, x: jax.Array):
        phi = posteriors.from_outputs(self.posterior, self.net(x), self.latent_dim)
        if self.posterior == "diagonal":
            return posteriors.diagonal(*phi)
        if self.posterior == "full":
            return posteriors.full(*phi)
        if self.posterior == "bernoulli":
            return posteriors.bernoulli(*phi)
        mean, log_scale, context = phi

        def conditioner(coupling, masked):
            shift, raw = jnp.split(coupling(jnp.concatenate([masked, context])), 2)
            return shift, jnp.tanh(raw)  # each layer scales by a factor in (1/e, e)

        return flows.flow(mean, log_scale, [functools.partial(conditioner, coupling)
                                                 for coupling in self.couplings])
