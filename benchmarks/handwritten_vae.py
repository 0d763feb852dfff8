"""The protocol's VAE trained and evaluated by hand in plain JAX, without jlvm: the reference
that jlvm's rows of binarized_mnist_table.py are compared with on the same machine.

    JLVM_DATA_DIR=... python benchmarks/handwritten_vae.py [--epochs 1000] [--seed 0]
        [--eval-samples 5000] [--eval-examples N] [--elbo-form {joint,kl}]
        [--data binarized-mnist]

Training: the ``jax`` implementation of train_throughput.py (plain arrays + optax Adam 1e-3,
batch 100, the one-draw ELBO in its joint form or, with ``--elbo-form kl``, its KL form;
each epoch one jitted ``lax.scan`` over a fresh shuffle). Evaluation: log p(x) ~=
logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K with z_k ~ q(z | x), K draws per test
image, 500 at a time with a running ``logaddexp``: written here independently of
``jlvm.evaluate``, so the two evaluators check each other. Prints a JSON line with the train
(first 10,000 images) and validation (where the data have one) ELBOs at epochs 1, 10, 50,
100, 200, 300, 500 and the last, then one with the test NLL in nats per image.
"""

from __future__ import annotations

import argparse
import math
import time

import _protocol as protocol
import numpy as np
from train_throughput import ELBO_FORMS, jax_epoch, jax_model

CHUNK = 500  # draws per image at once
IMAGES = 100  # test images at once


def log_likelihoods(params, X, key, num_samples: int):
    """[N] importance-sampled log p(x) of the rows of X [N, D] (N a multiple of IMAGES)."""
    import jax
    import jax.numpy as jnp

    L = protocol.LATENT

    def mlp(layers, h):  # h [rows, inputs]
        for layer in layers[:-1]:
            h = jnp.tanh(h @ layer["w"] + layer["b"][None])
        return h @ layers[-1]["w"] + layers[-1]["b"][None]

    def one(key, x):  # x [D]
        out = mlp(params["encoder"], x[None])[0]
        mean, log_std = out[None, :L], out[None, L:]  # [1, L]: broadcast over the draws

        def block(total, k):
            eps = jax.random.normal(k, (CHUNK, L))
            z = mean + jnp.exp(log_std) * eps
            logits = mlp(params["decoder"], z)
            # log p(x|z) + log N(z; 0, I) - log N(z; mean, std^2): the 2 pi terms cancel
            log_w = (jnp.sum(x[None] * logits - jnp.logaddexp(0.0, logits), axis=1)
                     - 0.5 * jnp.sum(z**2, axis=1) + jnp.sum(0.5 * eps**2 + log_std, axis=1))
            return jnp.logaddexp(total, jax.nn.logsumexp(log_w)), None

        total, _ = jax.lax.scan(block, -jnp.inf, jax.random.split(key, num_samples // CHUNK))
        return total - math.log(num_samples)

    @jax.jit
    def run(key, X):
        keys = jax.random.split(key, X.shape[0]).reshape(-1, IMAGES, 2)
        blocks = X.reshape(-1, IMAGES, X.shape[1])
        return jax.lax.map(lambda a: jax.vmap(one)(*a), (keys, blocks)).reshape(-1)

    return np.asarray(run(key, X))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-samples", type=int, default=5000,
                        help=f"K for the test NLL (a multiple of {CHUNK})")
    parser.add_argument("--eval-examples", type=int, default=None,
                        help=f"the first N test images (a multiple of {IMAGES}; default all)")
    parser.add_argument("--elbo-form", choices=ELBO_FORMS, default="joint",
                        help="the training ELBO: joint (the protocol's) or KL form")
    protocol.add_data_arguments(parser)
    args = parser.parse_args()
    protocol.check_positive(parser, args, ("epochs", "eval_samples", "eval_examples"))
    if args.eval_samples % CHUNK:
        parser.error(f"--eval-samples must be a multiple of {CHUNK}, got {args.eval_samples}")
    if args.eval_examples is not None and args.eval_examples % IMAGES:
        parser.error(f"--eval-examples must be a multiple of {IMAGES}, got {args.eval_examples}")

    import jax
    import jax.numpy as jnp
    import optax

    from jlvm import data

    dataset = data.load(args.data)
    X = jnp.asarray(np.asarray(dataset.train, np.float32))
    V = None if dataset.valid is None else jnp.asarray(np.asarray(dataset.valid, np.float32))
    T = np.asarray(dataset.test, np.float32)[: args.eval_examples]
    if T.shape[0] % IMAGES:
        T = T[: T.shape[0] - T.shape[0] % IMAGES]
    D = X.shape[1]
    init, loss = jax_model(D, args.elbo_form)
    optimizer = optax.adam(protocol.LEARNING_RATE)

    epoch = jax_epoch(loss, optimizer)

    @jax.jit
    def elbo(params, key, x):  # mean one-draw ELBO over x, in blocks of 1000 rows (or 100)
        size = 1000 if x.shape[0] >= 1000 else IMAGES
        blocks = x[: x.shape[0] - x.shape[0] % size].reshape(-1, size, D)
        keys = jax.random.split(key, blocks.shape[0])
        return -jnp.mean(jax.vmap(lambda k, xb: loss(params, k, xb))(keys, blocks))

    params = init(jax.random.PRNGKey(args.seed))
    carry = (params, optimizer.init(params), jax.random.PRNGKey(args.seed + 100))
    started = time.perf_counter()
    for e in range(1, args.epochs + 1):
        carry, _ = epoch(carry, X)
        if e in (1, 10, 50, 100, 200, 300, 500) or e == args.epochs:
            key = jax.random.PRNGKey(e)
            figures = {"train_elbo": float(elbo(carry[0], key, X[:10000]))}
            if V is not None:
                figures["valid_elbo"] = float(elbo(carry[0], key, V))
            protocol.report(epoch=e, **figures, seconds=round(time.perf_counter() - started, 1))
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    values = log_likelihoods(carry[0], T, jax.random.PRNGKey(7), args.eval_samples)
    if not np.all(np.isfinite(values)):
        raise SystemExit("non-finite log-likelihood")
    protocol.report(impl="hand-written JAX", epochs=args.epochs, seed=args.seed,
                    elbo_form=args.elbo_form,
                    test_nll=round(-float(values.mean()), 3),
                    test_nll_se=round(float(values.std(ddof=1) / math.sqrt(len(values))), 4),
                    eval_examples=int(T.shape[0]), eval_samples=args.eval_samples,
                    train_seconds=round(train_seconds, 1),
                    eval_seconds=round(time.perf_counter() - started, 1),
                    device=protocol.jax_device())


if __name__ == "__main__":
    main()
