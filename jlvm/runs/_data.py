"""A run's data: a bundled data set by name, or a file of your own, and its units.

    --data digits | digits-gray | binarized-mnist | blobs | lecture-2d     (bundled)
    --data FILE.npz    arrays train [, valid, test, train_labels, test_labels], or x [, labels]
    --data FILE.npy    one array [N, D]
    --data FILE.csv    numeric columns, an optional header row; an empty cell or NaN is missing

A file without a test split has round(0.1 N) rows, chosen with the run's seed, held out as
its test split (``test_rows``: 0-based rows of the file, the test split in that order; the
training split is the other rows in file order). Binary files ({0, 1} only) are modelled
as they are; any other file is standardized per column with the training split's mean and
standard deviation over its observed entries (a constant column keeps scale 1), and every
number jlvm reports or writes is converted back to the file's units: a log-density of a
row is the model's log-density of the standardized row minus the sum of log std over the
observed entries. The run directory records the file's SHA-256, the test rows and the
standardization, so that a resumed or evaluated run sees exactly its own data, or is
refused if the file changed.
"""

from __future__ import annotations

import csv
import hashlib
import math
import pathlib
from typing import Any, NamedTuple

import numpy as np

from jlvm.runs._errors import RunError

FILE_SUFFIXES = (".npz", ".npy", ".csv")
TEST_FRACTION = 0.1  # of a file's rows, held out when it brings no test split
MAX_ROWS = 2**24
_SPLIT_NAMES = ("train", "valid", "test", "train_labels", "test_labels")


def is_file_spec(data: Any) -> bool:
    """Whether ``data`` names a file (by its suffix) rather than a bundled data set."""
    return isinstance(data, str) and pathlib.Path(data).suffix.lower() in FILE_SUFFIXES


def check_spec(data: Any) -> None:
    """``RunError`` unless ``data`` is a bundled name or a path ending in a known suffix."""
    from jlvm import data as data_module

    if isinstance(data, str) and (data in data_module.NAMES or is_file_spec(data)):
        return
    raise RunError(f"--data must be one of {', '.join(data_module.NAMES)} or a file "
                   f"FILE{', FILE'.join(FILE_SUFFIXES)}, got {data!r}.")


def reads_data_path(data: Any) -> bool:
    """Whether the bundled set ``data`` is read from ``--data-path`` (binarized MNIST)."""
    from jlvm import data as data_module

    return data in data_module.FILE_NAMES


def kind_of(data: Any, image_shape: Any = None):
    """What the values of ``data`` are, known without reading it (``jlvm.data.Kind``), or
    None for a file (known once it is read)."""
    from jlvm import data as data_module

    return data_module.KINDS.get(data) if isinstance(data, str) else None


class Units(NamedTuple):
    """A per-column standardization: model units = (file units - mean) / scale."""

    mean: np.ndarray  # [D] float64
    scale: np.ndarray  # [D] float64, > 0

    def to_model(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.scale).astype(np.float32)

    def to_file(self, x: Any, dtype: Any = np.float64) -> np.ndarray:
        return (np.asarray(x, np.float64) * self.scale + self.mean).astype(dtype)

    def log_scale(self, mask: Any, rows: int) -> np.ndarray:
        """sum over each row's observed entries of log scale_d: [rows] (what a log-density
        in model units exceeds one in file units by)."""
        logs = np.log(self.scale)
        if mask is None:
            return np.full(rows, logs.sum())
        return np.asarray(mask, np.float64) @ logs


class RunData(NamedTuple):
    """dataset: a ``jlvm.data.Dataset`` in the model's units; units: ``Units`` or None (the
    values are the file's); levels: 2 for binary data, M for values on M gray levels,
    None for real numbers; facts: what config.json records of the data. Once the run's
    training mask is known: train_x [N, D], the training examples it learns from (those
    that observe something), 0 at missing entries, and train_mask [N, D] (None when
    complete)."""

    dataset: Any
    units: Units | None
    levels: int | None
    facts: dict
    train_x: Any = None
    train_mask: Any = None


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(config, run_path: pathlib.Path | None = None, stored: dict | None = None) -> RunData:
    """The data ``config`` names, in model units; ``stored``: the facts a run directory
    recorded of it (a file's hash, test rows and standardization), which a new run
    computes and an existing one must match. ``run_path``: where a relative path in a
    stored config.json points (data the run directory keeps itself)."""
    from jlvm import data as data_module

    if config.data in data_module.NAMES:
        try:
            dataset = data_module.load(config.data, path=config.data_path)
        except OSError as error:  # FileNotFoundError, PermissionError, ...
            raise RunError(str(error) if not error.filename else
                           f"cannot read {error.filename}: {error.strerror}.") from None
        except ValueError as error:
            raise RunError(str(error)) from None
        if config.image_shape is not None and tuple(config.image_shape) != tuple(
                dataset.image_shape or ()):
            raise RunError(f"--image-shape {' '.join(map(str, config.image_shape))} does not "
                           f"apply to {config.data}, whose shape is known "
                           f"({dataset.image_shape or 'vectors'}); leave it out.")
        return RunData(dataset, None, data_module.KINDS[config.data].levels,
                       {"source": config.data})
    path = pathlib.Path(config.data)
    if not path.is_absolute() and run_path is not None:
        path = run_path / path
    return _from_file(path, config, stored)


def _from_file(path: pathlib.Path, config, stored: dict | None) -> RunData:
    from jlvm import data as data_module

    digest = _sha256_or_error(path)
    if stored and stored.get("sha256") not in (None, digest):
        raise RunError(f"{path} has changed since the run was trained (its SHA-256 differs "
                       "from the one in config.json): the run's splits and units would no "
                       "longer be its own; restore the file or train a new run.")
    splits = read(path)
    rows = splits["train"].shape[0]
    test_rows = None
    if splits.get("test") is None:
        if stored and "test_rows" in stored:
            test_rows = np.asarray(stored["test_rows"], np.int64)
        else:
            count = round(TEST_FRACTION * rows)
            if count < 1 or count >= rows:
                raise RunError(f"{path} has {rows} rows and no test split: holding out "
                               f"round({TEST_FRACTION} N) = {count} rows leaves no test or no "
                               "training split; give at least 6 rows, or a test split.")
            test_rows = np.random.default_rng(config.seed).choice(rows, count, replace=False)
        held = np.zeros(rows, bool)
        held[test_rows] = True
        for name, source in (("test", "train"), ("test_labels", "train_labels")):
            if splits.get(source) is not None:
                splits[name] = splits[source][test_rows]
        for name in ("train", "train_labels"):
            if splits.get(name) is not None:
                splits[name] = splits[name][~held]
    every = np.concatenate([splits[s] for s in ("train", "valid", "test")
                            if splits.get(s) is not None])
    seen = every[~np.isnan(every)]
    binary = bool(np.all((seen == 0) | (seen == 1)))
    units = None
    if not binary:
        if stored and "mean" in stored:
            units = Units(np.asarray(stored["mean"], np.float64),
                          np.asarray(stored["scale"], np.float64))
        else:
            units = _standardization(splits["train"], path)
        for name in ("train", "valid", "test"):
            if splits.get(name) is not None:
                splits[name] = units.to_model(splits[name])
    image_shape = None if config.image_shape is None else tuple(config.image_shape)
    if image_shape is not None and image_shape[0] * image_shape[1] != every.shape[1]:
        raise RunError(f"--image-shape {image_shape[0]} {image_shape[1]} holds "
                       f"{image_shape[0] * image_shape[1]} values, but the rows of {path} have "
                       f"{every.shape[1]}.")
    dataset = data_module.Dataset(
        path.name, splits["train"].astype(np.float32),
        None if splits.get("valid") is None else splits["valid"].astype(np.float32),
        splits["test"].astype(np.float32), splits.get("train_labels"),
        splits.get("test_labels"), binary, image_shape)
    facts = {"source": str(path), "sha256": digest}
    if test_rows is not None:
        facts["test_rows"] = [int(r) for r in test_rows]
    if units is not None:
        facts["mean"] = [float(v) for v in units.mean]
        facts["scale"] = [float(v) for v in units.scale]
    return RunData(dataset, units, 2 if binary else None, facts)


def _sha256_or_error(path: pathlib.Path) -> str:
    try:
        return sha256(path)
    except FileNotFoundError:
        raise RunError(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise RunError(f"{path} is a folder; --data takes a file.") from None
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror or error}.") from None


def _standardization(train: np.ndarray, path: pathlib.Path) -> Units:
    observed = ~np.isnan(train)
    empty = np.flatnonzero(~observed.any(axis=0))
    if empty.size:
        raise RunError(f"column {int(empty[0])} (0-based) of {path}'s training split holds "
                       f"no value ({empty.size} such columns): it cannot be standardized; "
                       "drop it.")
    values = np.where(observed, train, 0.0).astype(np.float64)
    counts = observed.sum(axis=0)
    mean = values.sum(axis=0) / counts
    variance = (np.where(observed, train - mean, 0.0) ** 2).sum(axis=0) / counts
    scale = np.sqrt(variance)
    # a constant column keeps scale 1 (as scikit-learn's StandardScaler does)
    scale = np.where(scale > 0, scale, 1.0)
    return Units(mean, scale)


def read(path: pathlib.Path) -> dict[str, np.ndarray | None]:
    """The splits of a data file: ``train`` [N, D] (float64, NaN = missing) and those of
    ``valid``, ``test``, ``train_labels``, ``test_labels`` it has (None otherwise)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        splits = {"train": _read_csv(path)}
    elif suffix == ".npy":
        splits = {"train": _read_npy(path)}
    else:
        splits = _read_npz(path)
    width = splits["train"].shape[1]
    for name in ("valid", "test"):
        if splits.get(name) is not None and splits[name].shape[1] != width:
            raise RunError(f"{name} in {path} has {splits[name].shape[1]} columns, train has "
                           f"{width}.")
    for name in ("train_labels", "test_labels"):
        rows_of = name.removesuffix("_labels")
        if splits.get(name) is not None:
            labels = splits[name]
            if labels.ndim != 1 or splits.get(rows_of) is None or \
                    labels.shape[0] != splits[rows_of].shape[0]:
                raise RunError(f"{name} in {path} must have shape [N] with the N rows of "
                               f"{rows_of}, got {labels.shape}.")
    return splits


def _rows(array: np.ndarray, what: str) -> np.ndarray:
    """A numeric [N, D] array as float64, only NaN for a missing entry."""
    if array.dtype.kind not in "biuf":
        raise RunError(f"{what} must hold numbers, got dtype {array.dtype}.")
    if array.ndim != 2 or not 1 <= array.shape[0] <= MAX_ROWS or array.shape[1] < 1:
        raise RunError(f"{what} must have shape [N, D] with 1 <= N <= {MAX_ROWS} and D >= 1, "
                       f"got {array.shape}.")
    array = array.astype(np.float64)
    if np.any(np.isinf(array)):
        row, column = np.argwhere(np.isinf(array))[0]
        raise RunError(f"{what} holds an infinite value (row {row}, column {column}, "
                       "0-based); only NaN (or an empty CSV cell) marks a missing entry.")
    return array


def _read_npy(path: pathlib.Path) -> np.ndarray:
    from jlvm import _files

    try:
        array = _files.read_npy(path)
    except (OSError, ValueError) as error:
        raise RunError(_files.describe(error, path)) from None
    return _rows(array, str(path))


def _read_npz(path: pathlib.Path) -> dict[str, np.ndarray | None]:
    from jlvm import _files

    try:
        arrays = _files.read_npz(path)
    except (OSError, ValueError) as error:
        raise RunError(_files.describe(error, path)) from None
    names = set(arrays)
    if "x" in names:
        extra = names - {"x", "labels"}
        if extra:
            raise RunError(f"{path} holds x and {', '.join(sorted(extra))}: give either x [, "
                           "labels] or train [, valid, test, train_labels, test_labels].")
        splits = {"train": _rows(arrays["x"], f"x in {path}"),
                  "train_labels": arrays.get("labels")}
    else:
        extra = names - set(_SPLIT_NAMES)
        if "train" not in names or extra:
            raise RunError(f"{path} must hold an array x [N, D] (and labels [N]), or train "
                           f"[, valid, test, train_labels, test_labels]; it holds "
                           f"{', '.join(sorted(names)) or 'no arrays'}.")
        splits = {name: arrays.get(name) for name in _SPLIT_NAMES}
        for name in ("train", "valid", "test"):
            if splits[name] is not None:
                splits[name] = _rows(splits[name], f"{name} in {path}")
    for name in ("train_labels", "test_labels"):
        labels = splits.get(name)
        if labels is not None and (labels.dtype.kind not in "biuf" or (
                labels.dtype.kind == "f" and not np.all(labels == np.round(labels)))):
            raise RunError(f"the labels in {path} must be whole numbers, got dtype "
                           f"{labels.dtype}.")
        if labels is not None:
            splits[name] = labels.astype(np.int64)
    return splits


def _read_csv(path: pathlib.Path) -> np.ndarray:
    """A numeric CSV: an optional header row (kept if any of its cells is not a number),
    then one row per example; an empty cell, NaN or nan is a missing entry."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist.") from None
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror or error}.") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise RunError(f"{path} is not a readable CSV file ({error}).") from None
    lines = [(number, row) for number, row in enumerate(lines, 1)
             if any(cell.strip() for cell in row)]
    if lines and not all(_number(cell) is not None for cell in lines[0][1]):
        lines = lines[1:]  # a header row
    if not lines:
        raise RunError(f"{path} holds no rows of numbers.")
    width = len(lines[0][1])
    values = np.empty((len(lines), width))
    for index, (number, row) in enumerate(lines):
        if len(row) != width:
            raise RunError(f"line {number} of {path} has {len(row)} cells; the first row of "
                           f"numbers has {width}.")
        for column, cell in enumerate(row):
            value = _number(cell)
            if value is None:
                raise RunError(f"line {number}, column {column + 1} of {path} is {cell!r}, not "
                               "a number (an empty cell or NaN marks a missing entry).")
            values[index, column] = value
    return _rows(values, str(path))


def _number(cell: str) -> float | None:
    text = cell.strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def write(path: pathlib.Path, dataset: Any) -> None:
    """A ``jlvm.data.Dataset`` given from Python kept as a ``.npz`` data file (atomically),
    so that the run's later commands read the very same data."""
    from jlvm import _files

    arrays = {name: np.asarray(getattr(dataset, name)) for name in _SPLIT_NAMES
              if getattr(dataset, name, None) is not None}

    def save(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    _files.write_atomic(path, save)


def describe(data: str) -> str:
    """The data's name for titles and messages: a bundled name, or the file's name."""
    return pathlib.Path(data).name if is_file_spec(data) else data
