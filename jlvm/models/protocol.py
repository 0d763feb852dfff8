"""The model protocol: a latent variable model as a NamedTuple of pure functions.

Learners, evaluation and sampling see a model only through these functions, the way
blackjax's kernels see only a ``logdensity_fn``: parameters may be any pytree (dicts,
NamedTuples, Flax NNX state), and nothing in jlvm knows a model's class::

    model = jlvm.Model(init, log_joint, encoder)
    init(key) -> params                               any pytree of arrays
    log_joint(params, x [D], z, mask=None) -> []      log p(x_obs, z) for ONE example
    encoder(params, x [D], mask=None) -> q            a distrax q(z | x_obs) over ONE z

Optional fields::

    log_likelihood(params, x, z, mask=None) -> []     log p(x_obs | z): with ``prior``, the
                                                      KL form of the ELBO
    prior(params) -> distrax p(z)                     the KL form; SVI's latent shape
    decoder(params, z) -> distrax p(x | z)            sampling and pictures

``mask`` is None for complete data, else a boolean [D] (True = observed); a model that
ignores masks simply refuses them (the learners pass ``mask`` only for ``(x, mask)``
batches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jlvm import _checks


class Model(NamedTuple):
    """A latent variable model as pure functions (see the module docstring for shapes).

    ``mask`` is None for complete data, else a bool ``[D]`` (True = observed). The last
    four fields are optional: None where the model lacks them.

    Attributes:
      init: ``init(key) -> params``, the initial parameters, any pytree of arrays.
      log_joint: ``log_joint(params, x, z, mask=None) -> []``, the scalar log p(x_obs, z) of
        ONE example x ``[D]`` and one z.
      encoder: ``encoder(params, x, mask=None) -> q``, a distrax q(z | x_obs) over one z
        (optional; amortized inference and ``missing.impute`` need it).
      log_likelihood: ``log_likelihood(params, x, z, mask=None) -> []``, the scalar
        log p(x_obs | z) (optional; with ``prior``, the KL form of the ELBO).
      prior: ``prior(params) -> p(z)``, a distrax distribution over one z (optional; the KL
        form, AIS from the prior, and SVI's latent shape without an encoder).
      decoder: ``decoder(params, z) -> p(x | z)``, a distrax distribution over one x ``[D]``
        (optional; sampling, pictures, and the imputations of ``missing.impute``).
    """

    init: Callable[[jax.Array], Any]
    log_joint: Callable[..., jax.Array]
    encoder: Callable[..., Any] | None = None
    log_likelihood: Callable[..., jax.Array] | None = None
    prior: Callable[[Any], Any] | None = None
    decoder: Callable[[Any, jax.Array], Any] | None = None


_FIELDS_FOR = {"log_likelihood": "the KL form of the ELBO",
               "prior": "the KL form of the ELBO", "encoder": "amortized inference",
               "decoder": "sampling x"}


def check(model: Any, *needs: str, name: str = "model") -> Model:
    """Check that ``model`` is a ``jlvm.Model`` with the functions a caller needs.

    Args:
      model: the value to check.
      needs: names of optional fields that must be functions (``"encoder"``,
        ``"prior"``...); ``init`` and ``log_joint`` always must.
      name: what the error messages call ``model``.

    Returns:
      ``model``, unchanged.

    Raises:
      TypeError: naming what is missing, if ``model`` is not a ``Model`` or a field it
        needs is not callable.
    """
    if not isinstance(model, Model):
        hint = (" (a function key -> params was the old form; wrap it in a model, e.g. "
                "jlvm.models.vae.model(...))") if callable(model) else ""
        raise TypeError(f"{name} must be a jlvm.Model(init, log_joint, encoder, ...), got "
                        f"{type(model).__name__}{hint}.")
    for field in ("init", "log_joint", *needs):
        if not callable(getattr(model, field)):
            why = _FIELDS_FOR.get(field, "this")
            raise TypeError(f"{name}.{field} must be a function ({why} needs it), got "
                            f"{type(getattr(model, field)).__name__}.")
    return model


def split_batch(batch: Any, name: str = "batch") -> tuple[jax.Array, Any]:
    """Split and check a learner's batch.

    Shapes are static, so this is checked at once, before anything compiles.

    Args:
      batch: x ``[B, D]`` with B >= 1, or a pair ``(x [B, D], mask [B, D])``, mask boolean
        (True = observed).
      name: what the error messages call ``batch``.

    Returns:
      ``(x, mask)``, mask None for a bare x.

    Raises:
      TypeError: for a tuple or list of other than 2 items, or a mask that is not boolean.
      ValueError: for an x that is not ``[B, D]`` with B >= 1, or a mask of another shape.
    """
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise TypeError(f"{name} must be x [B, D] or a pair (x [B, D], mask [B, D]), got "
                            f"a {type(batch).__name__} of {len(batch)} items.")
        x, mask = batch
    else:
        x, mask = batch, None
    if not hasattr(x, "shape") or len(x.shape) != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be an array x [B, D] with B >= 1, got "
                         f"{getattr(x, 'shape', type(x).__name__)}.")
    if mask is not None:
        if not hasattr(mask, "dtype") or mask.dtype != bool:
            raise TypeError(f"the mask of {name} must be a boolean array [B, D] (True = "
                            f"observed), got {getattr(mask, 'dtype', type(mask).__name__)}.")
        if tuple(mask.shape) != tuple(x.shape):
            raise ValueError(f"the mask of {name} must have x's shape {tuple(x.shape)}, got "
                             f"{tuple(mask.shape)}.")
    return x, mask


def log_joint(model: Model, params: Any, x: jax.Array, z: Any, mask: Any = None) -> jax.Array:
    """``model.log_joint(params, x, z)``, with ``mask`` passed only where there is one.

    A model written for complete data need not take a mask.

    Args:
      model: a ``jlvm.Model``.
      params: its parameters (any pytree).
      x: ``[D]``, one example.
      z: one latent (e.g. ``[L]``).
      mask: None, or a boolean ``[D]`` (True = observed).

    Returns:
      Scalar log p(x_obs, z).
    """
    if mask is None:
        return model.log_joint(params, x, z)
    return model.log_joint(params, x, z, mask)


def encoder(model: Model, params: Any, x: jax.Array, mask: Any = None) -> Any:
    """``model.encoder(params, x)``, with ``mask`` passed only where there is one.

    Args:
      model, params, x, mask: as in ``log_joint``.

    Returns:
      q(z | x_obs), a distrax distribution over one z.
    """
    if mask is None:
        return model.encoder(params, x)
    return model.encoder(params, x, mask)


def log_likelihood(model: Model, params: Any, x: jax.Array, z: Any,
                   mask: Any = None) -> jax.Array:
    """``model.log_likelihood(params, x, z)``, with ``mask`` only where there is one.

    Args:
      model, params, x, z, mask: as in ``log_joint``.

    Returns:
      Scalar log p(x_obs | z).
    """
    if mask is None:
        return model.log_likelihood(params, x, z)
    return model.log_likelihood(params, x, z, mask)


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _traced(what: str, fn, *args):
    """``jax.eval_shape(fn, *args)``; what a model's function raises there (a bug of its
    own, or shapes that do not fit) is a ``ValueError`` that names the function."""
    try:
        return jax.eval_shape(fn, *args)
    except (TypeError, ValueError) as error:
        if str(error).startswith("model."):  # already says which function
            raise
        raise type(error)(f"{what} failed: {_one_line(error)}") from error


def latent_example(model: Model, params: Any, x: jax.Array | None,
                   mask: Any = None) -> Any:
    """The shape and dtype of one z, from a draw of q(z | x) or of the prior; traced only.

    Args:
      model, params: as in ``log_joint``.
      x: ``[D]``, one example, or None (then the prior's draw).
      mask: as in ``log_joint``.

    Returns:
      A ``jax.ShapeDtypeStruct``, of a draw of the encoder's q(z | x), or, without an
      encoder or an x, of the prior.

    Raises:
      TypeError: if the model has neither an encoder nor a prior.
      ValueError: (or TypeError) naming the function, if the encoder or prior fails when
        traced.
    """
    key = jax.random.PRNGKey(0)
    if model.encoder is not None and x is not None:
        def draw(p, x):
            q = encoder(model, p, x, mask)
            _checks.scalar_distribution(q, "model.encoder(params, x)")
            return _checks.sample(q, key, 1)[0]

        return _traced("model.encoder(params, x) on one example", draw, params, x)
    if model.prior is not None:
        def prior_draw(p):
            q = model.prior(p)
            _checks.scalar_distribution(q, "model.prior(params)")
            return _checks.sample(q, key, 1)[0]

        return _traced("model.prior(params)", prior_draw, params)
    raise TypeError("the model needs an encoder or a prior for jlvm to know the shape of z.")


def check_params(params: Any, name: str = "model.init(key)") -> None:
    """Check that gradients can move ``params``: every leaf floating point.

    An integer leaf, which ``jax.grad`` refuses, is named here with its path.

    Args:
      params: a pytree of arrays.
      name: what the error messages call ``params``.

    Raises:
      TypeError: for a leaf that is not numeric or not floating point.
    """
    _checks.numeric_leaves(params, name)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jax.numpy.result_type(leaf)
        if not jax.numpy.issubdtype(dtype, jax.numpy.floating):
            raise TypeError(f"{name}{jax.tree_util.keystr(path)} has dtype {dtype}: "
                            "parameters are learned by gradients and must be floating point "
                            "(e.g. jnp.float32; keep integers such as sizes in the model's "
                            "closure, not in params).")


def check_against(model: Model, params: Any, x: jax.Array, mask: Any = None) -> None:
    """Trace the model's encoder and log_joint on one example.

    Traced with ``jax.eval_shape``: nothing is computed or compiled. A q over several z,
    or a log_joint that does not return a scalar, is named here rather than deep inside a
    compiled step.

    Args:
      model, params: as in ``log_joint``.
      x: ``[D]``, one example.
      mask: as in ``log_joint``.

    Raises:
      ValueError: (or TypeError) naming the function that fails when traced (see
        ``latent_example``), or if log_joint does not return a scalar.
    """
    z = latent_example(model, params, x, mask)
    value = _traced(f"model.log_joint(params, x, z) on one example x {tuple(x.shape)} and a "
                    f"draw z {tuple(z.shape)} of the encoder's q",
                    lambda p, x, z: log_joint(model, p, x, z, mask), params, x, z)
    if getattr(value, "shape", None) != ():
        raise ValueError(f"model.log_joint(params, x, z) must return a scalar for one x "
                         f"{tuple(x.shape)} and one z {tuple(z.shape)}, got shape "
                         f"{getattr(value, 'shape', type(value).__name__)}.")
