"""The "flow" posterior family: a diagonal Gaussian through affine coupling layers::

    u ~ N(mean, diag exp(log_scale)^2),   z = f_n(... f_2(f_1(u)))
    f_i (RealNVP): z_B = u_B exp(a_i(u_A)) + b_i(u_A), z_A = u_A, for a mask A | B
    log q(z) = log N(u; mean, diag s^2) - sum_i log |det df_i/du|

Built from distrax bijectors (``MaskedCoupling`` of ``ScalarAffine`` in a ``Chain``), so a
flow q samples, scores and differentiates like any distrax distribution; its coupling
functions (a_i, b_i) are whatever the caller gives, e.g. networks of (u_A, x).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import distrax
import jax
import numpy as np

from jlvm.models import posteriors

Conditioner = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def coupling_masks(latent_dim: int, layers: int) -> list[np.ndarray]:
    """Layer i leaves the coordinates with index parity i % 2 unchanged (True) and
    transforms the others conditioned on them, so two layers in a row change every
    coordinate."""
    return [np.arange(latent_dim) % 2 == i % 2 for i in range(layers)]


def _affine(params: tuple[jax.Array, jax.Array]) -> distrax.ScalarAffine:
    shift, log_scale = params
    return distrax.ScalarAffine(shift=shift, log_scale=log_scale)


def flow(mean: jax.Array, log_scale: jax.Array,
         conditioners: Sequence[Conditioner]) -> distrax.Transformed:
    """q = f_n o ... o f_1 (N(mean, diag exp(log_scale)^2)), f_i an affine coupling layer
    (``distrax.MaskedCoupling``, mask ``coupling_masks``) whose shift and log-scale [L]
    are ``conditioners[i](masked z)``; mean, log_scale: [L]."""
    masks = coupling_masks(mean.shape[0], len(conditioners))
    layers = [distrax.MaskedCoupling(mask=mask, conditioner=conditioner, bijector=_affine)
              for mask, conditioner in zip(masks, conditioners, strict=True)]
    # distrax's Chain applies its last bijector first: layer 1 acts first on u
    return distrax.Transformed(posteriors.diagonal(mean, log_scale),
                               distrax.Chain(layers[::-1]))


