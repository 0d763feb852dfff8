"""The ``jlvm`` command: parsing and printing over ``jlvm.runs``.

    jlvm train [--model KIND | FILE.py:FACTORY [--model-arg NAME=VALUE]]
               [--data NAME | FILE.npz | FILE.npy | FILE.csv] [--epochs N] [--out RUN_DIR]
               [--seed S] [--num-seeds S] [--devices N] [--resume] ...
    jlvm evaluate RUN_DIR [--num-samples K] [--split test] [--num-examples N] [--devices N]
                  [--method {is,ais,bdmc}] [--ais-steps T] [--num-chains C]
    jlvm encode RUN_DIR [--split test | --input X.npz] --out Z.npz
    jlvm impute RUN_DIR --input IN.npz --out OUT.npz [--num-samples K] [--draws M]
    jlvm sample RUN_DIR [--n 64] --out FILE.png

Each prints one JSON object per line on stdout (``evaluate``: one per seed). Every failure
is one line on stderr and exit status 2 (set JLVM_TRACEBACK=1 to see the traceback of an
unexpected one).
"""

from __future__ import annotations

import argparse
import os
import sys

from jlvm import _files, runs
from jlvm.runs import _config, _interrupt, _user, kinds
from jlvm.runs.kinds import vae as _vae

_DEFAULTS = _config.Config()


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {_one_line(message)} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jlvm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model; writes a run directory")
    table = kinds.kinds()
    train.add_argument("--model", metavar="{" + ",".join(table) + "} | FILE.py:FACTORY",
                       help="; ".join(f"{name}: {kind.describe}" for name, kind in
                                      table.items())
                       + "; or a model of your own: FACTORY(data_dim, **model_args) -> "
                       "jlvm.Model in FILE.py or package.module, trained by the amortized "
                       f"learner (default {_DEFAULTS.model})")
    train.add_argument("--model-arg", action="append", metavar="NAME=VALUE",
                       help="a keyword argument of your FACTORY (repeatable); VALUE is read "
                       "as JSON where it parses (numbers, true, lists...), else as a string")
    train.add_argument("--objective", choices=("elbo", "iwae"),
                       help="a model of your own: the bound it is trained on (default elbo)")
    from jlvm import data as data_module

    train.add_argument("--data", metavar="{" + ",".join(data_module.NAMES) + "} | FILE",
                       help="a bundled data set (default digits), or a file: .npz (train [, "
                       "valid, test, train_labels, test_labels] or x [, labels]), .npy (one "
                       "array [N, D]) or .csv (numbers, an optional header; an empty cell or "
                       "NaN is missing). Without a test split 10%% of the rows, chosen with "
                       "--seed, are held out; data other than 0/1 is standardized per column "
                       "and every number reported is in the file's units")
    train.add_argument("--data-path", help="file or folder for binarized-mnist "
                       "(default $JLVM_DATA_DIR)")
    train.add_argument("--image-shape", type=int, nargs=2, metavar=("H", "W"),
                       help="the rows of a data file are H x W images (for --architecture "
                       "conv, --missing top-half and pictures)")
    train.add_argument("--epochs", type=int, help="passes over the training data (default "
                       f"{_DEFAULTS.epochs}; for gmm and bernoulli-mixture: EM iterations, "
                       "default 100)")
    train.add_argument("--latent-dim", type=int,
                       help=f"L, dimensions of z (default {_DEFAULTS.latent_dim})")
    train.add_argument("--hidden-dims", type=int, nargs="+",
                       metavar="WIDTH", help="hidden widths (default "
                       f"{' '.join(map(str, _DEFAULTS.hidden_dims))})")
    train.add_argument("--batch-size", type=int, help=f"default {_DEFAULTS.batch_size}")
    train.add_argument("--learning-rate", type=float,
                       help=f"Adam's step size (default {_DEFAULTS.learning_rate})")
    train.add_argument("--num-samples", type=int,
                       help="K draws per data point (default 1; iwae: 5)")
    train.add_argument("--grad-estimator", help="reparam, stl (vae), dreg (iwae); "
                       "score_function (leave-one-out REINFORCE; VIMCO for iwae); disarm "
                       "(vae, binary z: antithetic pairs, --num-samples even) (default "
                       "reparam; for --posterior bernoulli disarm, iwae score_function)")
    train.add_argument("--elbo-form", choices=_vae.ELBO_FORMS,
                       help="vae: the training ELBO's form: joint, log p(x,z) - log q(z|x); "
                       "entropy, H(q) analytic; kl, log p(x|z) - KL(q || p(z)) analytic "
                       "(default joint)")
    train.add_argument("--posterior", choices=_vae.POSTERIORS,
                       help="vae, iwae, semi: the encoder's q(z|x): a Gaussian with a "
                       "diagonal or a full covariance, or a flow (affine coupling layers on "
                       "a diagonal Gaussian), or bernoulli: independent bits, for binary "
                       "z with --prior bernoulli (default diagonal)")
    train.add_argument("--prior", metavar="{normal,mixture:K,bernoulli}",
                       help="p(z): N(0, I), a learned mixture of K Gaussians, or learned "
                       "independent bits z in {0,1}^L (with --posterior bernoulli) (default "
                       "normal)")
    train.add_argument("--likelihood", metavar="SPEC",
                       help="p(x|z) per pixel: bernoulli (binary data), categorical:M (M "
                       "gray levels), gaussian (mean and scale from z), gaussian-pixel (a "
                       "learned scale per pixel), gaussian-fixed:S (default: bernoulli for "
                       "binary data, categorical:17 for digits-gray, gaussian otherwise)")
    train.add_argument("--architecture", choices=_vae.ARCHITECTURES,
                       help="networks: mlp, or conv for images (stride-2 convolutions; "
                       "--hidden-dims then gives their channels, default "
                       f"{' '.join(map(str, _config.CONV_HIDDEN))}) (default mlp)")
    train.add_argument("--missing", metavar="{none,top-half,bottom-half,mcar:P}",
                       help="learn from incomplete data: these training entries are hidden "
                       "(top or bottom half of every image, or each entry with probability "
                       "P, drawn with --seed); the mask is stored in the run directory "
                       "(default none)")
    train.add_argument("--missing-file", metavar="MASK.npz",
                       help="or the training split's mask from a file: a boolean array "
                       "mask [N_train, D], True = observed")
    train.add_argument("--components", type=int,
                       help="mixture components (gmm, bernoulli-mixture; default "
                       f"{_DEFAULTS.components})")
    train.add_argument("--reg-covar", type=float, help="added to each covariance's diagonal "
                       f"(gmm; default {_DEFAULTS.reg_covar})")
    train.add_argument("--covariance-type", choices=("full", "diag", "spherical", "tied"),
                       help="gmm: each component's covariance, as scikit-learn's "
                       "GaussianMixture names them: full; diag (diagonal); spherical (one "
                       "variance); tied (one full covariance shared by all) (default full)")
    train.add_argument("--inner-steps", type=int, help="per-datapoint steps (svi, semi; "
                       f"default {_DEFAULTS.inner_steps})")
    train.add_argument("--seed", type=int, help="PRNG seed (default 0)")
    train.add_argument("--num-seeds", type=int, help="train S independent models at once, "
                       "seeds SEED..SEED+S-1, in one compiled step (jax.vmap); metrics per "
                       "seed (default 1)")
    _add_device_arguments(train)
    train.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                       help="write a checkpoint every N epochs and after the last (default 1)")
    train.add_argument("--eval-every", type=int, default=1, metavar="N",
                       help="compute the train and validation bounds after epoch 1, every N "
                       "epochs and after the last (default 1); the training metrics of every "
                       "epoch are recorded regardless")
    train.add_argument("--out", help="run directory (default runs/MODEL-DATA-TIMESTAMP)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last intact checkpoint")

    evaluate = commands.add_parser("evaluate", help="test log-likelihood by importance sampling, "
                                   "exactly (--exact) or by annealed importance sampling; "
                                   "the BDMC sandwich")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--num-samples", type=int, default=1000, help="K (default 1000)")
    evaluate.add_argument("--split", choices=runs.SPLITS, default="test")
    evaluate.add_argument("--chunk-size", type=int,
                          help="draws held in memory at once per data point (default: as "
                          "many as keep the temporaries within 1 GiB, at most 500)")
    evaluate.add_argument("--batch-size", type=int, default=100, help="default 100")
    evaluate.add_argument("--num-examples", type=int, metavar="N",
                          help="a random N examples of the split, drawn with --seed "
                          "(default all)")
    evaluate.add_argument("--seed", type=int, default=0, help="default 0")
    evaluate.add_argument("--missing", default="none", metavar="{" + ",".join(runs.MISSING)
                          + "}", help="treat these entries as missing and estimate log "
                          "p(x_obs): halves of images, or each entry with probability P "
                          "(drawn with --seed); exact for the GMM (default none)")
    evaluate.add_argument("--exact", dest="method", action="store_const", const="exact",
                          default="is",
                          help="log p(x) by enumerating every z (the same as --method exact): "
                          "for binary z with L <= 20 (--prior bernoulli) and the mixtures")
    evaluate.add_argument("--method", choices=("is", "ais", "bdmc", "exact"), default="is",
                          help="is: importance sampling with K=--num-samples draws of q; ais: "
                          "annealed importance sampling from q (or the prior), --ais-steps "
                          "temperatures, --num-chains chains per example; bdmc: forward and "
                          "reverse AIS on --num-examples points simulated from the model "
                          "(default 100): lower and upper bounds of log p(x) and their gap; "
                          "exact: a sum over every z where the prior's support is finite "
                          "(default is)")
    evaluate.add_argument("--ais-steps", type=int, default=1000, metavar="T",
                          help="AIS temperatures (default 1000)")
    evaluate.add_argument("--num-chains", type=int, default=16, metavar="C",
                          help="AIS chains per example (default 16)")
    _add_device_arguments(evaluate)

    encode = commands.add_parser("encode", help="features of data through p(z|x): "
                                 "E_q[z|x] and its scale per example (responsibilities for "
                                 "a GMM), into a .npz")
    encode.add_argument("run_dir")
    source = encode.add_mutually_exclusive_group()
    source.add_argument("--split", choices=runs.SPLITS, help="default test")
    source.add_argument("--input", metavar="X.npz",
                        help="encode the rows of the array x [N, D] in this file instead "
                        "(NaN = missing entry; encoder models)")
    encode.add_argument("--out", required=True,
                        help="the .npz file to create (never overwritten)")
    encode.add_argument("--num-samples", type=int, default=1000,
                        help="draws for a flow's moments, which have no closed form "
                        "(default 1000)")
    encode.add_argument("--seed", type=int, default=0, help="default 0")

    impute = commands.add_parser("impute", help="replace every NaN of a file by E[x_mis | "
                                 "x_obs] under the trained model, into a new .npz")
    impute.add_argument("run_dir")
    impute.add_argument("--input", required=True, metavar="IN.npz",
                        help="an array x [N, D], NaN where an entry is missing")
    impute.add_argument("--out", required=True, metavar="OUT.npz",
                        help="the .npz to create (never overwritten): x with the NaN filled")
    impute.add_argument("--num-samples", type=int, default=1000,
                        help="K importance-sampling draws per row (default 1000; the GMM's "
                        "imputation is exact)")
    impute.add_argument("--draws", type=int, default=0, metavar="M",
                        help="multiple imputation: also M draws of x_mis ~ p(x_mis | x_obs) "
                        "per row, as draws [M, N, D] (default 0)")
    impute.add_argument("--seed", type=int, default=0, help="default 0")

    sample = commands.add_parser("sample", help="draw from a trained model into an image")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=int, default=64, help="default 64")
    sample.add_argument("--out", required=True,
                        help="image file to create (.png, .pdf, .svg, .jpg; never overwritten)")
    sample.add_argument("--seed", type=int, default=0, help="default 0")
    return parser


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", metavar="{N,all}",
                        help="data parallelism: split every batch over N devices (a "
                        "jax.sharding.Mesh; parameters replicated), or all devices JAX sees; "
                        "the batch size must be a multiple of N (default 1; with "
                        "--distributed, all)")
    parser.add_argument("--distributed", action="store_true",
                        help="start JAX's multi-process runtime first "
                        "(jax.distributed.initialize; one process per host, each with the same "
                        "arguments and a shared --out); --devices then counts every host's "
                        "devices. On SLURM, Open MPI, Kubernetes or Cloud TPU JAX finds the "
                        "processes itself; elsewhere give the three options below")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="--distributed: process 0's address")
    parser.add_argument("--num-processes", type=int, help="--distributed: how many processes")
    parser.add_argument("--process-id", type=int, help="--distributed: this process's index")


def _distributed(args) -> dict | None:
    given = {"coordinator": args.coordinator, "num_processes": args.num_processes,
             "process_id": args.process_id}
    if not args.distributed:
        named = [f"--{name.replace('_', '-')}" for name, value in given.items()
                 if value is not None]
        if named:
            raise runs.RunError(f"{', '.join(named)} {'needs' if len(named) == 1 else 'need'} "
                                "--distributed.")
        return None
    return {name: value for name, value in given.items() if value is not None}


def _given(args) -> dict:
    """The configuration options given on the command line (None: not given)."""
    given = {name: value for name, value in vars(args).items()
             if name in _config.FIELDS and value is not None}
    if args.model_arg is not None:
        given["model_args"] = _user.parse_arguments(args.model_arg)
    return given


def _print(record: dict) -> None:
    print(_files.dumps(record), flush=True)


def _train(args) -> None:
    options = dict(checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
                   devices=args.devices, distributed=_distributed(args))
    given = _given(args)
    if args.resume:
        if args.out is None:
            raise runs.RunError("--resume needs --out RUN_DIR: the run to continue.")
        result = runs.resume(args.out, epochs=given.pop("epochs", None), expect=given,
                             **options)
    else:
        result = runs.train(runs.make_config(**given), args.out, **options)
    if result:
        _print(result)


def _evaluate(args) -> None:
    for line in runs.evaluate(args.run_dir, num_samples=args.num_samples, split=args.split,
                              chunk_size=args.chunk_size, batch_size=args.batch_size,
                              num_examples=args.num_examples, seed=args.seed,
                              missing=args.missing, devices=args.devices,
                              method=args.method, ais_steps=args.ais_steps,
                              num_chains=args.num_chains, distributed=_distributed(args)):
        _print(line)


def _encode(args) -> None:
    _print(runs.encode(args.run_dir, args.out, split=args.split, input_path=args.input,
                       num_samples=args.num_samples, seed=args.seed))


def _impute(args) -> None:
    _print(runs.impute(args.run_dir, args.input, args.out, num_samples=args.num_samples,
                       num_draws=args.draws, seed=args.seed))


def _sample(args) -> None:
    _print(runs.sample(args.run_dir, args.out, n=args.n, seed=args.seed))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error)


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C or SIGTERM from here on stop the command at its next safe point (between
    # chunks of steps), with one line, rather than wherever the signal lands
    with _interrupt.deferred():
        args = _parser().parse_args(argv)
        command = {"train": _train, "evaluate": _evaluate, "encode": _encode,
                   "impute": _impute, "sample": _sample}[args.command]
        try:
            command(args)  # a signal after its last safe point: the work is done anyway
            return 0
        except runs.RunError as error:
            message = _one_line(error)
        except OSError as error:  # a path that cannot be read or written, a full disk, ...
            where = f"{error.filename}: " if error.filename else ""
            message = f"{where}{_one_line(error.strerror or error)}"
        except KeyboardInterrupt:  # a second Ctrl-C: at once, wherever it landed
            message = ("interrupted at once (a second signal); the newest complete "
                       "checkpoint, if any, is intact.")
        except Exception as error:  # a defect: still one line, and the way to see more
            if os.environ.get("JLVM_TRACEBACK"):
                raise
            if _out_of_memory(error):
                message = ("out of memory: lower --batch-size, --num-samples, --chunk-size, "
                           f"--latent-dim or --hidden ({_one_line(error)[:160]})")
            else:
                message = (f"unexpected {type(error).__name__}: {_one_line(error)[:300]} (a "
                           "bug in jlvm; JLVM_TRACEBACK=1 shows the traceback)")
        print(f"jlvm {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
