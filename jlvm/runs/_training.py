"""The training loop of a run directory: epochs, per-epoch metrics, checkpoints, figures.

It knows a model only through its kind's ``Built`` (``jlvm.runs.kinds``): the learner, the
bounds it reports and the figures it draws.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable

import numpy as np

from jlvm.runs import _directory, _evaluation, _figures, _interrupt, _setup
from jlvm.runs._directory import RunDirectory
from jlvm.runs._errors import RunError


def _summaries(metrics, num_seeds: int) -> list[dict[str, float]]:
    """Per-seed epoch means of the stacked step metrics ([steps] or [steps, S])."""
    from jlvm import train

    host = train.to_host(metrics)
    if num_seeds == 1:
        return [train.summarize(host)]
    return [{name: float(np.mean(values[:, index])) for name, values in host.items()}
            for index in range(num_seeds)]


def progress_line(reported, records: list[dict], likelihood_type: str) -> str:
    """One console line: the reported bounds (the trained one first) at the end of the
    epoch, averaged over the seeds, train and valid."""

    def describe(key):
        values = [r[key] for r in records]
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return (f"{sum(values) / len(values):.3f} (mean of {len(values)} seeds, "
                f"{min(values):.3f} to {max(values):.3f})")

    (field, name), others = reported[0], reported[1:]
    parts = [f"train {name} {describe('train_' + field)}"]
    if "valid_" + field in records[0]:
        parts.append(f"valid {name} {describe('valid_' + field)}")
    parts += [f"train {other} {describe('train_' + key)}" for key, other in others]
    unit = (" nats per example (log-density of continuous x)" if likelihood_type == "density"
            else " nats per example")
    return ", ".join(parts) + unit


def run_training(config, run: RunDirectory, *, resume: bool, writer: bool,
                 checkpoint_every: int, eval_every: int, devices, distributed: bool,
                 warn: Callable[[str], None]) -> dict:
    """Trains ``config`` in the claimed ``run`` (see ``jlvm.runs.train``); returns the
    result record. A new run that fails before its first checkpoint is discarded."""
    try:
        return _train(config, run, resume=resume, writer=writer,
                      checkpoint_every=checkpoint_every, eval_every=eval_every,
                      devices=devices, distributed=distributed, warn=warn)
    except BaseException:
        if writer and not resume and not _has_checkpoint(run):
            _directory.discard(run)  # nothing worth keeping; the retry starts clean
        raise


def _has_checkpoint(run: RunDirectory) -> bool:
    from jlvm import checkpoint

    try:
        return bool(checkpoint.steps(run.checkpoints))
    except Exception:  # unreadable: keep everything rather than guess
        return True


def _train(config, run, *, resume, writer, checkpoint_every, eval_every, devices,
           distributed, warn):
    from tqdm import tqdm

    from jlvm import checkpoint, train

    stored = run.read_config()[1] if resume else None
    setup = _setup.build(config, run, stored, warn=warn if writer else lambda m: None)
    config = setup.config
    if setup.dropped and writer:
        warn(f"{setup.dropped} training examples observe nothing under the run's mask and "
             "are left out.")
    mesh = _setup.resolve_mesh(devices, setup.batch_size, setup, distributed=distributed)
    state = _setup.initial_state(setup)
    start_epoch, records, last_saved = 1, [], None
    if resume:
        if run.checkpoints.exists() and not run.checkpoints.is_dir():
            raise RunError(f"{run.checkpoints} is not a folder; nothing was changed.")
        if checkpoint.steps(run.checkpoints):
            restored = run.restore(state, warn=warn, quarantine=writer)
            state, start_epoch, last_saved = restored.state, restored.step + 1, restored.step
            recorded = run.read_metrics()
            records = [r for r in recorded if r.get("epoch", 0) <= restored.step]
            newest = max((r.get("epoch", 0) for r in recorded), default=0)
            if newest > restored.step and not restored.damaged:
                # a checkpoint that was never completed (the process stopped while orbax
                # wrote it) is no checkpoint: say that those epochs are trained again
                warn(f"{run.metrics} records epoch {newest}, but the newest complete "
                     f"checkpoint is {restored.step}: training continues from epoch "
                     f"{restored.step + 1}, and epochs {restored.step + 1}..{newest} are "
                     "trained again.")
        elif run.read_metrics():
            warn(f"{run.path} has no checkpoint to continue from: training starts again at "
                 "epoch 1 with the stored settings.")
    if writer:
        if setup.train_mask_stored is not None and not resume:
            run.write_mask(setup.train_mask_stored)
        run.write_config(config, setup.facts)
        if not resume:  # a resumed run's records are rewritten after its next epoch
            run.write_metrics(records)
    seeds = config.num_seeds
    steps = setup.steps_per_epoch
    name = setup.dataset.name
    bar = tqdm(total=config.epochs * steps, initial=(start_epoch - 1) * steps, unit="step",
               desc=f"{_title(config, name)}" + (f", {seeds} seeds" if seeds > 1 else ""),
               file=sys.stderr, disable=None if writer else True, mininterval=0.5)

    def progress(done: int) -> None:  # after each chunk of steps: a safe place to stop
        bar.update(done)
        _interrupt.check()

    epoch_fn = train.make_epoch(setup.learner, setup.batch_size, progress=progress, mesh=mesh,
                                num_seeds=seeds if seeds > 1 else None)
    if mesh is not None:  # once, not each epoch
        setup.train_data = train.replicate(setup.train_data, mesh)
    saved: list[int] = []
    started = time.perf_counter()
    with contextlib.closing(bar):
        try:
            _interrupt.check()
            records, state = _epochs(config, run, setup, epoch_fn, state, records, start_epoch,
                                     checkpoint_every, eval_every, writer, bar, started,
                                     saved=saved.append)
        except _interrupt.Interrupted as stop:
            last = saved[-1] if saved else last_saved
            kept = (f"checkpoint {last} is kept: continue with jlvm train --out {run.path} "
                    "--resume" if last is not None else "no checkpoint was written, so "
                    "nothing was kept")
            raise _interrupt.Interrupted(f"{str(stop).rstrip('.')}; {kept}.") from None
    final = [r for r in records if r["epoch"] == config.epochs]
    if writer and final:
        _figures.write_all(setup, next(_setup.per_seed(config, train.to_host(state)))[1],
                           run.path, records)
    if not writer:  # process 0 reports
        return {}
    return _result(config, run, setup, final, time.perf_counter() - started)


def _title(config, data_name: str) -> str:
    from jlvm.runs import _user

    model = config.model.rpartition(":")[2] if _user.is_spec(config.model) else config.model
    return f"{model} on {data_name}"


def _epochs(config, run, setup, epoch_fn, state, records, start_epoch, checkpoint_every,
            eval_every, writer, bar, started, saved):
    """Epochs start_epoch..config.epochs: train, record, checkpoint. Returns (records,
    state); ``saved(epoch)`` is told of each checkpoint written."""
    import jax

    from jlvm import checkpoint, train

    seeds = config.num_seeds
    last_saved = start_epoch - 1 if start_epoch > 1 else None
    eval_rows = _setup.subset(setup.data.train_x.shape[0], _setup.EVAL_SUBSET, 0)
    valid = setup.dataset.valid
    valid_rows = None if valid is None else _setup.subset(valid.shape[0], _setup.EVAL_SUBSET,
                                                          0)
    reported = setup.built.reported
    for epoch in range(start_epoch, config.epochs + 1):
        state, metrics = epoch_fn(state, setup.train_data)
        summaries = _summaries(metrics, seeds)
        failed = [config.seed + i for i, summary in enumerate(summaries)
                  if summary.pop("finite") < 1.0]
        if failed:
            kept = (f"checkpoint {last_saved} is intact" if last_saved is not None
                    else "no checkpoint was written, so nothing was kept")
            which = f" (seed {', '.join(map(str, failed))})" if seeds > 1 else ""
            raise RunError(f"training produced a non-finite loss or gradient in epoch "
                           f"{epoch}{which} (the parameters were not updated with it); "
                           f"{kept}. Lower --learning-rate, or choose another --seed.")
        # one process: evaluate and save the arrays where they are; several: this
        # process's copy of them (the parameters are replicated on every device)
        local_state = state if jax.process_count() == 1 else train.to_host(state)
        evaluated = epoch == 1 or epoch % eval_every == 0 or epoch == config.epochs
        for (seed, run_state), summary in zip(_setup.per_seed(config, local_state),
                                              summaries, strict=True):
            record = {"epoch": epoch, "seed": seed, "step": int(run_state.step)}
            record.update({f"train_{name}_during_epoch": value
                           for name, value in summary.items()})
            if evaluated:
                key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), epoch)
                record.update(_evaluation.train_bounds(setup, run_state, eval_rows, "train",
                                                       key))
                if valid_rows is not None:
                    record.update(_evaluation.train_bounds(setup, run_state, valid_rows,
                                                           "valid", key))
            record["seconds"] = round(time.perf_counter() - started, 3)
            records.append(record)
        if writer:
            # before the checkpoint: a process killed between the two leaves a record of an
            # epoch that no checkpoint holds, which --resume drops and trains again; the
            # other order would leave a checkpoint whose epoch has no record, for good
            run.write_metrics(records)
        if epoch % checkpoint_every == 0 or epoch == config.epochs:
            try:
                checkpoint.save(run.checkpoints, epoch, local_state)
            except checkpoint.CheckpointError as error:
                if writer:  # the records again end where the checkpoints do, if the disk
                    # lets us (otherwise --resume drops the unsaved epochs' records itself)
                    with contextlib.suppress(OSError):
                        run.write_metrics([r for r in records if last_saved is not None
                                           and r["epoch"] <= last_saved])
                raise RunError(str(error)) from None
            last_saved = epoch
            saved(epoch)
        if writer and evaluated and (epoch == config.epochs
                                     or epoch % max(1, config.epochs // 10) == 0):
            bar.write(f"epoch {epoch:4d}: " + progress_line(
                reported, records[-seeds:], setup.likelihood_type), file=sys.stderr)
        _interrupt.check()
    return records, state


def _result(config, run: RunDirectory, setup, final: list[dict], seconds: float) -> dict:
    """The record ``jlvm train`` prints: the reported bounds, the trained one first."""
    names = [f"train_{field}" for field, _ in setup.built.reported]
    field = setup.built.reported[0][0]
    result = {"run_dir": str(run.path), "model": config.model, "epochs": config.epochs,
              "likelihood_type": setup.likelihood_type}
    if final and "valid_" + field in final[0]:
        names.append(f"valid_{field}")
    for name in names:
        values = [r[name] for r in final]
        result[name] = float(np.mean(values)) if values else None
        if config.num_seeds > 1:
            result[name + "_per_seed"] = values
    if config.num_seeds > 1:
        result["seeds"] = [r["seed"] for r in final]
    result["seconds"] = round(seconds, 3)
    return result
