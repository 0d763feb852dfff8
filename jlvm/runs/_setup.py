"""From a ``Config`` to what training and the other commands need: the data in the model's
units, the training holes, the kind's ``Built``, the initial state, the devices; and
``load``, a trained run read back from its directory."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from jlvm.runs import _data, _missing
from jlvm.runs._config import Config
from jlvm.runs._directory import RunDirectory, Stored
from jlvm.runs._errors import RunError

EVAL_SUBSET = 2000  # training examples whose bounds are reported each epoch
# the learners' metrics that are per-example log-densities (the others are differences,
# counts or flags): in the data's own units where the run standardizes its data
BOUND_METRICS = ("elbo", "iwae_bound", "log_likelihood", "elbo_before_inner",
                 "elbo_amortized")


@dataclasses.dataclass
class Setup:
    """config (with the data's defaults filled in); kind; data (``_data.RunData``, with the
    training examples used: ``data.train_x``, ``data.train_mask``); built (the kind's
    ``Built``); learner (``built.learner``, its metrics in the data's units); train_data
    (what an epoch takes, with the mask last where the run learns from incomplete data);
    steps_per_epoch; train_mask_stored (the whole split's mask, as train_mask.npz keeps
    it, or None); dropped (training examples that observe nothing); facts (what
    config.json records)."""

    config: Config
    kind: Any
    data: _data.RunData
    built: Any
    learner: Any
    train_data: Any
    steps_per_epoch: int
    train_mask_stored: Any
    dropped: int
    facts: dict

    @property
    def dataset(self):
        return self.data.dataset

    @property
    def batch_size(self) -> int:
        return self.built.batch_size

    @property
    def likelihood_type(self) -> str:
        """"probability" where log p(x) is a log-probability (discrete x), "density" where
        it is a log-density of continuous x: densities can exceed 1 and are not comparable
        with probabilities."""
        return self.built.likelihood_type

    def to_file_units(self, values: np.ndarray, mask: Any) -> np.ndarray:
        """Per-example log-densities [n] in the data's own units (see ``jlvm.runs._data``)."""
        values = np.asarray(values, np.float64)
        if self.data.units is None:
            return values
        return values - self.data.units.log_scale(mask, values.shape[0])


def complete(config: Config, kind, data: _data.RunData) -> Config:
    """``config`` with the settings its kind takes from the data (a likelihood left to the
    data's default) filled in, now that the data is known."""
    from jlvm import data as data_module

    facts = data_module.Kind(data.levels, data.dataset.image_shape)
    defaults = kind.defaults(dataclasses.asdict(config), facts)
    filled = {name: value for name, value in defaults.items()
              if name in kind.settings and getattr(config, name) is None}
    return dataclasses.replace(config, **filled) if filled else config


def observed_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(X with missing entries 0, its mask or None when complete): NaN = missing."""
    X = np.asarray(X)
    holes = np.isnan(X)
    if not holes.any():
        return X, None
    return np.where(holes, 0.0, X).astype(X.dtype), ~holes


def build(config: Config, run: RunDirectory | None = None, stored: Stored | None = None, *,
          warn: Callable[[str], None] = lambda message: None) -> Setup:
    """What ``config`` trains: its data (read, or the run directory's own), its training
    holes (the run directory's, once it has them), its kind's ``Built``."""
    import jax.numpy as jnp

    from jlvm import train
    from jlvm.runs import kinds

    stored = Stored() if stored is None else stored
    kind = kinds.kind_for(config.model)
    data = _data.load(config, None if run is None else run.path, stored.data)
    config = complete(config, kind, data)
    kind.check(config)
    stored_mask = None
    if stored and stored.get("train_mask", _has_holes(config)):  # an existing run's holes
        stored_mask = run.read_mask()
        if stored_mask is None:
            raise RunError(f"{run.mask} is missing: the run's training holes are lost (it "
                           "learned from incomplete data); train a new run.")
    full_mask = _missing.train_mask(config, data.dataset, stored_mask)
    values = np.asarray(data.dataset.train)
    if full_mask is None:
        X, mask, dropped = jnp.asarray(values), None, 0
    else:
        kept = full_mask.any(axis=1)  # an example that observes nothing says nothing
        dropped = int((~kept).sum())
        if not kept.any():
            raise RunError(f"the training data observe nothing under {_holes(config)}: every "
                           "entry is missing.")
        mask = full_mask[kept]
        X = jnp.asarray(np.where(mask, values[kept], 0.0))  # NaN never reaches arithmetic
        mask = jnp.asarray(mask)
    data = data._replace(train_x=X, train_mask=mask)
    built = kind.build(config, data, stored.model, warn)
    count = X.shape[0]
    if built.batch_size > count:
        raise RunError(f"--batch-size ({built.batch_size}) must be at most the {count} "
                       f"training examples of {data.dataset.name}.")
    facts = {"data_dim": int(values.shape[1]),
             "steps_per_epoch": train.num_batches(count, built.batch_size),
             "data": data.facts, "model": built.facts, "train_mask": full_mask is not None}
    learner = built.learner if data.units is None else _in_file_units(
        built.learner, data.units, masked=mask is not None)
    return Setup(config, kind, data, built, learner, built.train_data(X, mask),
                 facts["steps_per_epoch"], full_mask, dropped, facts)


def _has_holes(config: Config) -> bool:
    """Whether a run written before config.json said so learned from holes it set."""
    return config.missing != "none" or config.missing_file is not None


def _holes(config: Config) -> str:
    if config.missing_file is not None:
        return f"--missing-file {config.missing_file}"
    if config.missing != "none":
        return f"--missing {config.missing}"
    return f"the NaN entries of {_data.describe(config.data)}"


def _in_file_units(learner, units: _data.Units, *, masked: bool):
    """``learner`` whose bound metrics (and loss) are in the data's own units: a bound in
    model units exceeds the file's by each example's sum of log std over its observed
    entries (the batch's mask is its last member where the run learns from holes)."""
    import jax.numpy as jnp

    from jlvm.train import Learner

    log_scale = jnp.asarray(np.log(units.scale), jnp.float32)

    def step(state, batch):
        state, metrics = learner.step(state, batch)
        shift = (jnp.mean(batch[-1].astype(jnp.float32) @ log_scale) if masked
                 else jnp.sum(log_scale))
        metrics = {name: value - shift if name in BOUND_METRICS else
                   value + shift if name == "loss" else value
                   for name, value in metrics.items()}
        return state, metrics

    return Learner(learner.init, step)


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


def subset(count: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random ``size`` of ``count`` rows (all rows if ``size`` is
    None or not smaller): splits may be ordered by class (binarized MNIST's test split
    is), so "the first N" would not be a sample of the split."""
    if size is None or size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def resolve_mesh(devices: int | str | None, batch_size: int, setup: Setup, *,
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
            if isinstance(requested, (bool, float)):
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
    if not setup.kind.data_parallel:
        raise RunError(f"--devices above 1 applies to models trained on batches; --model "
                       f"{setup.config.model} takes full-data steps.")
    if batch_size % count:
        raise RunError(f"--batch-size ({batch_size}) must be a multiple of --devices "
                       f"({count}): each device takes an equal share of every batch.")
    return train.data_mesh(count)


class Run(NamedTuple):
    """A trained run loaded from its directory (``load``).

    Attributes:
      path: the run directory, a ``pathlib.Path``.
      config: its ``Config``, from config.json, with the data's defaults filled in.
      setup: its ``Setup``: the data, the kind's model and learner.
      state: the learner's ``TrainState`` from the newest intact checkpoint; all seeds,
        every leaf with a leading axis S, where ``num_seeds`` S > 1.
      step: that checkpoint's epoch, an int.
    """

    path: pathlib.Path
    config: Config
    setup: Setup
    state: Any
    step: int


def load(run_dir: str | os.PathLike, *,
         warn: Callable[[str], None] = lambda message: None) -> Run:
    """The newest intact checkpoint of the run in ``run_dir`` (a damaged newer one is
    skipped with a warning), with its configuration and data."""
    from jlvm import checkpoint

    run = RunDirectory(run_dir)
    config, stored = run.read_config()
    if not checkpoint.steps(run.checkpoints):
        raise RunError(f"{run.path} has no complete checkpoint yet; resume its training with "
                       f"jlvm train --out {run.path} --resume.")
    setup = build(config, run, stored, warn=warn)
    restored = run.restore(initial_state(setup), warn=warn)
    return Run(run.path, setup.config, setup, restored.state, restored.step)
