"""Gradient estimators for binary latent features, side by side: a VAE with z in {0,1}^L
(``vae.model(..., prior="bernoulli", posterior="bernoulli")``) trained at the same budget
with each estimator, its training ELBO, test log-likelihood and gradient SNR.

    JLVM_DATA_DIR=... python benchmarks/binary_latents.py [--data {binarized-mnist,digits}]
        [--latent-dim 200] [--models linear,nonlinear]
        [--estimators score_function,vimco5,vimco50,disarm] [--epochs 20]
        [--report-every 5] [--batch-size 100] [--learning-rate 3e-4]
        [--snr-examples 100] [--snr-draws 100] [--test-examples 1000]
        [--is-samples 1000] [--seed 0]

Models (the RELAX paper's two, Grathwohl et al. 2018, Table 1): "linear", no hidden layer
(logits of q(z | x) and of p(x | z) affine in x and z), and "nonlinear", two tanh layers of
200 in the encoder and in the decoder; a factorized Bernoulli prior with learned logits.
Estimators, each with ``jlvm.inference.amortized`` and Adam:

- ``score_function``: the ELBO with two draws and the leave-one-out baseline
  (``jlvm.elbo(..., 2, grad_estimator="score_function")``);
- ``disarm``: the ELBO with one antithetic pair (``grad_estimator="disarm"``, 2 draws);
- ``vimcoK``: the IWAE bound with K draws and VIMCO's leave-one-out control variates
  (``jlvm.iwae_bound(..., K, grad_estimator="score_function")``); it trains a different
  objective (tighter for K > 1), and costs K/2 times the others' decoder passes a step.

Every --report-every epochs: the training ELBO (the mean over the whole training split of
a one-draw ELBO, nats per image; for VIMCO too, so the rows compare), and the gradient's
signal-to-noise ratio |E g| / sd g of the estimator's own training loss on a fixed batch of
--snr-examples training images over --snr-draws independent draws
(``jlvm.gradient_statistics``), its median over the encoder's parameters and over the
decoder's. At the end: the test log-likelihood by importance sampling with the encoder as
proposal (``jlvm.evaluate.log_likelihood``, K = --is-samples, on a seeded subset of
--test-examples test images; a stochastic lower bound of log p(x) in expectation) and,
where L <= 20, exactly (``jlvm.evaluate.log_likelihood_exact``, a sum over 2^L z), and the
seconds spent training (compilation included, reports excluded). One JSON line per report,
one per finished row, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time

import _protocol as protocol
import numpy as np

HIDDEN = {"linear": (), "nonlinear": (200, 200)}
ESTIMATORS = ("score_function", "disarm", "vimco5", "vimco50")
EXACT_BITS = 20  # up to here the test log p(x) is also summed exactly over every z


def learner_settings(estimator: str) -> dict:
    """``inference.amortized``'s objective, draws and gradient estimator for ``estimator``
    ("score_function", "disarm" or "vimcoK")."""
    if estimator.startswith("vimco"):
        return {"objective": "iwae", "num_samples": int(estimator[5:]),
                "grad_estimator": "score_function"}
    return {"objective": "elbo", "num_samples": 2, "grad_estimator": estimator}


def snr_objective(model, settings: dict, x):
    """(key, params) -> the estimator's batch-mean bound on ``x`` [B, D]: the loss whose
    gradient the step takes (with the sign flipped, which leaves the SNR as it is)."""
    import functools

    import jax
    import jax.numpy as jnp

    import jlvm

    bound = jlvm.elbo if settings["objective"] == "elbo" else jlvm.iwae_bound

    def objective(key, params):
        def one(k, xi):
            return bound(k, functools.partial(model.log_joint, params, xi),
                         model.encoder(params, xi), settings["num_samples"],
                         grad_estimator=settings["grad_estimator"])

        return jnp.mean(jax.vmap(one)(jax.random.split(key, x.shape[0]), x))

    return objective


def median_snr(tree) -> float:
    """The median SNR over the parameters of ``tree`` (the mean would be ruled by a few
    parameters whose gradient hardly varies, a saturated unit's; an infinite SNR, a gradient
    with no spread, left out)."""
    import jax

    values = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(tree)])
    return float(np.median(values[np.isfinite(values)]))


def run_row(kind: str, estimator: str, dataset, args, report) -> dict:
    import jax
    import optax

    import jlvm
    from jlvm import evaluate, inference, train
    from jlvm.models import vae

    data_train, data_test = jax.numpy.asarray(dataset.train), jax.numpy.asarray(dataset.test)
    model = vae.model(dataset.train.shape[1], args.latent_dim, hidden_dims=HIDDEN[kind],
                      activation="tanh", prior="bernoulli", posterior="bernoulli")
    settings = learner_settings(estimator)
    learner = inference.amortized(model, optax.adam(args.learning_rate), **settings)
    epoch = train.make_epoch(learner, args.batch_size)
    key = jax.random.PRNGKey(args.seed)
    init_key, snr_key, elbo_key, test_key = jax.random.split(key, 4)
    state = learner.init(init_key, data_train[:args.batch_size])
    snr_batch = data_train[np.random.default_rng(args.seed).choice(
        data_train.shape[0], args.snr_examples, replace=False)]
    objective = snr_objective(model, settings, snr_batch)
    training_seconds, reports = 0.0, []
    for number in range(1, args.epochs + 1):
        began = time.perf_counter()
        state, _ = jax.block_until_ready(epoch(state, data_train))
        training_seconds += time.perf_counter() - began
        if number % args.report_every and number != args.epochs:
            continue
        elbo = evaluate.elbo(jax.random.fold_in(elbo_key, number), model, state.params,
                             data_train, 1, batch_size=1000)
        stats = jlvm.gradient_statistics(jax.random.fold_in(snr_key, number), objective,
                                         state.params, args.snr_draws)
        reports.append({"model": kind, "estimator": estimator, "epoch": number,
                        "train_elbo": round(float(np.mean(elbo)), 3),
                        "snr_encoder": round(median_snr(stats.snr.encoder), 4),
                        "snr_decoder": round(median_snr(stats.snr.decoder), 4),
                        "training_seconds": round(training_seconds, 1)})
        report(reports[-1])
    rows = np.random.default_rng(args.seed).choice(
        data_test.shape[0], min(args.test_examples, data_test.shape[0]), replace=False)
    test = np.asarray(evaluate.log_likelihood(test_key, model, state.params,
                                              data_test[np.sort(rows)], args.is_samples))
    exact = None
    if args.latent_dim <= EXACT_BITS:  # and exactly, summed over the 2^L values of z
        exact = np.asarray(evaluate.log_likelihood_exact(model, state.params,
                                                         data_test[np.sort(rows)]))
    settings_text = (f"{settings['objective']}, K = {settings['num_samples']}, "
                     f"{settings['grad_estimator']}")
    return {"model": kind, "estimator": estimator, "learner": settings_text,
            "data": dataset.name, "latent_dim": args.latent_dim, "epochs": args.epochs,
            "train_elbo": reports[-1]["train_elbo"],
            "test_log_likelihood_is": round(float(np.mean(test)), 3),
            "test_log_likelihood_is_se": round(float(np.std(test, ddof=1)
                                                     / np.sqrt(test.size)), 3),
            "test_log_likelihood_exact": None if exact is None else round(
                float(np.mean(exact)), 3),
            "test_examples": int(test.size), "is_samples": args.is_samples,
            "snr_encoder": [r["snr_encoder"] for r in reports],
            "snr_decoder": [r["snr_decoder"] for r in reports],
            "snr_epochs": [r["epoch"] for r in reports],
            "training_seconds": round(training_seconds, 1)}


def table(rows: list[dict]) -> list[str]:
    epochs = rows[0]["snr_epochs"] if rows else []
    lines = ["binary latent VAE: training ELBO (one draw, whole training split) and test "
             "log p(x) by IS with the encoder (K draws), nats per image, higher is better; "
             f"median gradient SNR over the encoder's parameters at epochs "
             f"{', '.join(map(str, epochs))} (higher: less noise); training seconds "
             "on this machine",
             "| model | estimator | objective | train ELBO | test log p(x), IS | "
             "test log p(x), exact | encoder SNR by epoch | decoder SNR (last) | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        snr = " / ".join(f"{value:.3f}" for value in r["snr_encoder"])
        exact = ("not enumerable" if r["test_log_likelihood_exact"] is None
                 else f"{r['test_log_likelihood_exact']:.2f}")
        lines.append(f"| {r['model']} | {r['estimator']} | {r['learner']} | "
                     f"{r['train_elbo']:.2f} | {r['test_log_likelihood_is']:.2f} +- "
                     f"{r['test_log_likelihood_is_se']:.2f} | {exact} | {snr} | "
                     f"{r['snr_decoder'][-1]:.3f} | {r['training_seconds']:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    protocol.add_data_arguments(parser)
    parser.add_argument("--latent-dim", type=int, default=200, help="binary latents L")
    parser.add_argument("--models", default="linear,nonlinear",
                        help=f"comma-separated, of {', '.join(HIDDEN)}")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                        help="comma-separated: score_function, disarm, vimcoK (K >= 2)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--report-every", type=int, default=5, help="epochs between reports")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--snr-examples", type=int, default=100)
    parser.add_argument("--snr-draws", type=int, default=100)
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--is-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = args.models.split(",")
    estimators = args.estimators.split(",")
    if any(kind not in HIDDEN for kind in models):
        parser.error(f"--models must be among {', '.join(HIDDEN)}, got {args.models!r}")
    for estimator in estimators:
        if estimator in ("score_function", "disarm"):
            continue
        if not (estimator.startswith("vimco") and estimator[5:].isdigit()
                and int(estimator[5:]) >= 2):
            parser.error(f"--estimators: each of score_function, disarm or vimcoK with an "
                         f"integer K >= 2, got {estimator!r}")
    protocol.check_positive(parser, args, ("latent_dim", "epochs", "report_every", "batch_size",
                                           "test_examples", "is_samples"))
    if args.snr_examples < 1 or args.snr_draws < 2:
        parser.error("--snr-examples must be >= 1 and --snr-draws >= 2")
    from jlvm import data

    dataset = data.load(args.data)
    rows = []
    for kind in models:
        for estimator in estimators:
            rows.append(run_row(kind, estimator, dataset, args,
                                lambda line: print(json.dumps(line), flush=True)))
            print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
