"""The life of a run directory: claimed by one process, never overwritten, never mixed.

    RUN_DIR/config.json      what was trained, and the facts later commands need
                             (written atomically)
    RUN_DIR/metrics.jsonl    one JSON object per epoch and seed (rewritten atomically)
    RUN_DIR/checkpoints/     orbax checkpoints, the two newest kept
    RUN_DIR/train_mask.npz   the training split's mask (True = observed), for a run that
                             learns from incomplete data
    RUN_DIR/data.npz         the data, for a run given its data set from Python
    RUN_DIR/*.png            figures, written when training ends
    RUN_DIR/.jlvm.lock       held (flock) by the process training in RUN_DIR

``RunDirectory`` is the one owner of these files: nothing else reads or writes them.

The lock is taken before anything is checked or written, so of two ``jlvm train --out D``
started together exactly one owns D and the other is refused; the kernel releases it when
the owner exits, however it exits (kill -9 too), so a stale lock never blocks a retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

from jlvm import _files
from jlvm.runs._errors import RunError

LOCK_NAME = ".jlvm.lock"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
CHECKPOINTS_NAME = "checkpoints"
MASK_NAME = "train_mask.npz"
DATA_NAME = "data.npz"
DAMAGED_NAME = "damaged-checkpoints"  # unreadable checkpoints are moved here on --resume
# of config.json: format 1 (jlvm 0.1) had the config and data_dim, steps_per_epoch; 2 adds
# the facts of the data and of the model (``Stored``) and calls hidden "hidden_dims"
FORMAT = 2


def _strerror(error: OSError) -> str:
    return error.strerror or str(error)


class RunDirectory:
    """Paths of one run directory (nothing on disk is touched by creating one)."""

    def __init__(self, path: str | os.PathLike):
        if not str(path):
            raise RunError("the run directory must be a non-empty path.")
        self.path = pathlib.Path(path)
        self.config = self.path / CONFIG_NAME
        self.metrics = self.path / METRICS_NAME
        self.checkpoints = self.path / CHECKPOINTS_NAME
        self.mask = self.path / MASK_NAME
        self.data = self.path / DATA_NAME
        self.created = False  # set by ``claim``: whether it made the directory

    def __str__(self) -> str:
        return str(self.path)

    def holds_run(self) -> bool:
        return any(p.exists() for p in (self.config, self.metrics, self.checkpoints))

    def occupied(self) -> RunError:
        """The refusal to start a new run here, saying what the directory holds."""
        has_checkpoint = self.checkpoints.is_dir() and any(
            p.name.isdigit() for p in self.checkpoints.iterdir())
        if not has_checkpoint and self.config.is_file():
            return RunError(f"{self.path} holds a run that never reached a checkpoint (killed "
                            "before its first?); pass --resume to start it again with its "
                            "stored settings, or remove it (nothing was overwritten).")
        return RunError(f"{self.path} already holds a run; pass --resume to continue it or "
                        "choose a new --out (nothing was overwritten).")

    def read_config(self):
        """(``Config``, ``Stored``) of config.json; ``RunError`` naming the file if it is
        missing, unreadable, truncated, or holds unknown keys or invalid values."""
        from jlvm.runs import _config

        path = self.config
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.path} holds no run (no config.json); train one with "
                           "jlvm train.") from None
        except OSError as error:
            raise RunError(f"cannot read {path}: {_strerror(error)}.") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise RunError(f"{path} is not valid JSON (truncated or edited?): {error}.") \
                from None
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise RunError(f"{path} has no \"config\" object; it was not written by jlvm "
                           "train.")
        if stored.get("format", 1) not in (1, FORMAT):
            raise RunError(f"{path} has format {stored.get('format')!r}; this jlvm reads "
                           f"formats 1 and {FORMAT}.")
        try:
            config = _config.from_dict(stored["config"])
        except RunError as error:
            raise RunError(f"{path} holds an invalid configuration: {error}") from None
        facts = stored.get("facts", {})
        if not isinstance(facts, dict):
            raise RunError(f"{path} has a \"facts\" entry that is not an object (edited?).")
        if stored.get("format", 1) == 1 and self.mask.exists():
            # written before config.json kept it: what train_mask.npz says the encoder took
            facts = {**facts, "train_mask": True, "model": {
                "encoder_sees_mask": self._legacy_encoder_input()}}
        return config, Stored(facts)

    def write_config(self, config, facts: dict[str, Any]) -> None:
        """Writes config.json atomically: the format, the config and the run's facts."""
        from jlvm.runs import _config

        stored = {"format": FORMAT, "config": _config.as_dict(config), "facts": facts}
        _files.write_text(self.config, _files.dumps(stored, indent=2) + "\n")

    def read_mask(self):
        """The training split's mask [N, D] in train_mask.npz, or None if there is none;
        ``RunError`` naming the file if it is damaged."""
        arrays = self._mask_arrays()
        return None if arrays is None else arrays["mask"]

    def _mask_arrays(self) -> dict | None:
        if not self.mask.exists():
            return None
        try:
            arrays = _files.read_npz(self.mask)
        except (OSError, ValueError) as error:
            raise RunError(f"{self.mask} is damaged or unreadable "
                           f"({_files.describe(error, self.mask)}); the run's training "
                           "holes are lost, train a new run.") from None
        if "mask" not in arrays or arrays["mask"].dtype != bool or arrays["mask"].ndim != 2:
            raise RunError(f"{self.mask} holds no boolean mask [N, D] (damaged or edited); "
                           "the run's training holes are lost, train a new run.")
        return arrays

    def _legacy_encoder_input(self) -> bool:
        """Runs written before config.json recorded it: whether their encoder took the mask
        beside x, as train_mask.npz says (those before that record existed did)."""
        arrays = self._mask_arrays()
        return "encoder_input" not in arrays or str(arrays["encoder_input"]) == "x-and-mask"

    def write_mask(self, mask) -> None:
        """Writes train_mask.npz atomically."""
        import numpy as np

        def write(temporary: str) -> None:
            with open(temporary, "wb") as handle:
                np.savez_compressed(handle, mask=mask)

        _files.write_atomic(self.mask, write)

    def read_metrics(self) -> list[dict]:
        """The records in metrics.jsonl ([] if there is none)."""
        try:
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise RunError(f"cannot read {self.metrics}: {_strerror(error)}.") from None
        try:
            return [json.loads(line) for line in lines if line.strip()]
        except ValueError as error:
            raise RunError(f"{self.metrics} is not JSON lines ({error}).") from None

    def write_metrics(self, records: list[dict]) -> None:
        _files.write_json_lines(self.metrics, records)

    def restore(self, like, *, warn, quarantine: bool = False):
        """The newest intact checkpoint (``checkpoint.Restored``), warning (one line each)
        about damaged newer ones; with ``quarantine`` (resuming) those are moved to
        ``damaged-checkpoints/`` so that training can write their steps again."""
        from jlvm import checkpoint

        try:
            restored = checkpoint.restore_intact(self.checkpoints, like)
        except checkpoint.CheckpointError as error:
            raise RunError(str(error)) from None
        for step, reason in restored.damaged:
            moved = ""
            if quarantine:
                target = self.path / DAMAGED_NAME / str(step)
                suffix = 1
                while target.exists():
                    target = self.path / DAMAGED_NAME / f"{step}-{suffix}"
                    suffix += 1
                target.parent.mkdir(exist_ok=True)
                shutil.move(self.checkpoints / str(step), target)
                moved = f"; moved to {target}"
            warn(f"checkpoint {step} in {self.checkpoints} is unreadable ({reason}); using "
                 f"checkpoint {restored.step}{moved}.")
        return restored


@contextlib.contextmanager
def claim(path: str | os.PathLike, *, resume: bool) -> Iterator[RunDirectory]:
    """Owns ``path`` for the ``with`` block: exclusive against other jlvm processes.

    A new run (``resume=False``) needs a directory that holds no run (it is created if
    needed); a resumed one needs one that does. Temporaries left by a killed writer are
    removed. Yields the ``RunDirectory``; ``created`` says whether this claim made it.
    """
    run = RunDirectory(path)
    if run.path.exists() and not run.path.is_dir():
        raise RunError(f"{run.path} exists and is not a directory; choose another --out.")
    if resume and not run.config.is_file():
        raise RunError(f"--resume: {run.path} holds no run (no config.json); start one "
                       "without --resume.")
    created = not run.path.exists()
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create the run directory {run.path}: "
                       f"{_strerror(error)}.") from None
    try:
        handle = os.open(run.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        if created:
            with contextlib.suppress(OSError):
                run.path.rmdir()
        raise RunError(f"cannot write in the run directory {run.path}: "
                       f"{_strerror(error)}.") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run.path} is in use by another jlvm process; nothing was "
                           "changed.") from None
        if not resume and run.holds_run():
            raise run.occupied()
        _files.remove_stale_temporaries(run.path)
        run.created = created
        yield run
    finally:
        os.close(handle)  # releases the lock


class Stored(dict):
    """The facts a run directory keeps beside its config (config.json's "facts"): "data"
    (the data file's hash, test rows, standardization), "model" (what its kind recorded:
    whether its encoder takes the mask, a model file's hash...), "train_mask" (whether
    train_mask.npz holds the training holes), "data_dim", "steps_per_epoch"."""

    @property
    def data(self) -> dict:
        return self.get("data", {})

    @property
    def model(self) -> dict:
        return self.get("model", {})


def discard(run: RunDirectory) -> None:
    """Removes what a new run wrote before its first checkpoint (call it holding the claim),
    so that a failed start leaves nothing that blocks the retry; the directory itself goes
    too if the claim created it."""
    for path in (run.config, run.metrics, run.mask, run.data):
        path.unlink(missing_ok=True)
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    _files.remove_stale_temporaries(run.path)
    if run.created:
        (run.path / LOCK_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run.path.rmdir()  # only if nothing else is in it
