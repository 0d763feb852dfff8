"""Probabilistic PCA (``--model ppca``): z ~ N(0, I_L), x | z ~ N(W z + b, s^2 I), the
lecture's linear-Gaussian model (``jlvm.models.linear_gaussian``), whose log p(x), p(z | x)
and E[x_mis | x_obs] are exact.

Its encoder is that exact posterior, so the ELBO equals log p(x) at every draw: the
amortized learner ascends the log-likelihood itself (Tipping & Bishop's maximum likelihood,
by gradient), and evaluation, features and imputation are exact. A baseline for real-valued
data that every latent variable model should beat.
"""

from __future__ import annotations

from jlvm.runs.kinds import Kind


def model(data_dim: int, latent_dim: int):
    """PPCA as a ``jlvm.Model`` over params {"W" [D, L], "b" [D], "log_noise" []}."""
    import distrax
    import jax
    import jax.numpy as jnp

    import jlvm
    from jlvm.models import linear_gaussian

    def init(key):
        return {"W": 0.1 * jax.random.normal(key, (data_dim, latent_dim)),
                "b": jnp.zeros(data_dim), "log_noise": jnp.zeros(())}

    def exact(params):
        return linear_gaussian.Params(params["W"], params["b"], jnp.exp(params["log_noise"]))

    def prior(params):
        return distrax.MultivariateNormalDiag(jnp.zeros(latent_dim), jnp.ones(latent_dim))

    def log_likelihood(params, x, z, mask=None):
        per = jax.scipy.stats.norm.logpdf(x, params["W"] @ z + params["b"],
                                          jnp.exp(params["log_noise"]))
        return jnp.sum(per if mask is None else jnp.where(mask, per, 0.0))

    def log_joint(params, x, z, mask=None):
        return prior(params).log_prob(z) + log_likelihood(params, x, z, mask)

    def encoder(params, x, mask=None):  # p(z | x_obs), exactly
        return linear_gaussian.posterior(exact(params), x, mask)

    def decoder(params, z):
        return distrax.MultivariateNormalDiag(params["W"] @ z + params["b"],
                                              jnp.full(data_dim, jnp.exp(params["log_noise"])))

    return jlvm.Model(init, log_joint, encoder, log_likelihood=log_likelihood, prior=prior,
                      decoder=decoder), exact


def _build(config, data, stored, warn):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jlvm.inference import amortized
    from jlvm.models import linear_gaussian
    from jlvm.runs.kinds import _latent

    built_model, exact = model(data.dataset.train.shape[1], config.latent_dim)
    learner = amortized(built_model, optax.adam(config.learning_rate))
    built = _latent.built(built_model, learner, batch_size=config.batch_size,
                          reported=(("elbo", "ELBO (= log p(x): q is the exact posterior)"),),
                          likelihood_type="density", facts={})

    def observed(X, mask):
        return jnp.ones(np.shape(X), bool) if mask is None else jnp.asarray(mask)

    @jax.jit
    def log_marginals(params, X, mask):
        return jax.vmap(linear_gaussian.log_marginal, in_axes=(None, 0, 0))(
            exact(params), X, mask)

    def evaluator(state, settings):
        def block(key, X, mask):
            values = log_marginals(state.params, X, observed(X, mask))
            return {"log_likelihood": values, "elbo": values}  # q = p(z | x): equal

        return block

    @jax.jit
    def conditional_means(params, X, mask):  # E[x | x_obs] = W E[z | x_obs] + b
        means = jax.vmap(lambda x, m: linear_gaussian.posterior(exact(params), x, m).mean())(
            X, mask)
        return jnp.where(mask, X, means @ params["W"].T + params["b"][None])

    def impute(state, X, mask, key, num_samples, num_draws):
        arrays = ({} if not num_draws else
                  built.impute(state, X, mask, key, num_samples, num_draws)[0])
        arrays["x"] = np.asarray(conditional_means(state.params, jnp.asarray(X),
                                                   observed(X, mask)))
        arrays.pop("effective_sample_size", None)
        return arrays, "E[x_mis | x_obs] = W E[z | x_obs] + b, exact"

    return built._replace(evaluator=evaluator, exact=True, impute=impute)


KIND = Kind(
    settings=("latent_dim", "learning_rate", "batch_size"),
    defaults=lambda given, facts: {},
    check=lambda config: None,
    build=_build,
    describe="probabilistic PCA (exact log p(x), its exact posterior as q)")
