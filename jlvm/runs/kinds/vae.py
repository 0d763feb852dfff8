"""The built-in VAE (``--model vae``: the ELBO) and IWAE (``--model iwae``), and what the
VAE's families share with semi-amortized and SVI runs: the network settings, their
defaults and checks, and ``vae.model(...)`` built from them."""

from __future__ import annotations

from typing import Any

from jlvm.runs._config import CONV_HIDDEN
from jlvm.runs._errors import RunError
from jlvm.runs.kinds import Kind

# the settings of every kind built on jlvm.models.vae
NETWORK = ("latent_dim", "hidden_dims", "batch_size", "learning_rate", "num_samples",
           "grad_estimator", "prior", "likelihood", "architecture")
ELBO_FORMS = ("joint", "entropy", "kl")  # jlvm.inference.amortized.ELBO_FORMS
POSTERIORS = ("diagonal", "full", "flow", "bernoulli")  # posteriors.ENCODER_FAMILIES
DISCRETE_ESTIMATORS = ("disarm", "score_function")  # for binary z: never reparameterized
ARCHITECTURES = ("mlp", "conv")  # jlvm.models.networks.ARCHITECTURES


def default_likelihood(levels: int | None) -> str:
    """Bernoulli pixels for binary data, a categorical over M gray levels for data on a
    grid of levels, a Gaussian (mean and scale from z) for real numbers."""
    if levels == 2:
        return "bernoulli"
    return "gaussian" if levels is None else f"categorical:{levels}"


def network_defaults(given, facts, *, discrete_estimator: str = "disarm") -> dict[str, Any]:
    """The likelihood the data takes (once known: ``facts`` is None for an unread file),
    a conv net's channels, and for binary z (``--posterior bernoulli``) a gradient
    estimator for discrete q (DisARM on one antithetic pair for the ELBO; VIMCO, the
    score function with leave-one-out baselines, for the IWAE bound)."""
    out: dict[str, Any] = {}
    estimator = given.get("grad_estimator")
    if given.get("posterior") == "bernoulli" and estimator is None:
        out["grad_estimator"] = estimator = discrete_estimator
    if estimator == "disarm" and "num_samples" not in given:  # one antithetic pair
        out["num_samples"] = 2
    if facts is not None:
        out["likelihood"] = default_likelihood(facts.levels)
    if given.get("architecture") == "conv":
        out["hidden_dims"] = CONV_HIDDEN
    return out


def check_network(config, *, estimators: tuple[str, ...]) -> None:
    """The VAE's settings, and that they fit the data where it is known without reading
    it (a Bernoulli likelihood on gray data, a conv net on vectors...)."""
    from jlvm.models import likelihoods, priors
    from jlvm.runs import _data

    binary = config.posterior == "bernoulli"
    allowed = tuple(e for e in estimators if (e in DISCRETE_ESTIMATORS) == binary
                    or e == "score_function")
    if binary and not allowed:
        raise RunError(f"--posterior bernoulli (binary z) trains with a score-function or "
                       f"DisARM gradient, which --model {config.model} does not take (it "
                       f"refines q by reparameterized steps); use --model vae or iwae.")
    if config.grad_estimator not in allowed:
        which = "binary z (--posterior bernoulli)" if binary else "a continuous z"
        raise RunError(f"--grad-estimator for --model {config.model} with {which} must be "
                       f"one of {', '.join(allowed)}, got {config.grad_estimator!r}.")
    if (config.prior == "bernoulli") != binary:
        raise RunError(f"--prior bernoulli and --posterior bernoulli go together (p and q over "
                       f"the same z), got --prior {config.prior} with --posterior "
                       f"{config.posterior}.")
    if config.grad_estimator == "disarm" and config.num_samples % 2:
        raise RunError(f"--grad-estimator disarm draws antithetic pairs: --num-samples must "
                       f"be even, got {config.num_samples}.")
    if config.architecture not in ARCHITECTURES:
        raise RunError(f"--architecture must be one of {', '.join(ARCHITECTURES)}, got "
                       f"{config.architecture!r}.")
    if config.posterior not in POSTERIORS:
        raise RunError(f"--posterior must be one of {', '.join(POSTERIORS)}, got "
                       f"{config.posterior!r}.")
    try:
        priors.parse(config.prior, "--prior")
        spec = None if config.likelihood is None else likelihoods.parse(config.likelihood,
                                                                        "--likelihood")
    except (TypeError, ValueError) as error:
        raise RunError(str(error)) from None
    facts = _data.kind_of(config.data)
    if facts is not None and spec is not None:
        check_fits(spec, config.architecture, facts.levels, facts.image_shape, config.data)
    if config.architecture == "conv" and facts is None and config.image_shape is None:
        raise RunError(f"--architecture conv needs images: give --image-shape H W for the "
                       f"rows of {_data.describe(config.data)}.")
    if config.elbo_form not in ELBO_FORMS:
        raise RunError(f"--elbo-form must be one of {', '.join(ELBO_FORMS)}, got "
                       f"{config.elbo_form!r}.")
    if config.elbo_form != "joint" and config.grad_estimator != "reparam":
        raise RunError(f"--elbo-form {config.elbo_form} takes --grad-estimator reparam, got "
                       f"{config.grad_estimator}.")
    if config.elbo_form == "kl" and priors.parse(config.prior).name != "normal":
        raise RunError(f"--elbo-form kl needs an analytic KL(q || p(z)), which --prior "
                       f"{config.prior} has not; use --elbo-form joint or entropy.")
    if config.elbo_form != "joint" and config.posterior == "flow":
        raise RunError(f"--elbo-form {config.elbo_form} needs q's entropy in closed form, "
                       "which --posterior flow has not; use --elbo-form joint.")


def check_fits(spec: Any, architecture: str, levels: int | None,
               image_shape: tuple | None, data: str) -> None:
    """``RunError`` unless the likelihood ``spec`` gives the data's values a probability
    and ``architecture`` fits its shape: levels M (2 = binary) or None (real numbers)."""
    from jlvm.runs import _data

    name = _data.describe(data)
    if spec.name == "bernoulli" and levels != 2:
        what, instead = (("real-valued", "gaussian") if levels is None
                         else (f"on {levels} gray levels", f"categorical:{levels}"))
        raise RunError(f"--likelihood bernoulli needs binary (0/1) data; {name} is {what} "
                       f"(try --likelihood {instead}).")
    if spec.name == "categorical":
        if levels is None:
            raise RunError(f"--likelihood {spec} needs data on gray levels; {name} is "
                           "real-valued (try --likelihood gaussian).")
        if (spec.argument - 1) % (levels - 1):
            raise RunError(f"--likelihood {spec} puts pixels on {spec.argument} levels, "
                           f"which do not include {name}'s {levels} levels (try "
                           f"--likelihood categorical:{levels}).")
    if architecture == "conv" and image_shape is None:
        raise RunError(f"--architecture conv needs image data; {name} holds vectors (try "
                       "--architecture mlp, or --image-shape H W).")


def model(config, data, stored: dict):
    """``vae.model(...)`` of ``config`` on ``data``, checked against the data's values,
    and the facts to record (whether the encoder takes the mask beside x)."""
    from jlvm.models import likelihoods, vae

    dataset = data.dataset
    spec = likelihoods.parse(config.likelihood)
    check_fits(spec, config.architecture, data.levels, dataset.image_shape, config.data)
    # learned from holes, the encoder sees x with its missing entries 0, as MIWAE's does
    # (Mattei & Frellsen, 2019): on binarized MNIST, 30 epochs, the mask as a second input
    # gave a worse test log p(x_obs) (25 % missing at random: -97.8 vs -85.0 nats; top half
    # missing: -58.6 vs -54.6) at 1.35x the step. Runs written before kept the mask.
    encoder_sees_mask = bool(stored.get("encoder_sees_mask", False))
    built = vae.model(dataset.train.shape[1], config.latent_dim,
                      hidden_dims=config.hidden_dims, likelihood=config.likelihood,
                      posterior=config.posterior, prior=config.prior,
                      architecture=config.architecture, image_shape=dataset.image_shape,
                      encoder_sees_mask=encoder_sees_mask)
    likelihood_type = "probability" if likelihoods.is_discrete(spec) else "density"
    return built, likelihood_type, {"encoder_sees_mask": encoder_sees_mask}


def _build(config, data, stored, *, objective: str):
    import optax

    from jlvm.inference import amortized
    from jlvm.runs.kinds import _latent

    built, likelihood_type, facts = model(config, data, stored)
    learner = amortized(built, optax.adam(config.learning_rate), objective=objective,
                        num_samples=config.num_samples, grad_estimator=config.grad_estimator,
                        elbo_form=config.elbo_form)
    iwae = objective == "iwae"
    reported = ((("iwae_bound", f"IWAE bound (K={config.num_samples})"), ("elbo", "ELBO"))
                if iwae else (("elbo", "ELBO"),))
    return _latent.built(built, learner, batch_size=config.batch_size, reported=reported,
                         likelihood_type=likelihood_type, facts=facts,
                         iwae_samples=config.num_samples if iwae else None)


VAE = Kind(
    settings=(*NETWORK, "elbo_form", "posterior"),
    defaults=network_defaults,
    check=lambda config: check_network(config, estimators=("reparam", "stl",
                                                           *DISCRETE_ESTIMATORS)),
    build=lambda config, data, stored, warn: _build(config, data, stored, objective="elbo"),
    describe="the VAE: the ELBO over encoder and decoder")

# an IWAE with one draw is the VAE: K=5 unless given
IWAE = Kind(
    settings=(*NETWORK, "posterior"),
    defaults=lambda given, facts: {"num_samples": 5, **network_defaults(
        given, facts, discrete_estimator="score_function")},
    check=lambda config: check_network(config, estimators=("reparam", "dreg",
                                                           "score_function")),
    build=lambda config, data, stored, warn: _build(config, data, stored, objective="iwae"),
    describe="the IWAE bound with K draws (default 5)")
