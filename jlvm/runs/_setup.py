"""From a ``Config`` to what training needs: data, learner, initial state, devices."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from jlvm.runs._config import Config, RunError, check_fits

EVAL_SUBSET = 2000  # training examples whose bounds are reported each epoch


@dataclasses.dataclass
class Setup:
    """config; dataset (``jlvm.data.Dataset``); learner; train_data (what an epoch takes:
    X [N, D], or (index, X) for SVI, each with the mask [N, D] last where the run trains on
    incomplete data); batch_size; steps_per_epoch; train_x [N, D] and train_mask [N, D]
    (None: complete) of the training examples used (those that observe something), and
    train_mask_stored: the mask of the whole split, as ``train_mask.npz`` keeps it."""

    config: Config
    dataset: Any
    learner: Any
    train_data: Any
    batch_size: int
    steps_per_epoch: int
    train_x: Any = None
    train_mask: Any = None
    train_mask_stored: Any = None
    dropped: int = 0
    model: Any = None  # the jlvm.Model of the latent variable models (None for the GMM)
    encoder_input: bool = False  # vae.init's encoder_sees_mask for this run

    @property
    def likelihood_type(self) -> str:
        """"probability" where log p(x) is a log-probability (Bernoulli pixels), "density"
        where it is a log-density of continuous x (Gaussian likelihoods, the GMM): densities
        can exceed 1 and are not comparable with probabilities."""
        from jlvm.models import likelihoods

        if self.config.model == "gmm":
            return "density"
        spec = likelihoods.parse(self.config.likelihood)
        return "probability" if likelihoods.is_discrete(spec) else "density"


def load_data(config: Config):
    from jlvm import data

    try:
        return data.load(config.data, path=config.data_path)
    except OSError as error:  # FileNotFoundError, PermissionError, ...
        raise RunError(str(error) if not error.filename else
                       f"cannot read {error.filename}: {error.strerror}.") from None
    except ValueError as error:
        raise RunError(str(error)) from None


def build(config: Config, dataset: Any = None, stored_mask: Any = None,
          stored_input: bool | None = None) -> Setup:
    """The learner ``config`` names, on its data set (read unless ``dataset`` is given),
    with the run's train-time mask (``stored_mask``: the one a run directory keeps) and,
    learning from incomplete data, whether its encoder takes the mask beside x
    (``stored_input``, as the run directory keeps it; a new run's does not)."""
    import jax.numpy as jnp
    import optax

    from jlvm import inference, train
    from jlvm.models import vae
    from jlvm.runs import _missing

    if dataset is not None and not all(hasattr(dataset, field) for field in (
            "train", "test", "valid", "binary", "image_shape")):
        raise RunError(f"dataset must be a jlvm.data.Dataset, got {type(dataset).__name__}.")
    dataset = load_data(config) if dataset is None else dataset
    full_mask = _missing.train_mask(config, dataset, stored_mask)
    values = np.asarray(dataset.train)
    if full_mask is None:
        X, mask, dropped = jnp.asarray(values), None, 0
    else:
        kept = full_mask.any(axis=1)  # an example that observes nothing says nothing
        dropped = int((~kept).sum())
        if not kept.any():
            raise RunError(f"the training data observe nothing under --missing "
                           f"{config.missing}: every entry is missing.")
        mask = full_mask[kept]
        X = jnp.asarray(np.where(mask, values[kept], 0.0))  # NaN never reaches arithmetic
        mask = jnp.asarray(mask)
    count = X.shape[0]
    extra = dict(train_x=X, train_mask=mask, train_mask_stored=full_mask, dropped=dropped)

    def with_mask(data):
        return data if mask is None else (*(data if isinstance(data, tuple) else (data,)),
                                          mask)

    if config.model == "gmm":
        if config.components > count:
            raise RunError(f"--components ({config.components}) must be at most the "
                           f"{count} training examples of {config.data}.")
        learner = inference.em(config.components, reg_covar=config.reg_covar)
        return Setup(config, dataset, learner, with_mask(X), count, 1, **extra)
    if config.batch_size > count:
        raise RunError(f"--batch-size ({config.batch_size}) must be at most the {count} "
                       f"training examples of {config.data}.")
    _check_data_fits(config, dataset, full_mask)
    # learned from holes, the encoder sees x with its missing entries 0, as MIWAE's does
    # (Mattei & Frellsen, 2019): on binarized MNIST, 30 epochs, the mask as a second input
    # gave a worse test log p(x_obs) (25 % missing at random: -97.8 vs -85.0 nats; top half
    # missing: -58.6 vs -54.6) at 1.35x the step. Runs written before kept the mask.
    encoder_input = bool(stored_input) if full_mask is not None else False
    extra["encoder_input"] = encoder_input
    model = vae.model(X.shape[1], config.latent_dim, hidden_dims=config.hidden,
                      likelihood=config.likelihood, posterior=config.posterior,
                      prior=config.prior, architecture=config.architecture,
                      image_shape=dataset.image_shape,
                      encoder_sees_mask=encoder_input)
    optimizer = optax.adam(config.learning_rate)
    steps = train.num_batches(count, config.batch_size)
    extra["model"] = model
    if config.model in ("vae", "iwae"):
        learner = inference.amortized(model, optimizer,
                                      objective="elbo" if config.model == "vae" else "iwae",
                                      num_samples=config.num_samples,
                                      grad_estimator=config.grad_estimator,
                                      elbo_form=config.elbo_form)
        return Setup(config, dataset, learner, with_mask(X), config.batch_size, steps, **extra)
    if config.model == "semi":
        learner = inference.semi_amortized(model, optimizer,
                                           inner_steps=config.inner_steps,
                                           inner_learning_rate=config.inner_learning_rate,
                                           num_samples=config.num_samples)
        return Setup(config, dataset, learner, with_mask(X), config.batch_size, steps, **extra)
    learner = inference.svi(model, optimizer, count, inner_steps=config.inner_steps,
                            inner_learning_rate=config.inner_learning_rate,
                            num_samples=config.num_samples)
    return Setup(config, dataset, learner, with_mask((jnp.arange(count, dtype=jnp.int32), X)),
                 config.batch_size, steps, **extra)


def _check_data_fits(config: Config, dataset, mask: np.ndarray | None) -> None:
    """The likelihood gives every observed training value a probability and the
    architecture fits the data's shape: checked on the data itself (``runs.train(dataset=
    ...)`` may bring data other than the named set), a ``RunError`` naming the mismatch."""
    from jlvm.models import likelihoods

    spec = likelihoods.parse(config.likelihood)
    train = np.asarray(dataset.train)
    if mask is not None:
        train = train[mask]
    binary = bool(np.all((train == 0) | (train == 1)))
    levels = 2 if binary else None
    if spec.name == "categorical" and levels is None:
        scaled = train * (spec.argument - 1)
        if not np.all((np.abs(scaled - np.rint(scaled)) < 1e-3) & (train >= 0)
                      & (train <= 1)):
            raise RunError(f"--likelihood {spec} needs every value of {dataset.name} on its "
                           f"levels k/{spec.argument - 1}, k = 0..{spec.argument - 1}; some "
                           "are not.")
        levels = spec.argument
    check_fits(spec, config.architecture, levels, dataset.image_shape, dataset.name)


def initial_state(setup: Setup):
    """The learner's state at initialization (also the template checkpoints restore into).

    With ``num_seeds`` S every leaf has a leading axis S, and run s is initialized exactly
    as a single run with seed SEED+s would be."""
    import jax
    import jax.numpy as jnp

    config = setup.config
    first = jax.tree_util.tree_map(lambda a: a[: setup.batch_size], setup.train_data)
    if config.num_seeds == 1:
        return setup.learner.init(jax.random.PRNGKey(config.seed), first)
    keys = jnp.stack([jax.random.PRNGKey(config.seed + s) for s in range(config.num_seeds)])
    return jax.vmap(setup.learner.init, in_axes=(0, None))(keys, first)


def per_seed(config: Config, state) -> Iterator[tuple[int, Any]]:
    """(seed, state of that run) for each of the ``num_seeds`` runs held in ``state``."""
    import jax

    if config.num_seeds == 1:
        yield config.seed, state
        return
    for index in range(config.num_seeds):
        yield config.seed + index, jax.tree_util.tree_map(
            lambda leaf: leaf[index], state)  # noqa: B023


def model_params(setup: Setup, state):
    """The generative model's parameters in a state (SVI keeps them beside its q table)."""
    return state.params.model if setup.config.model == "svi" else state.params


def subset(count: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random ``size`` of ``count`` rows (all rows if ``size`` is
    None or not smaller): splits may be ordered by class (binarized MNIST's test split
    is), so "the first N" would not be a sample of the split."""
    if size is None or size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def resolve_mesh(devices: int | str | None, batch_size: int, model: str, *,
                 distributed: bool = False):
    """The data-parallel ``jax.sharding.Mesh`` that ``devices`` asks for (a count or
    "all"), or None for one device."""
    import jax

    from jlvm import train

    available = jax.device_count()
    requested = devices if devices is not None else ("all" if distributed else 1)
    if requested == "all":
        count = available
    else:
        try:  # 2, "2": yes; 2.7, True, "two": no
            if isinstance(requested, bool) or isinstance(requested, float):
                raise ValueError
            count = int(requested)
        except (TypeError, ValueError):
            raise RunError(f"--devices must be a whole number or 'all', got "
                           f"{requested!r}.") from None
        if count < 1 or count > available:
            raise RunError(f"--devices must be between 1 and the {available} devices JAX "
                           f"sees, got {count}.")
        if jax.process_count() > 1 and count != available:
            raise RunError(f"with --distributed, --devices must be 'all' (every process "
                           f"takes part), got {count} of {available}.")
    if count == 1 and jax.process_count() == 1:
        return None
    if model == "gmm":
        raise RunError("--devices above 1 applies to vae, iwae, semi and svi (EM takes "
                       "full-data steps).")
    if batch_size % count:
        raise RunError(f"--batch-size ({batch_size}) must be a multiple of --devices "
                       f"({count}): each device takes an equal share of every batch.")
    return train.data_mesh(count)
