"""The binarized-MNIST table: VAE (K=1), IWAE (K=5, 50) and DReG-IWAE, trained and
evaluated with the ``jlvm`` command.

    JLVM_DATA_DIR=... python benchmarks/binarized_mnist_table.py [--vae-epochs 1000]
        [--iwae-epochs 600] [--eval-samples 5000] [--eval-examples N] [--only vae,iwae50]
        [--runs DIR] [--devices N] [--eval-every 10] [--seed 0] [--data FILE.npz]

Protocol (benchmarks/_protocol.py): latent 50, encoder 784-200-200-(50, 50), decoder
50-200-200-784, tanh, Bernoulli, Adam 1e-3, batch 100, statically binarized MNIST. The VAE is
trained on the one-draw ELBO in its joint form (row vae) and in its KL form (row vaekl, the
KL to the prior analytic). The family rows change one thing each (all on the joint form):
full, a full-covariance posterior; flow, affine coupling layers on the diagonal Gaussian;
mixture, a learned mixture of 10 Gaussians as the prior; conv, convolutional networks
(channels 32, 64); conv-flow-mixture, all three. Each row is one ``jlvm train`` run
(checkpoints every 100 epochs; train and validation ELBOs every ``--eval-every`` epochs)
followed by ``jlvm evaluate --num-samples 5000`` on the 10,000 test images; test NLL =
-log p(x) by importance sampling, nats per image. The reference column holds the
hand-written JAX figures of issue 5 (one H100, same protocol and epochs): VAE 89.5, IWAE
K=50 87.2.

``--data``: the same rows on other binary images, any ``jlvm train --data`` value (e.g. a
``.npz`` with train/valid/test arrays of 0/1 pixels); the reference column is then empty.

Every run directory is new (``--runs``, default ``runs/table-TIMESTAMP``); the table is
printed and written to ``table.md`` and ``table.jsonl`` inside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

ROWS = {  # name: (model, K, gradient estimator, ELBO form, reference NLL at default epochs)
    "vae": ("vae", 1, "reparam", "joint", 89.5),
    "vaekl": ("vae", 1, "reparam", "kl", 89.5),
    "iwae5": ("iwae", 5, "reparam", "joint", None),
    "dreg5": ("iwae", 5, "dreg", "joint", None),
    "iwae50": ("iwae", 50, "reparam", "joint", 87.2),
    "dreg50": ("iwae", 50, "dreg", "joint", None),
    # the VAE's families (all trained on the joint-form ELBO, K=1): posterior, prior, nets
    "full": ("vae", 1, "reparam", "joint", None),
    "flow": ("vae", 1, "reparam", "joint", None),
    "mixture": ("vae", 1, "reparam", "joint", None),
    "conv": ("vae", 1, "reparam", "joint", None),
    "conv-flow-mixture": ("vae", 1, "reparam", "joint", None),
}
# the rows' settings beyond the protocol's MLP, diagonal posterior and N(0, I) prior
FAMILY = {"full": ["--posterior", "full"], "flow": ["--posterior", "flow"],
          "mixture": ["--prior", "mixture:10"],
          "conv": ["--architecture", "conv", "--hidden-dims", "32", "64"],
          "conv-flow-mixture": ["--architecture", "conv", "--hidden-dims", "32", "64",
                                "--posterior", "flow", "--prior", "mixture:10"]}
DEFAULT_EPOCHS = {"vae": 1000, "iwae": 600}


def _jlvm(*arguments: str) -> dict:
    """Runs ``python -m jlvm ...`` (progress on stderr passes through); its JSON line."""
    done = subprocess.run([sys.executable, "-m", "jlvm", *arguments], stdout=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"jlvm {' '.join(arguments)} failed with exit status {done.returncode}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae-epochs", type=int, default=DEFAULT_EPOCHS["vae"])
    parser.add_argument("--iwae-epochs", type=int, default=DEFAULT_EPOCHS["iwae"])
    parser.add_argument("--eval-samples", type=int, default=5000, help="K for the test NLL")
    parser.add_argument("--eval-examples", type=int, default=None,
                        help="a random N of the test images, passed to jlvm evaluate "
                        "--num-examples (default all 10,000)")
    parser.add_argument("--eval-batch-size", type=int, default=100)
    parser.add_argument("--only", default=",".join(ROWS),
                        help=f"comma-separated rows among {', '.join(ROWS)}")
    parser.add_argument("--runs", help="folder for the run directories (must not exist)")
    parser.add_argument("--devices", default="1", help="passed to jlvm train and evaluate")
    parser.add_argument("--seed", type=int, default=0, help="passed to jlvm train (default 0)")
    parser.add_argument("--data", default="binarized-mnist",
                        help="passed to jlvm train (default binarized-mnist, from "
                        "$JLVM_DATA_DIR)")
    parser.add_argument("--eval-every", type=int, default=10,
                        help="passed to jlvm train: its ELBOs every N epochs (default 10)")
    args = parser.parse_args()
    rows = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in rows if name not in ROWS]
    if unknown or not rows:
        parser.error(f"--only must name rows among {', '.join(ROWS)}, got {args.only!r}")
    for name in ("vae_epochs", "iwae_epochs", "eval_samples", "eval_batch_size", "eval_every",
                 "eval_examples"):
        if getattr(args, name) is None:
            continue
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.data == "binarized-mnist" and not os.environ.get("JLVM_DATA_DIR"):
        parser.error("set JLVM_DATA_DIR to the folder holding binarized_mnist.npz")
    runs = pathlib.Path(args.runs or f"runs/table-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if runs.exists():
        parser.error(f"{runs} exists; choose a new --runs (nothing is overwritten)")
    runs.mkdir(parents=True)

    results = []
    for name in rows:
        model, K, estimator, form, reference = ROWS[name]
        epochs = args.vae_epochs if model == "vae" else args.iwae_epochs
        out = runs / name
        started = time.perf_counter()
        trained = _jlvm("train", "--model", model, "--data", args.data,
                        "--latent-dim", "50",
                        *([] if "--hidden-dims" in FAMILY.get(name, [])
                          else ["--hidden-dims", "200", "200"]),
                        "--batch-size", "100",
                        "--learning-rate", "1e-3", "--num-samples", str(K),
                        "--grad-estimator", estimator, "--epochs", str(epochs),
                        *(["--elbo-form", form] if form != "joint" else []),
                        "--checkpoint-every", "100", "--eval-every", str(args.eval_every),
                        "--devices", args.devices, "--seed", str(args.seed),
                        *FAMILY.get(name, []), "--out", str(out))
        wall = time.perf_counter() - started
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        evaluation = ["evaluate", str(out), "--num-samples", str(args.eval_samples),
                      "--batch-size", str(args.eval_batch_size), "--devices", args.devices]
        if args.eval_examples:
            evaluation += ["--num-examples", str(args.eval_examples)]
        evaluated = _jlvm(*evaluation)
        nll = -evaluated["log_likelihood"]
        default_epochs = DEFAULT_EPOCHS[model]
        result = {
            "row": name, "model": model, "K": K, "grad_estimator": estimator, "elbo_form": form,
            "family": " ".join(FAMILY.get(name, [])) or "mlp, diagonal, normal",
            "seed": args.seed,
            "epochs": epochs, "train_seconds": metrics[-1]["seconds"],
            "train_wall_seconds": round(wall, 1),
            "test_nll": round(nll, 3), "test_nll_se": evaluated["log_likelihood_se"],
            "test_elbo": evaluated["elbo"], "eval_seconds": evaluated["seconds"],
            "eval_examples": evaluated["num_examples"], "eval_samples": args.eval_samples,
            "data": args.data,
            "reference_nll": (reference if epochs == default_epochs
                              and args.data == "binarized-mnist" else None),
            "run_dir": str(out), "final_train_elbo": trained["train_elbo"],
        }
        if result["reference_nll"] is not None:
            result["minus_reference"] = round(nll - reference, 3)
        results.append(result)
        print(json.dumps(result), flush=True)

    header = ("| row | objective | K | gradient | settings | epochs | training s | test NLL "
              f"(K={args.eval_samples}) | test -ELBO | reference NLL | NLL - reference |")
    lines = [header, "|" + "---|" * 11]
    for r in results:
        objective = {"joint": "ELBO", "kl": "ELBO (KL form)"}[r["elbo_form"]] \
            if r["model"] == "vae" else "IWAE"
        lines.append(
            f"| {r['row']} | {objective} | {r['K']} | {r['grad_estimator']} | {r['family']} | "
            f"{r['epochs']} | "
            f"{r['train_seconds']:.0f} | {r['test_nll']:.2f} ± {r['test_nll_se']:.2f} | "
            f"{-r['test_elbo']:.2f} | "
            f"{r['reference_nll'] if r['reference_nll'] is not None else '—'} | "
            f"{r.get('minus_reference', '—')} |")
    table = "\n".join(lines)
    print(table)
    (runs / "table.md").write_text(table + "\n")
    (runs / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))


if __name__ == "__main__":
    main()
