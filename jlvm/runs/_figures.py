"""The figures of a run, each labelled for what it shows for THIS model.

A VAE's samples are mean images E[x | z] with z ~ p(z) (the digit shows best that way);
a GMM's are draws x ~ p(x). A VAE reconstructs x through z = E_q[z | x]; a GMM has no
continuous code and "reconstructs" x by its most probable component's mean. A VAE's
latent space is E_q[z | x]; a GMM's figure is the data itself (two principal components)
coloured by the most probable component.
"""

from __future__ import annotations

import functools

import numpy as np

from jlvm.runs._setup import Setup, model_params

FIGURE_EXAMPLES = 2000  # test examples drawn into latent.png
RECONSTRUCTED = 10


def samples(setup: Setup, state, key, n: int) -> tuple[np.ndarray, str]:
    """n samples of the model and what they are (for a title)."""
    import jax

    from jlvm.models import gmm, likelihoods, vae

    if setup.config.model == "gmm":
        x, _ = gmm.sample(key, state.params, n)
        if setup.dataset.image_shape:  # a Gaussian's draws leave [0, 1]; shown clipped
            return np.clip(np.asarray(x), 0, 1), "draws x ~ p(x), clipped to [0, 1]"
        return np.asarray(x), "draws x ~ p(x)"
    params = model_params(setup, state)
    if setup.dataset.image_shape:  # the mean image E[x | z] shows the digit best
        z = vae.sample_latents(key, params, n)
        means = np.asarray(jax.vmap(functools.partial(vae.mean_image, params))(z))
        what = {"bernoulli": "Bernoulli means", "categorical": "expected gray levels"}.get(
            likelihoods.parse(params.likelihood).name, "Gaussian means")
        return means, f"E[x | z] ({what}), z ~ p(z)"
    return np.asarray(vae.sample(key, params, n)[0]), "draws x ~ p(x)"


def sample_figure(setup: Setup, state, key, n: int, title: str):
    from jlvm import plots

    drawn, what = samples(setup, state, key, n)
    if setup.dataset.image_shape:
        return plots.image_grid(drawn, setup.dataset.image_shape, title=f"{title}: {n} {what}")
    return plots.scatter_pairs([setup.dataset.test, drawn],
                               ["test data", f"model: {n} {what}"], title=title)


def example_rows(count: int, seed: int) -> np.ndarray:
    """The test rows a run's figures show: a seeded random draw across the split (which
    may be ordered by class, as binarized MNIST's is), in random order, since the first
    few are the ones reconstructed."""
    return np.random.default_rng(seed).permutation(count)[:FIGURE_EXAMPLES]


def _codes(setup: Setup, state, X, key):
    """E_q[z | x] for the latent-variable models; the most probable component for a GMM."""
    import jax
    import jax.numpy as jnp

    from jlvm.models import gmm, posteriors, vae
    from jlvm.runs import _evaluation

    if setup.config.model == "gmm":
        return np.asarray(jax.vmap(lambda x: jnp.argmax(gmm.posterior(state.params, x).logits))(
            X))
    if setup.config.model == "svi":
        return np.asarray(_evaluation.svi_codes(setup, state, X, key))
    params = model_params(setup, state)
    # E_q[z | x]: exact for the Gaussian families, a Monte Carlo mean for a flow
    keys = jax.random.split(key, X.shape[0])
    return np.asarray(jax.jit(jax.vmap(lambda x, k: posteriors.moments(
        vae.encoder(params, x), k)[0]))(X, keys))


def write_all(setup: Setup, state, run_dir, records: list[dict]) -> None:
    """samples.png, reconstructions.png, latent.png and elbo.png of one trained model."""
    from jlvm import plots

    for name, figure in build_all(setup, state, records).items():
        plots.save(figure, run_dir / name)


def build_all(setup: Setup, state, records: list[dict]) -> dict:
    """The run's figures by file name (matplotlib figures, not yet saved)."""
    import jax
    import jax.numpy as jnp

    from jlvm import plots
    from jlvm.models import vae

    config, dataset = setup.config, setup.dataset
    key = jax.random.PRNGKey(config.seed + 2)
    title = f"{config.model} on {config.data}"
    figures = {"samples.png": sample_figure(setup, state, key, 64, title)}

    rows = example_rows(dataset.test.shape[0], config.seed)
    X = jnp.asarray(dataset.test[rows])
    labels = None if dataset.test_labels is None else dataset.test_labels[rows]
    codes = _codes(setup, state, X, key)
    shown = np.asarray(X[:RECONSTRUCTED])
    if config.model == "gmm":
        rebuilt = np.asarray(state.params.means[codes[:RECONSTRUCTED]])
        below = "mean of the most probable component"
        if dataset.image_shape:
            rebuilt, below = np.clip(rebuilt, 0, 1), below + " (clipped to [0, 1])"
        centered = np.asarray(X) - np.asarray(X).mean(0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        latent = plots.latent_scatter(
            centered @ vt[:2].T, codes, axis_names=("PC 1 of x", "PC 2 of x"),
            colour_label="most probable component k",
            title=f"{title}: test data (2 principal components of x), a GMM has no "
                  "continuous z")
    else:
        params = model_params(setup, state)
        rebuilt = np.asarray(jax.vmap(functools.partial(vae.mean_image, params))(
            jnp.asarray(codes[:RECONSTRUCTED])))
        q = "a q fitted per example" if config.model == "svi" else "the encoder's q"
        below = f"E[x | z], z = E_q[z | x] ({q})"
        estimate = (", a mean of 1000 draws" if config.model != "svi"
                    and config.posterior == "flow" else "")
        latent = plots.latent_scatter(codes, labels, colour_label="class label",
                                      title=f"{title}: E_q[z | x] of test data{estimate}")
    if dataset.image_shape:
        recon = plots.reconstruction_grid(shown, rebuilt, dataset.image_shape, title=title,
                                          bottom_label=below)
    else:
        recon = plots.scatter_pairs([shown, rebuilt], ["data", below], title=title)
    unit = ("nats per example (log-density of continuous x)"
            if setup.likelihood_type == "density" else "nats per example")
    figures.update({"reconstructions.png": recon, "latent.png": latent,
                    "elbo.png": plots.training_curves(records, title=title, ylabel=unit)})
    return figures
