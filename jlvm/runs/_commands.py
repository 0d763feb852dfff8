"""The commands on a trained run directory: ``load``, ``evaluate``, ``sample``, ``encode``
and ``impute``, each checking its arguments before it reads the run; re-exported by
``jlvm.runs``. The work itself is done by ``_methods``, ``_figures`` and ``_encode``."""

from __future__ import annotations

import numbers
import os

from jlvm.runs._arguments import Warn, _positive, _seed, _stderr_warning, start_distributed
from jlvm.runs._errors import RunError
from jlvm.runs._setup import Run
from jlvm.runs._setup import load as _load

SPLITS = ("test", "valid", "train")
MAX_SAMPLES_DRAWN = 1024  # jlvm sample: beyond this a picture is no longer one a person reads


def load(run_dir: str | os.PathLike, *, warn: Warn = _stderr_warning) -> Run:
    """The newest intact checkpoint of the run in ``run_dir``, with its configuration and data.

    Args:
      run_dir: the run directory.
      warn: as in ``train``; a damaged newer checkpoint is skipped with a warning.

    Returns:
      A ``Run`` of ``path``, ``config``, ``setup``, ``state`` (all seeds), ``step`` (epoch).
    """
    return _load(run_dir, warn=warn)


def evaluate(run_dir: str | os.PathLike, *, num_samples: int = 1000, split: str = "test",
             chunk_size: int | None = None, batch_size: int = 100,
             num_examples: int | None = None, seed: int = 0, missing: str = "none",
             devices: int | str | None = None, method: str = "is", ais_steps: int = 1000,
             num_chains: int = 16,
             distributed: dict | None = None, warn: Warn = _stderr_warning) -> list[dict]:
    """log p(x) and the ELBO per seed of the run, in the data's own units.

    Args:
      run_dir: the run directory.
      num_samples: K draws of its q (the encoder's, or one fitted per example) for
        importance sampling; exact where the model allows (the GMM).
      split: "test", "valid" or "train".
      chunk_size: draws per example held at once; None: as many as keep the temporaries
        within 1 GiB, at most 500 (``jlvm.evaluate.chunk_size_for``; values do not change).
      batch_size: examples per batch.
      num_examples: a seeded random subset of the split (``seed``), not its first rows.
      seed: PRNG seed of the draws, the subset and the missing entries.
      missing: "none", "top-half" / "bottom-half" (pixels unobserved) or "mcar:P" (each
        entry with probability P): log p(x_obs), any model; NaN in the data is missing too.
      devices, distributed, warn: as in ``train``.
      method: "is"; "ais" (forward AIS, ``jlvm.evaluate.log_likelihood_ais``, from the
        encoder's q, or the prior where there is none); "exact" (a sum over every z of a
        prior of finite support, ``jlvm.evaluate.log_likelihood_exact``: binary z, L <= 20;
        the mixtures are exact anyway); "bdmc" (``jlvm.ais.bdmc``: ``num_examples`` points
        simulated from the model, default 100, bracketed by forward and reverse AIS).
      ais_steps: AIS temperatures.
      num_chains: AIS chains per example.

    Returns:
      One dict per seed (``[]`` on processes other than 0) with means and standard errors
      over the examples (nats per example), the gap, ``likelihood_type``, for probabilities
      bits per dimension ("bdmc": ``log_likelihood_lower``, ``log_likelihood_upper``, their
      ``gap``); where the kind scores a clustering (``Built.scores``, the Bernoulli
      mixture) and the split has labels, ``adjusted_rand_index`` of its most probable
      components against them (by the default method).
    """
    from jlvm.runs import _config, _methods, _setup

    num_samples = _positive("num_samples", num_samples, maximum=2**24)
    batch_size = _positive("batch_size", batch_size, maximum=2**20)
    if chunk_size is not None:
        chunk_size = _positive("chunk_size", chunk_size, maximum=2**20)
    if num_examples is not None:
        num_examples = _positive("num_examples", num_examples)
    if split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if method not in _methods.METHODS:
        raise RunError(f"--method must be one of {', '.join(_methods.METHODS)}, "
                       f"got {method!r}.")
    ais_steps = _positive("ais_steps", ais_steps, maximum=2**24)
    num_chains = _positive("num_chains", num_chains, maximum=2**16)
    if method == "bdmc" and missing != "none":
        raise RunError("--method bdmc simulates complete data from the model; --missing "
                       "does not apply.")
    _config.parse_missing(missing)
    seed = _seed(seed)
    writer = True if distributed is None else start_distributed(**distributed)
    run = load(run_dir, warn=warn if writer else (lambda message: None))
    setup = run.setup
    X = getattr(setup.dataset, split)
    if X is None:
        raise RunError(f"data set {setup.dataset.name} has no {split} split.")
    labels = getattr(setup.dataset, f"{split}_labels", None)  # a valid split has none
    rows = _setup.subset(X.shape[0], num_examples, seed)
    mesh = _setup.resolve_mesh(devices, batch_size, setup, distributed=distributed is not None)
    import jax

    results = []
    for run_seed, state in _setup.per_seed(run.config, run.state):
        line = _methods.evaluate_state(
            setup, state, X[rows], None if labels is None else labels[rows],
            jax.random.PRNGKey(seed), method=method, num_samples=num_samples,
            chunk_size=chunk_size, batch_size=batch_size, num_examples=num_examples,
            ais_steps=ais_steps, num_chains=num_chains, missing=missing, mesh=mesh,
            seed=seed)
        where = {} if method == "bdmc" else {"split": split}  # bdmc simulates its data
        results.append({"run_dir": str(run.path), "seed": run_seed, "epoch": run.step,
                        **where, **line})
    return results if writer else []


def sample(run_dir: str | os.PathLike, out: str | os.PathLike, *, n: int = 64, seed: int = 0,
           warn: Warn = _stderr_warning) -> dict:
    """Draws ``n`` samples of the run's model (its first seed) into a new image file.

    Args:
      run_dir: the run directory; its model needs a prior and a decoder.
      out: the image (.png, .pdf, .svg, .jpg, ...; never overwritten): mean images E[x | z]
        with z ~ p(z) for images, draws x ~ p(x) otherwise, in the data's own units.
      n: 1 to ``MAX_SAMPLES_DRAWN`` (1024).
      seed, warn: as in ``evaluate``.

    Returns:
      What ``jlvm sample`` prints, a dict of ``out``, ``n``, ``seed`` and ``run_dir``.
    """
    import jax

    from jlvm import _files, plots
    from jlvm.runs import _figures, _setup

    try:
        out = _files.check_new(out, suffixes=tuple(f".{f}" for f in plots.formats()))
    except ValueError as error:
        raise RunError(str(error)) from None
    n = _positive("n", n)
    if n > MAX_SAMPLES_DRAWN:
        raise RunError(f"--n must be at most {MAX_SAMPLES_DRAWN} (one picture), got {n}.")
    seed = _seed(seed)
    run = load(run_dir, warn=warn)
    setup = run.setup
    if setup.built.sample is None:
        raise RunError(f"--model {run.config.model} cannot draw samples: that needs "
                       "model.prior(params) -> p(z) and model.decoder(params, z) -> p(x | z).")
    _, state = next(_setup.per_seed(run.config, run.state))  # the first of the seeds
    view = _figures.view(setup)
    drawn = setup.built.sample(state, jax.random.PRNGKey(seed), n,
                               view.image_shape is not None)
    figure = _figures.samples_figure(drawn, view)
    try:
        plots.save(figure, out, replace=False)
    except FileExistsError:
        raise RunError(f"{out} exists; choose another --out (nothing was overwritten).") from None
    return {"out": str(out), "n": n, "seed": seed, "run_dir": str(run.path)}


def encode(run_dir: str | os.PathLike, out: str | os.PathLike, *, split: str | None = None,
           input_path: str | os.PathLike | None = None, num_samples: int = 1000,
           seed: int = 0, warn: Warn = _stderr_warning) -> dict:
    """Writes the features of the run's posterior for some rows into a new .npz.

    Arrays: a model with a q per example: ``mean`` ``[N, L]`` (E_q[z | x]) and ``scale``
    ``[N, L]`` (the standard deviation of each coordinate of q); the GMM:
    ``responsibilities`` ``[N, K]`` and ``component`` ``[N]``; ``labels`` ``[N]`` where the
    split has them; ``run_seed`` and ``epoch`` of the model used (a run's first seed).

    Args:
      run_dir: the run directory.
      out: the new ``.npz``.
      split: "test" (the default without ``input_path``), "valid" or "train".
      input_path: instead of a split, a .npz whose ``x`` ``[N, D]`` (NaN = missing; in the
        data's own units) is encoded.
      num_samples: draws for Monte Carlo moments where q has none in closed form (a flow).
      seed, warn: as in ``evaluate``.

    Returns:
      What ``jlvm encode`` prints, a dict of ``out``, ``run_dir``, ``source``,
      ``num_examples``, ``arrays`` (name: shape) and ``what`` (in words, what they are).
    """
    from jlvm.runs import _encode

    if input_path is not None and split is not None:
        raise RunError("give --split or --input, not both.")
    split = "test" if split is None and input_path is None else split
    if split is not None and split not in SPLITS:
        raise RunError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}.")
    num_samples = _positive("num_samples", num_samples, maximum=2**20)
    seed = _seed(seed)
    _encode.check_out(out)
    run = load(run_dir, warn=warn)
    return _encode.encode(run, out, split=split, input_path=input_path,
                          num_samples=num_samples, seed=seed)


def impute(run_dir: str | os.PathLike, input_path: str | os.PathLike,
           out: str | os.PathLike, *, num_samples: int = 1000, num_draws: int = 0,
           seed: int = 0, warn: Warn = _stderr_warning) -> dict:
    """Fills the NaN of a file's ``x`` with E[x_d | x_obs] under the run's (first) model.

    The new .npz holds ``x`` ``[N, D]`` with its observed entries exactly as read (in the
    file's dtype; a run on standardized data converts what it imputes back to the data's
    units): exact for the GMM, else by self-normalized importance sampling, with each
    row's ``effective_sample_size``; with M > 0, ``draws`` ``[M, N, D]`` from p(x_mis | x_obs).

    Args:
      run_dir: the run directory.
      input_path: a .npz holding ``x``.
      out: the new .npz.
      num_samples: K draws of the model's q(z | x_obs) for importance sampling.
      num_draws: M in [0, ``MAX_SAMPLES_DRAWN``] (multiple imputation).
      seed, warn: as in ``evaluate``.

    Returns:
      What ``jlvm impute`` prints, a dict of ``out``, ``run_dir``, ``num_examples``,
      ``missing_entries``, ``what``, ``draws`` and ``effective_sample_size_median``.
    """
    from jlvm.runs import _encode

    num_samples = _positive("num_samples", num_samples, maximum=2**20)
    if isinstance(num_draws, bool) or not isinstance(num_draws, numbers.Integral) or \
            not 0 <= num_draws <= MAX_SAMPLES_DRAWN:
        raise RunError(f"--draws must be an integer in [0, {MAX_SAMPLES_DRAWN}], got "
                       f"{num_draws!r}.")
    seed = _seed(seed)
    _encode.check_out(out)
    run = load(run_dir, warn=warn)
    return _encode.impute(run, input_path, out, num_samples=num_samples,
                          num_draws=int(num_draws), seed=seed)
