"""Stochastic variational inference with a q per training example (``--model svi``,
``jlvm.inference.svi``). It has no encoder: the q of any other example (test data,
``jlvm encode``, ``jlvm impute``) is fitted from the prior, five times the training's
inner steps."""

from __future__ import annotations

from jlvm.runs.kinds import Kind, vae

TEST_STEPS_FACTOR = 5  # a q fitted per test point takes 5x the training inner steps


def _fit(model, config):
    """(params, X, mask or None, key) -> (mean [N, L], log_scale [N, L]): a diagonal
    Gaussian q fitted to each row's log p(x_obs, z), from N(0, I); jitted once."""
    import functools

    import jax
    import jax.numpy as jnp

    from jlvm.inference import _local
    from jlvm.models import posteriors, protocol

    steps = TEST_STEPS_FACTOR * config.inner_steps

    @jax.jit
    def fit(params, X, mask, keys):
        params = jax.lax.stop_gradient(params)
        latent = protocol.latent_example(model, params, X[0])

        def one(x, observed, key):
            log_joint = functools.partial(protocol.log_joint, model, params, x,
                                          mask=observed)
            start = posteriors.standard(latent.shape[0])
            refined, _, _ = _local.refine(log_joint, start, posteriors.diagonal, key,
                                          inner_steps=steps,
                                          inner_learning_rate=config.inner_learning_rate,
                                          num_samples=1)
            return refined

        observed = jnp.ones(X.shape, bool) if mask is None else mask
        return jax.vmap(one)(X, observed, keys)

    def fitted(params, X, mask, key):
        X = jnp.asarray(X)
        mask = None if mask is None else jnp.asarray(mask)
        return fit(params, jnp.where(mask, X, 0.0) if mask is not None else X, mask,
                   jax.random.split(key, X.shape[0]))

    return fitted


def _build(config, data, stored, warn):
    import jax.numpy as jnp
    import optax

    from jlvm.inference import svi
    from jlvm.models import posteriors
    from jlvm.runs.kinds import _latent

    model, likelihood_type, facts = vae.model(config, data, stored)
    count = data.train_x.shape[0]  # the training examples used
    learner = svi(model, optax.adam(config.learning_rate), count,
                  inner_steps=config.inner_steps,
                  inner_learning_rate=config.inner_learning_rate,
                  num_samples=config.num_samples)
    proposal = _latent.Proposal(
        q=posteriors.diagonal, fit=_fit(model, config),
        stored=lambda state, rows: (state.params.mean[rows], state.params.log_scale[rows]),
        what="a q fitted per example")

    def train_data(X, mask):
        index = jnp.arange(X.shape[0], dtype=jnp.int32)
        return (index, X) if mask is None else (index, X, mask)

    return _latent.built(model, learner, batch_size=config.batch_size,
                         reported=(("elbo", "ELBO"),), likelihood_type=likelihood_type,
                         facts=facts, proposal=proposal,
                         params=lambda state: state.params.model, train_data=train_data)


KIND = Kind(
    settings=(*vae.NETWORK, "inner_steps", "inner_learning_rate"),
    defaults=vae.network_defaults,
    check=lambda config: vae.check_network(config, estimators=("reparam",)),
    build=_build,
    describe="SVI: a q per training example, fitted in an inner loop")
