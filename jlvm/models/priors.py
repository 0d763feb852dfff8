"""Priors p(z) over one latent z [L], named by a spec string (as likelihoods are)::

    "normal"      N(0, I_L)
    "mixture:K"   sum_k pi_k N(z; mu_k, diag sigma_k^2), pi = softmax(logits), all learned:
                  the lecture's mixture of Gaussians as the VAE's prior
    "bernoulli"   prod_l Bernoulli(z_l; sigmoid(logits_l)), z in {0,1}^L, logits [L]
                  learned (unconstrained, zero at the start): binary latent features

A mixture prior has no analytic KL(q || p), so the VAE trains on the joint or entropy form
of the ELBO with it (the KL form is refused). A Bernoulli prior's z is discrete: it goes
with a Bernoulli q and a gradient estimator for discrete q (score function, DisARM), and
where L is small log p(x) is a sum over its 2^L values (``jlvm.evaluate.log_likelihood_exact``).
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

NAMES = ("normal", "mixture", "bernoulli")
MAX_COMPONENTS = 2**16


class Spec(NamedTuple):
    """A parsed prior spec; ``str(spec)`` is its spec string.

    Attributes:
      name: ``"normal"``, ``"mixture"`` or ``"bernoulli"`` (``NAMES``).
      components: K, an int in [1, ``MAX_COMPONENTS``], for a mixture, else None.
    """

    name: str
    components: int | None = None

    def __str__(self) -> str:
        return self.name if self.components is None else f"{self.name}:{self.components}"


def parse(spec: Any, name: str = "prior") -> Spec:
    """Parse a prior spec string. Cached: a repeated spec costs a lookup.

    Args:
      spec: ``"normal"``, ``"bernoulli"`` or ``"mixture:K"`` (K an integer in ASCII
        decimal digits, 1 <= K <= ``MAX_COMPONENTS``), or a ``Spec``.
      name: what the error messages call ``spec``.

    Returns:
      The ``Spec``, ``Spec("normal")``, ``Spec("bernoulli")`` or ``Spec("mixture", K)``.

    Raises:
      TypeError: if ``spec`` is neither a string nor a ``Spec``.
      ValueError: naming ``name``, for any other string.
    """
    if isinstance(spec, Spec):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"{name} must be a string, 'normal', 'bernoulli' or 'mixture:K', got "
                        f"{type(spec).__name__}.")
    return _parse(spec, name)


@functools.lru_cache(maxsize=256)
def _parse(spec: str, name: str) -> Spec:
    if spec in ("normal", "bernoulli"):
        return Spec(spec)
    base, _, count = spec.partition(":")
    # ASCII digits only: int() also reads other scripts' digits ("²", "٣")
    if base == "mixture" and re.fullmatch(r"[0-9]+", count) and 1 <= int(count) <= MAX_COMPONENTS:
        return Spec("mixture", int(count))
    raise ValueError(f"{name} must be 'normal', 'bernoulli' or 'mixture:K' with K an "
                     f"integer in [1, {MAX_COMPONENTS}] (e.g. 'mixture:10'), got {spec!r}.")


def standard_normal(latent_dim: int) -> distrax.MultivariateNormalDiag:
    """The "normal" prior N(0, I_L).

    Args:
      latent_dim: L, the dimension of z.

    Returns:
      ``distrax.MultivariateNormalDiag`` over z ``[L]``.
    """
    return distrax.MultivariateNormalDiag(jnp.zeros(latent_dim), jnp.ones(latent_dim))


def mixture(logits: jax.Array, means: jax.Array,
            log_scales: jax.Array) -> distrax.MixtureSameFamily:
    """The "mixture:K" prior: a mixture of K diagonal Gaussians.

    ``sum_k softmax(logits)_k N(z; means[k], diag exp(log_scales[k])^2)``.

    Args:
      logits: ``[K]``, unnormalized log weights.
      means: ``[K, L]``.
      log_scales: ``[K, L]``, log standard deviations.

    Returns:
      ``distrax.MixtureSameFamily`` over z ``[L]``; its ``log_prob`` is a logsumexp over
      the components.
    """
    return distrax.MixtureSameFamily(
        mixture_distribution=distrax.Categorical(logits=logits),
        components_distribution=distrax.MultivariateNormalDiag(means, jnp.exp(log_scales)))


class MixturePrior(nnx.Module):
    """The learnable parameters of a "mixture:K" prior. Components start with equal
    weights, unit scales and means drawn from N(0, I), so that they differ."""

    def __init__(self, components: int, latent_dim: int, *, rngs: nnx.Rngs):
        self.logits = nnx.Param(jnp.zeros(components))
        self.means = nnx.Param(jax.random.normal(rngs.params(), (components, latent_dim)))
        self.log_scales = nnx.Param(jnp.zeros((components, latent_dim)))

    def __call__(self) -> distrax.MixtureSameFamily:
        return mixture(self.logits[...], self.means[...], self.log_scales[...])


def bernoulli(logits: jax.Array) -> distrax.Independent:
    """The "bernoulli" prior: ``prod_l Bernoulli(z_l; sigmoid(logits_l))``.

    Args:
      logits: ``[L]``, unconstrained.

    Returns:
      ``distrax.Independent``, one distribution over z in {0,1}^L (event shape ``[L]``);
      draws are float32 0/1, ready for a network.
    """
    return distrax.Independent(distrax.Bernoulli(logits=logits, dtype=jnp.float32), 1)


class BernoulliPrior(nnx.Module):
    """The learnable logits [L] of a "bernoulli" prior, zero at the start (each feature
    on with probability 1/2)."""

    def __init__(self, latent_dim: int):
        self.logits = nnx.Param(jnp.zeros(latent_dim))

    def __call__(self) -> distrax.Independent:
        return bernoulli(self.logits[...])
