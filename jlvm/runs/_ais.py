"""``jlvm evaluate --method ais`` and ``--method bdmc``: annealed importance sampling for any
run whose model has a continuous latent (``jlvm.evaluate.log_likelihood_ais``,
``jlvm.ais.bdmc``), through the run's ``jlvm.Model`` alone, in the data's own units."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jlvm.runs import _evaluation
from jlvm.runs._errors import RunError
from jlvm.runs._setup import Setup


def _start(model) -> str:
    """AIS starts at the encoder's q(z | x) where the model has one (closer to p(z | x):
    fewer steps for the same accuracy), else at the prior."""
    return "encoder" if model.encoder is not None else "prior"


def _settings(num_steps: int, num_chains: int, initial: str) -> dict:
    from jlvm import ais

    return {"ais_steps": num_steps, "num_chains": num_chains, "initial": initial,
            "schedule": "sigmoidal", "num_leapfrog": 10,
            "step_size": f"tuned on a pilot of {ais.PILOT_CHAINS} chains per example"}


def _run(what: str, compute):
    """compute(), its ValueError/TypeError (a model AIS cannot take) as one RunError line."""
    try:
        return compute()
    except (ValueError, TypeError) as error:
        raise RunError(f"--method {what}: {' '.join(str(error).split())}") from None


def evaluate_ais(setup: Setup, state, X, key, *, num_steps: int, num_chains: int,
                 batch_size: int, missing: str, mesh, seed: int = 0) -> dict[str, Any]:
    """Forward AIS estimates of log p(x) (of the observed entries) for the rows X: their
    mean and standard error in the data's own units, as a JSON-ready dict."""
    from jlvm import evaluate

    model, params = setup.built.model, setup.built.params(state)
    if model.prior is None and model.encoder is None:
        raise RunError("--method ais needs the model's prior or its encoder as AIS's start; "
                       "this model has neither.")
    initial = _start(model)
    X, mask, skipped = _evaluation.rows_to_score(setup, X, missing, seed)
    started = time.perf_counter()

    def block(k, rows, rows_mask):
        return evaluate.log_likelihood_ais(k, model, params, rows, num_steps,
                                           num_chains=num_chains, initial=initial,
                                           batch_size=batch_size, mask=rows_mask, mesh=mesh)

    values = _run("ais", lambda: _evaluation.in_blocks(block, key, X, mask, batch_size,
                                                       "annealing"))
    log_likelihood = setup.to_file_units(values, mask)
    if not np.all(np.isfinite(log_likelihood)):
        raise RunError("AIS gave a non-finite log-likelihood for some examples; the "
                       "checkpoint's parameters may be damaged.")
    result = {"method": "ais", **_settings(num_steps, num_chains, initial),
              "num_examples": int(X.shape[0]),
              **_evaluation.likelihood_summary(setup, log_likelihood, mask, X),
              "missing": missing, "seconds": round(time.perf_counter() - started, 3)}
    if skipped:
        result["examples_with_nothing_observed"] = skipped
    return result


def bdmc(setup: Setup, state, key, *, num_examples: int, num_steps: int, num_chains: int,
         batch_size: int) -> dict[str, Any]:
    """The BDMC sandwich on ``num_examples`` points simulated from the trained model: the
    means (and standard errors) of forward AIS (a stochastic lower bound of log p(x)),
    reverse AIS (an upper bound) and their gap, in the data's own units."""
    from jlvm import ais, evaluate

    model, params = setup.built.model, setup.built.params(state)
    if model.prior is None or model.decoder is None:
        raise RunError("--method bdmc simulates data from the model: it needs "
                       "model.prior and model.decoder, and this model lacks "
                       f"{'model.prior' if model.prior is None else 'model.decoder'}.")
    initial = _start(model)
    started = time.perf_counter()
    count = np.zeros((num_examples, 0))  # in_blocks cuts rows; each block simulates its own

    def block(k, rows, _):
        sandwich = ais.bdmc(k, model, params, rows.shape[0], num_steps, num_chains=num_chains,
                            initial=initial, batch_size=batch_size)
        return {"lower": sandwich.lower, "upper": sandwich.upper}

    values = _run("bdmc", lambda: _evaluation.in_blocks(block, key, count, None, batch_size,
                                                        "bidirectional AIS"))
    lower, upper = (setup.to_file_units(values[name], None) for name in ("lower", "upper"))
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
        raise RunError("BDMC gave a non-finite bound for some simulated examples; the "
                       "checkpoint's parameters may be damaged.")
    result = {"method": "bdmc", **_settings(num_steps, num_chains, initial),
              "num_examples": num_examples, "data": "simulated from the model"}
    for name, values in (("log_likelihood_lower", lower), ("log_likelihood_upper", upper),
                         ("gap", upper - lower)):
        mean, se = evaluate.summary(values)
        result[name], result[f"{name}_se"] = round(mean, 4), _evaluation._round(se)
    result["likelihood_type"] = setup.likelihood_type
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result
