"""Data sets. The default is scikit-learn's bundled handwritten digits: no network needed."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    """train: [N, D] float32; test: [M, D] float32; labels alongside (for plots and scores)."""

    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray


def digits(*, binarize: bool = False, test_fraction: float = 0.2, split_seed: int = 0) -> Split:
    """scikit-learn's 8x8 handwritten digits (1797 images, 64 pixels), scaled to [0, 1].

    Args:
      binarize: threshold at 0.5 to get 0/1 pixels (for Bernoulli likelihoods).
      test_fraction: share of images held out, chosen by a fixed permutation.
      split_seed: seed of that permutation (NumPy), so splits are reproducible.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    from sklearn.datasets import load_digits  # bundled with scikit-learn, read from disk

    bunch = load_digits()
    images = (bunch.data / 16.0).astype(np.float32)
    if binarize:
        images = (images > 0.5).astype(np.float32)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(split_seed).permutation(images.shape[0])
    num_test = int(round(test_fraction * images.shape[0]))
    test, train = order[:num_test], order[num_test:]
    return Split(images[train], images[test], labels[train], labels[test])
