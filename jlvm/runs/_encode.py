"""``jlvm encode`` and ``jlvm impute``: rows of a split or of an input file through the
trained model, into a new ``.npz``.

encode: features of data through the posterior (``Built.encode``): E_q[z | x] and the
standard deviation of each coordinate of q for a model with a q per example, the
responsibilities p(k | x) for the GMM; the labels of the split where it has them.
impute: every missing (NaN) entry replaced by E[x_d | x_obs] under the model
(``Built.impute``), observed entries copied exactly as read; with ``num_draws`` M, also M
draws from p(x_mis | x_obs) (multiple imputation).

Input files and output values are in the data's own units (a run on a standardized file
standardizes the input and converts back what it writes).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from jlvm.runs._errors import RunError

MAX_ROWS = 2**24  # of an --input file


def read_input(path: str | os.PathLike, data_dim: int) -> np.ndarray:
    """``x`` [N, D] from a ``.npz`` file, as read (NaN where an entry is missing);
    ``RunError`` naming the file and what is wrong with it."""
    from jlvm import _files

    path = pathlib.Path(path)
    try:
        arrays = _files.read_npz(path)
    except (OSError, ValueError) as error:
        raise RunError(_files.describe(error, path)) from None
    if "x" not in arrays:
        raise RunError(f"{path} must hold an array named x [N, {data_dim}], got "
                       f"{', '.join(arrays) or 'no arrays'}.")
    x = arrays["x"]
    if x.dtype.kind not in "biuf":
        raise RunError(f"x in {path} must hold numbers, got dtype {x.dtype}.")
    if x.ndim != 2 or x.shape[1] != data_dim or not 1 <= x.shape[0] <= MAX_ROWS:
        raise RunError(f"x in {path} must have shape [N, {data_dim}] with 1 <= N <= "
                       f"{MAX_ROWS}, got {x.shape}.")
    return x


def _rows(setup, x: np.ndarray, what: str, *, file_units: bool = True) -> tuple[Any, Any]:
    """(x in the model's units, 0 at missing entries, as a JAX array; its mask or None):
    every row must observe something, only NaN may mark a missing entry, and the observed
    values must be ones the model gives a probability to. ``file_units``: x is in the
    data's own units (an input file), not the model's (a split of the run's data)."""
    import jax.numpy as jnp

    values = np.asarray(x, np.float64)
    mask = ~np.isnan(values)
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise RunError(f"row {int(empty[0])} of x is all NaN: there is nothing to {what} "
                       f"({empty.size} such rows).")
    if not np.all(np.isfinite(values[mask])):
        raise RunError("x holds infinite values; only NaN may mark a missing entry.")
    if setup.data.levels == 2 and not np.all((values[mask] == 0) | (values[mask] == 1)):
        raise RunError(f"x must hold 0/1 values at its observed entries (the run's data "
                       f"{setup.dataset.name} is binary), got values in "
                       f"[{values[mask].min():g}, {values[mask].max():g}].")
    if setup.data.units is not None and file_units:
        values = setup.data.units.to_model(values)
    _check_values(setup, values[mask])
    model_units = jnp.asarray(np.where(mask, values, 0.0), jnp.float32)
    return model_units, None if mask.all() else jnp.asarray(mask)


def _check_values(setup, observed: np.ndarray) -> None:
    """The built-in VAE's likelihood gives every observed value a probability."""
    from jlvm.models import likelihoods

    spec = getattr(setup.config, "likelihood", None)
    if spec is None or "likelihood" not in setup.kind.settings:
        return
    try:
        likelihoods.check_values(likelihoods.parse(spec), observed)
    except ValueError as error:
        raise RunError(str(error)) from None


def _write(out: pathlib.Path, arrays: dict) -> None:
    from jlvm import _files

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    try:
        _files.new_file(out, write, suffixes=(".npz",))
    except ValueError as error:
        raise RunError(str(error)) from None


def check_out(out: str | os.PathLike) -> pathlib.Path:
    """A new .npz file may be created at ``out``: checked before any work."""
    from jlvm import _files

    try:
        return _files.check_new(out, suffixes=(".npz",))
    except ValueError as error:
        raise RunError(str(error)) from None


def encode(run, out, *, split: str | None, input_path, num_samples: int,
           seed: int) -> dict[str, Any]:
    """Writes ``out`` (a new .npz) and returns what ``jlvm encode`` prints; see
    ``jlvm.runs.encode``."""
    import jax

    from jlvm.runs import _data, _setup

    out = check_out(out)
    setup = run.setup
    _, state = next(_setup.per_seed(run.config, run.state))  # the first of the seeds
    dataset = setup.dataset
    if input_path is not None:
        x = read_input(input_path, dataset.train.shape[1])
        labels, source = None, str(input_path)
    else:
        x = getattr(dataset, split)
        if x is None:
            raise RunError(f"data set {dataset.name} has no {split} split.")
        labels = {"test": dataset.test_labels, "train": dataset.train_labels}.get(split)
        source = f"{_data.describe(run.config.data)}:{split}"
    X, mask = _rows(setup, x, "encode", file_units=input_path is not None)
    arrays, what = setup.built.encode(state, X, mask, jax.random.PRNGKey(seed), num_samples)
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    arrays["run_seed"] = np.int32(run.config.seed)
    arrays["epoch"] = np.int32(run.step)
    _write(out, arrays)
    return {"out": str(out), "run_dir": str(run.path), "source": source,
            "num_examples": int(x.shape[0]),
            "arrays": {name: list(np.shape(value)) for name, value in arrays.items()},
            "what": what}


def impute(run, input_path, out, *, num_samples: int, num_draws: int,
           seed: int) -> dict[str, Any]:
    """Writes ``out`` (a new .npz) and returns what ``jlvm impute`` prints; see
    ``jlvm.runs.impute``."""
    import jax

    from jlvm.runs import _setup

    out = check_out(out)
    setup = run.setup
    x = read_input(input_path, setup.dataset.train.shape[1])
    X, mask = _rows(setup, x, "impute from")
    _, state = next(_setup.per_seed(run.config, run.state))  # the first of the seeds
    arrays, what = setup.built.impute(state, X, mask, jax.random.PRNGKey(seed), num_samples,
                                      num_draws)
    holes = np.isnan(np.asarray(x, np.float64))
    dtype = x.dtype if x.dtype.kind == "f" else np.float64
    units = setup.data.units
    to_file = (lambda v: np.asarray(v, np.float64)) if units is None else units.to_file
    # observed entries exactly as read (the input's own bits), the imputed ones converted
    arrays["x"] = np.where(holes, to_file(arrays["x"]), x).astype(dtype)
    if "draws" in arrays:
        arrays["draws"] = np.where(holes[None], to_file(arrays["draws"]), x[None]).astype(dtype)
    _write(out, arrays)
    result = {"out": str(out), "run_dir": str(run.path), "num_examples": int(x.shape[0]),
              "missing_entries": int(holes.sum()), "what": what, "draws": num_draws}
    if "effective_sample_size" in arrays:
        result["effective_sample_size_median"] = round(float(np.median(
            arrays["effective_sample_size"])), 1)
    return result
