"""A run's configuration: what was trained, stored in the run directory's ``config.json``.

Validation happens here, eagerly and in plain Python, so a bad setting is one ``RunError``
naming the option before any data is read or anything is compiled. What a setting means
for a model, and which settings a model takes, is its kind's business
(``jlvm.runs.kinds``); this module only knows the fields and the rules common to all.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import pathlib
from typing import Any

from jlvm.runs._errors import RunError

SEED_LIMIT = 2**32  # JAX's PRNGKey keeps 32 bits: seed 2**32 would repeat seed 0
CONV_HIDDEN = (32, 64)  # --architecture conv: channels of its two stride-2 convolutions


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run (``config.json``'s ``config``).

    ``make_config`` fills the defaults of the model's kind (IWAE: ``num_samples=5``; GMM:
    ``epochs=100``) and validates; the options of ``jlvm train`` are these fields.
    ``model`` is a kind's name (``jlvm.runs.kinds.NAMES``) or a factory of your own,
    ``FILE.py:FACTORY`` or ``package.module:FACTORY``; ``data`` a bundled data set's name
    or a ``.npz``, ``.npy`` or ``.csv`` file. Paths are stored absolute (or relative to
    the run directory, for data the run directory holds itself).
    """

    model: str = "vae"
    data: str = "digits"
    epochs: int = 300
    latent_dim: int = 4
    hidden_dims: tuple = (200, 200)
    batch_size: int = 100
    learning_rate: float = 1e-3
    num_samples: int = 1
    grad_estimator: str = "reparam"
    elbo_form: str = "joint"
    components: int = 10
    inner_steps: int = 20
    inner_learning_rate: float = 0.05
    reg_covar: float = 1e-2
    covariance_type: str = "full"  # gmm: scikit-learn's full, diag, spherical or tied
    seed: int = 0
    data_path: str | None = None
    num_seeds: int = 1
    posterior: str = "diagonal"
    prior: str = "normal"
    likelihood: str | None = None  # None: the data's (filled in once the data is known)
    architecture: str = "mlp"
    missing: str = "none"  # train-time missingness: none, top-half, bottom-half, mcar:P
    missing_file: str | None = None  # or a mask [N, D] from a .npz (key "mask")
    objective: str = "elbo"  # a model of your own: "elbo" or "iwae"
    model_args: dict = dataclasses.field(default_factory=dict)  # FACTORY's keyword arguments
    image_shape: tuple | None = None  # (height, width) of flat rows, for a conv net


FIELDS = tuple(field.name for field in dataclasses.fields(Config))
# the settings every kind takes; the others are listed by each kind (``Kind.settings``)
COMMON = ("model", "data", "epochs", "seed", "num_seeds", "data_path", "missing",
          "missing_file", "image_shape")
_POSITIVE_INTS = ("epochs", "latent_dim", "batch_size", "num_samples", "components",
                  "inner_steps", "num_seeds")
_INTS = (*_POSITIVE_INTS, "seed")
_FLOATS = ("learning_rate", "inner_learning_rate", "reg_covar")
_PATHS = ("missing_file", "data_path")
# beyond these, the arrays do not fit in any machine's memory (or JAX's int32 sizes)
LIMITS = {"latent_dim": 2**16, "hidden_dims": 2**16, "batch_size": 2**24,
          "num_samples": 2**20, "components": 2**16, "inner_steps": 2**20,
          "num_seeds": 2**16, "epochs": 2**31 - 1}
# config.json of jlvm 0.1 called hidden_dims "hidden" (read; make_config takes one name)
RENAMED = {"hidden": "hidden_dims"}


def option(name: str) -> str:
    """A field's command-line spelling: ``latent_dim`` -> ``--latent-dim``."""
    return "--" + name.replace("_", "-")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _kind(model: Any):
    from jlvm.runs import kinds

    return kinds.kind_for(model)


def make_config(**given: Any) -> Config:
    """A validated ``Config`` from the given fields, the rest at their kind's defaults.

    Relative paths (``data``, ``missing_file``, a ``FILE.py`` model) are resolved against
    the current directory, so that the run can be resumed and evaluated from anywhere.

    Args:
      given: ``Config``'s fields by name (the options of ``jlvm train``), e.g.
        ``model="iwae", epochs=20``; only those that apply to the model's kind
        (``Kind.settings``) and the common ones (``COMMON``).

    Returns:
      The ``Config``, frozen.

    Raises:
      RunError: an unknown field, one that does not apply to the model, ``data_path``
        with data that does not read it, or an invalid value.
    """
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        renamed = "".join(f" ({old} is called {RENAMED[old]} now)" for old in unknown
                          if old in RENAMED)
        raise RunError(f"unknown setting(s) {', '.join(unknown)}{renamed}; known: "
                       f"{', '.join(FIELDS)}.")
    given = {name: plain(name, value) for name, value in given.items()}
    model = given.get("model", Config.model)
    kind = _kind(model)
    unused = [name for name in given if name not in COMMON and name not in kind.settings]
    if unused:
        raise RunError(f"{', '.join(option(n) for n in unused)} "
                       f"{'does' if len(unused) == 1 else 'do'} not apply to --model {model}; "
                       "leave it out (it would be stored in config.json but never used).")
    from jlvm.runs import _data

    data = given.get("data", Config.data)
    if "data_path" in given and not _data.reads_data_path(data):
        raise RunError(f"--data-path applies to --data binarized-mnist only, not {data} "
                       "(give a file as --data FILE).")
    given.update(resolved(given))
    facts = _data.kind_of(given.get("data", Config.data), given.get("image_shape"))
    for name, value in kind.defaults(given, facts).items():
        given.setdefault(name, value)
    given.update(canonical(given))
    config = Config(**given)
    validate(config)
    return config


def resolved(given: dict[str, Any], base: str | os.PathLike | None = None) -> dict[str, Any]:
    """The paths among ``given`` made absolute against ``base`` (default: the current
    directory), and the model spec in its one spelling; the rest left out."""
    from jlvm.runs import _data, _user

    base = pathlib.Path.cwd() if base is None else pathlib.Path(base)
    out = {}
    for name in _PATHS:
        value = given.get(name)
        if isinstance(value, (str, os.PathLike)) and str(value):
            out[name] = str(base / os.fspath(value))
    data = given.get("data")
    if isinstance(data, os.PathLike) or (isinstance(data, str) and _data.is_file_spec(data)):
        out["data"] = str(base / os.fspath(data))
    model = given.get("model")
    if isinstance(model, str) and _user.is_spec(model):
        out["model"] = _user.absolute(model, base)
    return out


def plain(name: str, value: Any) -> Any:
    """NumPy scalars and fractions as the Python numbers config.json can hold; booleans are
    not numbers here (True would train at learning rate 1.0); sequences as tuples."""
    if isinstance(value, bool) and (name in _INTS or name in _FLOATS):
        raise RunError(f"{option(name)} must be a number, got {value!r}.")
    if name in _INTS and isinstance(value, numbers.Integral):
        return int(value)
    if name in _FLOATS and isinstance(value, numbers.Real):
        return float(value)
    if name in ("hidden_dims", "image_shape") and isinstance(value, (list, tuple)):
        return tuple(int(h) if _is_int(h) else h for h in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def canonical(given: dict[str, Any]) -> dict[str, str]:
    """Spec strings in one spelling ("mixture:010" is "mixture:10"), so that a resumed
    run compares like with like; a spec that does not parse is left for ``validate``."""
    from jlvm.models import likelihoods, priors

    out = {}
    for name, parse in (("likelihood", likelihoods.parse), ("prior", priors.parse)):
        if isinstance(given.get(name), str):
            try:
                out[name] = str(parse(given[name]))
            except (TypeError, ValueError):
                pass
    return out


def validate(config: Config) -> None:
    """``RunError`` naming the first bad setting of ``config``: the rules of every run,
    then those of its model's kind."""
    for name in _POSITIVE_INTS:
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            raise RunError(f"{option(name)} must be an integer >= 1, got {value!r}.")
        if value > LIMITS.get(name, value):
            raise RunError(f"{option(name)} must be at most {LIMITS[name]}, got {value}.")
    kind = _kind(config.model)
    from jlvm.runs import _data

    _data.check_spec(config.data)
    if (not isinstance(config.hidden_dims, tuple) or not config.hidden_dims
            or not all(_is_int(h) and 1 <= h <= LIMITS["hidden_dims"]
                       for h in config.hidden_dims)):
        raise RunError(f"--hidden-dims must be one or more integer widths in [1, "
                       f"{LIMITS['hidden_dims']}], got {config.hidden_dims!r}.")
    if config.image_shape is not None and (
            not isinstance(config.image_shape, tuple) or len(config.image_shape) != 2
            or not all(_is_int(h) and h >= 1 for h in config.image_shape)):
        raise RunError(f"--image-shape must be two integers H W >= 1, got "
                       f"{config.image_shape!r}.")
    for name in ("learning_rate", "inner_learning_rate"):
        value = getattr(config, name)
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not (0 < value < math.inf)):
            raise RunError(f"{option(name)} must be a finite number > 0, got {value!r}.")
    if (isinstance(config.reg_covar, bool) or not isinstance(config.reg_covar, numbers.Real)
            or not (0 <= config.reg_covar < math.inf)):
        raise RunError(f"--reg-covar must be a finite number >= 0, got {config.reg_covar!r}.")
    if not _is_int(config.seed) or not 0 <= config.seed <= SEED_LIMIT - config.num_seeds:
        raise RunError(f"--seed must be an integer in [0, {SEED_LIMIT - config.num_seeds}] "
                       f"(JAX's PRNG keys hold 32 bits; --num-seeds {config.num_seeds} uses "
                       f"seeds SEED..SEED+{config.num_seeds - 1}), got {config.seed!r}.")
    for name in _PATHS:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise RunError(f"{option(name)} must be a non-empty path, got {value!r}.")
    if not isinstance(config.model_args, dict):
        raise RunError(f"--model-arg values must be a dict of names to values, got "
                       f"{type(config.model_args).__name__}.")
    _validate_missing(config)
    kind.check(config)


def parse_missing(value: Any, name: str = "--missing") -> tuple[str, float | None]:
    """("none" | "top-half" | "bottom-half" | "mcar", P or None) of a missingness spec;
    ``RunError`` naming ``name`` otherwise. "mcar:P": each entry missing with probability
    P in (0, 1), independently (missing completely at random)."""
    if value in ("none", "top-half", "bottom-half"):
        return value, None
    if isinstance(value, str) and value.startswith("mcar:") and value[5:].isascii():
        try:
            rate = float(value[5:])
        except ValueError:
            rate = math.nan
        if 0 < rate < 1:
            return "mcar", rate
    raise RunError(f"{name} must be none, top-half, bottom-half or mcar:P with P in (0, 1) "
                   f"(e.g. mcar:0.25), got {value!r}.")


def _validate_missing(config: Config) -> None:
    from jlvm.runs import _data

    kind, _ = parse_missing(config.missing)
    if config.missing_file is not None and kind != "none":
        raise RunError("give --missing or --missing-file, not both.")
    facts = _data.kind_of(config.data, config.image_shape)
    if kind in ("top-half", "bottom-half") and facts is not None and \
            facts.image_shape is None:
        raise RunError(f"--missing {kind} needs image data; {config.data} holds vectors (try "
                       "--missing mcar:P, or --image-shape H W for a file of images).")


def as_dict(config: Config) -> dict[str, Any]:
    """The fields as config.json holds them."""
    return dataclasses.asdict(config)


def from_dict(values: dict[str, Any]) -> Config:
    """A ``Config`` from config.json's object (older names read as today's; fields that
    did not exist yet take the value runs written then had); ``RunError`` if it holds
    unknown keys or invalid values."""
    values = {RENAMED.get(name, name): value for name, value in values.items()}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise RunError(f"unknown key(s) {', '.join(unknown)} (written by another version of "
                       "jlvm, or edited); nothing was changed.")
    values = {name: tuple(value) if name in ("hidden_dims", "image_shape")
              and isinstance(value, list) else value for name, value in values.items()}
    kind = _kind(values.get("model", Config.model))
    if "likelihood" not in values and "likelihood" in kind.settings:
        # written before the setting existed: Bernoulli pixels for binary data, else a
        # Gaussian (whatever the data's default is today)
        from jlvm import data as data_module

        facts = data_module.KINDS.get(values.get("data", Config.data))
        values["likelihood"] = "bernoulli" if facts and facts.levels == 2 else "gaussian"
    try:
        config = Config(**values)
    except TypeError as error:
        raise RunError(str(error)) from None
    validate(config)
    return config
