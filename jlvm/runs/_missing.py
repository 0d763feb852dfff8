"""Train-time missingness of a run: which entries of the training split it may see.

``jlvm train --missing {top-half,bottom-half,mcar:P}`` makes the mask from the run's seed,
``--missing-file MASK.npz`` reads it, and NaN in the training data marks missing entries
too. The mask [N, D] (True = observed) is stored in the run directory
(``RunDirectory.write_mask``) when the run starts, so that ``--resume`` and ``jlvm
evaluate`` see the very same holes whatever happens to the file it came from. Training
examples that observe nothing carry no information and are left out, with a warning that
counts them.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jlvm.runs._config import Config, parse_missing
from jlvm.runs._errors import RunError

_SALT = 20261130  # the mask's random stream is its own, not the training's


def half_mask(image_shape: tuple[int, int], missing: str) -> np.ndarray:
    """[H*W] True = observed, for ``missing`` "top-half" or "bottom-half"."""
    rows = np.arange(image_shape[0] * image_shape[1]) // image_shape[1]
    half = image_shape[0] // 2
    return rows >= half if missing == "top-half" else rows < half


def mask_for(spec: str, shape: tuple[int, int], image_shape, seed: int) -> np.ndarray | None:
    """The mask [N, D] a missingness spec gives for data of ``shape`` (None for "none"):
    halves of every image, or each entry missing with probability P ("mcar:P") drawn with
    ``seed``."""
    kind, rate = parse_missing(spec)
    if kind == "none":
        return None
    if kind in ("top-half", "bottom-half"):
        return np.broadcast_to(half_mask(image_shape, kind), shape).copy()
    return np.random.default_rng([seed, _SALT]).random(shape) >= rate


def read_file(path: str | pathlib.Path, shape: tuple[int, int]) -> np.ndarray:
    """The boolean array ``mask`` of shape ``shape`` in a .npz; ``RunError`` naming the file
    and what is wrong."""
    from jlvm import _files

    path = pathlib.Path(path)
    try:
        arrays = _files.read_npz(path)
    except (OSError, ValueError) as error:
        raise RunError(_files.describe(error, path)) from None
    if "mask" not in arrays:
        raise RunError(f"{path} must hold a boolean array named mask {list(shape)}, got "
                       f"{', '.join(arrays) or 'no arrays'}.")
    mask = arrays["mask"]
    if mask.dtype != bool:
        if mask.dtype.kind not in "biu" or not np.all((mask == 0) | (mask == 1)):
            raise RunError(f"mask in {path} must be boolean (True = observed), got dtype "
                           f"{mask.dtype}.")
        mask = mask.astype(bool)
    if tuple(mask.shape) != tuple(shape):
        raise RunError(f"mask in {path} must have the training split's shape {list(shape)}, "
                       f"got {list(mask.shape)}.")
    return mask


def train_mask(config: Config, dataset, stored: np.ndarray | None = None) -> np.ndarray | None:
    """The run's mask of the training split [N, D] (True = observed), or None when it sees
    everything: the ``stored`` one of an existing run, else the one its settings make; NaN
    in the data is missing whatever they say."""
    X = np.asarray(dataset.train)
    if stored is not None:
        mask = stored
        if tuple(mask.shape) != X.shape:
            raise RunError(f"the run's train_mask.npz has shape {list(mask.shape)}, not the "
                           f"training split's {list(X.shape)}; it belongs to other data.")
    elif config.missing_file is not None:
        mask = read_file(config.missing_file, X.shape)
    else:
        mask = mask_for(config.missing, X.shape, dataset.image_shape, config.seed)
    holes = np.isnan(X)
    if holes.any():
        mask = ~holes if mask is None else mask & ~holes
    return mask
