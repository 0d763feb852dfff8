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
import numbers
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

from jlvm.runs._config import SEED_LIMIT, Config, make_config
from jlvm.runs._directory import DATA_NAME, RunDirectory
from jlvm.runs._errors import RunError
from jlvm.runs._setup import Run
from jlvm.runs._setup import load as _load

__all__ = ["Config", "Run", "RunError", "default_out", "encode", "evaluate", "impute",
           "load", "make_config", "resume", "sample", "start_distributed", "train"]

Warn = Callable[[str], None]
SPLITS = ("test", "valid", "train")
MAX_SAMPLES_DRAWN = 1024  # jlvm sample: beyond this a picture is no longer one a person reads
MISSING = ("none", "top-half", "bottom-half", "mcar:P")  # P in (0, 1)


def _stderr_warning(message: str) -> None:
    print(f"jlvm: warning: {message}", file=sys.stderr)


def default_out(config: Config) -> pathlib.Path:
    """``runs/MODEL-DATA-TIMESTAMP``: a new directory for each run."""
    from jlvm.runs import _data, _user

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = config.model.rpartition(":")[2] if _user.is_spec(config.model) else config.model
    data = pathlib.Path(_data.describe(config.data)).stem
    return pathlib.Path("runs") / f"{model}-{data}-{stamp}"


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


def _positive(name: str, value: Any, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise RunError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}.")
    if value > maximum:
        raise RunError(f"--{name.replace('_', '-')} must be at most {maximum}, got {value}.")
    return int(value)


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or \
            not 0 <= seed < SEED_LIMIT:
        raise RunError(f"--seed must be an integer in [0, {SEED_LIMIT - 1}], got {seed!r}.")
    return int(seed)


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

    Returns:
      What ``jlvm train`` prints: the run directory and the trained bound per example at
      the end (``train_elbo``; ``train_iwae_bound`` for IWAE; ``train_log_likelihood``
      for the GMM), with ``likelihood_type`` "probability" or "density".
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

    ``expect``: settings the caller believes the run has (``jlvm train --resume`` passes
    the options given on its command line); any that differ from the stored ones are a
    ``RunError`` and nothing is changed. Fewer ``epochs`` than the run completed are
    refused too; as many is a no-op. Other arguments as in ``train``.
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


def load(run_dir: str | os.PathLike, *, warn: Warn = _stderr_warning) -> Run:
    """The newest intact checkpoint of the run in ``run_dir`` (a damaged newer one is
    skipped with a warning), with its configuration and data (``Run``)."""
    return _load(run_dir, warn=warn)


def evaluate(run_dir: str | os.PathLike, *, num_samples: int = 1000, split: str = "test",
             chunk_size: int | None = None, batch_size: int = 100,
             num_examples: int | None = None, seed: int = 0, missing: str = "none",
             devices: int | str | None = None, method: str = "is", ais_steps: int = 1000,
             num_chains: int = 16,
             distributed: dict | None = None, warn: Warn = _stderr_warning) -> list[dict]:
    """log p(x) and the ELBO per seed of the run: by importance sampling with K =
    ``num_samples`` draws of its q (the encoder's, or one fitted per example), exact where
    the model allows (the GMM), in the data's own units.

    ``method="ais"``: log p(x) by forward annealed importance sampling instead
    (``jlvm.evaluate.log_likelihood_ais``: ``ais_steps`` temperatures, ``num_chains``
    chains per example, from the encoder's q where the model has one, else the prior).
    ``method="exact"``: log p(x) summed over every z, for a model whose prior has a
    finite support (binary z with L <= 20: ``jlvm.evaluate.log_likelihood_exact``; the
    mixtures are exact by default). ``method="bdmc"``: ``num_examples`` points simulated
    from the model (default 100), each bracketed by forward and reverse AIS
    (``jlvm.ais.bdmc``): ``log_likelihood_lower``, ``log_likelihood_upper`` and their
    ``gap``, with standard errors.

    ``chunk_size``: draws per example held at once; None: as many as keep the temporaries
    within 1 GiB, at most 500 (``jlvm.evaluate.chunk_size_for``; the values do not change).
    ``num_examples``: a seeded random subset of the split (``seed``), not its first rows.
    ``missing``: "top-half" / "bottom-half" pixels unobserved, or "mcar:P" each entry
    unobserved with probability P (drawn with ``seed``): log p(x_obs), for every model;
    NaN in the data is missing too. Returns one dict per seed: means and standard errors
    over the examples (nats per example), the gap, ``likelihood_type`` and, for
    probabilities, bits per dimension; where the kind scores a clustering (``Built.scores``,
    the Bernoulli mixture) and the split has labels, ``adjusted_rand_index`` of its most
    probable components against them (by the default method).
    """
    from jlvm.runs import _config, _methods, _setup

    num_samples = _positive("num_samples", num_samples, maximum=2**24)
    batch_size = _positive("batch_size", batch_size, maximum=2**20)
    if chunk_size is not None:
        chunk_size = _positive("chunk_size", chunk_size, maximum=2**20)
    if num_examples is not None:
        num_examples = _positive("num_examples", num_examples)
    if split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if method not in _methods.METHODS:
        raise RunError(f"--method must be one of {', '.join(_methods.METHODS)}, "
                       f"got {method!r}.")
    ais_steps = _positive("ais_steps", ais_steps, maximum=2**24)
    num_chains = _positive("num_chains", num_chains, maximum=2**16)
    if method == "bdmc" and missing != "none":
        raise RunError("--method bdmc simulates complete data from the model; --missing "
                       "does not apply.")
    _config.parse_missing(missing)
    seed = _seed(seed)
    writer = True if distributed is None else start_distributed(**distributed)
    run = load(run_dir, warn=warn if writer else (lambda message: None))
    setup = run.setup
    X = getattr(setup.dataset, split)
    if X is None:
        raise RunError(f"data set {setup.dataset.name} has no {split} split.")
    labels = getattr(setup.dataset, f"{split}_labels", None)  # a valid split has none
    rows = _setup.subset(X.shape[0], num_examples, seed)
    mesh = _setup.resolve_mesh(devices, batch_size, setup, distributed=distributed is not None)
    import jax

    results = []
    for run_seed, state in _setup.per_seed(run.config, run.state):
        line = _methods.evaluate_state(
            setup, state, X[rows], None if labels is None else labels[rows],
            jax.random.PRNGKey(seed), method=method, num_samples=num_samples,
            chunk_size=chunk_size, batch_size=batch_size, num_examples=num_examples,
            ais_steps=ais_steps, num_chains=num_chains, missing=missing, mesh=mesh,
            seed=seed)
        where = {} if method == "bdmc" else {"split": split}  # bdmc simulates its data
        results.append({"run_dir": str(run.path), "seed": run_seed, "epoch": run.step,
                        **where, **line})
    return results if writer else []


def sample(run_dir: str | os.PathLike, out: str | os.PathLike, *, n: int = 64, seed: int = 0,
           warn: Warn = _stderr_warning) -> dict:
    """Draws ``n`` samples of the run's model (its first seed) into a new image file
    ``out`` (.png, .pdf, .svg, .jpg, ...; never overwritten): mean images E[x | z] with
    z ~ p(z) for images, draws x ~ p(x) otherwise, in the data's own units. The model
    needs a prior and a decoder."""
    import jax

    from jlvm import _files, plots
    from jlvm.runs import _figures, _setup

    try:
        out = _files.check_new(out, suffixes=tuple(f".{f}" for f in plots.formats()))
    except ValueError as error:
        raise RunError(str(error)) from None
    n = _positive("n", n)
    if n > MAX_SAMPLES_DRAWN:
        raise RunError(f"--n must be at most {MAX_SAMPLES_DRAWN} (one picture), got {n}.")
    seed = _seed(seed)
    run = load(run_dir, warn=warn)
    setup = run.setup
    if setup.built.sample is None:
        raise RunError(f"--model {run.config.model} cannot draw samples: that needs "
                       "model.prior(params) -> p(z) and model.decoder(params, z) -> p(x | z).")
    _, state = next(_setup.per_seed(run.config, run.state))  # the first of the seeds
    view = _figures.view(setup)
    drawn = setup.built.sample(state, jax.random.PRNGKey(seed), n,
                               view.image_shape is not None)
    figure = _figures.samples_figure(drawn, view)
    try:
        plots.save(figure, out, replace=False)
    except FileExistsError:
        raise RunError(f"{out} exists; choose another --out (nothing was overwritten).") from None
    return {"out": str(out), "n": n, "seed": seed, "run_dir": str(run.path)}


def encode(run_dir: str | os.PathLike, out: str | os.PathLike, *, split: str | None = None,
           input_path: str | os.PathLike | None = None, num_samples: int = 1000,
           seed: int = 0, warn: Warn = _stderr_warning) -> dict:
    """Writes the features of the run's posterior for a split (default "test") or for the
    rows ``x`` [N, D] of an ``input_path`` .npz (NaN = missing; in the data's own units)
    into a new ``out`` .npz, and returns what ``jlvm encode`` prints (the arrays' shapes,
    in words what they are).

    Arrays: a model with a q per example: ``mean`` [N, L] (E_q[z | x]) and ``scale``
    [N, L] (the standard deviation of each coordinate of q; Monte Carlo estimates from
    ``num_samples`` draws where q has no closed-form moments, as a flow); the GMM:
    ``responsibilities`` [N, K] and ``component`` [N]; ``labels`` [N] where the split has
    them; ``run_seed`` and ``epoch`` of the model used (the first seed of a run of
    several).
    """
    from jlvm.runs import _encode

    if input_path is not None and split is not None:
        raise RunError("give --split or --input, not both.")
    split = "test" if split is None and input_path is None else split
    if split is not None and split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}.")
    num_samples = _positive("num_samples", num_samples, maximum=2**20)
    seed = _seed(seed)
    _encode.check_out(out)
    run = load(run_dir, warn=warn)
    return _encode.encode(run, out, split=split, input_path=input_path,
                          num_samples=num_samples, seed=seed)


def impute(run_dir: str | os.PathLike, input_path: str | os.PathLike,
           out: str | os.PathLike, *, num_samples: int = 1000, num_draws: int = 0,
           seed: int = 0, warn: Warn = _stderr_warning) -> dict:
    """Writes a new ``out`` .npz holding ``x``: the array ``x`` [N, D] of ``input_path``
    with every NaN replaced by E[x_d | x_obs] under the run's model, its observed entries
    exactly as read (in the file's dtype; a run on standardized data converts what it
    imputes back to the data's units): exact for the GMM, by self-normalized importance
    sampling with K = ``num_samples`` draws of the model's q(z | x_obs) otherwise, with
    each row's ``effective_sample_size``; with ``num_draws`` M, also ``draws`` [M, N, D]
    from p(x_mis | x_obs) (multiple imputation). Returns what ``jlvm impute`` prints."""
    from jlvm.runs import _encode

    num_samples = _positive("num_samples", num_samples, maximum=2**20)
    if isinstance(num_draws, bool) or not isinstance(num_draws, numbers.Integral) or \
            not 0 <= num_draws <= MAX_SAMPLES_DRAWN:
        raise RunError(f"--draws must be an integer in [0, {MAX_SAMPLES_DRAWN}], got "
                       f"{num_draws!r}.")
    seed = _seed(seed)
    _encode.check_out(out)
    run = load(run_dir, warn=warn)
    return _encode.impute(run, input_path, out, num_samples=num_samples,
                          num_draws=int(num_draws), seed=seed)
