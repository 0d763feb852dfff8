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
    """The coupling layers' masks, alternating by parity.

    Layer i leaves the coordinates with index parity i % 2 unchanged (True) and
    transforms the others conditioned on them, so two layers in a row change every
    coordinate.

    Args:
      latent_dim: L, the dimension of z.
      layers: the number of coupling layers.

    Returns:
      A list of ``layers`` boolean NumPy arrays ``[L]``.
    """
    return [np.arange(latent_dim) % 2 == i % 2 for i in range(layers)]


def _affine(params: tuple[jax.Array, jax.Array]) -> distrax.ScalarAffine:
    shift, log_scale = params
    return distrax.ScalarAffine(shift=shift, log_scale=log_scale)


def flow(mean: jax.Array, log_scale: jax.Array,
         conditioners: Sequence[Conditioner]) -> distrax.Transformed:
    """The flow family: a diagonal Gaussian pushed through affine coupling layers.

    ``q = f_n o ... o f_1 (N(mean, diag exp(log_scale)^2))``, f_i an affine coupling layer
    (``distrax.MaskedCoupling``, mask ``coupling_masks``); f_1 acts first.

    Args:
      mean, log_scale: ``[L]``, the base Gaussian's phi (as in
        ``jlvm.models.posteriors.diagonal``).
      conditioners: n >= 1 functions, one per layer: the layer's input ``[L]`` with the
        coordinates it transforms set to 0 -> ``(shift [L], log_scale [L])``.

    Returns:
      ``distrax.Transformed`` over z ``[L]``.
    """
    masks = coupling_masks(mean.shape[0], len(conditioners))
    layers = [distrax.MaskedCoupling(mask=mask, conditioner=conditioner, bijector=_affine)
              for mask, conditioner in zip(masks, conditioners, strict=True)]
    # distrax's Chain applies its last bijector first: layer 1 acts first on u
    return distrax.Transformed(posteriors.diagonal(mean, log_scale),
                               distrax.Chain(layers[::-1]))


