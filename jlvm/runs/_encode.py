"""``jlvm encode``: features of data through the trained model's posterior p(z | x).

For a model with an encoder (vae, iwae, semi): E_q[z | x] and the standard deviation of
each coordinate of q, exact for the Gaussian families and a Monte Carlo estimate for a
flow; for SVI, a q fitted per example; for the GMM, the responsibilities p(k | x). The
labels of the split come along where the data set has them.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Any

import numpy as np

from jlvm.runs._config import RunError

MAX_ENCODED = 2**24  # rows of an --input file


def read_input(path: str | os.PathLike, data_dim: int) -> np.ndarray:
    """``x`` [N, D] from a ``.npz`` file (NaN where an entry is missing); ``RunError``
    naming the file and what is wrong with it."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise RunError(f"{path} must hold an array named x [N, {data_dim}], got "
                               f"{', '.join(archive.files) or 'no arrays'}.")
            x = archive["x"]
    except FileNotFoundError:
        raise RunError(f"{path} does not exist.") from None
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror or error}.") from None
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise RunError(f"{path} is not a readable .npz file ({error}).") from None
    if x.dtype.kind not in "biuf":
        raise RunError(f"x in {path} must hold numbers, got dtype {x.dtype}.")
    if x.ndim != 2 or x.shape[1] != data_dim or not 1 <= x.shape[0] <= MAX_ENCODED:
        raise RunError(f"x in {path} must have shape [N, {data_dim}] with 1 <= N <= "
                       f"{MAX_ENCODED}, got {x.shape}.")
    return x.astype(np.float32)


def _observed(x: np.ndarray, model: str) -> np.ndarray | None:
    """The observation mask of x (NaN = missing), or None when every entry is there."""
    mask = ~np.isnan(x)
    if mask.all():
        return None
    if not np.all(np.isfinite(x[mask])):
        raise RunError("x holds infinite values; only NaN may mark a missing entry.")
    if model not in ("vae", "iwae", "semi"):
        raise RunError(f"x has missing (NaN) entries, which --model {model}'s encoding does "
                       "not take; encoder models (vae, iwae, semi) do.")
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise RunError(f"row {int(empty[0])} of x is all NaN: there is nothing to encode "
                       f"({empty.size} such rows).")
    return mask


def features(run, state, x: np.ndarray, *, key, num_samples: int,
             batch_size: int = 500) -> tuple[dict[str, np.ndarray], str]:
    """The arrays ``jlvm encode`` writes for the rows of x [N, D] (NaN = missing), and
    what they are, in words."""
    import jax
    import jax.numpy as jnp

    from jlvm.models import gmm, likelihoods, posteriors, vae
    from jlvm.runs import _evaluation, _setup

    config = run.config
    mask = _observed(x, config.model)
    params = _setup.model_params(run.setup, state)
    if config.model != "gmm":
        seen = x if mask is None else x[mask]
        try:
            likelihoods.check_values(likelihoods.parse(config.likelihood), seen)
        except ValueError as error:
            raise RunError(str(error)) from None
    X = jnp.asarray(np.nan_to_num(x))
    if config.model == "gmm":
        resp = np.asarray(jax.jit(jax.vmap(
            lambda row: jax.nn.softmax(gmm.posterior(params, row).logits)))(X))
        return ({"responsibilities": resp, "component": resp.argmax(axis=1).astype(np.int32)},
                "p(k | x), exact")
    if config.model == "svi":
        steps = _evaluation.SVI_TEST_STEPS_FACTOR * config.inner_steps
        mean, log_scale = _evaluation._fresh_q(run.setup, state, X, key, steps)
        return ({"mean": np.asarray(mean), "scale": np.exp(np.asarray(log_scale))},
                f"mean and standard deviations of a q fitted per example ({steps} steps)")

    def one(row, observed, k):
        return posteriors.moments(vae.encoder(params, row, observed), k, num_samples)

    observed = jnp.ones(X.shape, bool) if mask is None else jnp.asarray(mask)
    keys = jax.random.split(key, X.shape[0])
    compute = jax.jit(jax.vmap(one))
    pieces = [compute(X[i:i + batch_size], observed[i:i + batch_size],
                      keys[i:i + batch_size]) for i in range(0, X.shape[0], batch_size)]
    arrays = {"mean": np.concatenate([np.asarray(p[0]) for p in pieces]),
              "scale": np.concatenate([np.asarray(p[1]) for p in pieces])}
    if config.posterior == "flow":
        return arrays, (f"E_q[z | x] and standard deviations of the encoder's q, Monte Carlo "
                        f"over {num_samples} draws (a flow's moments have no closed form)")
    return arrays, "E_q[z | x] and standard deviations of the encoder's q, exact"


def encode(run_dir, out, *, split: str | None, input_path, num_samples: int, seed: int,
           warn) -> dict[str, Any]:
    """Writes ``out`` (a new .npz; never overwritten) and returns what ``jlvm encode``
    prints; see ``jlvm.runs.encode``."""
    import jax

    from jlvm import _files
    from jlvm.runs import _setup, load

    out = pathlib.Path(out)
    if not str(out) or out.name in ("", ".", ".."):
        raise RunError(f"--out must name a file, got {str(out)!r}.")
    if out.suffix != ".npz":
        raise RunError(f"--out must end in .npz (NumPy's archive), got {str(out)!r}.")
    if out.exists():
        raise RunError(f"{out} exists; choose another --out (nothing was overwritten).")
    if not out.parent.is_dir():
        raise RunError(f"folder {out.parent} does not exist.")
    run = load(run_dir, warn=warn)
    _, state = next(_setup.per_seed(run.config, run.state))  # the first of the seeds
    dataset = run.setup.dataset
    if input_path is not None:
        x, labels, source = read_input(input_path, dataset.train.shape[1]), None, \
            str(input_path)
    else:
        x = getattr(dataset, split)
        if x is None:
            raise RunError(f"data set {run.config.data} has no {split} split.")
        labels = {"test": dataset.test_labels, "train": dataset.train_labels}.get(split)
        source = f"{run.config.data}:{split}"
    arrays, what = features(run, state, x, key=jax.random.PRNGKey(seed),
                            num_samples=num_samples)
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    arrays["run_seed"] = np.int32(run.config.seed)
    arrays["epoch"] = np.int32(run.step)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    try:
        _files.write_atomic(out, write, replace=False)
    except FileExistsError:
        raise RunError(f"{out} exists; choose another --out (nothing was overwritten).") \
            from None
    return {"out": str(out), "run_dir": str(run.path), "source": source,
            "num_examples": int(x.shape[0]),
            "arrays": {name: list(np.shape(value)) for name, value in arrays.items()},
            "what": what}
