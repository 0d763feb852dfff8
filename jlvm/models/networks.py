"""Flax NNX networks for the deep latent variable models.

Each network maps ONE input vector to the parameters of a distribution (Flax layers also
accept leading batch axes, but jlvm's pure functions call them on one example and vmap).
They are held as (graphdef, state) by ``jlvm.models.vae.Params`` and rebuilt with
``nnx.merge`` inside pure functions, so no jitted function ever sees a Module.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu,
               "softplus": jax.nn.softplus}


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


class BernoulliDecoder(nnx.Module):
    """z: [L] -> logits: [D] of independent Bernoulli pixels."""

    def __init__(self, latent_dim, hidden_dims, data_dim, activation, *, rngs):
        self.net = MLP(latent_dim, hidden_dims, data_dim, activation, rngs=rngs)

    def __call__(self, z):
        return (self.net(z),)


class GaussianDecoder(nnx.Module):
    """z: [L] -> (mu_theta(z) [D], log sigma_theta(z) [D]): N(mu(z), diag sigma(z)^2)."""

    def __init__(self, latent_dim, hidden_dims, data_dim, activation, *, rngs):
        self.net = MLP(latent_dim, hidden_dims, 2 * data_dim, activation, rngs=rngs)

    def __call__(self, z):
        mean, log_scale = jnp.split(self.net(z), 2, axis=-1)
        return mean, log_scale


class SigmoidGaussianDecoder(nnx.Module):
    """The lecture's example: mu(z) = sigmoid(A z + c), Sigma(z) = diag(exp(sigmoid(B z + d))).

    theta = (A, B, c, d): ``self.mean_layer`` holds (A, c), ``self.variance_layer`` (B, d).
    Returns (mean [D], log_scale [D]) with log_scale = sigmoid(B z + d) / 2, since Sigma is
    the variance.
    """

    def __init__(self, latent_dim, data_dim, *, rngs):
        self.mean_layer = nnx.Linear(latent_dim, data_dim, rngs=rngs)
        self.variance_layer = nnx.Linear(latent_dim, data_dim, rngs=rngs)

    def __call__(self, z):
        mean = jax.nn.sigmoid(self.mean_layer(z))
        log_scale = 0.5 * jax.nn.sigmoid(self.variance_layer(z))
        return mean, log_scale


class GaussianEncoder(nnx.Module):
    """x: [D] -> (mean [L], log_scale [L]) of the amortized q_phi(z|x) = N(mean, diag scale^2)."""

    def __init__(self, data_dim, hidden_dims, latent_dim, activation, *, rngs):
        self.net = MLP(data_dim, hidden_dims, 2 * latent_dim, activation, rngs=rngs)

    def __call__(self, x):
        mean, log_scale = jnp.split(self.net(x), 2, axis=-1)
        return mean, log_scale


class FullGaussianEncoder(nnx.Module):
    """x: [D] -> (mean [L], raw [L, L]) of q_phi(z|x) = N(mean, S S^T) with S =
    ``posteriors.scale_tril(raw)``: the network gives the L(L+1)/2 entries of the lower
    triangle (the upper one is zero)."""

    def __init__(self, data_dim, hidden_dims, latent_dim, activation, *, rngs):
        self.latent_dim = latent_dim
        self.net = MLP(data_dim, hidden_dims, latent_dim + latent_dim * (latent_dim + 1) // 2,
                       activation, rngs=rngs)

    def __call__(self, x):
        out = self.net(x)
        size = self.latent_dim
        rows, cols = jnp.tril_indices(size)
        raw = jnp.zeros((size, size), out.dtype).at[rows, cols].set(out[size:])
        return out[:size], raw
