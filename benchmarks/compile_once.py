"""``jlvm.evaluate.log_likelihood`` with two separately built, identical models: the first
call compiles, the second (a new model object, as a notebook cell run again makes) should
not. Prints one JSON line, seconds per call side by side:

    python benchmarks/compile_once.py [--data binarized-mnist] [--num-samples 100]

- first_call_s: a new model, compiled and run;
- second_model_s: another new model with the same settings, run (nothing compiled);
- compiled_again_s: the same call after dropping every compiled program, what each call
  cost before jlvm compiled once per model (the model was a static argument of jit, hashed
  by identity, so every new model compiled anew);
- run_only_s: the second model's call once more (the run alone).

Model: encoder 784-200-200-(50, 50), decoder 50-200-200-784, tanh, Bernoulli (on the
bundled digits: 64 pixels, same widths), 100 images, K importance samples each.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp

from jlvm import data, evaluate
from jlvm.models import vae


def _timed(model, X, num_samples: int, seed: int) -> float:
    params = model.init(jax.random.PRNGKey(0))
    start = time.perf_counter()
    jax.block_until_ready(evaluate.log_likelihood(jax.random.PRNGKey(seed), model, params, X,
                                                  num_samples))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("digits", "binarized-mnist"), default="digits")
    parser.add_argument("--num-samples", type=int, default=100)
    args = parser.parse_args()
    X = jnp.asarray(data.load(args.data).test[:100])

    def new_model():
        return vae.model(X.shape[1], 50)

    first = _timed(new_model(), X, args.num_samples, 0)
    second_model = new_model()
    second = _timed(second_model, X, args.num_samples, 1)
    run_only = _timed(second_model, X, args.num_samples, 2)
    jax.clear_caches()
    evaluate._compile.cache_clear()
    again = _timed(new_model(), X, args.num_samples, 3)
    print(json.dumps({
        "data": args.data, "device": str(jax.devices()[0]), "images": int(X.shape[0]),
        "num_samples": args.num_samples, "first_call_s": round(first, 3),
        "second_model_s": round(second, 3), "compiled_again_s": round(again, 3),
        "run_only_s": round(run_only, 3)}))


if __name__ == "__main__":
    main()
