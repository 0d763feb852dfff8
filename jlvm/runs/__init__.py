"""Run directories from Python: train, resume, evaluate, encode, impute and sample, as
``jlvm`` does::

    from jlvm import runs
    result = runs.train(runs.make_config(model="iwae", epochs=20), "runs/iwae-digits")
    result = runs.resume("runs/iwae-digits", epochs=40)       # continue to epoch 40
    lines = runs.evaluate("runs/iwae-digits", num_samples=1000)   # one dict per seed
    runs.sample("runs/iwae-digits", "samples.png", n=64)
    runs.encode("runs/iwae-digits", "codes.npz")             # E_q[z|x] of the test split
    runs.impute("runs/iwae-digits", "holes.npz", "filled.npz")  # NaN -> E[x_mis | x_obs]
    run = runs.load("runs/iwae-digits")                       # config, setup, state

    # a model of your own on data of your own: the same strings as the command line's
    config = runs.make_config(model="my_model.py:make_model", model_args={"width": 64},
                              data="measurements.csv", epochs=50)

A run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per epoch and
seed), orbax checkpoints under ``checkpoints/`` and the figures ``samples.png``,
``reconstructions.png``, ``latent.png`` and ``elbo.png`` (see ``_directory``). It is owned
by one process at a time, never overwritten, and a new run that fails before its first
checkpoint leaves nothing behind. What a model brings to it is its kind's
(``jlvm.runs.kinds``). Every problem with a setting or a directory is a ``RunError`` with a
one-line message; ``jlvm`` prints it and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
from typing import Any

from jlvm.runs._arguments import Warn, _positive, _stderr_warning, start_distributed
from jlvm.runs._arguments import _seed as _seed
from jlvm.runs._commands import MAX_SAMPLES_DRAWN as MAX_SAMPLES_DRAWN
from jlvm.runs._commands import SPLITS as SPLITS  # the command line's choices
from jlvm.runs._commands import encode, evaluate, impute, load, sample
from jlvm.runs._config import Config, make_config
from jlvm.runs._directory import DATA_NAME, RunDirectory
from jlvm.runs._errors import RunError
from jlvm.runs._setup import Run

__all__ = ["Config", "Run", "RunError", "default_out", "encode", "evaluate", "impute",
           "load", "make_config", "resume", "sample", "start_distributed", "train"]

MISSING = ("none", "top-half", "bottom-half", "mcar:P")  # P in (0, 1)


def default_out(config: Config) -> pathlib.Path:
    """``runs/MODEL-DATA-TIMESTAMP``: a new directory for each run.

    Args:
      config: the run's ``Config``.

    Returns:
      That relative ``pathlib.Path``.
    """
    from jlvm.runs import _data, _user

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = config.model.rpartition(":")[2] if _user.is_spec(config.model) else config.model
    data = pathlib.Path(_data.describe(config.data)).stem
    return pathlib.Path("runs") / f"{model}-{data}-{stamp}"


def train(config: Config, out: str | os.PathLike | None = None, *, checkpoint_every: int = 1,
          eval_every: int = 1, devices: int | str | None = None,
          distributed: dict | None = None, warn: Warn = _stderr_warning,
          dataset: Any = None) -> dict:
    """Trains a new run of ``config`` into ``out`` (default ``default_out(config)``).

    Args:
      config: from ``make_config``.
      out: a directory that holds no run yet (created if needed).
      checkpoint_every: write a checkpoint every N epochs and after the last.
      eval_every: compute the train/valid bounds after epoch 1, every N epochs and after
        the last (the step metrics of every epoch are recorded regardless).
      devices: split every batch over this many devices, or "all" (data parallelism).
      distributed: start ``jax.distributed`` first with these arguments (see
        ``start_distributed``); process 0 writes the files.
      dataset: a ``jlvm.data.Dataset`` to train on instead of ``config.data``: the run
        directory keeps it (``data.npz``), and its later commands read it there, treated
        as a data file (``config.data`` becomes "data.npz"; a likelihood that was only
        ``config.data``'s default is the dataset's own).
      warn: called with each warning message (default: printed to stderr).

    Returns:
      What ``jlvm train`` prints (``{}`` on processes other than 0), a dict of ``run_dir``,
      ``model``, ``epochs``, ``seconds``, ``likelihood_type`` "probability" or "density" and
      the bounds per example at the end (``train_elbo``; ``train_iwae_bound`` for IWAE;
      ``train_log_likelihood`` for the GMM; ``valid_*``, ``*_per_seed``, ``seeds`` where apt).
    """
    from jlvm.runs import _config, _data, _directory, _training

    if not isinstance(config, Config):
        raise RunError(f"config must be a jlvm.runs.Config (see runs.make_config), got "
                       f"{type(config).__name__}.")
    _config.validate(config)
    if dataset is not None:
        config = _in_memory(config, dataset)
    checkpoint_every = _positive("checkpoint_every", checkpoint_every)
    eval_every = _positive("eval_every", eval_every)
    run = RunDirectory(out if out is not None else default_out(config))
    if run.holds_run():  # checked by every process before they meet
        raise run.occupied()
    writer = True if distributed is None else start_distributed(**distributed)
    options = dict(resume=False, checkpoint_every=checkpoint_every, eval_every=eval_every,
                   devices=devices, distributed=distributed is not None, warn=warn)
    if not writer:
        return _training.run_training(config, run, writer=False, **options)
    with _directory.claim(run.path, resume=False) as claimed:
        if dataset is not None:
            _data.write(claimed.data, dataset)
        return _training.run_training(config, claimed, writer=True, **options)


def _in_memory(config: Config, dataset: Any) -> Config:
    """``config`` for a run on ``dataset``, which its directory keeps as data.npz."""
    from jlvm import data as data_module
    from jlvm.runs import _config, kinds

    if not all(hasattr(dataset, field) for field in ("train", "test", "valid",
                                                       "image_shape")):
        raise RunError(f"dataset must be a jlvm.data.Dataset, got {type(dataset).__name__}.")
    kind = kinds.kind_for(config.model)
    named = data_module.KINDS.get(config.data)
    defaults = {} if named is None else kind.defaults(dataclasses.asdict(config), named)
    # settings that were only the named data's defaults are the dataset's own
    reset = {name: None for name, value in defaults.items()
             if getattr(Config, name, 0) is None and getattr(config, name) == value}
    shape = None if dataset.image_shape is None else tuple(dataset.image_shape)
    config = dataclasses.replace(config, data=DATA_NAME, data_path=None,
                                 image_shape=shape, **reset)
    _config.validate(config)
    return config


def resume(out: str | os.PathLike, *, epochs: int | None = None,
           expect: dict[str, Any] | None = None, checkpoint_every: int = 1,
           eval_every: int = 1, devices: int | str | None = None,
           distributed: dict | None = None, warn: Warn = _stderr_warning) -> dict:
    """Continues the run in ``out`` from its newest intact checkpoint, to ``epochs``.

    Args:
      out: the run directory.
      epochs: the new total (default: the stored one); fewer than completed are refused.
      expect: settings the caller believes the run has (``jlvm train --resume`` passes its
        command line's); any that differ from the stored ones are a ``RunError``.
      checkpoint_every, eval_every, devices, distributed, warn: as in ``train``.

    Returns:
      As ``train``; where the run has completed ``epochs`` already (a no-op) only
      ``run_dir``, ``model``, ``epochs`` and ``already_completed``.
    """
    from jlvm import checkpoint
    from jlvm.runs import _config, _directory, _training

    run = RunDirectory(out)
    stored, _ = run.read_config()
    expect = {_config.RENAMED.get(name, name): value for name, value in (expect or {}).items()}
    unknown = sorted(set(expect) - set(_config.FIELDS))
    if unknown:
        raise RunError(f"unknown setting(s) {', '.join(unknown)}.")
    changed = sorted(name for name, value in expect.items()
                     if name != "epochs" and _as_stored(name, value) != getattr(stored, name))
    if changed:
        raise RunError(f"--resume continues the stored configuration; these differ from "
                       f"{run.config}: {', '.join(_config.option(n) for n in changed)}. Only "
                       "--epochs may change (nothing was changed).")
    config = stored if epochs is None else dataclasses.replace(
        stored, epochs=_config.plain("epochs", epochs))
    _config.validate(config)
    checkpoint_every = _positive("checkpoint_every", checkpoint_every)
    eval_every = _positive("eval_every", eval_every)
    completed = checkpoint.latest_step(run.checkpoints)
    if completed is not None and config.epochs < completed:
        raise RunError(f"--epochs {config.epochs} is fewer than the {completed} epochs "
                       f"{run.path} has completed; nothing was changed.")
    if completed is not None and config.epochs == completed:
        return {"run_dir": str(run.path), "model": config.model, "epochs": config.epochs,
                "already_completed": True}
    writer = True if distributed is None else start_distributed(**distributed)
    options = dict(resume=True, checkpoint_every=checkpoint_every, eval_every=eval_every,
                   devices=devices, distributed=distributed is not None, warn=warn)
    if not writer:
        return _training.run_training(config, run, writer=False, **options)
    with _directory.claim(run.path, resume=True) as claimed:
        return _training.run_training(config, claimed, writer=True, **options)


def _as_stored(name: str, value: Any) -> Any:
    """A setting as config.json holds it: sequences as tuples, paths absolute, specs in
    their one spelling."""
    from jlvm.runs import _config

    value = _config.plain(name, value)
    given = {name: value}
    value = _config.resolved(given).get(name, value)
    return _config.canonical({name: value}).get(name, value)
