"""The ``jlvm`` command.

    jlvm fit-gmm [--components K] [--iters N] [--seed S]

fits a Gaussian mixture by EM to scikit-learn's bundled digits and prints, per iteration
block, the mean log-likelihood; at the end one JSON line with the train and test
log-likelihood (nats per image) and the agreement of the clusters with the digit labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jlvm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit-gmm", help="EM for a Gaussian mixture on the bundled digits")
    fit.add_argument("--components", type=_positive, default=10, help="mixture components K")
    fit.add_argument("--iters", type=_positive, default=100, help="EM iterations")
    fit.add_argument("--reg-covar", type=float, default=1e-2,
                     help="added to each covariance's diagonal (pixels are in [0, 1])")
    fit.add_argument("--seed", type=int, default=0, help="PRNG seed of the initialization")
    return parser


def _fit_gmm(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    from sklearn.metrics import adjusted_rand_score

    from jlvm import data
    from jlvm.models import gmm

    split = data.digits()
    train, test = jnp.asarray(split.train), jnp.asarray(split.test)
    params = gmm.init_from_data(jax.random.PRNGKey(args.seed), train, args.components,
                                reg_covar=args.reg_covar)
    start = time.perf_counter()
    # EM in blocks of 10 compiled iterations, so progress shows while it runs
    trace = []
    done = 0
    while done < args.iters:
        block = min(10, args.iters - done)
        params, block_trace = gmm.fit_em(params, train, block, reg_covar=args.reg_covar)
        trace.extend(float(v) for v in block_trace)
        done += block
        print(f"EM iteration {done:4d}/{args.iters}: mean log p(x) = {trace[-1]:.3f} nats",
              file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    train_ll = float(jnp.mean(jax.vmap(gmm.log_marginal, in_axes=(None, 0))(params, train)))
    test_ll = float(jnp.mean(jax.vmap(gmm.log_marginal, in_axes=(None, 0))(params, test)))
    clusters = jax.vmap(lambda x: jnp.argmax(gmm.posterior(params, x).logits))(test)
    return {
        "model": "gmm",
        "data": "digits",
        "components": args.components,
        "iters": args.iters,
        "train_log_likelihood": round(train_ll, 4),
        "test_log_likelihood": round(test_ll, 4),
        "test_adjusted_rand_index": round(float(adjusted_rand_score(split.test_labels,
                                                                    clusters)), 4),
        "seconds": round(seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fit-gmm":
        if not args.reg_covar > 0:
            print("jlvm: --reg-covar must be > 0 (digits have constant pixels)", file=sys.stderr)
            return 2
        print(json.dumps(_fit_gmm(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
