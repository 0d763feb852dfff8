"""A run's configuration: what was trained, stored as ``config.json`` in the run directory.

Validation happens here, eagerly and in plain Python, so a bad setting is one ``RunError``
naming the option before any data is read or anything is compiled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import pathlib
from typing import Any

from jlvm import _files

MODELS = ("vae", "iwae", "semi", "svi", "gmm")
ENCODER_MODELS = ("vae", "iwae", "semi")  # those with an amortized q(z|x)
# jlvm.inference.amortized.ELBO_FORMS, written out so that parsing imports no JAX
ELBO_FORMS = ("joint", "entropy", "kl")
GRAD_ESTIMATORS = {"vae": ("reparam", "stl"), "iwae": ("reparam", "dreg")}
# jlvm.models.posteriors.ENCODER_FAMILIES: the encoder's q
POSTERIORS = ("diagonal", "full", "flow")
ARCHITECTURES = ("mlp", "conv")  # jlvm.models.networks.ARCHITECTURES
CONV_HIDDEN = (32, 64)  # --architecture conv: channels of its two stride-2 convolutions
SEED_LIMIT = 2**32  # JAX's PRNGKey keeps 32 bits: seed 2**32 would repeat seed 0
FORMAT = 1  # of config.json; files without it were written by jlvm 0.1.0 (same fields)


class RunError(Exception):
    """A bad setting or a run directory that cannot be used; the message is one line and
    names the option or path. The ``jlvm`` command reports it and exits with status 2."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run (``config.json``'s ``config``).

    ``make_config`` fills the model-dependent defaults (IWAE: ``num_samples=5``; GMM:
    ``epochs=100``) and validates; the options of ``jlvm train`` are these fields.
    """

    model: str = "vae"
    data: str = "digits"
    epochs: int = 300
    latent_dim: int = 4
    hidden: tuple = (200, 200)
    batch_size: int = 100
    learning_rate: float = 1e-3
    num_samples: int = 1
    grad_estimator: str = "reparam"
    elbo_form: str = "joint"
    components: int = 10
    inner_steps: int = 20
    inner_learning_rate: float = 0.05
    reg_covar: float = 1e-2
    seed: int = 0
    data_path: str | None = None
    num_seeds: int = 1
    posterior: str = "diagonal"
    prior: str = "normal"
    likelihood: str | None = None  # None: the data's (make_config fills it in)
    architecture: str = "mlp"
    missing: str = "none"  # train-time missingness: none, top-half, bottom-half, mcar:P
    missing_file: str | None = None  # or a mask [N_train, D] from a .npz (key "mask")


FIELDS = tuple(field.name for field in dataclasses.fields(Config))
_POSITIVE_INTS = ("epochs", "latent_dim", "batch_size", "num_samples", "components",
                  "inner_steps", "num_seeds")


def option(name: str) -> str:
    """A field's command-line spelling: ``latent_dim`` -> ``--latent-dim``."""
    return "--" + name.replace("_", "-")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def make_config(**given: Any) -> Config:
    """A validated ``Config`` from the given fields, the rest at their defaults.

    An IWAE with one draw is the VAE, so ``model="iwae"`` defaults to ``num_samples=5``;
    an EM "epoch" is one iteration, so ``model="gmm"`` defaults to ``epochs=100``.
    """
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise RunError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}.")
    given = {name: _plain(name, value) for name, value in given.items()}
    model = given.get("model", Config.model)
    unused = [name for name in given if name not in _APPLIES.get(model, FIELDS)]
    if unused:
        raise RunError(f"{', '.join(option(n) for n in unused)} "
                       f"{'does' if len(unused) == 1 else 'do'} not apply to --model {model}; "
                       "leave it out (it would be stored in config.json but never used).")
    if "data_path" in given and given.get("data", Config.data) != "binarized-mnist":
        raise RunError(f"--data-path applies to --data binarized-mnist only, not "
                       f"{given.get('data', Config.data)} (which is bundled or drawn).")
    if given.get("model") == "iwae" and "num_samples" not in given:
        given["num_samples"] = 5
    if given.get("model") == "gmm" and "epochs" not in given:
        given["epochs"] = 100
    data = given.get("data", Config.data)
    if model != "gmm" and given.get("likelihood") is None:
        given["likelihood"] = default_likelihood(data)
    if given.get("architecture") == "conv" and "hidden" not in given:
        given["hidden"] = CONV_HIDDEN
    given.update(canonical_specs(given))
    if isinstance(given.get("hidden"), list):
        given["hidden"] = tuple(given["hidden"])
    config = Config(**given)
    validate(config)
    return config


_COMMON = ("model", "data", "epochs", "seed", "num_seeds", "data_path", "missing",
           "missing_file")
_NETWORK = ("latent_dim", "hidden", "batch_size", "learning_rate", "num_samples",
            "grad_estimator", "prior", "likelihood", "architecture")
# the settings each model uses; any other one given is a mistake worth saying
_APPLIES = {
    "vae": (*_COMMON, *_NETWORK, "elbo_form", "posterior"),
    "iwae": (*_COMMON, *_NETWORK, "posterior"),
    "semi": (*_COMMON, *_NETWORK, "inner_steps", "inner_learning_rate", "posterior"),
    "svi": (*_COMMON, *_NETWORK, "inner_steps", "inner_learning_rate"),
    "gmm": (*_COMMON, "components", "reg_covar"),
}
_INTS = ("epochs", "latent_dim", "batch_size", "num_samples", "components", "inner_steps",
         "seed", "num_seeds")
_FLOATS = ("learning_rate", "inner_learning_rate", "reg_covar")
# beyond these, the arrays do not fit in any machine's memory (or JAX's int32 sizes)
LIMITS = {"latent_dim": 2**16, "hidden": 2**16, "batch_size": 2**24, "num_samples": 2**20,
          "components": 2**16, "inner_steps": 2**20, "num_seeds": 2**16, "epochs": 2**31 - 1}


def _plain(name: str, value: Any) -> Any:
    """NumPy scalars and fractions as the Python numbers config.json can hold; booleans are
    not numbers here (True would train at learning rate 1.0)."""
    if isinstance(value, bool) and (name in _INTS or name in _FLOATS):
        raise RunError(f"{option(name)} must be a number, got {value!r}.")
    if name in _INTS and isinstance(value, numbers.Integral):
        return int(value)
    if name in _FLOATS and isinstance(value, numbers.Real):
        return float(value)
    if name == "hidden" and isinstance(value, (list, tuple)):
        return tuple(int(h) if isinstance(h, numbers.Integral) and not isinstance(h, bool)
                     else h for h in value)
    return value


def validate(config: Config) -> None:
    """``RunError`` naming the first bad setting of ``config``."""
    for name in _POSITIVE_INTS:
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            raise RunError(f"{option(name)} must be an integer >= 1, got {value!r}.")
        if value > LIMITS.get(name, value):
            raise RunError(f"{option(name)} must be at most {LIMITS[name]}, got {value}.")
    if config.model not in MODELS:
        raise RunError(f"--model must be one of {', '.join(MODELS)}, got {config.model!r}.")
    from jlvm import data

    if config.data not in data.NAMES:
        raise RunError(f"--data must be one of {', '.join(data.NAMES)}, got {config.data!r}.")
    if (not isinstance(config.hidden, tuple) or not config.hidden
            or not all(_is_int(h) and 1 <= h <= LIMITS["hidden"] for h in config.hidden)):
        raise RunError(f"--hidden must be one or more integer widths in [1, "
                       f"{LIMITS['hidden']}], got {config.hidden!r}.")
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
    if config.data_path is not None and (not isinstance(config.data_path, str)
                                         or not config.data_path):
        raise RunError(f"--data-path must be a non-empty path, got {config.data_path!r}.")
    allowed = GRAD_ESTIMATORS.get(config.model, ("reparam",))
    if config.grad_estimator not in allowed:
        raise RunError(f"--grad-estimator for --model {config.model} must be one of "
                       f"{', '.join(allowed)}, got {config.grad_estimator!r}.")
    if config.posterior not in POSTERIORS:
        raise RunError(f"--posterior must be one of {', '.join(POSTERIORS)}, got "
                       f"{config.posterior!r}.")
    _validate_model(config)
    _validate_missing(config)
    if config.elbo_form not in ELBO_FORMS:
        raise RunError(f"--elbo-form must be one of {', '.join(ELBO_FORMS)}, got "
                       f"{config.elbo_form!r}.")
    if config.elbo_form != "joint" and (config.model, config.grad_estimator) != ("vae",
                                                                                  "reparam"):
        raise RunError(f"--elbo-form {config.elbo_form} takes --model vae with "
                       f"--grad-estimator reparam, got --model {config.model} with "
                       f"--grad-estimator {config.grad_estimator}.")


def canonical_specs(given: dict[str, Any]) -> dict[str, str]:
    """Spec strings in one spelling ("mixture:010" is "mixture:10"), so that a resumed
    run compares like with like; a spec that does not parse is left for ``validate``."""
    from jlvm.models import likelihoods, priors

    canonical = {}
    for name, parse in (("likelihood", likelihoods.parse), ("prior", priors.parse)):
        if isinstance(given.get(name), str):
            try:
                canonical[name] = str(parse(given[name]))
            except ValueError:
                pass
    return canonical


def default_likelihood(data: str, *, legacy: bool = False) -> str | None:
    """The likelihood a VAE takes on ``data`` when none is given: Bernoulli pixels for
    binary data, a categorical over the gray levels for data on a grid of levels, a
    Gaussian (mean and scale from z) for real numbers. ``legacy``: what runs written before
    the setting existed used (Bernoulli or Gaussian)."""
    from jlvm import data as data_module

    kind = data_module.KINDS.get(data)
    if kind is None:
        return None
    if kind.levels == 2:
        return "bernoulli"
    return "gaussian" if kind.levels is None or legacy else f"categorical:{kind.levels}"


def _validate_model(config: Config) -> None:
    """The VAE's settings, and that they fit the data (a Bernoulli likelihood on gray data,
    a convolutional net on vectors and the like are refused)."""
    from jlvm import data as data_module
    from jlvm.models import likelihoods, priors

    if config.architecture not in ARCHITECTURES:
        raise RunError(f"--architecture must be one of {', '.join(ARCHITECTURES)}, got "
                       f"{config.architecture!r}.")
    try:
        priors.parse(config.prior, "--prior")
    except (TypeError, ValueError) as error:
        raise RunError(str(error)) from None
    if config.model == "gmm":
        if config.likelihood is not None:
            raise RunError("--likelihood does not apply to --model gmm (its components are "
                           "Gaussians).")
        return
    try:
        spec = likelihoods.parse(config.likelihood, "--likelihood")
    except (TypeError, ValueError) as error:
        raise RunError(str(error)) from None
    kind = data_module.KINDS[config.data]
    check_fits(spec, config.architecture, kind.levels, kind.image_shape, config.data)
    if config.elbo_form == "kl" and priors.parse(config.prior).name != "normal":
        raise RunError(f"--elbo-form kl needs an analytic KL(q || p(z)), which --prior "
                       f"{config.prior} has not; use --elbo-form joint or entropy.")
    if config.elbo_form != "joint" and config.posterior == "flow":
        raise RunError(f"--elbo-form {config.elbo_form} needs q's entropy in closed form, "
                       "which --posterior flow has not; use --elbo-form joint.")


def parse_missing(value: Any, name: str = "--missing") -> tuple[str, float | None]:
    """("none" | "top-half" | "bottom-half" | "mcar", P or None) of a missingness spec;
    ``RunError`` naming ``name`` otherwise. "mcar:P": each entry missing with probability
    P in (0, 1), independently (missing completely at random)."""
    if value in ("none", "top-half", "bottom-half"):
        return value, None
    if isinstance(value, str) and value.startswith("mcar:"):
        try:
            rate = float(value[5:])
        except ValueError:
            rate = math.nan
        if 0 < rate < 1:
            return "mcar", rate
    raise RunError(f"{name} must be none, top-half, bottom-half or mcar:P with P in (0, 1) "
                   f"(e.g. mcar:0.25), got {value!r}.")


def _validate_missing(config: Config) -> None:
    from jlvm import data as data_module

    kind, _ = parse_missing(config.missing)
    if config.missing_file is not None:
        if not isinstance(config.missing_file, str) or not config.missing_file:
            raise RunError(f"--missing-file must be a non-empty path, got "
                           f"{config.missing_file!r}.")
        if kind != "none":
            raise RunError("give --missing or --missing-file, not both.")
    if kind in ("top-half", "bottom-half") and data_module.KINDS[config.data].image_shape is None:
        raise RunError(f"--missing {kind} needs image data; {config.data} holds vectors (try "
                       "--missing mcar:P).")


def check_fits(spec: Any, architecture: str, levels: int | None,
               image_shape: tuple | None, data: str) -> None:
    """``RunError`` unless the likelihood ``spec`` gives the data's values a probability
    and ``architecture`` fits its shape: levels M (2 = binary) or None (real numbers)."""
    if spec.name == "bernoulli" and levels != 2:
        what, instead = (("real-valued", "gaussian") if levels is None
                         else (f"on {levels} gray levels", f"categorical:{levels}"))
        raise RunError(f"--likelihood bernoulli needs binary (0/1) data; {data} is {what} "
                       f"(try --likelihood {instead}).")
    if spec.name == "categorical":
        if levels is None:
            raise RunError(f"--likelihood {spec} needs data on gray levels; {data} is "
                           "real-valued (try --likelihood gaussian).")
        if (spec.argument - 1) % (levels - 1):
            raise RunError(f"--likelihood {spec} puts pixels on {spec.argument} levels, "
                           f"which do not include {data}'s {levels} levels (try "
                           f"--likelihood categorical:{levels}).")
    if architecture == "conv" and image_shape is None:
        raise RunError(f"--architecture conv needs image data; {data} holds vectors (try "
                       "--architecture mlp).")


def write(path: pathlib.Path, config: Config, **facts: Any) -> None:
    """Writes ``config.json`` atomically: ``{"format", "config", **facts}``."""
    stored = {"format": FORMAT, "config": dataclasses.asdict(config), **facts}
    _files.write_text(path, _files.dumps(stored, indent=2) + "\n")


def read(path: pathlib.Path) -> Config:
    """The ``Config`` stored in ``path``; ``RunError`` naming the file if it is unreadable,
    truncated, holds unknown keys or invalid values."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path.parent} holds no run (no config.json); train one with "
                       "jlvm train.") from None
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror}.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RunError(f"{path} is not valid JSON (truncated or edited?): {error}.") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise RunError(f"{path} has no \"config\" object; it was not written by jlvm train.")
    if stored.get("format", FORMAT) != FORMAT:
        raise RunError(f"{path} has format {stored.get('format')!r}; this jlvm reads format "
                       f"{FORMAT}.")
    values = stored["config"]
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise RunError(f"{path} has unknown key(s) {', '.join(unknown)} (written by another "
                       "version of jlvm, or edited); nothing was changed.")
    try:
        # fields missing from older files take their defaults (elbo_form: joint,
        # posterior: diagonal, prior: normal, architecture: mlp)
        if "likelihood" not in values and values.get("model") != "gmm":
            # written before the setting existed: Bernoulli or Gaussian, by the data
            values = {**values, "likelihood": default_likelihood(
                values.get("data", Config.data), legacy=True)}
        config = Config(**{**values, **({"hidden": tuple(values["hidden"])}
                                        if isinstance(values.get("hidden"), list) else {})})
        validate(config)
    except (TypeError, RunError) as error:
        raise RunError(f"{path} holds an invalid configuration: {error}") from None
    return config
