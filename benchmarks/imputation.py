"""Imputation side by side: jlvm's models learned from incomplete data against
scikit-learn's imputers, same training data, same holes.

    JLVM_DATA_DIR=... python benchmarks/imputation.py [--data digits,breast-cancer,
        binarized-mnist] [--patterns mcar:0.25,mcar:0.5,mcar:0.75,top-half] [--epochs 300]
        [--mnist-epochs 20] [--num-samples 500] [--test-rows 1000] [--em-iterations 50]
        [--seed 0] [--price] [--methods vae,iwae,gmm,mean,knn,iterative]
        [--encoder-input {x,x-and-mask}]

For each data set and missingness pattern, the training split's entries are hidden with
the pattern (drawn with --seed; the test split's with --seed + 1), and every method is fitted
on the incomplete training split only. "top-half": every test image misses its top half;
a random half of the training images miss their top half, the others are complete:

- jlvm vae / iwae: ``inference.amortized`` (ELBO; IWAE with K=5, which on incomplete data
  is the MIWAE bound of Mattei & Frellsen, 2019) on (x, mask) batches, the encoder seeing
  x with its holes at 0 (``--encoder-input x-and-mask``: and the mask); test entries
  imputed by ``missing.impute`` (self-normalized importance sampling, --num-samples draws
  of q(z | x_obs));
- jlvm gmm: ``gmm.fit_em(..., mask=...)`` (EM on the observed entries), imputed by the
  exact ``gmm.conditional_mean``;
- scikit-learn: ``SimpleImputer`` (column means), ``KNNImputer`` (5 neighbours),
  ``IterativeImputer`` (BayesianRidge, 10 rounds, binary pixels kept in [0, 1]; on
  binarized MNIST each column regressed on its 50 nearest features). A method that fails
  prints as "failed", its error in the row's JSON.

Scores on the missing test entries: accuracy of the imputation rounded to 0/1 for binary
images; RMSE in standard deviations of each column for the real-valued table. One JSON
line per (data, pattern), then a Markdown table. Data: the bundled 8x8 digits (binary),
scikit-learn's breast-cancer table (569 x 30, standardized with the training split's
statistics), binarized MNIST from $JLVM_DATA_DIR (a random --test-rows of the test split;
scikit-learn's KNN and iterative imputers, and the GMM, fitted on a random 5,000 training
images: their cost grows with N x D and N x D^3). With --price, also the price of
missingness: test log p(x) of COMPLETE test images (IS, K=1000) for VAEs trained at 0, 25,
50 and 75 % missing. --methods runs a subset (the others print as "—"): the GMM's EM
factorizes a D x D covariance per image and component, out of reach on a CPU at D = 784.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np

SKLEARN = ("mean", "knn", "iterative")
METHODS = ("vae", "iwae", "gmm", *SKLEARN)
AHEAD = {True: "yes", False: "no", None: "—"}
LATENT = {"digits": 8, "breast-cancer": 4, "binarized-mnist": 50}
HIDDEN = {"digits": (200, 200), "breast-cancer": (64, 64), "binarized-mnist": (200, 200)}
SUBSET = 5000  # binarized MNIST: training images the costly fits see


def load(name: str, rng: np.random.Generator):
    """(train, test, binary, image_shape) as float32 arrays."""
    from jlvm import data

    if name == "digits":
        d = data.digits()
        return d.train, d.test, True, (8, 8)
    if name == "binarized-mnist":
        d = data.binarized_mnist()
        return d.train, d.test, True, (28, 28)
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data.astype(np.float64)
    order = rng.permutation(X.shape[0])
    cut = int(0.8 * X.shape[0])
    train, test = X[order[:cut]], X[order[cut:]]
    mean, std = train.mean(0), train.std(0)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(
        np.float32), False, None


def make_mask(pattern: str, shape, image_shape, seed: int, *, train: bool = False
              ) -> np.ndarray:
    """True = observed. "top-half" on the training split hides the top half of a random
    half of the images and leaves the others complete: were the top half missing from every
    training image, nothing could learn it; were it the bottom half of the others, the two
    halves would never be seen together and nothing could learn how they go together (every
    method, jlvm's and scikit-learn's, then fills the column means or worse)."""
    from jlvm.runs import _missing

    if pattern == "top-half" and train:
        top = np.random.default_rng([seed, 7]).random(shape[0]) < 0.5
        return np.where(top[:, None], _missing.half_mask(image_shape, "top-half"), True)
    mask = _missing.mask_for(pattern, shape, image_shape, seed)
    mask[~mask.any(axis=1), 0] = True  # every row observes something
    return mask


def score(imputed: np.ndarray, truth: np.ndarray, mask: np.ndarray, binary: bool) -> float:
    hidden = ~mask
    if binary:
        return float(np.mean((imputed[hidden] >= 0.5) == (truth[hidden] >= 0.5)))
    return float(np.sqrt(np.mean((imputed[hidden] - truth[hidden]) ** 2)))


def fit_sklearn(method: str, train_holes: np.ndarray, binary: bool):
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    # binary pixels: the iterative imputer's values kept in [0, 1] (unbounded, its
    # regressions diverged to inf on binarized MNIST's top-half pattern)
    bounds = {"min_value": 0.0, "max_value": 1.0} if binary else {}

    imputer = {"mean": SimpleImputer(strategy="mean", keep_empty_features=True),
               "knn": KNNImputer(n_neighbors=5, keep_empty_features=True),
               # past 100 columns each round regresses a column on its 50 most correlated
               # others (all 783 of binarized MNIST's would take hours)
               "iterative": IterativeImputer(max_iter=10, random_state=0,
                                             keep_empty_features=True, **bounds,
                                             n_nearest_features=(
                                                 50 if train_holes.shape[1] > 100 else None))
               }[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes of the iterative imputer
        imputer.fit(train_holes)
    return imputer


def train_vae(train, mask, binary, name, objective, epochs, seed, encoder_input="x"):
    import jax
    import jax.numpy as jnp
    import optax

    from jlvm import train as training
    from jlvm.inference import amortized
    from jlvm.models import vae

    model = vae.model(train.shape[1], LATENT[name], hidden_dims=HIDDEN[name],
                      likelihood="bernoulli" if binary else "gaussian-pixel",
                      encoder_sees_mask=encoder_input == "x-and-mask")
    learner = amortized(model, optax.adam(1e-3), objective=objective,
                        num_samples=5 if objective == "iwae" else 1)
    data = (jnp.asarray(np.where(mask, train, 0.0)), jnp.asarray(mask))
    batch = min(100, train.shape[0])
    state = learner.init(jax.random.PRNGKey(seed), jax.tree_util.tree_map(lambda a: a[:batch],
                                                                          data))
    epoch = training.make_epoch(learner, batch)
    for _ in range(epochs):
        state, _ = epoch(state, data)
    return model, state.params


def impute_vae(model, params, test, mask, num_samples, seed):
    import jax
    import jax.numpy as jnp

    from jlvm import missing

    one = jax.jit(jax.vmap(lambda k, x, m: missing.impute(k, model, params, x, m, num_samples,
                                                          chunk_size=min(num_samples, 250))))
    keys = jax.random.split(jax.random.PRNGKey(seed + 7), test.shape[0])
    X, M = jnp.asarray(np.where(mask, test, 0.0)), jnp.asarray(mask)
    pieces = [np.asarray(one(keys[i:i + 100], X[i:i + 100], M[i:i + 100]).mean)
              for i in range(0, test.shape[0], 100)]
    return np.concatenate(pieces)


def fit_gmm(train, mask, components, seed, iterations):
    import jax

    from jlvm.models import gmm

    start = gmm.init_from_data(jax.random.PRNGKey(seed), gmm.mean_imputed(train, mask),
                               components, reg_covar=1e-2)
    params, _ = gmm.fit_em(start, train, iterations, mask=mask, reg_covar=1e-2)
    return params


def impute_gmm(params, test, mask):
    import jax

    from jlvm.models import gmm

    fill = jax.jit(jax.vmap(gmm.conditional_mean, in_axes=(None, 0, 0)))
    return np.concatenate([np.asarray(fill(params, np.where(mask, test, 0.0)[i:i + 200],
                                           mask[i:i + 200]))
                           for i in range(0, test.shape[0], 200)])


def run_row(name, pattern, args, rng):
    train, test, binary, image_shape = load(name, rng)
    if name == "binarized-mnist":
        test = test[rng.permutation(test.shape[0])[:args.test_rows]]
    train_mask = make_mask(pattern, train.shape, image_shape, args.seed, train=True)
    test_mask = make_mask(pattern, test.shape, image_shape, args.seed + 1)
    holes = np.where(train_mask, train, np.nan)
    subset = (rng.permutation(train.shape[0])[:SUBSET] if name == "binarized-mnist"
              else np.arange(train.shape[0]))
    test_holes = np.where(test_mask, test, np.nan)
    epochs = args.mnist_epochs if name == "binarized-mnist" else args.epochs
    result = {"data": name, "pattern": pattern, "metric": "accuracy" if binary else "rmse",
              "missing_test_entries": int((~test_mask).sum()),
              "encoder_input": args.encoder_input}
    seconds = {}
    for objective in ("elbo", "iwae"):
        label = "vae" if objective == "elbo" else "iwae"
        if label not in args.methods:
            continue
        started = time.perf_counter()
        model, params = train_vae(train, train_mask, binary, name, objective, epochs, args.seed,
                                  args.encoder_input)
        imputed = impute_vae(model, params, test, test_mask, args.num_samples, args.seed)
        result[f"jlvm_{label}"] = round(score(imputed, test, test_mask, binary), 4)
        seconds[f"jlvm_{label}"] = round(time.perf_counter() - started, 1)
    if "gmm" in args.methods:
        started = time.perf_counter()
        params = fit_gmm(train[subset], train_mask[subset], 10 if binary else 3, args.seed,
                         args.em_iterations)
        result["jlvm_gmm"] = round(score(impute_gmm(params, test, test_mask), test,
                                         test_mask, binary), 4)
        seconds["jlvm_gmm"] = round(time.perf_counter() - started, 1)
    for method in SKLEARN:
        if method not in args.methods:
            continue
        started = time.perf_counter()
        try:
            fitted = fit_sklearn(method, holes if method == "mean" else holes[subset], binary)
            imputed = fitted.transform(test_holes)
        except ValueError as error:  # e.g. a diverged regression: the row says so
            result.setdefault("failed", {})[f"sklearn_{method}"] = str(error)[:200]
            continue
        result[f"sklearn_{method}"] = round(score(imputed, test, test_mask, binary), 4)
        seconds[f"sklearn_{method}"] = round(time.perf_counter() - started, 1)
    ours = [result[k] for k in ("jlvm_vae", "jlvm_iwae", "jlvm_gmm") if k in result]
    theirs = [result[f"sklearn_{m}"] for m in SKLEARN if f"sklearn_{m}" in result]
    best = max if binary else min
    if ours and theirs:  # otherwise there is no comparison to report
        result["jlvm_best_beats_every_sklearn"] = (best(ours) > max(theirs) if binary
                                                   else best(ours) < min(theirs))
    result["seconds"] = seconds
    return result


def price_of_missingness(args, rng) -> list[dict]:
    """Test log p(x) of complete digits for VAEs trained at 0 / 25 / 50 / 75 % MCAR."""
    import jax

    from jlvm import evaluate

    train, test, binary, image_shape = load("digits", rng)
    rows = []
    for rate in (0.0, 0.25, 0.5, 0.75):
        mask = (np.ones(train.shape, bool) if rate == 0 else
                make_mask(f"mcar:{rate}", train.shape, image_shape, args.seed))
        model, params = train_vae(train, mask, binary, "digits", "elbo", args.epochs, args.seed,
                                  args.encoder_input)
        values = evaluate.log_likelihood(jax.random.PRNGKey(1), model, params, test, 1000)
        values = np.asarray(values)
        rows.append({"price_of_missingness": "digits", "train_missing": rate,
                     "test_log_likelihood": round(float(values.mean()), 3),
                     "se": round(float(values.std() / math.sqrt(len(values))), 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits,breast-cancer")
    parser.add_argument("--patterns", default="mcar:0.25,mcar:0.5,mcar:0.75,top-half")
    parser.add_argument("--epochs", type=int, default=300, help="digits and breast-cancer")
    parser.add_argument("--mnist-epochs", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=500, help="K per test row")
    parser.add_argument("--test-rows", type=int, default=1000, help="binarized MNIST")
    parser.add_argument("--em-iterations", type=int, default=50, help="the GMM's EM iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--price", action="store_true",
                        help="also the price of missingness on the digits")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, among {', '.join(METHODS)}")
    parser.add_argument("--encoder-input", choices=("x", "x-and-mask"), default="x",
                        help="what the VAEs' encoder sees: x with its holes at 0 (default, as "
                        "jlvm train --missing), or the mask beside it")
    args = parser.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or any(m not in METHODS for m in args.methods):
        parser.error(f"--methods must name methods among {', '.join(METHODS)}")
    for name in ("epochs", "mnist_epochs", "num_samples", "test_rows", "em_iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    names = [n.strip() for n in args.data.split(",") if n.strip()]
    unknown = [n for n in names if n not in LATENT]
    if unknown or not names:
        parser.error(f"--data must name data sets among {', '.join(LATENT)}")
    patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    rng = np.random.default_rng(args.seed)
    results = []
    for name in names:
        for pattern in patterns:
            if pattern in ("top-half", "bottom-half") and name == "breast-cancer":
                continue  # not an image
            results.append(run_row(name, pattern, args, rng))
            print(json.dumps(results[-1]), flush=True)
    columns = ["jlvm_vae", "jlvm_iwae", "jlvm_gmm", *(f"sklearn_{m}" for m in SKLEARN)]
    lines = ["| data | missing | metric | " + " | ".join(columns) + " | jlvm ahead |",
             "|" + "---|" * (len(columns) + 4)]
    for r in results:
        lines.append(f"| {r['data']} | {r['pattern']} | {r['metric']} | "
                     + " | ".join(f"{r[c]:.4f}" if c in r else
                                  "failed" if c in r.get("failed", {}) else "—"
                                  for c in columns)
                     + f" | {AHEAD[r.get('jlvm_best_beats_every_sklearn')]} |")
    print("\n".join(lines))
    if args.price:
        price_of_missingness(args, rng)


if __name__ == "__main__":
    main()
