"""How close each estimator of log p(x) comes for its cost, on a linear-Gaussian model whose
log p(x) is exact: importance sampling (from the prior, from a narrow diagonal q), forward AIS
(from each) and reverse AIS (from exact posterior draws), side by side. One table:

    python benchmarks/ais_linear_gaussian.py [--steps 10 100 1000] [--repeats 5] [--points 8]

Model: z ~ N(0, I_5), x | z ~ N(W z + b, 0.3^2 I_20), W, b ~ N(0, 1): p(z | x) is about ten
times narrower than the prior in each direction. The narrow q: the exact posterior's means
shifted by 1.5 posterior standard deviations, its standard deviations halved, no
correlations (too narrow, as a VAE's encoder tends to be: importance sampling suffers most
from that; with the standard deviations doubled instead, IS from q was within 0.01 nats at
every budget here, ahead of AIS). Each row: mean error (estimate - exact log p(x)) and its
spread over points x repeats, and the cost per example in log-joint evaluations: K draws for IS; for
AIS, gradients of log p(x, z) (about twice the work of a value each), C chains x
(T - 1) moves x (leapfrog + 1), plus the pilot's 8 chains x max(T, 50) x (leapfrog + 1).
IS gets as many draws as AIS at the same T has gradients. Seconds per example on this
machine's first device, compiled (compilation excluded).
"""

import argparse
import functools
import json
import time

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import jlvm
from jlvm import ais
from jlvm.models import linear_gaussian

CHAINS, LEAPFROG = 16, 10
NAMES = ("IS, prior", "IS, narrow q", "AIS, prior", "AIS, narrow q", "reverse AIS, prior")


def _cost(steps: int) -> int:
    moves = CHAINS * (steps - 1) * (LEAPFROG + 1) + CHAINS
    return moves + ais.PILOT_CHAINS * max(steps, ais.PILOT_STEPS) * (LEAPFROG + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points", type=int, default=8)
    args = parser.parse_args()
    params = linear_gaussian.init(jax.random.PRNGKey(0), 20, 5, noise_std=0.3)
    X, _ = linear_gaussian.sample(jax.random.PRNGKey(1), params, args.points)
    exact = jax.vmap(functools.partial(linear_gaussian.log_marginal, params))(X)

    def starts(x):
        posterior = linear_gaussian.posterior(params, x)
        std = jnp.sqrt(jnp.diagonal(posterior.covariance()))
        return (distrax.MultivariateNormalDiag(jnp.zeros(5), jnp.ones(5)),
                distrax.MultivariateNormalDiag(posterior.mean() + 1.5 * std, 0.5 * std),
                posterior)

    def estimators(steps):
        """name -> (key, x) -> the estimate, for one example."""
        cost = _cost(steps)

        def one(which, key, x):
            prior, narrow, posterior = starts(x)
            log_joint = functools.partial(linear_gaussian.log_joint, params, x)
            if which == "IS, prior":
                return jlvm.log_marginal_is(key, log_joint, prior, cost, chunk_size=4096)
            if which == "IS, narrow q":
                return jlvm.log_marginal_is(key, log_joint, narrow, cost, chunk_size=4096)
            if which == "AIS, prior":
                return jlvm.log_marginal_ais(key, log_joint, prior, steps, num_chains=CHAINS,
                                             num_leapfrog=LEAPFROG)
            if which == "AIS, narrow q":
                return jlvm.log_marginal_ais(key, log_joint, narrow, steps, num_chains=CHAINS,
                                             num_leapfrog=LEAPFROG)
            draw_key, key = jax.random.split(key)
            z = posterior.sample(seed=draw_key, sample_shape=(CHAINS,))
            return jlvm.log_marginal_ais_reverse(key, log_joint, prior, z, steps,
                                                 num_leapfrog=LEAPFROG)

        return {name: functools.partial(one, name) for name in NAMES}

    rows = []
    print(f"{'T':>6} {'cost/example':>12} " + " ".join(f"{n:>22}" for n in NAMES)
          + "   error in nats: mean ± sd over points x repeats")
    count = args.repeats * args.points
    for steps in args.steps:
        keys = jax.random.split(jax.random.PRNGKey(steps), count)
        keys = keys.reshape(args.repeats, args.points, *keys.shape[1:])
        cells, row = [], {"steps": steps, "cost_per_example": _cost(steps)}
        for name, estimate in estimators(steps).items():
            run = jax.jit(jax.vmap(jax.vmap(estimate), (0, None)))
            jax.block_until_ready(run(keys, X))  # compiled and run once, then timed
            started = time.perf_counter()
            errors = np.asarray(run(keys, X)) - np.asarray(exact)[None, :]
            seconds = (time.perf_counter() - started) / count
            cells.append(f"{errors.mean():+9.3f} ± {errors.std():8.3f}")
            row[name] = {"error_mean": round(float(errors.mean()), 4),
                         "error_sd": round(float(errors.std()), 4),
                         "ms_per_example": round(1000 * seconds, 3)}
        print(f"{steps:>6} {_cost(steps):>12} " + " ".join(f"{c:>22}" for c in cells))
        print(f"{'':>6} {'ms/example':>12} " + " ".join(
            f"{row[name]['ms_per_example']:>22.3f}" for name in NAMES))
        rows.append(row)
    print(json.dumps({"device": str(jax.devices()[0]), "chains": CHAINS,
                      "leapfrog": LEAPFROG, "rows": rows}))


if __name__ == "__main__":
    main()
