"""Run directories from Python: train, resume, evaluate and sample, as ``jlvm`` does.

    from jlvm import runs
    result = runs.train(runs.make_config(model="iwae", epochs=20), "runs/iwae-digits")
    result = runs.resume("runs/iwae-digits", epochs=40)       # continue to epoch 40
    lines = runs.evaluate("runs/iwae-digits", num_samples=1000)   # one dict per seed
    runs.sample("runs/iwae-digits", "samples.png", n=64)
    runs.encode("runs/iwae-digits", "codes.npz")             # E_q[z|x] of the test split
    runs.impute("runs/iwae-digits", "holes.npz", "filled.npz")  # NaN -> E[x_mis | x_obs]
    run = runs.load("runs/iwae-digits")                       # config, setup, state

A run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per epoch and
seed), orbax checkpoints under ``checkpoints/`` and the figures ``samples.png``,
``reconstructions.png``, ``latent.png`` and ``elbo.png`` (see ``_directory``). It is owned
by one process at a time, never overwritten, and a new run that fails before its first
checkpoint leaves nothing behind. Every problem with a setting or a directory is a
``RunError`` with a one-line message; ``jlvm`` prints it and exits with status 2.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from jlvm.runs._config import (
    ARCHITECTURES,
    ELBO_FORMS,
    ENCODER_MODELS,
    MODELS,
    POSTERIORS,
    SEED_LIMIT,
    Config,
    RunError,
    make_config,
)
from jlvm.runs._directory import RunDirectory

__all__ = ["ARCHITECTURES", "ELBO_FORMS", "ENCODER_MODELS", "MODELS", "POSTERIORS", "Config",
           "Run", "RunError", "default_out", "encode", "evaluate", "impute", "load",
           "make_config",
           "resume", "sample", "start_distributed", "train"]

Warn = Callable[[str], None]
SPLITS = ("test", "valid", "train")
MAX_SAMPLES_DRAWN = 1024  # jlvm sample: beyond this a picture is no longer one a person reads
MISSING = ("none", "top-half", "bottom-half", "mcar:P")  # P in (0, 1)


def _stderr_warning(message: str) -> None:
    print(f"jlvm: warning: {message}", file=sys.stderr)


def default_out(config: Config) -> pathlib.Path:
    """``runs/MODEL-DATA-TIMESTAMP``: a new directory for each run."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / f"{config.model}-{config.data}-{stamp}"


def start_distributed(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None) -> bool:
    """Starts JAX's multi-process runtime (``jax.distributed.initialize``; on SLURM, Open
    MPI, Kubernetes or Cloud TPU it finds its peers itself). Returns whether this process
    writes the files (process 0). Call it before anything else touches JAX's devices."""
    import jax

    given = {"coordinator_address": coordinator, "num_processes": num_processes,
             "process_id": process_id}
    try:
        jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
    except (ValueError, RuntimeError, TypeError) as error:
        raise RunError(f"--distributed: jax.distributed.initialize() failed: "
                       f"{' '.join(str(error).split())}") from None
    return jax.process_index() == 0


def _positive(name: str, value: Any, maximum: int = 2**31 - 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RunError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}.")
    if value > maximum:
        raise RunError(f"--{name.replace('_', '-')} must be at most {maximum}, got {value}.")


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
      dataset: a ``jlvm.data.Dataset`` to train on instead of reading ``config.data``.

    Returns:
      What ``jlvm train`` prints: the run directory and the trained bound per example at
      the end (``train_elbo``; ``train_iwae_bound`` for IWAE; ``train_log_likelihood``
      for the GMM), with ``likelihood_type`` "probability" or "density".
    """
    from jlvm.runs import _config, _directory, _training

    if not isinstance(config, Config):
        raise RunError(f"config must be a jlvm.runs.Config (see runs.make_config), got "
                       f"{type(config).__name__}.")
    _config.validate(config)
    _positive("checkpoint_every", checkpoint_every)
    _positive("eval_every", eval_every)
    run = RunDirectory(out if out is not None else default_out(config))
    if run.holds_run():  # checked by every process before they meet
        raise run.occupied()
    writer = True if distributed is None else start_distributed(**distributed)
    options = dict(resume=False, checkpoint_every=checkpoint_every, eval_every=eval_every,
                   devices=devices, distributed=distributed is not None, warn=warn,
                   dataset=dataset)
    if not writer:
        return _training.run_training(config, run, writer=False, **options)
    with _directory.claim(run.path, resume=False) as claimed:
        return _training.run_training(config, claimed, writer=True, **options)


def resume(out: str | os.PathLike, *, epochs: int | None = None,
           expect: dict[str, Any] | None = None, checkpoint_every: int = 1,
           eval_every: int = 1, devices: int | str | None = None,
           distributed: dict | None = None, warn: Warn = _stderr_warning) -> dict:
    """Continues the run in ``out`` from its newest intact checkpoint, to ``epochs``.

    ``expect``: settings the caller believes the run has (``jlvm train --resume`` passes
    the options given on its command line); any that differ from the stored ones are a
    ``RunError`` and nothing is changed. Fewer ``epochs`` than the run completed are
    refused too; as many is a no-op. Other arguments as in ``train``.
    """
    import dataclasses

    from jlvm import checkpoint
    from jlvm.runs import _config, _directory, _training

    run = RunDirectory(out)
    stored = _config.read(run.config)
    changed = sorted(name for name, value in (expect or {}).items()
                     if name != "epochs"
                     and _as_stored(name, value) != getattr(stored, name, value))
    unknown = sorted(set(expect or {}) - set(_config.FIELDS))
    if unknown:
        raise RunError(f"unknown setting(s) {', '.join(unknown)}.")
    if changed:
        raise RunError(f"--resume continues the stored configuration; these differ from "
                       f"{run.config}: {', '.join(_config.option(n) for n in changed)}. Only "
                       "--epochs may change (nothing was changed).")
    config = stored if epochs is None else dataclasses.replace(stored, epochs=epochs)
    _config.validate(config)
    _positive("checkpoint_every", checkpoint_every)
    _positive("eval_every", eval_every)
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
    """A setting as config.json holds it: lists as tuples, specs in their one spelling."""
    from jlvm.runs import _config

    return tuple(value) if isinstance(value, list) else _config.canonical_specs(
        {name: value}).get(name, value)


class Run(NamedTuple):
    """A trained run loaded from its directory: ``setup`` (data, learner), ``state`` (all
    seeds: leading axis S where ``num_seeds`` > 1), ``step``: its checkpoint's epoch."""

    path: pathlib.Path
    config: Config
    setup: Any
    state: Any
    step: int


def load(run_dir: str | os.PathLike, *, warn: Warn = _stderr_warning) -> Run:
    """The newest intact checkpoint of the run in ``run_dir`` (a damaged newer one is
    skipped with a warning), with its configuration and data."""
    from jlvm import checkpoint
    from jlvm.runs import _config, _setup

    run = RunDirectory(run_dir)
    config = _config.read(run.config)
    if not checkpoint.steps(run.checkpoints):
        raise RunError(f"{run.path} has no complete checkpoint yet; resume its training with "
                       f"jlvm train --out {run.path} --resume.")
    from jlvm.runs import _missing

    setup = _setup.build(config, stored_mask=_missing.read_stored(run.path),
                         stored_input=_missing.read_encoder_input(run.path))
    restored = run.restore(_setup.initial_state(setup), warn=warn)
    return Run(run.path, config, setup, restored.state, restored.step)


def evaluate(run_dir: str | os.PathLike, *, num_samples: int = 1000, split: str = "test",
             chunk_size: int | None = None, batch_size: int = 100,
             num_examples: int | None = None, seed: int = 0, missing: str = "none",
             devices: int | str | None = None,
             distributed: dict | None = None, warn: Warn = _stderr_warning) -> list[dict]:
    """log p(x) by importance sampling (K=``num_samples`` draws from the encoder, or from a
    q fitted per example for SVI; exact for the GMM) and the ELBO, per seed of the run.

    ``chunk_size``: draws per example held at once; None: as many as keep the temporaries
    within 1 GiB, at most 500 (``jlvm.evaluate.chunk_size_for``; the values do not change).
    ``num_examples``: a seeded random subset of the split (``seed``), not its first rows.
    ``missing``: "top-half" / "bottom-half" pixels unobserved, or "mcar:P" each entry
    unobserved with probability P (drawn with ``seed``): log p(x_obs), for every model.
    Returns one dict per seed: means and standard errors over the examples (nats per
    example), the gap, ``likelihood_type`` and, for probabilities, bits per dimension.
    """
    from jlvm.runs import _evaluation, _setup

    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size),
                        ("batch_size", batch_size)):
        if value is not None or name != "chunk_size":
            _positive(name, value, maximum=2**24 if name == "num_samples" else 2**20)
    if num_examples is not None:
        _positive("num_examples", num_examples, maximum=2**31 - 1)
    if split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}.")
    from jlvm.runs._config import parse_missing

    parse_missing(missing)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise RunError(f"--seed must be an integer in [0, {SEED_LIMIT - 1}], got {seed!r}.")
    writer = True if distributed is None else start_distributed(**distributed)
    run = load(run_dir, warn=warn if writer else (lambda message: None))
    setup = run.setup
    X = getattr(setup.dataset, split)
    if X is None:
        raise RunError(f"data set {run.config.data} has no {split} split.")
    rows = _setup.subset(X.shape[0], num_examples, seed)
    mesh = _setup.resolve_mesh(devices, batch_size, run.config.model,
                               distributed=distributed is not None)
    import jax

    results = []
    for run_seed, state in _setup.per_seed(run.config, run.state):
        line = _evaluation.evaluate_split(
            setup, state, X[rows], jax.random.PRNGKey(seed), num_samples=num_samples,
            chunk_size=None if chunk_size is None else min(chunk_size, num_samples),
            batch_size=batch_size, missing=missing,
            mesh=mesh, seed=seed)
        results.append({"run_dir": str(run.path), "seed": run_seed, "epoch": run.step,
                        "split": split, **line})
    return results if writer else []


def sample(run_dir: str | os.PathLike, out: str | os.PathLike, *, n: int = 64, seed: int = 0,
           warn: Warn = _stderr_warning) -> dict:
    """Draws ``n`` samples of the run's model (its first seed) into a new image file
    ``out`` (.png, .pdf, .svg, .jpg, ...; never overwritten)."""
    import jax

    from jlvm import plots
    from jlvm.runs import _figures, _setup

    out = pathlib.Path(out)
    if not str(out) or out.name in ("", ".", ".."):
        raise RunError(f"--out must name a file, got {str(out)!r}.")
    if out.exists():
        raise RunError(f"{out} exists; choose another --out (nothing was overwritten).")
    if not out.parent.is_dir():
        raise RunError(f"folder {out.parent} does not exist.")
    if out.suffix.lower().lstrip(".") not in plots.formats():
        raise RunError(f"--out must end in one of .{', .'.join(plots.formats())} (the image "
                       f"format), got {str(out)!r}.")
    _positive("n", n)
    if n > MAX_SAMPLES_DRAWN:
        raise RunError(f"--n must be at most {MAX_SAMPLES_DRAWN} (one picture), got {n}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise RunError(f"--seed must be an integer in [0, {SEED_LIMIT - 1}], got {seed!r}.")
    run = load(run_dir, warn=warn)
    _, state = next(_setup.per_seed(run.config, run.state))  # the first of the seeds
    figure = _figures.sample_figure(run.setup, state, jax.random.PRNGKey(seed), n,
                                    f"{run.config.model} on {run.config.data}")
    try:
        plots.save(figure, out, replace=False)
    except FileExistsError:
        raise RunError(f"{out} exists; choose another --out (nothing was overwritten).") from None
    return {"out": str(out), "n": n, "seed": seed, "run_dir": str(run.path)}


def encode(run_dir: str | os.PathLike, out: str | os.PathLike, *, split: str | None = None,
           input_path: str | os.PathLike | None = None, num_samples: int = 1000,
           seed: int = 0, warn: Warn = _stderr_warning) -> dict:
    """Writes the features of the run's posterior for a split (default "test") or for the
    rows ``x`` [N, D] of an ``input_path`` .npz (NaN = missing, for encoder models) into a
    new ``out`` .npz, and returns what ``jlvm encode`` prints (the arrays' shapes, in words
    what they are).

    Arrays: encoder models and SVI: ``mean`` [N, L] (E_q[z | x]) and ``scale`` [N, L] (the
    standard deviation of each coordinate of q; a flow's are Monte Carlo estimates from
    ``num_samples`` draws); the GMM: ``responsibilities`` [N, K] and ``component`` [N];
    ``labels`` [N] where the split has them; ``run_seed`` and ``epoch`` of the model used
    (the first seed of a run of several).
    """
    from jlvm.runs import _encode

    if input_path is not None and split is not None:
        raise RunError("give --split or --input, not both.")
    split = "test" if split is None and input_path is None else split
    if split is not None and split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}.")
    _positive("num_samples", num_samples, maximum=2**20)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise RunError(f"--seed must be an integer in [0, {SEED_LIMIT - 1}], got {seed!r}.")
    return _encode.encode(run_dir, out, split=split, input_path=input_path,
                          num_samples=num_samples, seed=seed, warn=warn)


def impute(run_dir: str | os.PathLike, input_path: str | os.PathLike,
           out: str | os.PathLike, *, num_samples: int = 1000, num_draws: int = 0,
           seed: int = 0, warn: Warn = _stderr_warning) -> dict:
    """Writes a new ``out`` .npz holding ``x``: the array ``x`` [N, D] of ``input_path``
    with every NaN replaced by E[x_d | x_obs] under the run's model (observed entries
    unchanged): exact for the GMM, by self-normalized importance sampling with K =
    ``num_samples`` draws of the encoder's q(z | x_obs) otherwise (a q fitted per row for
    SVI), with each row's ``effective_sample_size``; with ``num_draws`` M, also ``draws``
    [M, N, D] from p(x_mis | x_obs) (multiple imputation). Returns what ``jlvm impute``
    prints."""
    from jlvm.runs import _impute

    _positive("num_samples", num_samples, maximum=2**20)
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or \
            not 0 <= num_draws <= MAX_SAMPLES_DRAWN:
        raise RunError(f"--draws must be an integer in [0, {MAX_SAMPLES_DRAWN}], got "
                       f"{num_draws!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise RunError(f"--seed must be an integer in [0, {SEED_LIMIT - 1}], got {seed!r}.")
    return _impute.impute(run_dir, input_path, out, num_samples=num_samples,
                          num_draws=num_draws, seed=seed, warn=warn)
