"""How much of a trained VAE's ELBO-to-IS gap was q's fault: test log p(x) by importance
sampling with the encoder (K draws) and by AIS from the encoder at each number of steps, on
the same images, with the BDMC gap on points simulated from each model. One JSON line per
run directory, then a table:

    python benchmarks/ais_mnist.py RUN_DIR [RUN_DIR ...] [--examples 1000] [--is-samples 5000]
        [--ais-steps 1000 10000] [--chains 16] [--bdmc-examples 100] [--seed 0]

RUN_DIR: runs of ``jlvm train`` (e.g. the rows of binarized_mnist_table.py: a diagonal q
and a flow q on binarized MNIST). The images are the first ``--examples`` test images of
the run's data. Per run: the ELBO (K=1, averaged over 100 draws), log p(x) by IS with K
draws of the encoder, by forward AIS from the encoder (``--chains`` chains, HMC, 10
leapfrog steps, step sizes from a pilot, sigmoidal schedule) at each T, the paired
difference AIS - IS per image with its standard error (how far IS, and so q, was from
log p(x)), and the BDMC sandwich (lower, upper, gap with standard errors) on
``--bdmc-examples`` points drawn from the model. Seconds per example of each estimator,
compilation included once, on this machine's first device.
"""

import argparse
import functools
import json
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from jlvm import ais, evaluate, runs


def _timed(compute, *args, **kwargs):
    started = time.perf_counter()
    values = np.asarray(jax.block_until_ready(compute(*args, **kwargs)), np.float64)
    return values, time.perf_counter() - started


def _in_blocks(compute, key, count, block, desc):
    """compute(key_b, start, stop) -> [stop - start] for blocks of ``block`` rows, with a
    progress bar on stderr (a run of 1,000 images at T=1,000 takes an hour on a CPU), and
    the seconds it took."""
    started, values = time.perf_counter(), []
    with tqdm(total=count, unit="example", desc=desc, file=sys.stderr, leave=False) as bar:
        for b, start in enumerate(range(0, count, block)):
            stop = min(start + block, count)
            values.append(np.asarray(jax.block_until_ready(
                compute(jax.random.fold_in(key, b), start, stop)), np.float64))
            bar.update(stop - start)
    return np.concatenate(values, axis=-1), time.perf_counter() - started


def _ais(model, params, X, steps, settings, key, start, stop):
    return evaluate.log_likelihood_ais(key, model, params, X[start:stop], steps,
                                       initial="encoder", **settings)


def _bdmc(model, params, steps, settings, key, start, stop):
    sandwich = ais.bdmc(key, model, params, stop - start, steps, **settings)
    return np.stack([sandwich.lower, sandwich.upper])


def _summary(values):
    mean, se = evaluate.summary(values)
    return {"mean": round(mean, 3), "se": None if se is None else round(se, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--is-samples", type=int, default=5000)
    parser.add_argument("--ais-steps", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--bdmc-examples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = []
    for run_dir in args.run_dirs:
        run = runs.load(run_dir)
        model, params = run.setup.built.model, run.setup.built.params(run.state)
        X = np.asarray(run.setup.dataset.test[:args.examples], np.float32)
        key = jax.random.PRNGKey(args.seed)
        count = X.shape[0]
        elbo, _ = _timed(evaluate.elbo, jax.random.fold_in(key, 1), model, params, X, 100,
                         batch_size=args.batch_size)
        by_is, is_seconds = _timed(evaluate.log_likelihood, jax.random.fold_in(key, 2), model,
                                   params, X, args.is_samples, batch_size=args.batch_size)
        line = {"run_dir": str(run_dir), "config": run.config.model,
                "posterior": getattr(run.config, "posterior", None), "examples": count,
                "device": str(jax.devices()[0]), "elbo": _summary(elbo),
                f"is_{args.is_samples}": _summary(by_is),
                "is_seconds_per_example": round(is_seconds / count, 4), "ais": {}}
        for steps in args.ais_steps:
            settings = dict(num_chains=args.chains, batch_size=args.batch_size)
            by_ais, seconds = _in_blocks(
                functools.partial(_ais, model, params, X, steps, settings),
                jax.random.fold_in(key, 3 + steps), count, args.batch_size, f"AIS T={steps}")
            (lower, upper), bdmc_seconds = _in_blocks(
                functools.partial(_bdmc, model, params, steps, settings),
                jax.random.fold_in(key, 4 + steps), args.bdmc_examples, args.batch_size,
                f"BDMC T={steps}")
            line["ais"][steps] = {
                "log_likelihood": _summary(by_ais),
                "ais_minus_is": _summary(by_ais - by_is),
                "seconds_per_example": round(seconds / count, 4),
                "bdmc_lower": _summary(lower), "bdmc_upper": _summary(upper),
                "bdmc_gap": _summary(upper - lower),
                "bdmc_seconds_per_example": round(bdmc_seconds / args.bdmc_examples, 4)}
        print(json.dumps(line), flush=True)
        table.append(line)
    print(f"\n{'run':40s} {'ELBO':>16} {'IS K=' + str(args.is_samples):>16} "
          f"{'T':>6} {'AIS':>16} {'AIS - IS':>14} {'BDMC gap':>14}   (nats per image, ± se)")
    for line in table:
        first = True
        for steps, row in line["ais"].items():
            head = (f"{line['run_dir'][-40:]:40s} {_cell(line['elbo']):>16} "
                    f"{_cell(line[f'is_{args.is_samples}']):>16}") if first else " " * 74
            print(f"{head} {steps:>6} {_cell(row['log_likelihood']):>16} "
                  f"{_cell(row['ais_minus_is']):>14} {_cell(row['bdmc_gap']):>14}")
            first = False


def _cell(summary) -> str:
    return f"{summary['mean']:.2f} ± {summary['se'] or 0:.2f}"


if __name__ == "__main__":
    main()
