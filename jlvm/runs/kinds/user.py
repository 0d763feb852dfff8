"""A model of your own (``--model FILE.py:FACTORY`` or ``package.module:FACTORY``):
``FACTORY(data_dim, **model_args)`` returns a ``jlvm.Model``, trained by the amortized
learner (``jlvm.inference.amortized``) on ``--objective elbo`` (default) or ``iwae``.

Everything else a run does comes from the model's functions: per-epoch bounds and log p(x)
by importance sampling with its encoder, features E_q[z | x], imputation and draws where
it has a decoder (and a prior, for draws). On binary data its log p(x) is taken to be a
log-probability (bits per dimension are reported where it is <= 0), on any other data a
log-density.
"""

from __future__ import annotations

from jlvm.runs._errors import RunError
from jlvm.runs.kinds import Kind

OBJECTIVES = ("elbo", "iwae")
ESTIMATORS = {"elbo": ("reparam", "stl", "score_function"),
              "iwae": ("reparam", "dreg", "score_function")}


def _defaults(given, facts) -> dict:
    # an IWAE bound with one draw is the ELBO: K=5 unless given
    return {"num_samples": 5} if given.get("objective") == "iwae" else {}


def _check(config) -> None:
    from jlvm.runs import _user
    from jlvm.runs.kinds import vae

    if config.objective not in OBJECTIVES:
        raise RunError(f"--objective must be one of {', '.join(OBJECTIVES)}, got "
                       f"{config.objective!r}.")
    allowed = ESTIMATORS[config.objective]
    if config.grad_estimator not in allowed:
        raise RunError(f"--grad-estimator for --objective {config.objective} must be one of "
                       f"{', '.join(allowed)}, got {config.grad_estimator!r}.")
    if config.elbo_form not in vae.ELBO_FORMS:
        raise RunError(f"--elbo-form must be one of {', '.join(vae.ELBO_FORMS)}, got "
                       f"{config.elbo_form!r}.")
    if config.elbo_form != "joint" and (config.objective, config.grad_estimator) != (
            "elbo", "reparam"):
        raise RunError(f"--elbo-form {config.elbo_form} takes --objective elbo with "
                       f"--grad-estimator reparam.")
    _user.check_arguments(config.model_args)


def _build(config, data, stored, warn):
    import optax

    from jlvm.inference import amortized
    from jlvm.runs import _user
    from jlvm.runs.kinds import _latent
    from jlvm.train import Learner

    dim = data.dataset.train.shape[1]
    model, source = _user.build(config.model, dim, config.model_args,
                                stored.get("model_source"), warn)
    try:
        learner = amortized(model, optax.adam(config.learning_rate),
                            objective=config.objective, num_samples=config.num_samples,
                            grad_estimator=config.grad_estimator, elbo_form=config.elbo_form)
    except (TypeError, ValueError) as error:
        raise RunError(f"--model {config.model}: {error}") from None

    def init(key, batch):
        # the first time jlvm calls your functions (traced on one example): what they
        # raise is about your model, said in one line
        try:
            return learner.init(key, batch)
        except Exception as error:
            raise RunError(f"--model {config.model}: the model failed on the training data: "
                           f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
                           ) from None

    iwae = config.objective == "iwae"
    reported = ((("iwae_bound", f"IWAE bound (K={config.num_samples})"), ("elbo", "ELBO"))
                if iwae else (("elbo", "ELBO"),))
    return _latent.built(model, Learner(init, learner.step), batch_size=config.batch_size,
                         reported=reported,
                         likelihood_type="probability" if data.levels == 2 else "density",
                         facts={"model_source": source},
                         iwae_samples=config.num_samples if iwae else None)


KIND = Kind(
    settings=("objective", "num_samples", "grad_estimator", "learning_rate", "batch_size",
              "model_args", "elbo_form"),
    defaults=_defaults,
    check=_check,
    build=_build,
    describe="a model of your own: FACTORY(data_dim, **model_args) -> jlvm.Model")
