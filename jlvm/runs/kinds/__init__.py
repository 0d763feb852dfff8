"""Model kinds: what each kind of model brings to a run directory, found in one table.

A kind is an object, not a string compared in every file: ``Kind(settings, defaults,
check, build)``. ``build(config, data, stored, warn)`` closes over the model and its settings and
returns a ``Built``: the ``jlvm.Model``, its ``Learner`` and the functions a run needs of
it (per-epoch bounds, evaluation, encoding, imputation, figures), each compiled once per
run, as optax's and blackjax's factories return their functions. The training loop, the
commands and ``jlvm.runs`` call those functions and never ask which kind they hold::

    KINDS = {"vae": ..., "iwae": ..., "semi": ..., "svi": ..., "gmm": ...,
             "bernoulli-mixture": ..., "ppca": ...}
    kind_for("vae")                     # a table entry
    kind_for("my_model.py:make_model")  # a model of your own (``user.KIND``)

Adding a kind is one module that defines a ``Kind`` and one entry in ``KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from jlvm.runs._errors import RunError


class Built(NamedTuple):
    """One run's model and what the run layer needs of it (see each field's comment).

    ``X`` below is [N, D] in the model's units and ``mask`` None or bool [N, D] (True =
    observed; anything may stand at a missing entry); ``state`` is one run's
    ``TrainState``; ``key`` a PRNG key; results are NumPy arrays with one row per row of X.
    """

    model: Any  # the jlvm.Model
    learner: Any  # its jlvm.train.Learner
    batch_size: int  # examples per step (all of them for full-batch EM)
    # (metric, what it is), the bound the learner trains first: metrics.jsonl and the
    # console report them per epoch; e.g. (("iwae_bound", "IWAE bound (K=5)"), ("elbo", ...))
    reported: tuple[tuple[str, str], ...]
    likelihood_type: str  # "probability" (discrete x) or "density" (continuous x)
    params: Callable[[Any], Any]  # the model's params in a state
    train_data: Callable[[Any, Any], Any]  # (X, mask) -> what an epoch of the learner takes
    # (state, X, mask, key, rows) -> {metric: [n]}: the reported bounds per example; rows:
    # the examples' indices in the training data (X are training rows), else None
    bounds: Callable[..., dict]
    # (state, settings) -> (key, X, mask) -> {"log_likelihood": [n], "elbo": [n]}: log p(x)
    # (of the observed entries) and the ELBO, by ``settings`` (an ``Evaluation``)
    evaluator: Callable[..., Callable]
    exact: bool  # whether the evaluator's log p(x) is exact (no draws)
    # (state, X, mask, key, num_samples) -> (arrays, what they are in words): jlvm encode
    encode: Callable[..., tuple[dict, str]]
    # (state, X, mask, key, num_samples, num_draws) -> (arrays, what): jlvm impute; arrays
    # hold "x" [N, D] (every missing entry replaced by E[x_d | x_obs]) and, with num_draws
    # M, "draws" [M, N, D]
    impute: Callable[..., tuple[dict, str]]
    # (state, key, n) -> (x [n, D], what they are): draws for jlvm sample, or None when the
    # model cannot draw (no decoder or no prior)
    sample: Callable[..., tuple[Any, str]] | None
    # (state, view, records, key) -> {file name: matplotlib figure}; view: a ``View``
    figures: Callable[..., dict]
    facts: dict  # what the run directory records for later commands (config.json)
    # (state, X, mask, labels [n]) -> {name: float}: numbers beyond log p(x) that
    # ``jlvm evaluate`` reports where the split has labels (a clustering's adjusted Rand
    # index), or None
    scores: Callable[..., dict] | None = None


class Evaluation(NamedTuple):
    """How ``jlvm evaluate`` asks for log p(x): ``num_samples`` draws per example, at most
    ``chunk_size`` of them at once (None: as many as fit a memory budget), ``batch_size``
    examples at once, split over ``mesh``'s devices (or None)."""

    num_samples: int
    chunk_size: int | None
    batch_size: int
    mesh: Any


class View(NamedTuple):
    """What a run's figures show: ``test`` rows [n, D] (model units) with their ``labels``
    (or None), ``image_shape`` (or None), ``to_file`` (model units -> the data's own, for
    what is drawn), ``title``."""

    test: Any
    labels: Any
    image_shape: tuple[int, int] | None
    to_file: Callable[[Any], Any]
    title: str


class Kind(NamedTuple):
    """A kind of model a run directory can hold.

    Attributes:
      settings: the ``Config`` fields it takes beyond those of every run
        (``jlvm.runs._config.COMMON``); any other one given is refused.
      defaults: (given settings, what the data is: a ``jlvm.data.Kind`` or None while a
        file is unread) -> values for the settings not given.
      check: ``Config -> None``: a ``RunError`` naming a setting it cannot take (static:
        nothing is read or compiled).
      build: (config, data: ``jlvm.runs._data.RunData``, stored facts of the run directory
        ({} for a new run), warn: a function of one line) -> ``Built``.
      data_parallel: whether ``--devices`` may split its batches.
      describe: one line for ``jlvm train --help``.
    """

    settings: tuple[str, ...]
    defaults: Callable[[Mapping[str, Any], Any], dict[str, Any]]
    check: Callable[[Any], None]
    build: Callable[..., Built]
    data_parallel: bool = True
    describe: str = ""


def _table() -> dict[str, Kind]:
    from jlvm.runs.kinds import bernoulli_mixture, gmm, ppca, semi, svi, vae

    return {"vae": vae.VAE, "iwae": vae.IWAE, "semi": semi.KIND, "svi": svi.KIND,
            "gmm": gmm.KIND, "bernoulli-mixture": bernoulli_mixture.KIND, "ppca": ppca.KIND}


KINDS: dict[str, Kind] = {}  # filled on first use


def kinds() -> dict[str, Kind]:
    """The table: a kind's name -> ``Kind``."""
    if not KINDS:
        KINDS.update(_table())
    return KINDS


def kind_for(model: Any) -> Kind:
    """The kind ``model`` names: a key of ``KINDS``, or a model of your own
    (``FILE.py:FACTORY`` or ``package.module:FACTORY``); ``RunError`` otherwise."""
    from jlvm.runs import _user

    table = kinds()
    if isinstance(model, str) and model in table:
        return table[model]
    if isinstance(model, str) and _user.is_spec(model):
        from jlvm.runs.kinds import user

        return user.KIND
    raise RunError(f"--model must be one of {', '.join(table)}, or a model of your own as "
                   f"FILE.py:FACTORY or package.module:FACTORY, got {model!r}.")
