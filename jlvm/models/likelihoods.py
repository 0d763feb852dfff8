"""Likelihoods p(x | z) of one observation x [D], read from a decoder's outputs [P, D].

A likelihood is named by a spec string, the same in Python, in ``config.json`` and on the
command line:

    "bernoulli"         P=1: logits l_d;          p(x_d) = Bernoulli(sigmoid(l_d)), x_d in {0, 1}
    "gaussian"          P=2: mean, log-scale, both functions of z (the lecture's Sigma(z))
    "gaussian-pixel"    P=2: mean(z); one learned log-scale per pixel, the same for every z
    "gaussian-fixed:S"  P=2: mean(z); the scale S > 0 fixed (log S in the second row)
    "categorical:M"     P=M: logits over M gray levels {0, 1/(M-1), ..., 1} per pixel

The decoder network gives ``network_rows(spec)`` rows; the VAE's decoder module appends the
scale row of "gaussian-pixel" (a parameter) and "gaussian-fixed" (a constant), so every
Gaussian is read the same way here. Pixels are independent given z, so
log p(x | z) = sum_d log p(x_d | z), and a missing pixel is summed out by leaving it out.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jlvm.models._gaussian import normal_log_prob_elementwise

NAMES = ("bernoulli", "gaussian", "gaussian-pixel", "gaussian-fixed", "categorical")
MAX_LEVELS = 2**16


class Spec(NamedTuple):
    """A parsed likelihood spec; ``str(spec)`` is its spec string.

    Attributes:
      name: one of ``NAMES``, e.g. ``"gaussian-fixed"``.
      argument: the spec's number: the scale S, a float > 0, for ``"gaussian-fixed"``; the
        levels M, an int in [2, ``MAX_LEVELS``], for ``"categorical"``; else None.
    """

    name: str
    argument: float | int | None = None

    def __str__(self) -> str:
        if self.argument is None:
            return self.name
        return f"{self.name}:{self.argument:g}" if self.name == "gaussian-fixed" else \
            f"{self.name}:{self.argument}"


# spec numbers in ASCII digits only: Python's int() and float() also read other scripts'
# digits ("²", "٣"), underscores and surrounding spaces, which a spec must not hold
_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def parse(spec: Any, name: str = "likelihood") -> Spec:
    """Parse a likelihood spec string. Cached: a repeated spec costs a dictionary lookup.

    Args:
      spec: ``"bernoulli"``, ``"gaussian"``, ``"gaussian-pixel"``, ``"gaussian-fixed:S"``
        (a finite S > 0 in ASCII decimal digits, an exponent allowed) or
        ``"categorical:M"`` (an integer 2 <= M <= ``MAX_LEVELS``), or a ``Spec``.
      name: what the error messages call ``spec``.

    Returns:
      The ``Spec``, its ``name`` and ``argument`` (S a float, M an int, else None).

    Raises:
      TypeError: if ``spec`` is neither a string nor a ``Spec``.
      ValueError: naming ``name``, for any other string.
    """
    if isinstance(spec, Spec):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"{name} must be a string such as 'bernoulli' or 'categorical:17', "
                        f"got {type(spec).__name__}.")
    return _parse(spec, name)


@functools.lru_cache(maxsize=256)
def _parse(spec: str, name: str) -> Spec:
    base, colon, argument = spec.partition(":")
    if base in ("bernoulli", "gaussian", "gaussian-pixel") and not colon:
        return Spec(base)
    if base == "gaussian-fixed" and _DECIMAL.fullmatch(argument):
        scale = float(argument)
        if math.isfinite(scale) and scale > 0:
            return Spec(base, scale)
    if base == "categorical" and _INTEGER.fullmatch(argument) and \
            2 <= int(argument) <= MAX_LEVELS:
        return Spec(base, int(argument))
    raise ValueError(f"{name} must be one of 'bernoulli', 'gaussian', 'gaussian-pixel', "
                     f"'gaussian-fixed:S' (a scale S > 0) or 'categorical:M' (M >= 2 gray "
                     f"levels), got {spec!r}.")


def rows(spec: Spec) -> int:
    """P, the rows of parameters per pixel that the likelihood reads from ``[P, D]``.

    Args:
      spec: a parsed ``Spec``.

    Returns:
      An int, 1 (bernoulli), 2 (the Gaussians' mean and log-scale) or M (``categorical:M``).
    """
    if spec.name == "categorical":
        return spec.argument
    return 1 if spec.name == "bernoulli" else 2


def network_rows(spec: Spec) -> int:
    """The rows the decoder NETWORK gives.

    A Gaussian whose scale is not a function of z (gaussian-pixel, gaussian-fixed) gets
    only its mean from the network.

    Args:
      spec: a parsed ``Spec``.

    Returns:
      An int, 1 for gaussian-pixel and gaussian-fixed, else ``rows(spec)``.
    """
    return 1 if spec.name in ("gaussian-pixel", "gaussian-fixed") else rows(spec)


def is_discrete(spec: Spec) -> bool:
    """Whether p(x | z), and so p(x), is a probability of discrete x.

    Args:
      spec: a parsed ``Spec``.

    Returns:
      True for Bernoulli pixels and gray levels (categorical), False for the Gaussians'
      densities of continuous x.
    """
    return spec.name in ("bernoulli", "categorical")


def levels(spec: Spec) -> np.ndarray:
    """The values a pixel can take under "categorical:M": k / (M - 1), k = 0..M-1.

    Args:
      spec: a parsed categorical ``Spec``.

    Returns:
      ``[M]`` float64 NumPy array, from 0 to 1.
    """
    return np.arange(spec.argument) / (spec.argument - 1)


def pixel_log_probs(spec: Spec, outputs: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x_d | z) for each pixel.

    Bernoulli: ``x l - softplus(l)``, the stable form of x log s + (1 - x) log(1 - s).
    Categorical: ``log softmax(logits_d)[k_d]`` with k_d = round(x_d (M - 1)).
    A value the likelihood cannot take (not 0/1 for the Bernoulli, off the grid for the
    categorical) has probability 0: -inf, as it must; a NaN stays NaN.

    Args:
      spec: a parsed ``Spec``.
      outputs: ``[P, D]``, the decoder's rows (``rows(spec)`` of them).
      x: ``[D]``, one observation.

    Returns:
      ``[D]`` log-probabilities (log-densities for the Gaussians).
    """
    if spec.name == "bernoulli":
        logits = outputs[0]
        return _off_support(x, (x == 0) | (x == 1), x * logits - jax.nn.softplus(logits))
    if spec.name == "categorical":
        count = spec.argument
        index = jnp.round(x * (count - 1))
        on_grid = (index >= 0) & (index <= count - 1) & (
            jnp.abs(index - x * (count - 1)) < 1e-3)
        index = jnp.clip(index, 0, count - 1).astype(jnp.int32)
        log_probs = jax.nn.log_softmax(outputs, axis=0)  # over the M levels
        chosen = jnp.take_along_axis(log_probs, index[None], axis=0)[0]
        return _off_support(x, on_grid, chosen)
    return normal_log_prob_elementwise(x, outputs[0], outputs[1])


def _off_support(x: jax.Array, possible: jax.Array, value: jax.Array) -> jax.Array:
    """``value`` where x is a value of the likelihood's support, -inf elsewhere, NaN at NaN."""
    return jnp.where(possible, value, jnp.where(jnp.isnan(x), jnp.nan, -jnp.inf))


def mean(spec: Spec, outputs: jax.Array) -> jax.Array:
    """E[x | z]: Bernoulli probabilities, Gaussian means, or ``sum_k p_k k / (M - 1)``.

    Args:
      spec, outputs: as in ``pixel_log_probs``.

    Returns:
      ``[D]``.
    """
    if spec.name == "bernoulli":
        return jax.nn.sigmoid(outputs[0])
    if spec.name == "categorical":
        return jnp.asarray(levels(spec), outputs.dtype) @ jax.nn.softmax(outputs, axis=0)
    return outputs[0]


def distribution(spec: Spec, outputs: jax.Array) -> distrax.Distribution:
    """p(x | z) as a distrax distribution.

    Args:
      spec, outputs: as in ``pixel_log_probs``.

    Returns:
      A distrax distribution over x ``[D]``, ``Independent`` of ``Bernoulli``,
      ``GrayLevels`` or ``MultivariateNormalDiag``.
    """
    if spec.name == "bernoulli":
        return distrax.Independent(distrax.Bernoulli(logits=outputs[0]), 1)
    if spec.name == "categorical":
        return GrayLevels(outputs.T)
    return distrax.MultivariateNormalDiag(outputs[0], jnp.exp(outputs[1]))


def check_values(spec: Spec, observed: np.ndarray, name: str = "x") -> None:
    """Check that concrete observed values have probability under ``spec``.

    0/1 for the Bernoulli, the M gray levels for the categorical (Gaussians take any
    finite number: nothing is checked).

    Args:
      spec: a parsed ``Spec``.
      observed: the observed values, a NumPy array of any shape.
      name: what the error messages call the data.

    Raises:
      ValueError: naming ``name``, if a value has no probability.
    """
    if spec.name == "bernoulli" and not np.all((observed == 0) | (observed == 1)):
        raise ValueError(f"{name} must hold 0/1 values at observed entries for the Bernoulli "
                         "likelihood (binary images).")
    if spec.name == "categorical":
        scaled = observed * (spec.argument - 1)
        if not np.all((np.abs(scaled - np.round(scaled)) < 1e-3) & (observed >= 0)
                      & (observed <= 1)):
            raise ValueError(f"{name} must hold gray levels k/{spec.argument - 1} (k = 0.."
                             f"{spec.argument - 1}) at observed entries for the likelihood "
                             f"{spec}.")


class GrayLevels(distrax.Distribution):
    """Independent pixels on the grid {0, 1/(M-1), ..., 1}: p(x_d = k/(M-1)) =
    softmax(logits[d])_k; logits: [D, M]. Draws are the gray values, not level indices."""

    def __init__(self, logits: jax.Array):
        self._logits = logits

    @property
    def logits(self) -> jax.Array:
        return self._logits

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._logits.shape[:1]

    @property
    def _count(self) -> int:
        return self._logits.shape[1]

    def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
        index = jax.random.categorical(key, self._logits, axis=-1,
                                       shape=(n, *self._logits.shape[:1]))
        return index.astype(self._logits.dtype) / (self._count - 1)

    def log_prob(self, value: jax.Array) -> jax.Array:
        spec = Spec("categorical", self._count)
        per_pixel = jax.vmap(lambda x: pixel_log_probs(spec, self._logits.T, x))(
            jnp.reshape(value, (-1, *self.event_shape)))
        return jnp.sum(per_pixel, axis=-1).reshape(jnp.shape(value)[:-1])

    def mean(self) -> jax.Array:
        return mean(Spec("categorical", self._count), self._logits.T)
