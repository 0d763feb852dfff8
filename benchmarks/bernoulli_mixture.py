"""The mixture of Bernoullis clustering binary digits: exact test log-likelihood, agreement
with the labels, seconds per EM iteration, at several numbers of components.

    python benchmarks/bernoulli_mixture.py [--data {binarized-mnist,digits}]
        [--components 10,50,100] [--iterations 100] [--seed 0]

For each K: the start ``bernoulli_mixture.init_from_data(PRNGKey(seed), train, K)`` (each
component halfway between a random training image and the pixel means), then
``bernoulli_mixture.fit_em`` for --iterations EM iterations (one compiled ``lax.scan``,
float32). Reported: the mean log p(x) of the training and test images in nats per image
(exact: a logsumexp over the K components; higher is better), the adjusted Rand index of
the most probable component against the test labels (scikit-learn's
``adjusted_rand_score``; 1 = the labels' partition, 0 = chance) where the data has labels,
seconds per EM iteration (the compiled loop's time over --iterations; its compilation
reported apart as the first call's excess). One JSON line per K, then a Markdown table.

binarized-mnist: the statically binarized MNIST (50,000 training and 10,000 test images,
784 pixels; ``$JLVM_DATA_DIR`` or --data-path); its files hold no labels, so no Rand index.
digits: scikit-learn's 8x8 digits thresholded at 1/2 (1,437 training and 360 test images,
64 pixels), with labels.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def row(num_components: int, dataset, args) -> dict:
    import jax
    import jax.numpy as jnp
    from sklearn.metrics import adjusted_rand_score

    from jlvm.models import bernoulli_mixture as bm

    train, test = jnp.asarray(dataset.train), jnp.asarray(dataset.test)
    start = bm.init_from_data(jax.random.PRNGKey(args.seed), train, num_components)
    began = time.perf_counter()
    jax.block_until_ready(bm.fit_em(start, train, args.iterations))
    first = time.perf_counter() - began
    began = time.perf_counter()
    fitted, trace = jax.block_until_ready(bm.fit_em(start, train, args.iterations))
    seconds = time.perf_counter() - began
    marginal = jax.jit(jax.vmap(bm.log_marginal, in_axes=(None, 0)))
    test_log_p = np.asarray(marginal(fitted, test))
    components = np.asarray(jax.jit(jax.vmap(
        lambda x: bm.posterior(fitted, x).logits))(test)).argmax(axis=1)
    labels = dataset.test_labels
    return {"data": dataset.name, "components": num_components,
            "iterations": args.iterations,
            "train_log_likelihood": round(float(np.mean(marginal(fitted, train))), 3),
            "test_log_likelihood": round(float(np.mean(test_log_p)), 3),
            "test_log_likelihood_se": round(float(np.std(test_log_p, ddof=1)
                                                  / np.sqrt(test_log_p.size)), 3),
            "trace_never_decreased": bool(np.all(np.diff(np.asarray(trace)) >= -1e-4)),
            "adjusted_rand_index": None if labels is None else round(
                float(adjusted_rand_score(labels, components)), 4),
            "components_used": int(np.unique(components).size),
            "seconds_per_iteration": round(seconds / args.iterations, 5),
            "compile_seconds": round(max(first - seconds, 0.0), 2)}


def table(rows: list[dict]) -> list[str]:
    lines = ["mixture of Bernoullis by EM: mean log p(x) in nats per image (exact; higher is "
             "better), adjusted Rand index of the most probable component against the test "
             "labels, seconds per EM iteration (compiled; this machine)",
             "| data | K | iterations | train log p(x) | test log p(x) | ARI (test) | "
             "components used (test) | s / iteration | compile s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ari = "no labels" if r["adjusted_rand_index"] is None else \
            f"{r['adjusted_rand_index']:.3f}"
        lines.append(f"| {r['data']} | {r['components']} | {r['iterations']} | "
                     f"{r['train_log_likelihood']:.2f} | {r['test_log_likelihood']:.2f} "
                     f"+- {r['test_log_likelihood_se']:.2f} | {ari} | "
                     f"{r['components_used']} | {r['seconds_per_iteration']:.4f} | "
                     f"{r['compile_seconds']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("binarized-mnist", "digits"),
                        default="binarized-mnist")
    parser.add_argument("--data-path", help="binarized-mnist: file or folder (default "
                        "$JLVM_DATA_DIR)")
    parser.add_argument("--components", default="10,50,100",
                        help="numbers of components K, comma-separated")
    parser.add_argument("--iterations", type=int, default=100, help="EM iterations")
    parser.add_argument("--seed", type=int, default=0, help="the start's PRNG seed")
    args = parser.parse_args()
    try:
        counts = [int(k) for k in args.components.split(",")]
    except ValueError:
        parser.error(f"--components must be integers separated by commas, got "
                     f"{args.components!r}")
    if args.iterations < 1 or any(k < 1 for k in counts):
        parser.error("--iterations and every K must be >= 1")
    from jlvm import data

    dataset = (data.binarized_mnist(args.data_path) if args.data == "binarized-mnist"
               else data.digits())
    rows = []
    for num_components in counts:
        rows.append(row(num_components, dataset, args))
        print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
