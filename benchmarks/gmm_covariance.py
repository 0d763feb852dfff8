"""The Gaussian mixture's covariance types on the bundled digits: jlvm's EM against
scikit-learn's GaussianMixture, same start, same iterations, side by side.

    python benchmarks/gmm_covariance.py [--data {digits-gray,digits}] [--components 10]
        [--iterations 100] [--reg-covar 1e-2] [--repeats 3] [--seed 0]
        [--types full,diag,spherical,tied]

For each covariance type: the start is ``gmm.init_from_data(key, train, K, reg_covar,
covariance_type)`` (K distinct training images as means, the data covariance as the type
keeps it); jlvm runs ``gmm.fit_em`` (float32, one compiled ``lax.scan``), scikit-learn
``GaussianMixture(covariance_type, weights_init, means_init, precisions_init from that
start, tol=0, max_iter=--iterations)`` (float64). Both run exactly --iterations EM
iterations. Reported per implementation: train and test mean log p(x) in nats per image
(log-densities of pixels in [0, 1]: positive, and higher is better), BIC on the training
images (``gmm.bic`` and ``GaussianMixture.bic``; lower is better), seconds of the EM
iterations (jlvm: compiled, the median of --repeats runs; its compilation reported
apart as the first call's excess; scikit-learn: ``fit``, the median of --repeats).
One JSON line per type, then a Markdown table. "digits-gray": the 8x8 digits' intensities
scaled to [0, 1] (1437 training and 360 test images, 64 pixels); "digits" their 0/1
version (a Gaussian fits it poorly; for a quick look).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np

TYPES = ("full", "diag", "spherical", "tied")


def _sklearn(start, train, args):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from jlvm.models import gmm

    covariance_type = gmm.covariance_type(start)
    root = np.asarray(gmm.precisions_cholesky(start), np.float64)  # precision = U U^T
    # scikit-learn's precisions_init: matrices for full and tied, variances' inverses else
    precisions = (root @ np.swapaxes(root, -1, -2) if covariance_type in ("full", "tied")
                  else root**2)
    weights = np.exp(np.asarray(start.logits, np.float64))
    mixture = GaussianMixture(
        n_components=args.components, covariance_type=covariance_type, tol=0.0,
        reg_covar=args.reg_covar, max_iter=args.iterations, init_params="random",
        random_state=args.seed, weights_init=weights / weights.sum(),
        means_init=np.asarray(start.means, np.float64), precisions_init=precisions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(train)
    return mixture


def _timed(function, repeats):
    """(the last result, the seconds of each call)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def row(covariance_type: str, train: np.ndarray, test: np.ndarray, args) -> dict:
    import jax
    import jax.numpy as jnp

    from jlvm.models import gmm

    X, X_test = jnp.asarray(train), jnp.asarray(test)
    start = gmm.init_from_data(jax.random.PRNGKey(args.seed), X, args.components,
                               reg_covar=args.reg_covar, covariance_type=covariance_type)
    jax.block_until_ready(start)

    def fit():
        return jax.block_until_ready(gmm.fit_em(start, X, args.iterations,
                                                reg_covar=args.reg_covar))

    (_, _), first = _timed(fit, 1)  # compiles
    (fitted, _), runs = _timed(fit, args.repeats)
    jlvm_seconds = statistics.median(runs)
    log_marginals = jax.jit(jax.vmap(gmm.log_marginal, in_axes=(None, 0)))
    train64, test64 = np.asarray(train, np.float64), np.asarray(test, np.float64)
    mixture, sklearn_runs = _timed(lambda: _sklearn(start, train64, args), args.repeats)
    return {
        "covariance_type": covariance_type, "components": args.components,
        "iterations": args.iterations, "reg_covar": args.reg_covar,
        "covariance_floats": int(np.size(start[2])),
        "jlvm_train_log_likelihood": float(jnp.mean(log_marginals(fitted, X))),
        "sklearn_train_log_likelihood": float(mixture.score(train64)),
        "jlvm_test_log_likelihood": float(jnp.mean(log_marginals(fitted, X_test))),
        "sklearn_test_log_likelihood": float(mixture.score(test64)),
        "jlvm_bic": float(gmm.bic(fitted, X)), "sklearn_bic": float(mixture.bic(train64)),
        "jlvm_seconds": round(jlvm_seconds, 4),
        "jlvm_compile_seconds": round(max(first[0] - jlvm_seconds, 0.0), 3),
        "sklearn_seconds": round(statistics.median(sklearn_runs), 4),
        "device": str(jax.devices()[0]),
    }


def table(rows: list[dict]) -> list[str]:
    lines = [
        "mean log p(x) in nats per image (higher is better), BIC on the training images "
        "(lower is better), seconds of the EM iterations (jlvm compiled; its compilation "
        "apart); same start, same iterations",
        "| covariance | train log p(x) jlvm | sklearn | test log p(x) jlvm | sklearn "
        "| BIC jlvm | sklearn | seconds jlvm | sklearn | jlvm compile s |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['covariance_type']} | {r['jlvm_train_log_likelihood']:.3f} | "
            f"{r['sklearn_train_log_likelihood']:.3f} | {r['jlvm_test_log_likelihood']:.3f} | "
            f"{r['sklearn_test_log_likelihood']:.3f} | {r['jlvm_bic']:.1f} | "
            f"{r['sklearn_bic']:.1f} | {r['jlvm_seconds']:.3f} | {r['sklearn_seconds']:.3f} | "
            f"{r['jlvm_compile_seconds']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("digits-gray", "digits"), default="digits-gray")
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100, help="EM iterations, both")
    parser.add_argument("--reg-covar", type=float, default=1e-2,
                        help="added to the covariances' diagonals, both (jlvm train's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per implementation")
    parser.add_argument("--seed", type=int, default=0, help="the start's PRNG seed")
    parser.add_argument("--types", default=",".join(TYPES),
                        help="comma-separated covariance types")
    args = parser.parse_args()
    for name in ("components", "iterations", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    types = [t for t in args.types.split(",") if t]
    unknown = sorted(set(types) - set(TYPES))
    if unknown or not types:
        parser.error(f"--types must be some of {','.join(TYPES)}, got {args.types!r}")

    from jlvm import data

    dataset = data.load(args.data)
    rows = []
    for covariance_type in types:
        rows.append(row(covariance_type, dataset.train, dataset.test, args))
        print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
