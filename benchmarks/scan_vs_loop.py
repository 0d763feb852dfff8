"""One epoch of VAE training: scanned on device (jlvm.train.make_epoch) vs a Python loop of
jitted steps. Prints one JSON line.

    python benchmarks/scan_vs_loop.py [--data binarized-mnist] [--epochs 5]

Model: encoder 784-200-200-(50, 50), decoder 50-200-200-784, tanh, Bernoulli, Adam 1e-3,
batch 100 (on digits: 64 pixels, same widths). Binarized MNIST is read from $JLVM_DATA_DIR.
Times exclude compilation (one warm-up epoch each).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import optax

from jlvm import data, train
from jlvm.inference import amortized
from jlvm.models import vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("digits", "binarized-mnist"), default="digits")
    parser.add_argument("--epochs", type=int, default=5, help="timed scanned epochs")
    args = parser.parse_args()
    X = jnp.asarray(data.load(args.data).train)
    learner = amortized(vae.model(X.shape[1], 50), optax.adam(1e-3))
    steps = X.shape[0] // 100
    epoch = train.make_epoch(learner, 100, chunk_steps=steps)
    state = learner.init(jax.random.PRNGKey(0), X[:100])
    state, _ = epoch(state, X)  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(args.epochs):
        state, _ = epoch(state, X)
    jax.block_until_ready(state)
    scanned = (time.perf_counter() - start) / args.epochs

    step = jax.jit(learner.step)
    batches = train.shuffled_batches(jax.random.PRNGKey(1), X, 100)
    state, _ = step(state, batches[0])  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for batch in batches:
        state, _metrics = step(state, batch)
    jax.block_until_ready(state)
    looped = time.perf_counter() - start
    print(json.dumps({
        "data": args.data, "device": str(jax.devices()[0]), "steps_per_epoch": steps,
        "scanned_ms_per_step": round(scanned / steps * 1e3, 4),
        "python_loop_ms_per_step": round(looped / steps * 1e3, 4),
        "scanned_examples_per_s": round(steps * 100 / scanned),
        "python_loop_examples_per_s": round(steps * 100 / looped),
    }))


if __name__ == "__main__":
    main()
