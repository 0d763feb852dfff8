"""The figures of a run, each labelled for what it shows for THIS model (its kind draws
them: ``Built.figures``), in the data's own units. This module holds what every kind's
figures share: the test rows shown, the pictures of draws and of reconstructions, the
training curves, and writing them.
"""

from __future__ import annotations

import numpy as np

from jlvm.runs._setup import Setup
from jlvm.runs.kinds import View

FIGURE_EXAMPLES = 2000  # test examples drawn into latent.png
RECONSTRUCTED = 10


def example_rows(count: int, seed: int) -> np.ndarray:
    """The test rows a run's figures show: a seeded random draw across the split (which
    may be ordered by class, as binarized MNIST's is), in random order, since the first
    few are the ones reconstructed."""
    return np.random.default_rng(seed).permutation(count)[:FIGURE_EXAMPLES]


def view(setup: Setup) -> View:
    """The test rows the figures show (complete ones: a NaN has no picture) and how to
    draw them."""
    from jlvm.runs import _data, _training

    dataset, config = setup.dataset, setup.config
    rows = example_rows(dataset.test.shape[0], config.seed)
    complete = ~np.isnan(dataset.test[rows]).any(axis=1)
    rows = rows[complete]
    units = setup.data.units
    return View(test=dataset.test[rows],
                labels=None if dataset.test_labels is None else dataset.test_labels[rows],
                image_shape=dataset.image_shape,
                to_file=(lambda x: np.asarray(x)) if units is None else units.to_file,
                title=_training._title(config, _data.describe(config.data)))


def samples_figure(drawn_what, view: View):
    """n draws of the model (model units) and what they are: images in a grid, else beside
    the test data in scatter plots of pairs of coordinates."""
    from jlvm import plots

    drawn, what = drawn_what
    drawn = view.to_file(drawn)
    n = drawn.shape[0]
    if view.image_shape:
        low, high = np.nanmin(view.to_file(view.test)), np.nanmax(view.to_file(view.test))
        if np.any((drawn < low) | (drawn > high)):  # a Gaussian's draws leave the range
            drawn, what = np.clip(drawn, low, high), f"{what}, clipped to [{low:g}, {high:g}]"
        return plots.image_grid(drawn, view.image_shape, title=f"{view.title}: {n} {what}")
    return plots.scatter_pairs([view.to_file(view.test), drawn],
                               ["test data", f"model: {n} {what}"], title=view.title)


def reconstruction_figure(shown, rebuilt, view: View, below: str):
    """Test rows above what the model makes of them (both in model units)."""
    from jlvm import plots

    shown, rebuilt = view.to_file(shown), view.to_file(rebuilt)
    if view.image_shape:
        return plots.reconstruction_grid(shown, rebuilt, view.image_shape, title=view.title,
                                         bottom_label=below)
    return plots.scatter_pairs([shown, rebuilt], ["data", below], title=view.title)


def build_all(setup: Setup, state, records: list[dict]) -> dict:
    """The run's figures by file name (matplotlib figures, not yet saved)."""
    import jax

    from jlvm import plots

    shown = view(setup)
    figures = setup.built.figures(state, shown, records,
                                  jax.random.PRNGKey(setup.config.seed + 2))
    unit = ("nats per example (log-density of continuous x)"
            if setup.likelihood_type == "density" else "nats per example")
    figures["elbo.png"] = plots.training_curves(records, title=shown.title, ylabel=unit)
    return figures


def write_all(setup: Setup, state, run_dir, records: list[dict]) -> None:
    """The run's figures (samples.png, reconstructions.png, latent.png, elbo.png, as its
    model has them), written into ``run_dir``."""
    from jlvm import plots

    for name, figure in build_all(setup, state, records).items():
        plots.save(figure, run_dir / name)
