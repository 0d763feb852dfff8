"""Train-time missingness of a run: which entries of the training split it may see.

``jlvm train --missing {top-half,bottom-half,mcar:P}`` makes the mask from the run's seed,
``--missing-file MASK.npz`` reads it, and NaN in the training data marks missing entries
too. The mask [N, D] (True = observed) is stored in the run directory as
``train_mask.npz`` when the run starts, so that ``--resume`` and ``jlvm evaluate`` see the
very same holes whatever happens to the file it came from. Training examples that observe
nothing carry no information and are left out, with a warning that counts them.
"""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np

from jlvm.runs._config import Config, RunError, parse_missing

MASK_NAME = "train_mask.npz"
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
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "mask" not in archive.files:
                raise RunError(f"{path} must hold a boolean array named mask {list(shape)}, got "
                               f"{', '.join(archive.files) or 'no arrays'}.")
            mask = archive["mask"]
    except FileNotFoundError:
        raise RunError(f"{path} does not exist.") from None
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror or error}.") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise RunError(f"{path} is not a readable .npz file ({error}).") from None
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
            raise RunError(f"the run's {MASK_NAME} has shape {list(mask.shape)}, not the "
                           f"training split's {list(X.shape)}; it belongs to other data.")
    elif config.missing_file is not None:
        mask = read_file(config.missing_file, X.shape)
    else:
        mask = mask_for(config.missing, X.shape, dataset.image_shape, config.seed)
    holes = np.isnan(X)
    if holes.any():
        mask = ~holes if mask is None else mask & ~holes
    return mask


def _stored(run_path: pathlib.Path) -> dict | None:
    """The arrays of a run directory's ``train_mask.npz`` (None if the run saw complete
    data); ``RunError`` naming the file if it is damaged."""
    path = run_path / MASK_NAME
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "mask" not in archive.files:
                raise RunError(f"{path} holds no mask (damaged or edited); the run's training "
                               "holes are lost, train a new run.")
            return {name: archive[name] for name in archive.files}
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror or error}.") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise RunError(f"{path} is damaged ({error}); the run's training holes are lost, "
                       "train a new run.") from None


def read_stored(run_path: pathlib.Path) -> np.ndarray | None:
    """The mask stored in a run directory, or None if the run saw complete data."""
    stored = _stored(run_path)
    return None if stored is None else stored["mask"]


def read_encoder_input(run_path: pathlib.Path) -> bool | None:
    """Whether the encoder of a run learned from incomplete data takes the mask beside x
    (``vae.init(encoder_sees_mask=...)``), as ``train_mask.npz`` records it; None for a
    complete-data run. Runs written before the record existed took the mask (True)."""
    stored = _stored(run_path)
    if stored is None:
        return None
    return "encoder_input" not in stored or str(stored["encoder_input"]) == "x-and-mask"


def store(run_path: pathlib.Path, mask: np.ndarray, encoder_sees_mask: bool = False) -> None:
    """Writes ``train_mask.npz`` (the mask, and what the encoder takes: "x" with missing
    entries 0, or "x-and-mask") atomically (never half-written)."""
    from jlvm import _files

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, mask=mask, encoder_input=np.array(
                "x-and-mask" if encoder_sees_mask else "x"))

    _files.write_atomic(run_path / MASK_NAME, write)
