"""``jlvm impute``: every missing (NaN) entry of an input file replaced under the run's model.

The GMM's E[x_mis | x_obs] is exact (``gmm.conditional_mean``); the latent variable models
estimate it by self-normalized importance sampling with the encoder's q(z | x_obs) as the
proposal (for SVI, a q fitted to each row), ``jlvm.missing.impute``. With ``--draws M``,
multiple imputation: M draws from p(x_mis | x_obs) per row.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from jlvm.runs._config import RunError

ROWS_AT_ONCE = 50  # rows imputed in one compiled call (each holds a chunk of K draws)


def _check_rows(x: np.ndarray, config) -> np.ndarray:
    """The mask of x (NaN = missing), with every row observing something and observed
    values the model gives a probability to."""
    from jlvm.models import likelihoods

    mask = ~np.isnan(x)
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise RunError(f"row {int(empty[0])} of x is all NaN: there is nothing to impute "
                       f"from ({empty.size} such rows).")
    if not np.all(np.isfinite(x[mask])):
        raise RunError("x holds infinite values; only NaN may mark a missing entry.")
    if config.model != "gmm":
        try:
            likelihoods.check_values(likelihoods.parse(config.likelihood), x[mask])
        except ValueError as error:
            raise RunError(str(error)) from None
    return mask


def imputed(run, state, x: np.ndarray, *, key, num_samples: int,
            num_draws: int) -> dict[str, np.ndarray]:
    """``x`` (NaN replaced by E[x_mis | x_obs]) and, with ``num_draws``, ``draws`` [M, N, D];
    also ``effective_sample_size`` [N] of the importance weights for the latent models."""
    import jax
    import jax.numpy as jnp

    from jlvm import missing
    from jlvm.models import gmm
    from jlvm.runs import _evaluation, _setup

    config = run.config
    mask = _check_rows(x, config)
    X, M = jnp.asarray(np.nan_to_num(x)), jnp.asarray(mask)
    params = _setup.model_params(run.setup, state)
    keys = jax.random.split(key, X.shape[0])
    if config.model == "gmm":
        mean = jax.jit(jax.vmap(gmm.conditional_mean, in_axes=(None, 0, 0)))(params, X, M)
        result = {"x": np.asarray(mean)}
        if num_draws:
            draws = jax.jit(jax.vmap(lambda k, x, m: gmm.conditional_draws(
                k, params, x, m, num_draws), in_axes=(0, 0, 0)))(keys, X, M)
            result["draws"] = np.asarray(jnp.swapaxes(draws, 0, 1))
        return result
    model = run.setup.model
    fitted = None
    if config.model == "svi":  # no encoder: a q fitted to each row's observed entries
        fitted = _evaluation._fresh_q(run.setup, state, X, key,
                                      _evaluation.SVI_TEST_STEPS_FACTOR * config.inner_steps,
                                      M)

    def one(k, x, m, phi):
        from jlvm.models import posteriors

        q = None if phi is None else posteriors.diagonal(*phi)
        return missing.impute(k, model, params, x, m, num_samples, num_draws=num_draws, q=q,
                              chunk_size=min(num_samples, 200))

    compute = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None if fitted is None else 0)))
    pieces = []
    for start in range(0, X.shape[0], ROWS_AT_ONCE):
        rows = slice(start, start + ROWS_AT_ONCE)
        phi = None if fitted is None else (fitted[0][rows], fitted[1][rows])
        pieces.append(jax.tree_util.tree_map(np.asarray,
                                             compute(keys[rows], X[rows], M[rows], phi)))
    result = {"x": np.concatenate([p.mean for p in pieces]),
              "effective_sample_size": np.concatenate([p.effective_sample_size
                                                       for p in pieces])}
    if num_draws:
        result["draws"] = np.swapaxes(np.concatenate([p.draws for p in pieces]), 0, 1)
    return result


def impute(run_dir, input_path, out, *, num_samples: int, num_draws: int, seed: int,
           warn) -> dict[str, Any]:
    """Writes ``out`` (a new .npz; never overwritten); see ``jlvm.runs.impute``."""
    import jax

    from jlvm import _files
    from jlvm.runs import _encode, _setup, load

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
    x = _encode.read_input(input_path, run.setup.dataset.train.shape[1])
    _, state = next(_setup.per_seed(run.config, run.state))  # the first of the seeds
    arrays = imputed(run, state, x, key=jax.random.PRNGKey(seed), num_samples=num_samples,
                     num_draws=num_draws)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    try:
        _files.write_atomic(out, write, replace=False)
    except FileExistsError:
        raise RunError(f"{out} exists; choose another --out (nothing was overwritten).") \
            from None
    exact = run.config.model == "gmm"
    result = {"out": str(out), "run_dir": str(run.path), "num_examples": int(x.shape[0]),
              "missing_entries": int(np.isnan(x).sum()),
              "what": ("E[x_mis | x_obs], exact" if exact else
                       f"E[x_mis | x_obs] by self-normalized importance sampling, K="
                       f"{num_samples} draws of "
                       + ("a q fitted per row" if run.config.model == "svi"
                          else "the encoder's q(z | x_obs)")),
              "draws": num_draws}
    if not exact:
        ess = arrays["effective_sample_size"]
        result["effective_sample_size_median"] = round(float(np.median(ess)), 1)
    return result
