"""Eager validation of static arguments and guarded access to distrax.

Everything here runs at trace time on Python ints and static shapes, so a bad argument
raises a ``ValueError`` naming it before anything is compiled, and never becomes a NaN.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def positive_int(value: Any, name: str, maximum: int = 2**31 - 1, *, minimum: int = 1) -> int:
    """Returns ``value`` as a Python int in [minimum, maximum], else raises ``ValueError``
    naming ``name``. Anything ``operator.index`` takes is an int (NumPy's integers
    included); a bool is not."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a Python int >= {minimum}, got {value!r}.")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a Python int >= {minimum} (it fixes an array shape), "
            f"got {value!r} of type {type(value).__name__}."
        ) from None
    if as_int < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {as_int}.")
    if as_int > maximum:  # JAX indexes arrays with int32
        raise ValueError(f"{name} must be at most {maximum}, got {as_int}.")
    return as_int


def nonnegative_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 0 (NumPy integers welcome, bools not), else
    ``ValueError`` naming ``name``."""
    return positive_int(value, name, minimum=0)


def one_of(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """Returns ``value`` if it is one of ``allowed``, else raises ``ValueError``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    return value


def shape_is(array: Any, name: str, expected: tuple[int, ...], what: str) -> None:
    """Raises ``ValueError`` unless ``array`` has exactly the static ``expected`` shape."""
    shape = jnp.shape(array)
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {what}={tuple(expected)}, got {tuple(shape)}.")


def scalar_distribution(q: Any, name: str = "q") -> None:
    """A proposal must describe ONE latent value: batch_shape () (vmap over data points)."""
    batch_shape = getattr(q, "batch_shape", None)
    if batch_shape is None or not hasattr(q, "log_prob"):
        raise ValueError(f"{name} must be a distrax.Distribution, got {type(q).__name__}.")
    if tuple(batch_shape) != ():
        raise ValueError(
            f"{name} must have batch_shape () (one latent value per event; vmap over data "
            f"points instead), got batch_shape {tuple(batch_shape)}."
        )


# distrax broadcasts a sample axis against parameters internally, which trips
# jax_numpy_rank_promotion="raise"; we allow it only inside these two calls so that
# jlvm's own code stays checked under "raise".
def sample_and_log_prob(q: Any, key: jax.Array, num_samples: int):
    """Draws ``num_samples`` values from ``q``: returns (z [K, *event], log q(z) [K])."""
    with jax.numpy_rank_promotion("allow"):
        return q.sample_and_log_prob(seed=key, sample_shape=(num_samples,))


def log_prob(q: Any, z: jax.Array) -> jax.Array:
    """log q(z) for a batch of values z [K, *event] -> [K]."""
    with jax.numpy_rank_promotion("allow"):
        return q.log_prob(z)


def sample(q: Any, key: jax.Array, num_samples: int) -> jax.Array:
    with jax.numpy_rank_promotion("allow"):
        return q.sample(seed=key, sample_shape=(num_samples,))


def is_concrete(value: Any) -> bool:
    """Whether ``value``'s entries are known now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(value, jax.core.Tracer)


def prng_key(key: Any, name: str = "key") -> None:
    """A PRNG key: ``jax.random.key(seed)`` (typed, shape ()) or ``jax.random.PRNGKey(seed)``
    (uint32 [2]); anything else is a ``TypeError`` naming ``name``."""
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", (None,)))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return
    elif dtype == jnp.uint32 and shape == (2,):
        return
    raise TypeError(f"{name} must be one PRNG key (jax.random.key(seed) or "
                    f"jax.random.PRNGKey(seed)), got {_describe(key)}.")


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} of type {type(value).__name__}"


def float_array(value: Any, name: str) -> jax.Array:
    """``value`` as a floating-point JAX array (integers and booleans are converted to
    float32); strings, objects and complex numbers are a ``TypeError`` naming ``name``."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got {_describe(value)}.")
    try:
        array = jnp.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an array of numbers, got {_describe(value)} "
                        f"({error}).") from None
    if jnp.issubdtype(array.dtype, jnp.complexfloating) or not (
            jnp.issubdtype(array.dtype, jnp.number) or array.dtype == jnp.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}.")
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.float32)
    return array


def positive_number(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite Python float > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number, got {_describe(value)}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {_describe(value)}.") from None
    low_ok = number >= 0 if allow_zero else number > 0
    if not (low_ok and math.isfinite(number)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}.")
    return number


def observation_mask(mask: Any, data_dim: int, name: str = "mask") -> Any:
    """An observation mask [D] (True = observed) as booleans, the same rules everywhere.

    Concrete masks may hold booleans or 0/1 numbers and must observe something; a mask
    under jit (a tracer) must be boolean, since its values cannot be checked. Anything else
    is a ``ValueError``/``TypeError`` naming ``name``.
    """
    if isinstance(mask, (str, bytes)):
        raise TypeError(f"{name} must be a boolean array [D], got {_describe(mask)}.")
    shape = tuple(jnp.shape(mask))
    if shape != (data_dim,):
        raise ValueError(f"{name} must have shape [D]=({data_dim},), got {shape}.")
    if not is_concrete(mask):
        if jnp.result_type(mask) != jnp.bool_:
            raise TypeError(f"{name} under jit must be boolean (True = observed); its 0/1 "
                            f"values cannot be checked there, got dtype {jnp.result_type(mask)}.")
        return mask
    values = np.asarray(mask)
    if values.dtype != bool:
        if values.dtype.kind not in "iuf" or not np.all((values == 0) | (values == 1)):
            raise ValueError(f"{name} must hold booleans or 0/1 values (True = observed), "
                             f"got values {np.unique(values)[:5]} of dtype {values.dtype}.")
        values = values.astype(bool)
    if not values.any():
        raise ValueError(f"{name} leaves nothing observed: there is no observation to score.")
    return values


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def model_output(log_joint: Any, z: Any, name: str, what: str) -> None:
    """``log_joint(z)`` must give a real scalar: checked with ``jax.eval_shape`` (shapes and
    dtypes only; nothing drawn, nothing compiled). ``z``: an array or ShapeDtypeStruct."""
    if not callable(log_joint):
        raise TypeError(f"{name} must be a function z -> log p(x, z), got {_describe(log_joint)}.")
    try:
        value = jax.eval_shape(log_joint, z)
    except Exception as error:  # the user's function: whatever it raises, say where
        raise ValueError(f"{name} failed on {what}: {_one_line(error)}") from error
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = (f"shape {shape} and dtype {dtype}" if shape is not None
               else f"{type(value).__name__}")
        raise ValueError(f"{name} must map ONE latent value z to a real scalar log p(x, z); on "
                         f"{what} it returned {got}.")


def _diagonal_normal_values(q: Any) -> None:
    """The usual encoder's q (a diagonal Gaussian), concrete: finite means and positive
    finite scales, or a ValueError naming them (a zero scale would give ELBO -inf, a NaN
    one NaN)."""
    import distrax

    if type(q) is not distrax.MultivariateNormalDiag:
        return
    loc, scale = q.loc, q.scale_diag
    if not (is_concrete(loc) and is_concrete(scale)):
        return
    if not np.all(np.isfinite(np.asarray(loc))):
        raise ValueError("q's mean holds NaN or infinite values.")
    scale = np.asarray(scale)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError("q's scales must be finite and > 0 (a standard deviation), got "
                         f"values in [{np.nanmin(scale)}, {np.nanmax(scale)}].")


def proposal_and_model(key: Any, log_joint: Any, q: Any, *, name: str = "log_joint",
                       pathwise: str | None = None) -> None:
    """Everything an estimator can check before drawing: the key, q (one latent value), and
    that ``log_joint`` maps one draw of q to a scalar (``jax.eval_shape``: nothing drawn,
    nothing compiled). ``pathwise``: the name of a gradient estimator that differentiates
    through the draws, which a discrete q cannot have."""
    prng_key(key)
    if not callable(log_joint):
        raise TypeError(f"{name} must be a function z -> log p(x, z), got {_describe(log_joint)}.")
    scalar_distribution(q)
    try:
        z = jax.eval_shape(lambda k: sample(q, k, 1)[0], key)
    except Exception as error:
        raise ValueError(f"q could not draw a latent value: {_one_line(error)}") from error
    _diagonal_normal_values(q)
    if pathwise is not None and not jnp.issubdtype(z.dtype, jnp.floating):
        raise ValueError(f"grad_estimator={pathwise!r} differentiates through the draws of q, "
                         f"but this q is discrete (it draws {z.dtype} values): use "
                         'grad_estimator="score_function" (or "disarm" for a factorized '
                         'Bernoulli q).')
    model_output(log_joint, z, name, f"one draw of q (z of shape {tuple(z.shape)}, dtype "
                                     f"{z.dtype})")


def finite_if_concrete(array: Any, name: str) -> None:
    """``ValueError`` if a concrete ``array`` holds NaN or infinity (under jit its values
    are unknown and it passes)."""
    if not is_concrete(array):
        return
    values = np.asarray(array)
    if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s); every entry must be a "
                         "finite number (for missing entries, pass a mask).")


def numeric_leaves(tree: Any, name: str) -> None:
    """Every leaf of a parameter pytree is an array of numbers (a string or an object in a
    ``Params`` field would otherwise fail deep inside JAX)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            try:
                dtype = jnp.result_type(leaf)
            except TypeError:
                dtype = None
        if dtype is None or not (jnp.issubdtype(dtype, jnp.number) or dtype == jnp.bool_):
            raise TypeError(f"{name}{jax.tree_util.keystr(path)} must be an array of numbers, "
                            f"got {_describe(leaf)}.")


def dims(value: Any, name: str) -> tuple[int, ...]:
    """A sequence of positive ints (layer widths), as a tuple."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of positive ints (layer widths), got "
                        f"{_describe(value)}.")
    return tuple(positive_int(item, f"{name}[{i}]") for i, item in enumerate(value))


def optimizer(value: Any, name: str = "optimizer") -> None:
    """An optax ``GradientTransformation`` (anything with ``init`` and ``update``)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(f"{name} must be an optax GradientTransformation (e.g. "
                        f"optax.adam(1e-3)), got {_describe(value)}.")


def finite_result(value: Any, name: str, *, allow_inf: bool = False) -> Any:
    """``value`` unchanged, after a check where it is concrete: NaN (and +inf, unless
    ``allow_inf``) is a ``ValueError``, since it means a NaN or infinite input; -inf (a
    probability of 0) is a legitimate answer. Under jit the value passes unchecked."""
    if not is_concrete(value):
        return value
    values = np.asarray(value)
    if np.any(np.isnan(values)) or (not allow_inf and np.any(np.isposinf(values))):
        raise ValueError(
            f"{name} is {'NaN' if np.any(np.isnan(values)) else '+inf'}: q or log_joint gave "
            "a NaN or infinite value on some draw (check q's parameters: finite means and "
            "positive scales; and that log_joint is finite where q puts mass).")
    return value
