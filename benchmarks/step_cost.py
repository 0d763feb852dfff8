"""Where a training step's time goes: the matrix products, the optimizer, and what is left.

    python benchmarks/step_cost.py [--steps 500] [--repeats 5] [--data binarized-mnist]

The protocol's VAE (benchmarks/_protocol.py), hand-written in plain JAX (the ``jax``
implementation of train_throughput.py), timed as a scanned epoch in three variants, repeat by
repeat in turn: with Adam (the protocol), with SGD, and computing the gradient without
applying it (which says what the forward and backward passes alone cost). XLA's own cost
analysis of one step's ``value_and_grad`` gives its floating-point operations, so the
figures read as GFLOP/s against the device's peak. Prints one JSON line per variant
(``ms_per_step`` is the fastest repeat: on a shared machine the least disturbed one) and
one line with the FLOP count.
"""

from __future__ import annotations

import argparse
import time

import _protocol as protocol
import numpy as np
from train_throughput import jax_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=protocol.STEPS_PER_EPOCH)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; fastest reported")
    protocol.add_data_arguments(parser)
    args = parser.parse_args()
    protocol.check_positive(parser, args, ("steps", "repeats"))

    import jax
    import jax.numpy as jnp
    import optax

    train_rows, _ = protocol.load(args.data)
    X = jax.device_put(protocol.rows_for_steps(train_rows, args.steps))
    init, loss = jax_model(X.shape[1])
    params = init(jax.random.PRNGKey(0))
    batch = X[: protocol.BATCH]

    grad_step = jax.jit(jax.value_and_grad(loss)).lower(
        params, jax.random.PRNGKey(1), batch).compile()
    analysis = grad_step.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis  # older JAX: a list
    flops = float(analysis["flops"])
    protocol.report(step_flops=flops, source="XLA cost analysis of one value_and_grad",
                    device=protocol.jax_device())

    def make_epoch(optimizer):
        def step(carry, x):
            params, opt_state, key = carry
            key, sub = jax.random.split(key)
            value, grads = jax.value_and_grad(loss)(params, sub, x)
            if optimizer is None:  # keep the gradient alive without updating with it
                return (*carry[:2], key), (-value, sum(jnp.sum(g) for g in
                                                       jax.tree.leaves(grads)))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), (-value, 0.0)

        @jax.jit
        def epoch(carry, data):
            batches = data.reshape(-1, protocol.BATCH, data.shape[1])
            return jax.lax.scan(step, carry, batches)

        return epoch

    variants = {"adam": optax.adam(protocol.LEARNING_RATE),
                "sgd": optax.sgd(protocol.LEARNING_RATE), "gradient_only": None}
    runs = {}
    for name, optimizer in variants.items():
        epoch = make_epoch(optimizer)
        opt_state = optimizer.init(params) if optimizer is not None else ()
        carry = (params, opt_state, jax.random.PRNGKey(2))
        carry, _ = jax.block_until_ready(epoch(carry, X))  # compiles
        runs[name] = {"epoch": epoch, "carry": carry, "times": []}
    for _ in range(args.repeats):
        for run in runs.values():
            start = time.perf_counter()
            run["carry"], run["out"] = jax.block_until_ready(run["epoch"](run["carry"], X))
            run["times"].append(time.perf_counter() - start)
    for name, run in runs.items():
        seconds = min(run["times"]) / args.steps
        elbos = np.asarray(run["out"][0])
        if not np.all(np.isfinite(elbos)):
            raise SystemExit(f"{name}: non-finite ELBO")
        protocol.report(variant=name, ms_per_step=round(seconds * 1e3, 4),
                        gflops_per_s=round(flops / seconds / 1e9, 1),
                        repeats_s=[round(t, 6) for t in run["times"]],
                        final_elbo=float(elbos[-20:].mean()), device=protocol.jax_device())


if __name__ == "__main__":
    main()
