"""Semi-amortized inference (``--model semi``): the encoder's q refined per example by a
few Adam steps before the decoder's step (``jlvm.inference.semi_amortized``)."""

from __future__ import annotations

from jlvm.runs.kinds import Kind, vae


def _build(config, data, stored, warn):
    import optax

    from jlvm.inference import semi_amortized
    from jlvm.runs.kinds import _latent

    model, likelihood_type, facts = vae.model(config, data, stored)
    learner = semi_amortized(model, optax.adam(config.learning_rate),
                             inner_steps=config.inner_steps,
                             inner_learning_rate=config.inner_learning_rate,
                             num_samples=config.num_samples)
    return _latent.built(model, learner, batch_size=config.batch_size,
                         reported=(("elbo", "ELBO"),), likelihood_type=likelihood_type,
                         facts=facts)


KIND = Kind(
    settings=(*vae.NETWORK, "inner_steps", "inner_learning_rate", "posterior"),
    defaults=vae.network_defaults,
    check=lambda config: vae.check_network(config, estimators=("reparam",)),
    build=_build,
    describe="semi-amortized: the encoder's q refined per example")
