"""Bounds and log-likelihoods of a trained run, per example: during training (on a fixed
subset) and for ``jlvm evaluate`` (a whole split), through the kind's ``Built``; every
number in the data's own units."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

from jlvm.runs import _interrupt
from jlvm.runs._errors import RunError
from jlvm.runs._setup import Setup, observed_rows
from jlvm.runs.kinds import Evaluation

EVAL_BLOCK_BATCHES = 10  # evaluation reports progress every this many batches


def train_bounds(setup: Setup, state, rows: np.ndarray, split: str, key) -> dict[str, float]:
    """The reported bounds, means over the rows ``rows`` of ``split`` in nats per example,
    as ``{split}_{bound}``: on the training split the examples the run learns from, with
    its holes; on another split its observed (non-NaN) entries."""
    import jax.numpy as jnp

    if split == "train":
        X = setup.data.train_x[rows]
        mask = None if setup.data.train_mask is None else setup.data.train_mask[rows]
        indices = rows
    else:
        X, mask = observed_rows(getattr(setup.dataset, split)[rows])
        if mask is not None:
            kept = mask.any(axis=1)
            X, mask = X[kept], mask[kept]
        X, mask, indices = jnp.asarray(X), None if mask is None else jnp.asarray(mask), None
    bounds = setup.built.bounds(state, X, mask, key, indices)
    return {f"{split}_{name}": float(np.mean(setup.to_file_units(values, mask)))
            for name, values in bounds.items()}


def evaluation_mask(setup: Setup, missing: str, shape: tuple[int, int], seed: int):
    """The evaluation's mask [N, D] (True = observed) for ``--missing``, or None: halves of
    images, or entries missing completely at random with probability P (drawn with
    ``seed``); rows that would observe nothing observe their first entry."""
    from jlvm.runs import _missing

    if missing == "none":
        return None
    kind, _ = _missing.parse_missing(missing)
    if kind in ("top-half", "bottom-half") and not setup.dataset.image_shape:
        raise RunError(f"--missing {kind} needs image data; {setup.dataset.name} holds "
                       "vectors (try --missing mcar:P).")
    mask = _missing.mask_for(missing, shape, setup.dataset.image_shape, seed)
    mask[~mask.any(axis=1), 0] = True
    return mask


def rows_to_score(setup: Setup, X, missing: str, seed: int):
    """(X with missing entries 0, mask [N, D] or None, rows dropped): the rows of X that
    observe something under ``missing`` and X's own NaN."""
    X, mask, kept = _scored_rows(setup, X, missing, seed)
    return X, mask, 0 if kept is None else int((~kept).sum())


def _scored_rows(setup: Setup, X, missing: str, seed: int):
    """(X's kept rows with missing entries 0, their mask or None, kept [N] bool or None
    when every row is kept)."""
    X, holes = observed_rows(X)
    mask = evaluation_mask(setup, missing, tuple(X.shape), seed)
    if holes is not None:
        mask = holes if mask is None else mask & holes
    kept = None
    if mask is not None:
        kept = mask.any(axis=1)  # a row with nothing observed has nothing to score
        if not kept.any():
            raise RunError("every example of the split is missing every entry: there is "
                           "nothing to evaluate.")
        X, mask = X[kept], mask[kept]
    return X, mask, kept


def in_blocks(block_fn, key, X, mask, batch_size: int, desc: str = "evaluating"):
    """block_fn(key_i, X_i, mask_i) on blocks of ``EVAL_BLOCK_BATCHES x batch_size`` rows
    (one compiled function serves every full block), with a progress bar; the results
    concatenated on the host (a dict of arrays or an array)."""
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from jlvm import train

    block = EVAL_BLOCK_BATCHES * batch_size
    pieces = []
    with tqdm(total=X.shape[0], unit="example", desc=desc, file=sys.stderr,
              disable=None) as bar:
        for index, start in enumerate(range(0, X.shape[0], block)):
            rows = slice(start, start + block)
            values = block_fn(jax.random.fold_in(key, index), jnp.asarray(X[rows]),
                              None if mask is None else jnp.asarray(mask[rows]))
            pieces.append(train.to_host(values))
            bar.update(X[rows].shape[0])
            _interrupt.check("nothing was written.")
    if isinstance(pieces[0], dict):
        return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
    return np.concatenate(pieces)


def likelihood_summary(setup: Setup, log_likelihood: np.ndarray, mask, X) -> dict:
    """Mean and standard error of per-example log p(x) in the file's units, with its type
    and, for probabilities, bits per observed dimension."""
    from jlvm import evaluate

    mean, se = evaluate.summary(log_likelihood)
    observed = X.shape[1] if mask is None else float(mask.sum() / mask.shape[0])
    return {"log_likelihood": round(mean, 4), "log_likelihood_se": _round(se),
            "likelihood_type": setup.likelihood_type,
            # bits per dimension compare probabilities of discrete data; a density has none
            "bits_per_dim": (round(-mean / (observed * math.log(2)), 5)
                             if setup.likelihood_type == "probability" and mean <= 0
                             else None)}


def evaluate_split(setup: Setup, state, X, key, *, num_samples: int,
                   chunk_size: int | None, batch_size: int, missing: str, mesh,
                   seed: int = 0, labels=None) -> dict[str, Any]:
    """log p(x) and the ELBO of one trained model on the rows X (NaN = missing), as a
    JSON-ready dict: means and standard errors over the rows, nats per example in the
    data's own units; of the observed entries, log p(x_obs), where X has NaN or
    ``missing`` hides some. ``chunk_size`` None: as many draws as fit a memory budget.
    ``labels`` [N] (or None): the rows' labels, for the kind's ``scores`` (as the adjusted
    Rand index of a clustering), over the rows that observe something."""
    X, mask, kept = _scored_rows(setup, X, missing, seed)
    skipped = 0 if kept is None else int((~kept).sum())
    started = time.perf_counter()
    block_fn = setup.built.evaluator(state, Evaluation(num_samples, chunk_size, batch_size,
                                                       mesh))
    values = in_blocks(block_fn, key, X, mask, batch_size)
    log_likelihood, elbo = (setup.to_file_units(values[name], mask)
                            for name in ("log_likelihood", "elbo"))
    if not (np.all(np.isfinite(log_likelihood)) and np.all(np.isfinite(elbo))):
        raise RunError("evaluation gave a non-finite log-likelihood or ELBO for some "
                       "examples; the checkpoint's parameters may be damaged.")
    from jlvm import evaluate

    summary = likelihood_summary(setup, log_likelihood, mask, X)
    elbo_mean, elbo_se = evaluate.summary(elbo)
    exact = setup.built.exact
    result = {
        "method": "exact" if exact else "is",
        "num_examples": int(X.shape[0]),
        "num_samples": None if exact else num_samples,
        "log_likelihood": summary["log_likelihood"],
        "log_likelihood_se": summary["log_likelihood_se"],
        "elbo": round(elbo_mean, 4), "elbo_se": _round(elbo_se),
        "gap": round(float(np.mean(log_likelihood)) - elbo_mean, 4),
        "missing": missing,
        "likelihood_type": summary["likelihood_type"],
        "bits_per_dim": summary["bits_per_dim"],
        "seconds": round(time.perf_counter() - started, 3)}
    if labels is not None and setup.built.scores is not None:
        labels = np.asarray(labels) if kept is None else np.asarray(labels)[kept]
        result.update(setup.built.scores(state, X, mask, labels))
    if skipped:
        result["examples_with_nothing_observed"] = skipped
    if exact:
        result["exact"] = True  # log p(x) by enumeration, no draws
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


MAX_EXACT_BITS = 20  # jlvm evaluate --exact: at most 2**20 values of z per example


def evaluate_exact(setup: Setup, state, X, *, batch_size: int, missing: str, mesh,
                   seed: int = 0) -> dict[str, Any]:
    """Exact log p(x) (of the observed entries) for the rows X by a sum over every z of
    the prior's finite support (``jlvm.evaluate.log_likelihood_exact``), as a JSON-ready
    dict in the data's own units."""
    from jlvm import estimators, evaluate

    model, params = setup.built.model, setup.built.params(state)
    support = None
    if model.prior is not None:
        try:
            support = estimators.enumerable_support(model.prior(params))
        except ValueError:
            support = None
    if support is None or (support.ndim == 2 and support.shape[1] > MAX_EXACT_BITS):
        raise RunError(f"--exact sums over every z: it needs a prior over at most "
                       f"2**{MAX_EXACT_BITS} values (binary z with --latent-dim <= "
                       f"{MAX_EXACT_BITS}, --prior bernoulli); use --method is or ais.")
    X, mask, skipped = rows_to_score(setup, X, missing, seed)
    started = time.perf_counter()

    def block(_, rows, rows_mask):
        return evaluate.log_likelihood_exact(model, params, rows, batch_size=batch_size,
                                             mask=rows_mask, mesh=mesh)

    import jax

    log_likelihood = setup.to_file_units(
        in_blocks(block, jax.random.PRNGKey(seed), X, mask, batch_size, "enumerating"), mask)
    if not np.all(np.isfinite(log_likelihood)):
        raise RunError("the exact sum gave a non-finite log-likelihood for some examples; "
                       "the checkpoint's parameters may be damaged.")
    result = {"method": "exact", "num_values_of_z": int(support.shape[0]),
              "num_examples": int(X.shape[0]),
              **likelihood_summary(setup, log_likelihood, mask, X), "missing": missing,
              "seconds": round(time.perf_counter() - started, 3), "exact": True}
    if skipped:
        result["examples_with_nothing_observed"] = skipped
    return result
