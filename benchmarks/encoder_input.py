"""What the encoder of a VAE learned from incomplete data should see: x with its holes at 0
(as MIWAE's does, and ``jlvm train --missing`` runs), or the mask beside it.

    JLVM_DATA_DIR=... python benchmarks/encoder_input.py [--epochs 30] [--inputs x,x-and-mask]
        [--patterns mcar:0.25,top-half] [--test-rows 1000] [--num-samples 200] [--seed 0]
        [--data binarized-mnist]

The protocol's VAE (benchmarks/_protocol.py: 784-200-200-50, Bernoulli, Adam 1e-3, batch
100) trained on the binarized-MNIST training split with its pixels hidden by the pattern
(mcar:P, each pixel missing with probability P; top-half, a random half of the images miss
their top half, the others are complete), once per encoder input, same seed, same holes.
Printed per (pattern, input): the last epoch's mean train ELBO of the observed pixels and
the test log p(x_obs) by importance sampling (K=--num-samples) of --test-rows test images
with their own holes (mcar:P drawn with seed + 1; top-half: every test image misses its
top half), nats per image, with its standard error; and the training seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import _protocol as protocol
import numpy as np

INPUTS = {"x": False, "x-and-mask": True}  # vae.init's encoder_sees_mask


def masks(pattern: str, train_shape, test_shape, seed: int):
    """(train mask, test mask), True = observed."""
    rng = np.random.default_rng(seed)
    if pattern == "top-half":
        side = math.isqrt(train_shape[1])  # square images
        bottom = (np.arange(train_shape[1]) // side) >= side // 2
        hidden = rng.random((train_shape[0], 1)) < 0.5
        return np.where(hidden, bottom[None], True), np.broadcast_to(bottom, test_shape)
    rate = float(pattern.split(":")[1])
    return (rng.random(train_shape) >= rate,
            np.random.default_rng(seed + 1).random(test_shape) >= rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--inputs", default="x,x-and-mask")
    parser.add_argument("--patterns", default="mcar:0.25,top-half")
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    protocol.add_data_arguments(parser)
    args = parser.parse_args()
    inputs = [i.strip() for i in args.inputs.split(",") if i.strip()]
    if not inputs or any(i not in INPUTS for i in inputs):
        parser.error(f"--inputs must name inputs among {', '.join(INPUTS)}")
    patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    for pattern in patterns:
        if pattern != "top-half" and not (pattern.startswith("mcar:")
                                          and 0 < float(pattern[5:]) < 1):
            parser.error(f"--patterns: mcar:P with 0 < P < 1 or top-half, got {pattern!r}")
    for name in ("epochs", "test_rows", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    import jax
    import jax.numpy as jnp
    import optax

    from jlvm import evaluate, train
    from jlvm.inference import amortized
    from jlvm.models import vae

    X, T = protocol.load(args.data)
    T = T[:args.test_rows]
    for pattern in patterns:
        M, MT = masks(pattern, X.shape, T.shape, args.seed)
        rows = (jnp.asarray(np.where(M, X, 0.0)), jnp.asarray(M))
        for name in inputs:
            model = vae.model(X.shape[1], protocol.LATENT, hidden_dims=protocol.HIDDEN,
                              encoder_sees_mask=INPUTS[name])
            learner = amortized(model, optax.adam(protocol.LEARNING_RATE))
            state = learner.init(jax.random.PRNGKey(args.seed),
                                 jax.tree_util.tree_map(lambda a: a[:protocol.BATCH], rows))
            epoch = train.make_epoch(learner, protocol.BATCH, chunk_steps=500)
            started = time.perf_counter()
            for _ in range(args.epochs):
                state, metrics = epoch(state, rows)
            seconds = time.perf_counter() - started
            held = np.asarray(evaluate.vae_log_likelihood(
                jax.random.PRNGKey(args.seed + 2), state.params,
                jnp.asarray(np.where(MT, T, 0.0)), args.num_samples, mask=jnp.asarray(MT)))
            print(json.dumps({
                "pattern": pattern, "encoder_input": name, "epochs": args.epochs,
                "train_elbo_last_epoch": round(float(np.mean(metrics["elbo"])), 3),
                "test_log_p_x_obs": round(float(held.mean()), 3),
                "se": round(float(held.std() / math.sqrt(held.size)), 3),
                "num_samples": args.num_samples, "test_rows": int(T.shape[0]),
                "train_seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
