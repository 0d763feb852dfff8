"""Figures a person looks at: samples, reconstructions, the latent space, training curves.

Each function draws onto a new matplotlib figure; ``save`` writes it atomically (a temporary
file renamed into place), so a killed process never leaves a half-written picture.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from jlvm import _files


def _pyplot():
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        # jlvm's own figures are files (the command needs no display); a notebook or script
        # that already uses pyplot keeps its backend, so its figures still show inline
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# formats matplotlib writes by itself (pgf needs a LaTeX installation, raw/rgba are not
# image files a person opens)
_FORMATS = ("eps", "jpeg", "jpg", "pdf", "png", "ps", "svg", "tif", "tiff", "webp")


def formats() -> tuple[str, ...]:
    """File name suffixes ``save`` can write: png, pdf, svg, jpg, ...

    Returns:
      Tuple of suffixes without the dot, those of matplotlib's that need no outside program.
    """
    plt = _pyplot()
    figure = plt.figure()
    try:
        return tuple(f for f in _FORMATS if f in figure.canvas.get_supported_filetypes())
    finally:
        plt.close(figure)


def save(fig, path: str | os.PathLike, *, replace: bool = True) -> pathlib.Path:
    """Writes ``fig`` to ``path`` atomically, then closes it.

    A killed process never leaves a half-written picture (a temporary file renamed into
    place). The figure is closed whether or not the write succeeds.

    Args:
      fig: a matplotlib Figure.
      path: the file; its suffix names the format (one of ``formats()``: ``.png``,
        ``.pdf``, ``.svg``, ``.jpg``, ...).
      replace: whether an existing file may be overwritten.

    Returns:
      ``path`` as a ``pathlib.Path``.

    Raises:
      TypeError: fig is not a Figure.
      ValueError: an unknown suffix.
      FileExistsError: ``replace=False`` and the file exists (it stays as it was).
    """
    if not hasattr(fig, "savefig"):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    path = pathlib.Path(path)
    suffix = path.suffix.lower().lstrip(".")
    try:
        if suffix not in formats():
            raise ValueError(f"path must end in one of .{', .'.join(formats())} (the image "
                             f"format), got {str(path)!r}.")
        _files.write_atomic(path, lambda temporary: fig.savefig(
            temporary, format=suffix, dpi=110, bbox_inches="tight"), replace=replace)
    finally:
        _pyplot().close(fig)
    return path


def image_grid(images: np.ndarray, image_shape: Sequence[int], *, columns: int = 8,
               title: str = ""):
    """A grid of images, row by row.

    Args:
      images: ``[n, H*W]`` (``[n, prod(image_shape)]``), n >= 1, values in [0, 1]
        (drawn in reversed gray: 1 is black).
      image_shape: ``(H, W)`` (trailing channel sizes allowed: ``(H, W, C)``).
      columns: images per row, >= 1.
      title: the figure's title; none when empty.

    Returns:
      The matplotlib Figure.
    """
    plt = _pyplot()
    images = _images(images, image_shape, "images")
    columns = int(columns)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}.")
    rows = -(-images.shape[0] // columns)
    fig, ax = plt.subplots(figsize=(columns * 0.9, rows * 0.9 + 0.4))
    _show_mosaic(ax, _mosaic(images, image_shape, columns))
    if title:
        fig.suptitle(title)
    return fig


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray,
                        image_shape: Sequence[int], *, title: str = "",
                        bottom_label: str = "reconstruction E[x | z], z = E_q[z | x]"):
    """Two rows of images: originals above, their reconstructions below.

    Args:
      originals, reconstructions: ``[n, H*W]``, n >= 1 the same for both, values in [0, 1].
      image_shape: as in ``image_grid``.
      title: the figure's title; none when empty.
      bottom_label: the caption that says what the lower row is.

    Returns:
      The matplotlib Figure.
    """
    plt = _pyplot()
    originals = _images(originals, image_shape, "originals")
    reconstructions = _images(reconstructions, image_shape, "reconstructions")
    if originals.shape[0] != reconstructions.shape[0]:
        raise ValueError(f"originals and reconstructions must be as many, got "
                         f"{originals.shape[0]} and {reconstructions.shape[0]}.")
    n = originals.shape[0]
    fig, axes = plt.subplots(2, 1, figsize=(n * 0.9, 2.2))
    for ax, images, label in ((axes[0], originals, "data"),
                              (axes[1], reconstructions, bottom_label)):
        _show_mosaic(ax, _mosaic(images, image_shape, n))
        ax.set_title(label, fontsize=8, loc="left")
    if title:
        fig.suptitle(title)
    return fig


def _mosaic(images: np.ndarray, image_shape: Sequence[int], columns: int) -> np.ma.MaskedArray:
    """[n, H*W] images tiled row by row into one [rows*(H+g)-g, columns*(W+g)-g] picture
    with a gap of g pixels between tiles; gaps and empty tiles are masked (drawn as the
    background). One image drawn once is far cheaper than one Axes per image."""
    height, width = int(image_shape[0]), int(image_shape[1])
    n = images.shape[0]
    rows = -(-n // columns)
    gap = max(1, round(min(height, width) / 8))
    tiles = np.full((rows * columns, height, width, *image_shape[2:]), np.nan)
    tiles[:n] = np.asarray(images, np.float64).reshape(n, *image_shape)
    padded = np.full((rows, columns, height + gap, width + gap, *image_shape[2:]), np.nan)
    padded[:, :, :height, :width] = tiles.reshape(rows, columns, height, width,
                                                  *image_shape[2:])
    mosaic = np.moveaxis(padded, 2, 1).reshape(rows * (height + gap), columns * (width + gap),
                                               *image_shape[2:])[:-gap, :-gap]
    return np.ma.masked_invalid(mosaic)


def _show_mosaic(ax, mosaic: np.ma.MaskedArray) -> None:
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")


def _images(images, image_shape, name: str) -> np.ndarray:
    """[n, H*W] images as an array, n >= 1, each holding H*W values."""
    images = np.asarray(images)
    size = int(np.prod(image_shape))
    if images.ndim != 2 or images.shape[0] < 1 or images.shape[1] != size:
        raise ValueError(f"{name} must have shape [n, H*W]=[n, {size}] for image_shape "
                         f"{tuple(image_shape)}, n >= 1, got {images.shape}.")
    return images


def scatter_pairs(points: Sequence[np.ndarray], labels: Sequence[str], *, title: str = ""):
    """2-D scatter of several point sets (for non-image data), one colour each.

    Args:
      points: point sets, each ``[n, >= 2]``; only the first two columns are drawn.
      labels: one legend name per point set.
      title: the axes' title.

    Returns:
      The matplotlib Figure.
    """
    plt = _pyplot()
    if len(points) != len(labels):
        raise ValueError(f"points and labels must be as many, got {len(points)} and "
                         f"{len(labels)}.")
    for values in points:
        if np.ndim(values) != 2 or np.shape(values)[1] < 2:
            raise ValueError(f"each point set must have shape [n, >= 2], got "
                             f"{np.shape(values)}.")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for values, label in zip(points, labels, strict=True):
        values = np.asarray(values)
        ax.scatter(values[:, 0], values[:, 1], s=4, alpha=0.6, label=label)
    ax.legend()
    ax.set_title(title)
    return fig


def latent_scatter(codes: np.ndarray, labels: np.ndarray | None, *, title: str = "",
                   axis_names: Sequence[str] | None = None, colour_label: str = "label"):
    """Points in 2-D coloured by ``labels`` (named ``colour_label``).

    By default ``codes`` are E_q[z | x], shown as they are when L <= 2 (axes z_1, z_2; L = 1
    along a line) and by their first two principal components when L > 2; ``axis_names``
    shows ``codes`` as given, under those names. Labels with at most 20 distinct integer
    values are categories (a legend); others get a colour bar.

    Args:
      codes: ``[n, L]``, n >= 1.
      labels: ``[n]`` or None (one colour).
      title: the axes' title.
      axis_names: None, or the two axis names (then ``codes`` are drawn as given: their
        first two columns).
      colour_label: the name of the labels, on the legend or colour bar.

    Returns:
      The matplotlib Figure.
    """
    plt = _pyplot()
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 2 or codes.shape[0] < 1:
        raise ValueError(f"codes must have shape [n, L] with n >= 1, got {codes.shape}.")
    if labels is not None and np.shape(labels) != (codes.shape[0],):
        raise ValueError(f"labels must have shape [n]=({codes.shape[0]},), got "
                         f"{np.shape(labels)}.")
    if axis_names is None:
        axis_names = ("z_1", "z_2")
        if codes.shape[1] > 2:
            centered = codes - codes.mean(axis=0)
            _, _, vt = np.linalg.svd(centered, full_matrices=False)
            codes = centered @ vt[:2].T
            axis_names = ("PC 1 of E_q[z|x]", "PC 2 of E_q[z|x]")
        elif codes.shape[1] == 1:  # one latent dimension: drawn along a line
            codes = np.concatenate([codes, np.zeros_like(codes)], axis=1)
            axis_names = ("z_1", "")
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if labels is None:
        ax.scatter(codes[:, 0], codes[:, 1], s=5)
    else:
        labels = np.asarray(labels)
        values = np.unique(labels)
        if values.size <= 20 and np.all(values == np.round(values)):
            # categories (classes, components): one colour each, named in a legend
            for number, value in enumerate(values):
                chosen = labels == value
                ax.scatter(codes[chosen, 0], codes[chosen, 1], s=5, color=f"C{number % 10}"
                           if values.size <= 10 else plt.cm.tab20(number), label=str(int(value)))
            ax.legend(title=colour_label, fontsize=7, title_fontsize=8, markerscale=2,
                      loc="center left", bbox_to_anchor=(1.0, 0.5))
        else:
            points = ax.scatter(codes[:, 0], codes[:, 1], s=5, c=labels, cmap="viridis")
            fig.colorbar(points, ax=ax, label=colour_label)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    return fig


def cluster_sizes(weights: np.ndarray, components: np.ndarray, *, title: str = ""):
    """A mixture's clusters by size, the components ordered by weight, largest first.

    Args:
      weights: the mixing weights pi_k ``[K]``, K >= 1.
      components: ``[n]`` integers in [0, K), n >= 1: each example's most probable
        component, drawn as the share of examples per k beside pi_k.
      title: the axes' title.

    Returns:
      The matplotlib Figure.
    """
    plt = _pyplot()
    weights = np.asarray(weights, np.float64)
    components = np.asarray(components)
    if weights.ndim != 1 or weights.size < 1:
        raise ValueError(f"weights must have shape [K] with K >= 1, got {weights.shape}.")
    count = weights.size
    if components.ndim != 1 or components.size < 1 or not np.issubdtype(
            components.dtype, np.integer) or np.any((components < 0) | (components >= count)):
        raise ValueError(f"components must be integers in [0, {count}) of shape [n], n >= 1, "
                         f"got {components.dtype} of shape {components.shape}.")
    order = np.argsort(-weights, kind="stable")
    shares = np.bincount(components, minlength=count) / components.size
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * count + 1.5), 3.5))
    positions = np.arange(count)
    ax.bar(positions - 0.2, weights[order], width=0.4, label="mixing weight pi_k")
    ax.bar(positions + 0.2, shares[order], width=0.4,
           label=f"share of the {components.size} examples most probably from k")
    ax.set_xticks(positions, [str(k) for k in order])
    ax.set_xlabel("component k (by mixing weight)")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def training_curves(records: list[dict], *, title: str = "", ylabel: str = "nats per example"):
    """Per-epoch curves of the bound fields of metrics records.

    Every numeric field whose name holds ``elbo``, ``iwae_bound`` or ``log_likelihood`` is
    a curve; with several seeds (a ``seed`` field), one thin line per seed in the field's
    colour. Every recorded epoch is marked, so a one-epoch run shows its points.

    Args:
      records: list (or tuple) of dicts, metrics.jsonl's lines, each with an ``epoch``.
      title: the axes' title.
      ylabel: the y axis label.

    Returns:
      The matplotlib Figure.
    """
    if not isinstance(records, (list, tuple)) or not all(isinstance(r, dict) for r in records):
        raise TypeError(f"records must be a list of dicts (metrics.jsonl's lines), got "
                        f"{type(records).__name__}.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    # every field any record has (jlvm train --eval-every N leaves some epochs without the
    # evaluated ELBOs), in first-seen order
    fields = [k for k in dict.fromkeys(k for r in records for k in r)
              if k not in ("epoch", "seed")
              and any(word in k for word in ("elbo", "iwae_bound", "log_likelihood"))
              and all(isinstance(r[k], (int, float)) for r in records if k in r)]
    seeds = sorted({r.get("seed") for r in records}, key=lambda s: (s is None, s))
    for number, field in enumerate(fields):
        color = f"C{number}"
        for index, seed in enumerate(seeds):
            rows = [r for r in records if r.get("seed") == seed and field in r]
            ax.plot([r["epoch"] for r in rows], [r[field] for r in rows],
                    color=color, linewidth=1.5 if len(seeds) == 1 else 0.8, marker="o",
                    markersize=3 if len(rows) > 1 else 5,
                    label=(field + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""))
                    if index == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.set_title(title)
    return fig
