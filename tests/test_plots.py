"""jlvm.plots: real PNG files, written atomically."""

import numpy as np

from jlvm import plots


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_saved_as_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((10, 64))
    figures = {
        "grid.png": plots.image_grid(images, (8, 8), title="t"),
        "recon.png": plots.reconstruction_grid(images[:4], images[4:8], (8, 8)),
        "latent.png": plots.latent_scatter(rng.normal(size=(50, 5)), rng.integers(0, 10, 50)),
        "latent1.png": plots.latent_scatter(rng.normal(size=(50, 1)), None),
        "scatter.png": plots.scatter_pairs([rng.normal(size=(20, 2))], ["a"]),
        "curves.png": plots.training_curves([{"epoch": 1, "train_elbo": -3.0, "seconds": 1.0},
                                             {"epoch": 2, "train_elbo": -2.0, "seconds": 2.0}]),
    }
    for name, figure in figures.items():
        path = plots.save(figure, tmp_path / name)
        assert _is_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(figures)  # no temporaries left


def test_training_curves_draw_fields_that_only_some_epochs_have():
    """jlvm train --eval-every N records valid_elbo on some epochs only: its curve joins
    those epochs (no NaN gaps that would leave nothing drawn)."""
    records = [{"epoch": e, "train_elbo_during_epoch": -10.0 + e,
                **({"valid_elbo": -12.0 + e} if e in (1, 3, 5) else {})} for e in range(1, 6)]
    lines = {line.get_label(): line for line in plots.training_curves(records).axes[0].lines}
    assert list(lines["valid_elbo"].get_xdata()) == [1, 3, 5]
    assert list(lines["valid_elbo"].get_ydata()) == [-11.0, -9.0, -7.0]
    assert len(lines["train_elbo_during_epoch"].get_xdata()) == 5


def test_figures_name_wrong_arguments(tmp_path):
    import pytest

    rng = np.random.default_rng(1)
    with pytest.raises(TypeError, match="matplotlib Figure"):
        plots.save("not a figure", tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"images must have shape \[n, H\*W\]"):
        plots.image_grid(rng.random((4, 64)), (7, 7))
    with pytest.raises(ValueError, match="columns must be >= 1"):
        plots.image_grid(rng.random((4, 64)), (8, 8), columns=0)
    with pytest.raises(ValueError, match="labels must have shape"):
        plots.latent_scatter(rng.normal(size=(10, 2)), np.arange(9))
    with pytest.raises(ValueError, match="as many"):
        plots.reconstruction_grid(rng.random((3, 64)), rng.random((2, 64)), (8, 8))
    with pytest.raises(TypeError, match="records must be a list of dicts"):
        plots.training_curves("abc")
    with pytest.raises(ValueError, match=r"\.png"):
        plots.save(plots.scatter_pairs([rng.normal(size=(5, 2))], ["a"]), tmp_path / "a.pgf")
    with pytest.raises(FileNotFoundError) as error:  # the target is named, not a temporary
        plots.save(plots.scatter_pairs([rng.normal(size=(5, 2))], ["a"]),
                   tmp_path / "nowhere" / "a.png")
    assert error.value.filename == str(tmp_path / "nowhere" / "a.png")


def test_a_grid_is_one_picture_with_every_image_in_its_tile():
    """image_grid draws one mosaic (not one Axes per image): image i sits in row i //
    columns, column i % columns, tiles separated by masked gaps; empty tiles are masked."""
    rng = np.random.default_rng(2)
    images = rng.random((5, 12))  # 3 x 4 images
    figure = plots.image_grid(images, (3, 4), columns=2, title="t")
    (ax,) = figure.axes
    (picture,) = ax.get_images()
    mosaic = picture.get_array()
    gap = 1
    assert mosaic.shape == (3 * 3 + 2 * gap, 2 * 4 + gap)
    for i, image in enumerate(images):
        top, left = (i // 2) * (3 + gap), (i % 2) * (4 + gap)
        tile = mosaic[top:top + 3, left:left + 4]
        assert not np.ma.getmaskarray(tile).any()
        np.testing.assert_array_equal(tile, image.reshape(3, 4))
    assert np.ma.getmaskarray(mosaic[3]).all() and np.ma.getmaskarray(mosaic[:, 4]).all()
    assert np.ma.getmaskarray(mosaic[8:, 5:]).all()  # the sixth tile is empty
    recon = plots.reconstruction_grid(images[:3], images[2:], (3, 4), bottom_label="below")
    top, bottom = (ax.get_images()[0].get_array() for ax in recon.axes)
    np.testing.assert_array_equal(top[:, 5:9], images[1].reshape(3, 4))
    np.testing.assert_array_equal(bottom[:, 5:9], images[3].reshape(3, 4))
    assert [ax.get_title(loc="left") for ax in recon.axes] == ["data", "below"]


def test_cluster_sizes_bars_weights_and_shares_by_weight(tmp_path):
    """Two bars per component, largest weight first: pi_k, and the share of the examples
    whose most probable component is k; wrong components are named."""
    import pytest

    weights = np.array([0.2, 0.5, 0.3])
    components = np.array([1, 1, 0, 2, 1])
    figure = plots.cluster_sizes(weights, components, title="t")
    ax = figure.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    np.testing.assert_allclose(heights, [0.5, 0.3, 0.2, 0.6, 0.2, 0.2])
    assert [label.get_text() for label in ax.get_xticklabels()] == ["1", "2", "0"]
    assert _is_png(plots.save(figure, tmp_path / "sizes.png"))
    with pytest.raises(ValueError, match=r"components must be integers in \[0, 3\)"):
        plots.cluster_sizes(weights, np.array([0, 3]))
    with pytest.raises(ValueError, match="weights must have shape"):
        plots.cluster_sizes(np.zeros((2, 2)), components)
