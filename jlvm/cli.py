"""The ``jlvm`` command: train, evaluate and sample latent variable models.

    jlvm train [--model {vae,iwae,semi,svi,gmm}] [--data NAME] [--epochs N] [--latent-dim L]
               [--out RUN_DIR] [--seed S] [--num-seeds S] [--devices N] [--resume] ...
    jlvm evaluate RUN_DIR [--num-samples K] [--split test] [--devices N]
    jlvm sample RUN_DIR [--n 64] --out FILE.png

A run directory holds config.json, metrics.jsonl (one JSON object per epoch and seed), orbax
checkpoints under checkpoints/, and the figures samples.png, reconstructions.png,
latent.png and elbo.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import sys
import time
from typing import Any

MODELS = ("vae", "iwae", "semi", "svi", "gmm")
# jlvm.inference.amortized's ELBO_FORMS, written out so that parsing imports no JAX
ELBO_FORMS = ("joint", "entropy", "kl")
EVAL_SUBSET = 2000  # training examples whose ELBO is reported each epoch
EVAL_BLOCK_BATCHES = 10  # jlvm evaluate reports progress every this many batches


class UsageError(Exception):
    """A bad argument or state: reported as one line, exit status 2."""


@dataclasses.dataclass
class Config:
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


# ------------------------------------------------------------------ arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jlvm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model; writes a run directory")
    train.add_argument("--model", choices=MODELS, help="vae (ELBO), iwae, semi "
                       "(semi-amortized), svi (per-datapoint), gmm (EM); default vae")
    from jlvm import data as data_module

    train.add_argument("--data", choices=data_module.NAMES, help="default digits (bundled)")
    train.add_argument("--data-path", help="file or folder for binarized-mnist "
                       "(default $JLVM_DATA_DIR)")
    train.add_argument("--epochs", type=int, help="passes over the training data (default 300; "
                       "for gmm: EM iterations, default 100)")
    train.add_argument("--latent-dim", type=int, help="L, dimensions of z (default 4)")
    train.add_argument("--hidden", type=int, nargs="+", help="hidden widths (default 200 200)")
    train.add_argument("--batch-size", type=int, help="default 100")
    train.add_argument("--learning-rate", type=float, help="Adam's step size (default 1e-3)")
    train.add_argument("--num-samples", type=int,
                       help="K draws per data point (default 1; iwae: 5)")
    train.add_argument("--grad-estimator", help="reparam, stl (vae), dreg (iwae)")
    train.add_argument("--elbo-form", choices=ELBO_FORMS,
                       help="vae: the training ELBO's form: joint, log p(x,z) - log q(z|x); "
                       "entropy, H(q) analytic; kl, log p(x|z) - KL(q || p(z)) analytic "
                       "(default joint)")
    train.add_argument("--components", type=int, help="mixture components (gmm)")
    train.add_argument("--inner-steps", type=int, help="per-datapoint steps (svi, semi)")
    train.add_argument("--seed", type=int, help="PRNG seed (default 0)")
    train.add_argument("--num-seeds", type=int, help="train S independent models at once, "
                       "seeds SEED..SEED+S-1, in one compiled step (jax.vmap); metrics per "
                       "seed (default 1)")
    _add_device_arguments(train)
    train.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                       help="write a checkpoint every N epochs and after the last (default 1)")
    train.add_argument("--eval-every", type=int, default=1, metavar="N",
                       help="compute the train and validation ELBOs after epoch 1, every N "
                       "epochs and after the last (default 1); the training metrics of every "
                       "epoch are recorded regardless")
    train.add_argument("--out", help="run directory (default runs/MODEL-DATA-TIMESTAMP)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")

    evaluate = commands.add_parser("evaluate", help="test log-likelihood by importance sampling")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--num-samples", type=int, default=1000, help="K (default 1000)")
    evaluate.add_argument("--split", choices=("test", "valid", "train"), default="test")
    evaluate.add_argument("--chunk-size", type=int, default=500,
                          help="draws held in memory at once per data point")
    evaluate.add_argument("--batch-size", type=int, default=100)
    evaluate.add_argument("--num-examples", type=int, metavar="N",
                          help="only the first N examples of the split (default all)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--missing", choices=("none", "top-half", "bottom-half"),
                          default="none", help="treat these pixels as missing: log p(x_obs), "
                          "summed out exactly (vae, iwae, semi on image data)")
    _add_device_arguments(evaluate)

    sample = commands.add_parser("sample", help="draw from a trained model into a PNG")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--out", required=True, help="PNG file to create (never overwritten)")
    sample.add_argument("--seed", type=int, default=0)
    return parser


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", metavar="{N,all}",
                        help="data parallelism: split every batch over N devices (a "
                        "jax.sharding.Mesh; parameters replicated), or all devices JAX sees; "
                        "the batch size must be a multiple of N (default 1; with "
                        "--distributed, all)")
    parser.add_argument("--distributed", action="store_true",
                        help="start JAX's multi-process runtime first "
                        "(jax.distributed.initialize; one process per host, each with the same "
                        "arguments and a shared --out); --devices then counts every host's "
                        "devices. On SLURM, Open MPI, Kubernetes or Cloud TPU JAX finds the "
                        "processes itself; elsewhere give the three options below")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="--distributed: process 0's address")
    parser.add_argument("--num-processes", type=int, help="--distributed: how many processes")
    parser.add_argument("--process-id", type=int, help="--distributed: this process's index")


def _config_from(args: argparse.Namespace, base: Config) -> Config:
    fields = {f.name for f in dataclasses.fields(Config)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    config = dataclasses.replace(base, **given)
    if args.model == "iwae" and args.num_samples is None and base.num_samples == 1:
        config.num_samples = 5  # an IWAE with K=1 is the VAE
    if config.model == "gmm" and args.epochs is None and base == Config():
        config.epochs = 100
    return config


def _validate(config: Config) -> None:
    positive = ("epochs", "latent_dim", "batch_size", "num_samples", "components",
                "inner_steps", "num_seeds")
    for name in positive:
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(config, name)}.")
    if any(h < 1 for h in config.hidden):
        raise UsageError(f"--hidden widths must be >= 1, got {list(config.hidden)}.")
    if not config.learning_rate > 0:
        raise UsageError(f"--learning-rate must be > 0, got {config.learning_rate}.")
    allowed = {"vae": ("reparam", "stl"), "iwae": ("reparam", "dreg")}.get(config.model,
                                                                           ("reparam",))
    if config.grad_estimator not in allowed:
        raise UsageError(f"--grad-estimator for --model {config.model} must be one of "
                         f"{allowed}, got {config.grad_estimator!r}.")
    if config.elbo_form != "joint" and (config.model, config.grad_estimator) != ("vae",
                                                                                  "reparam"):
        raise UsageError(f"--elbo-form {config.elbo_form} takes --model vae with "
                         f"--grad-estimator reparam, got --model {config.model} with "
                         f"--grad-estimator {config.grad_estimator}.")


# ------------------------------------------------------------------- the runs


@dataclasses.dataclass
class _Setup:
    config: Config
    dataset: Any
    learner: Any
    train_data: Any
    batch_size: int


def _load_data(config: Config):
    from jlvm import data

    try:
        return data.load(config.data, path=config.data_path)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None


def _setup(config: Config) -> _Setup:
    import jax.numpy as jnp
    import optax

    from jlvm import inference
    from jlvm.models import vae

    dataset = _load_data(config)
    X = jnp.asarray(dataset.train)
    if config.model == "gmm":
        learner = inference.em(config.components, reg_covar=config.reg_covar)
        return _Setup(config, dataset, learner, X, X.shape[0])
    likelihood = "bernoulli" if dataset.binary else "gaussian"
    init_params = functools.partial(vae.init, data_dim=X.shape[1], latent_dim=config.latent_dim,
                                    hidden_dims=config.hidden, likelihood=likelihood)
    optimizer = optax.adam(config.learning_rate)
    batch_size = min(config.batch_size, X.shape[0])
    if config.model in ("vae", "iwae"):
        learner = inference.amortized(init_params, optimizer,
                                      objective="elbo" if config.model == "vae" else "iwae",
                                      num_samples=config.num_samples,
                                      grad_estimator=config.grad_estimator,
                                      elbo_form=config.elbo_form)
        return _Setup(config, dataset, learner, X, batch_size)
    if config.model == "semi":
        learner = inference.semi_amortized(init_params, optimizer,
                                           inner_steps=config.inner_steps,
                                           inner_learning_rate=config.inner_learning_rate,
                                           num_samples=config.num_samples)
        return _Setup(config, dataset, learner, X, batch_size)
    learner = inference.svi(init_params, optimizer, X.shape[0], inner_steps=config.inner_steps,
                            inner_learning_rate=config.inner_learning_rate,
                            num_samples=config.num_samples)
    return _Setup(config, dataset, learner, (jnp.arange(X.shape[0], dtype=jnp.int32), X),
                  batch_size)


def _initial_state(setup: _Setup):
    """The learner's state at initialization (also the template checkpoints restore into).

    With --num-seeds S every leaf has a leading axis S, and run s is initialized exactly as
    a single run with --seed SEED+s would be."""
    import jax
    import jax.numpy as jnp

    config = setup.config
    first = jax.tree_util.tree_map(lambda a: a[: setup.batch_size], setup.train_data)
    if config.num_seeds == 1:
        return setup.learner.init(jax.random.PRNGKey(config.seed), first)
    keys = jnp.stack([jax.random.PRNGKey(config.seed + s) for s in range(config.num_seeds)])
    return jax.vmap(setup.learner.init, in_axes=(0, None))(keys, first)


def _runs(config: Config, state):
    """(seed, state of that run) for each of the --num-seeds runs held in ``state``."""
    import jax

    if config.num_seeds == 1:
        yield config.seed, state
        return
    for index in range(config.num_seeds):
        yield config.seed + index, jax.tree_util.tree_map(
            lambda leaf: leaf[index], state)  # noqa: B023


def _start_distributed(args) -> bool:
    """JAX's own multi-process runtime where --distributed asks for it; True on the process
    that writes files (process 0)."""
    import jax

    given = {"coordinator_address": args.coordinator, "num_processes": args.num_processes,
             "process_id": args.process_id}
    if not args.distributed:
        named = [f"--{name.replace('_', '-')}" for name, value in given.items()
                 if value is not None]
        if named:
            raise UsageError(f"{', '.join(named)} need --distributed.")
        return True
    try:
        jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
    except (ValueError, RuntimeError, TypeError) as error:
        raise UsageError(f"--distributed: jax.distributed.initialize() failed: {error}") from None
    return jax.process_index() == 0


def _mesh(args, batch_size: int, model: str):
    """The data-parallel mesh --devices asks for, or None for one device."""
    import jax

    from jlvm import train

    available = jax.device_count()
    requested = args.devices or ("all" if args.distributed else "1")
    if requested == "all":
        count = available
    else:
        try:
            count = int(requested)
        except ValueError:
            raise UsageError(f"--devices must be a number or 'all', got {requested!r}.") from None
        if count < 1 or count > available:
            raise UsageError(f"--devices must be between 1 and the {available} devices JAX "
                             f"sees, got {count}.")
        if jax.process_count() > 1 and count != available:
            raise UsageError(f"with --distributed, --devices must be 'all' (every process "
                             f"takes part), got {count} of {available}.")
    if count == 1 and jax.process_count() == 1:
        return None
    if model == "gmm":
        raise UsageError("--devices above 1 applies to vae, iwae, semi and svi (EM takes "
                         "full-data steps).")
    if batch_size % count:
        raise UsageError(f"--batch-size ({batch_size}) must be a multiple of --devices "
                         f"({count}): each device takes an equal share of every batch.")
    return train.data_mesh(count)


def _vae_params(setup: _Setup, state):
    return state.params.model if setup.config.model == "svi" else state.params


def _fresh_q(setup: _Setup, state, X, key, steps: int):
    """For SVI: per-point Gaussian q's fitted from the prior (no encoder exists)."""
    import jax
    import jax.numpy as jnp

    from jlvm.inference import _local

    model = state.params.model

    def one(x, k):
        zeros = jnp.zeros(model.latent_dim)
        refined, _, _ = _local.refine(model, x, (zeros, zeros), k, inner_steps=steps,
                                      inner_learning_rate=setup.config.inner_learning_rate,
                                      num_samples=1)
        return refined

    return jax.jit(jax.vmap(one))(X, jax.random.split(key, X.shape[0]))


def _elbo_per_example(setup: _Setup, state, X, key, split: str):
    """The ELBO of each row of X at the current parameters (K=1), nats."""
    import jax

    from jlvm import evaluate
    from jlvm.inference import _local
    from jlvm.models import gmm

    if setup.config.model == "gmm":  # the ELBO at q = p(z|x) is log p(x), exactly
        return jax.jit(jax.vmap(gmm.log_marginal, in_axes=(None, 0)))(state.params, X)
    params = _vae_params(setup, state)
    if setup.config.model != "svi":
        return evaluate.vae_elbo(key, params, X)
    if split == "train":  # the stored phi^i of the training points
        return jax.jit(jax.vmap(lambda x, m, s, k: _local.local_elbo(params, x, (m, s), k, 1)))(
            X, state.params.mean[: X.shape[0]], state.params.log_scale[: X.shape[0]],
            jax.random.split(key, X.shape[0]))
    mean, log_scale = _fresh_q(setup, state, X, key, 5 * setup.config.inner_steps)
    return jax.jit(jax.vmap(lambda x, m, s, k: _local.local_elbo(params, x, (m, s), k, 1)))(
        X, mean, log_scale, jax.random.split(key, X.shape[0]))


def _write_json_lines(path: pathlib.Path, records: list[dict]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(temporary, path)


def _read_json_lines(path: pathlib.Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_config(config_path: pathlib.Path) -> Config:
    stored = json.loads(config_path.read_text())["config"]
    return Config(**{**stored, "hidden": tuple(stored["hidden"])})


def _prepare_run_dir(args, run_dir: pathlib.Path) -> Config:
    config_path = run_dir / "config.json"
    if args.resume:
        if not config_path.is_file():
            raise UsageError(f"--resume: {run_dir} holds no run (no config.json); start one "
                             "without --resume.")
        stored = _read_config(config_path)
        config = _config_from(args, stored)
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.name != "epochs" and getattr(config, f.name) != getattr(stored, f.name)]
        if changed:
            raise UsageError(f"--resume continues the stored configuration; these differ from "
                             f"{config_path}: {', '.join(changed)}. Only --epochs may change.")
        return config
    if config_path.exists() or (run_dir / "checkpoints").exists():
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or "
                         "choose a new --out (nothing was overwritten).")
    return _config_from(args, Config())


def _summaries(metrics, num_seeds: int) -> list[dict[str, float]]:
    """Per-seed epoch means of the stacked step metrics ([steps] or [steps, S])."""
    import numpy as np

    from jlvm import train

    host = train.to_host(metrics)
    if num_seeds == 1:
        return [train.summarize(host)]
    return [{name: float(np.mean(values[:, index])) for name, values in host.items()}
            for index in range(num_seeds)]


def _train(args) -> int:
    config_base = Config()
    run_dir = pathlib.Path(args.out) if args.out else pathlib.Path("runs") / (
        f"{args.model or config_base.model}-{args.data or config_base.data}-"
        f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    for name in ("checkpoint_every", "eval_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}.")
    config = _prepare_run_dir(args, run_dir)
    _validate(config)
    writer = _start_distributed(args)

    import jax
    import numpy as np
    from tqdm import tqdm

    from jlvm import checkpoint, train

    setup = _setup(config)
    mesh = _mesh(args, setup.batch_size, config.model)
    steps_per_epoch = (1 if config.model == "gmm"
                       else train.num_batches(setup.dataset.train.shape[0], setup.batch_size))
    config_path = run_dir / "config.json"
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        # written via a temporary file and a rename: never a half-written config
        stored = {"config": dataclasses.asdict(config),
                  "data_dim": int(setup.dataset.train.shape[1]),
                  "steps_per_epoch": steps_per_epoch}
        temporary = run_dir / ".config.json.tmp"
        temporary.write_text(json.dumps(stored, indent=2))
        os.replace(temporary, config_path)

    state = _initial_state(setup)
    checkpoints = run_dir / "checkpoints"
    start_epoch = 1
    metrics_path = run_dir / "metrics.jsonl"
    records = []
    latest = checkpoint.latest_step(checkpoints)
    if latest is not None:
        state = checkpoint.restore(checkpoints, state, latest)
        start_epoch = latest + 1
        records = [r for r in _read_json_lines(metrics_path) if r["epoch"] <= latest]
        if writer:
            _write_json_lines(metrics_path, records)
    elif metrics_path.exists() and writer:
        _write_json_lines(metrics_path, [])
    if start_epoch > config.epochs:
        print(f"jlvm: {run_dir} already completed {latest} epochs (--epochs {config.epochs}).",
              file=sys.stderr)
    seeds = config.num_seeds
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=(start_epoch - 1) * steps_per_epoch,
               unit="step", desc=f"{config.model} on {config.data}"
               + (f", {seeds} seeds" if seeds > 1 else ""), file=sys.stderr,
               disable=None if writer else True, mininterval=0.5)
    if config.model == "gmm":  # an epoch is one full-batch EM iteration
        em_step = jax.jit(setup.learner.step if seeds == 1
                          else jax.vmap(setup.learner.step, in_axes=(0, None)))

        def epoch_fn(state, data):
            state, metrics = em_step(state, data)
            return state, {name: value[None] for name, value in metrics.items()}
    else:
        epoch_fn = train.make_epoch(setup.learner, setup.batch_size, progress=bar.update,
                                    mesh=mesh, num_seeds=seeds if seeds > 1 else None)
    if mesh is not None:  # once, not each epoch
        setup.train_data = train.replicate(setup.train_data, mesh)
    X_train = setup.dataset.train[:EVAL_SUBSET]
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs + 1):
        state, metrics = epoch_fn(state, setup.train_data)
        if config.model == "gmm":
            bar.update(1)
        summaries = _summaries(metrics, seeds)
        failed = [config.seed + i for i, summary in enumerate(summaries)
                  if summary.pop("finite") < 1.0]
        # one process: evaluate and save the arrays where they are; several: this
        # process's copy of them (the parameters are replicated on every device)
        local_state = state if jax.process_count() == 1 else train.to_host(state)
        if failed:
            bar.close()
            last_saved = epoch - 1 - (epoch - 1) % args.checkpoint_every
            kept = (f"the checkpoint of epoch {last_saved} is intact" if last_saved > 0
                    else "no checkpoint was written")
            which = f" (seed {', '.join(map(str, failed))})" if seeds > 1 else ""
            raise UsageError(f"training produced a non-finite loss in epoch {epoch}{which} "
                             f"(the parameters were not updated with it); {kept}. Lower "
                             "--learning-rate, or choose another --seed.")
        evaluated = epoch == 1 or epoch % args.eval_every == 0 or epoch == config.epochs
        for (seed, run_state), summary in zip(_runs(config, local_state), summaries,
                                              strict=True):
            eval_key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), epoch)
            record = {"epoch": epoch, "seed": seed, "step": int(run_state.step)}
            record.update({f"train_{name}_during_epoch": value
                           for name, value in summary.items()})
            if evaluated:
                record["train_elbo"] = float(np.mean(np.asarray(
                    _elbo_per_example(setup, run_state, X_train, eval_key, "train"))))
                if setup.dataset.valid is not None:
                    record["valid_elbo"] = float(np.mean(np.asarray(_elbo_per_example(
                        setup, run_state, setup.dataset.valid, eval_key, "valid"))))
            record["seconds"] = round(time.perf_counter() - started, 3)
            records.append(record)
        if writer:
            _write_json_lines(metrics_path, records)
        if epoch % args.checkpoint_every == 0 or epoch == config.epochs:
            checkpoint.save(checkpoints, epoch, local_state)
        if writer and evaluated and (epoch == config.epochs
                                     or epoch % max(1, config.epochs // 10) == 0):
            bar.write(f"epoch {epoch:4d}: " + _progress_line(records[-seeds:]), file=sys.stderr)
    bar.close()
    final = records[-seeds:]
    if records and writer:
        _figures(setup, next(_runs(config, train.to_host(state)))[1], run_dir, records)
    result = {"run_dir": str(run_dir), "epochs": config.epochs,
              "train_elbo": float(np.mean([r["train_elbo"] for r in final])) if final else None,
              "seconds": round(time.perf_counter() - started, 3)}
    if seeds > 1:
        result["seeds"] = [r["seed"] for r in final]
        result["train_elbo_per_seed"] = [r["train_elbo"] for r in final]
    if writer:
        print(json.dumps(result))
    return 0


def _progress_line(records: list[dict]) -> str:
    def describe(name):
        values = [r[name] for r in records]
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{sum(values) / len(values):.3f} (mean of {len(values)} seeds, " \
               f"{min(values):.3f} to {max(values):.3f})"

    line = f"train ELBO {describe('train_elbo')} nats"
    if "valid_elbo" in records[0]:
        line += f", valid ELBO {describe('valid_elbo')}"
    return line


# -------------------------------------------------------------------- figures


def _model_samples(setup: _Setup, state, key, n: int):
    import jax
    import numpy as np

    from jlvm.models import gmm, vae

    if setup.config.model == "gmm":
        x, _ = gmm.sample(key, state.params, n)
        return np.clip(np.asarray(x), 0, 1) if setup.dataset.image_shape else np.asarray(x)
    params = _vae_params(setup, state)
    z = jax.random.normal(key, (n, params.latent_dim))
    if setup.dataset.image_shape:  # the mean image E[x | z] shows the digit best
        return np.asarray(jax.vmap(functools.partial(vae.mean_image, params))(z))
    return np.asarray(vae.sample(key, params, n)[0])


def _codes(setup: _Setup, state, X, key):
    """E_q[z | x] (or, for the mixture, the most probable component)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jlvm.models import gmm, vae

    if setup.config.model == "gmm":
        return np.asarray(jax.vmap(lambda x: jnp.argmax(gmm.posterior(state.params, x).logits))(X))
    params = _vae_params(setup, state)
    if setup.config.model == "svi":
        return np.asarray(_fresh_q(setup, state, X, key, 5 * setup.config.inner_steps)[0])
    return np.asarray(jax.vmap(lambda x: vae.encoder(params, x).mean())(X))


def _figures(setup: _Setup, state, run_dir: pathlib.Path, records: list[dict]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jlvm import plots
    from jlvm.models import vae

    key = jax.random.PRNGKey(setup.config.seed + 2)
    dataset = setup.dataset
    title = f"{setup.config.model} on {setup.config.data}"
    samples = _model_samples(setup, state, key, 64)
    if dataset.image_shape:
        plots.save(plots.image_grid(samples, dataset.image_shape,
                                    title=f"{title}: E[x|z], z ~ p(z)"), run_dir / "samples.png")
    else:
        plots.save(plots.scatter_pairs([dataset.test, samples], ["test data", "model samples"],
                                       title=title), run_dir / "samples.png")
    X = jnp.asarray(dataset.test[:2000])
    codes = _codes(setup, state, X, key)
    if setup.config.model == "gmm":
        components = state.params.means[codes[:10]]
        reconstructions = np.clip(np.asarray(components), 0, 1)
        centered = np.asarray(X) - np.asarray(X).mean(0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        latent = plots.latent_scatter(centered @ vt[:2].T, codes,
                                      title=f"{title}: data (2 PCs) by most probable component")
    else:
        params = _vae_params(setup, state)
        reconstructions = np.asarray(jax.vmap(functools.partial(vae.mean_image, params))(
            jnp.asarray(codes[:10])))
        latent = plots.latent_scatter(codes, dataset.test_labels[:2000]
                                      if dataset.test_labels is not None else None,
                                      title=f"{title}: E_q[z|x] of test data")
    if dataset.image_shape:
        plots.save(plots.reconstruction_grid(np.asarray(X[:10]), reconstructions,
                                             dataset.image_shape, title=title),
                   run_dir / "reconstructions.png")
    else:
        plots.save(plots.scatter_pairs([X[:10], reconstructions], ["data", "reconstruction"],
                                       title=title), run_dir / "reconstructions.png")
    plots.save(latent, run_dir / "latent.png")
    plots.save(plots.training_curves(records, title=title), run_dir / "elbo.png")


# ------------------------------------------------------------ evaluate, sample


def _load_run(run_dir: pathlib.Path):
    from jlvm import checkpoint

    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{run_dir} holds no run (no config.json); train one with jlvm train.")
    setup = _setup(_read_config(config_path))
    state = _initial_state(setup)
    if checkpoint.latest_step(run_dir / "checkpoints") is None:
        raise UsageError(f"{run_dir} has no complete checkpoint yet; resume its training with "
                         f"jlvm train --out {run_dir} --resume.")
    return setup, checkpoint.restore(run_dir / "checkpoints", state)


def _evaluate(args) -> int:
    if args.num_samples < 1 or args.chunk_size < 1 or args.batch_size < 1 or (
            args.num_examples is not None and args.num_examples < 1):
        raise UsageError("--num-samples, --chunk-size, --batch-size and --num-examples must "
                         "be >= 1.")
    writer = _start_distributed(args)
    setup, states = _load_run(pathlib.Path(args.run_dir))
    mesh = _mesh(args, args.batch_size, setup.config.model)
    for seed, state in _runs(setup.config, states):
        line = _evaluate_one(args, setup, state, mesh)
        if writer:
            print(json.dumps({"run_dir": args.run_dir, "seed": seed, **line}))
    return 0


def _evaluate_one(args, setup: _Setup, state, mesh) -> dict:
    """IS log-likelihood and ELBO of one trained model on --split, as a JSON-ready dict."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jlvm import evaluate, train
    from jlvm.models import gmm

    X = getattr(setup.dataset, args.split)
    if X is None:
        raise UsageError(f"data set {setup.config.data} has no {args.split} split.")
    X = jnp.asarray(X[: args.num_examples])
    key = jax.random.PRNGKey(args.seed)
    mask = None
    if args.missing != "none":
        if setup.config.model not in ("vae", "iwae", "semi") or not setup.dataset.image_shape:
            raise UsageError("--missing needs an encoder model (vae, iwae, semi) on image data.")
        rows = np.arange(X.shape[1]) // setup.dataset.image_shape[1]
        half = setup.dataset.image_shape[0] // 2
        mask = rows >= half if args.missing == "top-half" else rows < half
    started = time.perf_counter()
    if setup.config.model == "gmm":
        log_likelihood = jax.jit(jax.vmap(gmm.log_marginal, in_axes=(None, 0)))(state.params, X)
        elbo = log_likelihood
    else:
        params = _vae_params(setup, state)
        if setup.config.model == "svi":
            # no encoder: each test point gets its own q fitted from the prior, then IS
            mean, log_scale = _fresh_q(setup, state, X, key, 5 * setup.config.inner_steps)
            rows = jnp.concatenate([X, mean, log_scale], axis=1)
            svi_is = functools.partial(_svi_bounds, params, X.shape[1], args.num_samples,
                                       args.chunk_size)
            both = jax.jit(lambda k, r: evaluate.map_over_data(svi_is, k, r, args.batch_size))
            bounds = both(key, rows)
            log_likelihood, elbo = bounds[:, 0], bounds[:, 1]
        else:
            # blocks of rows, so that a long evaluation shows progress (one compiled
            # function serves every full block)
            from tqdm import tqdm

            block = EVAL_BLOCK_BATCHES * args.batch_size
            is_key, elbo_key = jax.random.split(key)
            pieces = []
            with tqdm(total=X.shape[0], unit="example", desc="importance sampling",
                      file=sys.stderr, disable=None) as bar:
                for index, start in enumerate(range(0, X.shape[0], block)):
                    rows = X[start:start + block]
                    pieces.append(train.to_host(evaluate.vae_log_likelihood(
                        jax.random.fold_in(is_key, index), params, rows, args.num_samples,
                        batch_size=args.batch_size, chunk_size=args.chunk_size, mask=mask,
                        mesh=mesh)))
                    bar.update(rows.shape[0])
            log_likelihood = np.concatenate(pieces)
            elbo = evaluate.vae_elbo(elbo_key, params, X, mask=mask, mesh=mesh,
                                     batch_size=args.batch_size)
    log_likelihood, elbo = train.to_host((log_likelihood, elbo))
    seconds = time.perf_counter() - started
    ll_mean, ll_se = evaluate.summary(log_likelihood)
    elbo_mean, elbo_se = evaluate.summary(elbo)
    return {
        "split": args.split, "num_examples": int(X.shape[0]),
        "num_samples": args.num_samples if setup.config.model != "gmm" else None,
        "log_likelihood": round(ll_mean, 4), "log_likelihood_se": round(ll_se, 4),
        "elbo": round(elbo_mean, 4), "elbo_se": round(elbo_se, 4),
        "gap": round(ll_mean - elbo_mean, 4),
        "missing": args.missing,
        "bits_per_dim": round(evaluate.bits_per_dim(
            ll_mean, X.shape[1] if mask is None else int(mask.sum())), 5),
        "seconds": round(seconds, 3)}


def _svi_bounds(params, data_dim, num_samples, chunk_size, key, row):
    """(IS log p(x), ELBO) for one row [x, mean, log_scale] of a fitted per-point q."""
    import jax
    import jax.numpy as jnp

    from jlvm import estimators
    from jlvm.inference import _local
    from jlvm.models import vae

    latent = (row.shape[0] - data_dim) // 2
    x = row[:data_dim]
    phi = (row[data_dim:data_dim + latent], row[data_dim + latent:])
    log_joint = functools.partial(vae.log_joint, params, x)
    is_key, elbo_key = jax.random.split(key)
    return jnp.stack([
        estimators.log_marginal_is(is_key, log_joint, _local.gaussian_q(*phi), num_samples,
                                   chunk_size=min(chunk_size, num_samples)),
        _local.local_elbo(params, x, phi, elbo_key, 1)])


def _sample(args) -> int:
    out = pathlib.Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; choose another --out (nothing was overwritten).")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}.")
    if not out.parent.is_dir():
        raise UsageError(f"folder {out.parent} does not exist.")
    setup, states = _load_run(pathlib.Path(args.run_dir))
    _, state = next(_runs(setup.config, states))  # the first of --num-seeds runs
    import jax

    from jlvm import plots

    samples = _model_samples(setup, state, jax.random.PRNGKey(args.seed), args.n)
    if setup.dataset.image_shape:
        figure = plots.image_grid(samples, setup.dataset.image_shape,
                                  title=f"{args.n} samples, E[x|z], z ~ p(z)")
    else:
        figure = plots.scatter_pairs([samples], ["model samples"])
    plots.save(figure, out)
    print(json.dumps({"out": str(out), "n": args.n}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        return _sample(args)
    except UsageError as error:
        print(f"jlvm {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jlvm {args.command}: interrupted; the last complete checkpoint is kept "
              "(continue with --resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
