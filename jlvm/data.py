"""Data sets, as NumPy arrays of one example per row.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (the embedded default; no network).
- ``binarized_mnist``: the statically binarized MNIST of Larochelle & Murray (2011), 50k/10k/10k,
  read from the published ``binarized_mnist_{train,valid,test}.amat`` text files or from a
  ``.npz`` with ``train``/``valid``/``test`` keys, found through a path or ``JLVM_DATA_DIR``;
  ``download_binarized_mnist`` fetches and checks the published files.
- ``blobs`` and ``lecture_2d``: synthetic data drawn from the lecture's models.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import NamedTuple

import numpy as np

MNIST_SPLITS = {"train": 50_000, "valid": 10_000, "test": 10_000}
MNIST_PIXELS = 784
MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
DATA_DIR_VARIABLE = "JLVM_DATA_DIR"
NAMES = ("digits", "digits-gray", "binarized-mnist", "blobs", "lecture-2d")
FILE_NAMES = ("binarized-mnist",)  # the bundled sets read from files (a path or $JLVM_DATA_DIR)


class Kind(NamedTuple):
    """What the values of a named data set are, known without reading it.

    Attributes:
      levels: M where every value is one of k/(M-1), k = 0..M-1 (2 for binary, 17 for the
        gray digits), None for real numbers.
      image_shape: ``(height, width)`` for pictures, or None.
    """

    levels: int | None
    image_shape: tuple[int, int] | None


KINDS = {"digits": Kind(2, (8, 8)), "digits-gray": Kind(17, (8, 8)),
         "binarized-mnist": Kind(2, (28, 28)), "blobs": Kind(None, None),
         "lecture-2d": Kind(None, None)}


class Dataset(NamedTuple):
    """A data set's splits, each a float32 ``[N, D]`` array with its own N.

    Attributes:
      name: the data set's name (``load``'s, e.g. ``"digits-gray"``).
      train: the training split, float32 ``[N, D]``.
      valid: the validation split, float32 ``[N, D]``, or None where there is none.
      test: the test split, float32 ``[N, D]``.
      train_labels: ``[N]``, a label for each training row (int32 here), or None.
      test_labels: ``[N]``, a label for each test row (int32 here), or None.
      binary: whether every value is 0 or 1 (what a Bernoulli likelihood needs).
      image_shape: ``(height, width)`` for pictures, or None for non-image data.
    """

    name: str
    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None
    binary: bool
    image_shape: tuple[int, int] | None


def digits(*, binarize: bool = True, test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, 64 pixels), scaled to [0, 1].

    Args:
      binarize: threshold at 0.5 to get 0/1 pixels (for Bernoulli likelihoods).
      test_fraction: share of images held out, chosen by a fixed permutation.
      split_seed: seed of that permutation (NumPy), an int >= 0, so splits are reproducible.

    Returns:
      A ``Dataset`` named ``"digits"`` (``"digits-gray"`` unbinarized) with train and test
      float32 ``[N, 64]`` (N = 1797 in all), valid None, int32 labels ``[N]`` (0-9),
      image_shape ``(8, 8)``.

    Raises:
      ValueError: test_fraction outside (0, 1) or leaving a split empty; a bad split_seed.
    """
    if isinstance(test_fraction, (bool, str)) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}.")
    if isinstance(split_seed, bool) or not isinstance(split_seed, numbers.Integral) or \
            split_seed < 0:
        raise ValueError(f"split_seed must be an int >= 0, got {split_seed!r}.")
    split_seed = int(split_seed)
    from sklearn.datasets import load_digits  # bundled with scikit-learn, read from disk

    bunch = load_digits()
    images = (bunch.data / 16.0).astype(np.float32)
    if binarize:
        images = (images > 0.5).astype(np.float32)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(split_seed).permutation(images.shape[0])
    num_test = round(test_fraction * images.shape[0])
    if not 1 <= num_test < images.shape[0]:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of the "
                         f"{images.shape[0]} images.")
    test, train = order[:num_test], order[num_test:]
    return Dataset("digits" if binarize else "digits-gray", images[train], None, images[test],
                   labels[train], labels[test], binarize, (8, 8))


def _data_dir(path: str | os.PathLike | None) -> pathlib.Path:
    if path is not None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise TypeError(f"path must be a file or folder path, got {path!r}.")
        return pathlib.Path(path)
    env = os.environ.get(DATA_DIR_VARIABLE)
    if not env:
        raise FileNotFoundError(
            "binarized MNIST: no path given and JLVM_DATA_DIR is not set. Point JLVM_DATA_DIR "
            "at a folder holding binarized_mnist.npz or binarized_mnist_{train,valid,test}.amat, "
            "or fetch them with jlvm.data.download_binarized_mnist(folder).")
    return pathlib.Path(env)


def _check_split(array: np.ndarray, split: str, source: pathlib.Path,
                 expected_rows: int | None) -> np.ndarray:
    if array.ndim != 2 or array.shape[1] != MNIST_PIXELS:
        raise ValueError(f"{source}: split {split!r} must have shape [N, {MNIST_PIXELS}], "
                         f"got {array.shape}.")
    if expected_rows is not None and array.shape[0] != expected_rows:
        raise ValueError(f"{source}: split {split!r} must have {expected_rows} rows, got "
                         f"{array.shape[0]} (a truncated or different file).")
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{source}: split {split!r} must hold only 0/1 pixels.")
    return array.astype(np.float32)


def read_amat(path: str | os.PathLike, split: str = "?",
              expected_rows: int | None = None) -> np.ndarray:
    """Reads one published ``.amat`` file: one image a line, 784 space-separated 0/1 values.

    Args:
      path: the ``.amat`` file.
      split: the split's name, for error messages only.
      expected_rows: the number of images required, or None for any.

    Returns:
      float32 ``[N, 784]`` array of 0/1 values.

    Raises:
      ValueError: not such a file, a wrong shape or row count, or values other than 0/1.
    """
    path = pathlib.Path(path)
    try:
        array = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: not a binarized MNIST .amat file ({error}).") from None
    return _check_split(array, split, path, expected_rows)


def binarized_mnist(path: str | os.PathLike | None = None, *,
                    check_sizes: bool = True) -> Dataset:
    """Statically binarized MNIST: train [50000, 784], valid [10000, 784], test [10000, 784].

    Args:
      path: a ``.npz`` file, or a folder holding ``binarized_mnist.npz`` or the three
        ``binarized_mnist_{train,valid,test}.amat`` files; default ``$JLVM_DATA_DIR``.
      check_sizes: insist on the published 50k/10k/10k split sizes.

    Returns:
      A ``Dataset`` named ``"binarized-mnist"``, train, valid, test float32 ``[N, 784]`` of
      0/1 values, no labels (None), binary True, image_shape ``(28, 28)``. A ``.npz`` is
      read in preference to the ``.amat`` files.

    Raises:
      FileNotFoundError: no path and no ``$JLVM_DATA_DIR``, or no data set there.
      ValueError: a missing ``.npz`` key, a wrong shape or size, or values other than 0/1.
    """
    location = _data_dir(path)
    expected = MNIST_SPLITS if check_sizes else dict.fromkeys(MNIST_SPLITS)
    npz = location if location.suffix == ".npz" else location / "binarized_mnist.npz"
    amats = {s: location / f"binarized_mnist_{s}.amat" for s in MNIST_SPLITS}
    if npz.is_file():
        from jlvm import _files

        archive = _files.read_npz(npz)
        missing = [s for s in MNIST_SPLITS if s not in archive]
        if missing:
            raise ValueError(f"{npz}: missing keys {missing}; expected train, valid, test.")
        splits = {s: _check_split(archive[s], s, npz, expected[s]) for s in MNIST_SPLITS}
    elif all(p.is_file() for p in amats.values()):
        splits = {s: read_amat(amats[s], s, expected[s]) for s in MNIST_SPLITS}
    else:
        raise FileNotFoundError(
            f"binarized MNIST not found in {location}: expected binarized_mnist.npz or "
            "binarized_mnist_{train,valid,test}.amat there (set JLVM_DATA_DIR or pass path; "
            "jlvm.data.download_binarized_mnist fetches the .amat files).")
    return Dataset("binarized-mnist", splits["train"], splits["valid"], splits["test"], None,
                   None, True, (28, 28))


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_binarized_mnist(cache_dir: str | os.PathLike, *, base_url: str = MNIST_URL,
                             sha256: dict[str, str] | None = None,
                             check_sizes: bool = True) -> pathlib.Path:
    """Fetches the three published ``.amat`` files into ``cache_dir`` and verifies them.

    Each file is downloaded to a temporary name, checked (its SHA-256 when ``sha256`` gives
    one, and always its shape and 0/1 values), then renamed into place, so an interrupted
    or corrupt download never leaves a file that looks complete. Files already present and
    valid are kept.

    Args:
      cache_dir: the folder to fill (created where missing).
      base_url: where the three files are published.
      sha256: optional dict from split (``train``, ``valid``, ``test``) to the expected hex
        digest of its downloaded file.
      check_sizes: insist on the published 50k/10k/10k split sizes.

    Returns:
      ``cache_dir`` as a ``pathlib.Path``, ready for ``binarized_mnist(cache_dir)``.

    Raises:
      ConnectionError: a download failed.
      ValueError: a file (downloaded or already present) failed its checks.
      TypeError: a malformed ``sha256``.
    """
    if sha256 is not None and not (isinstance(sha256, dict) and set(sha256) <= set(MNIST_SPLITS)
                                   and all(isinstance(v, str) for v in sha256.values())):
        raise TypeError(f"sha256 must be a dict from split ({', '.join(MNIST_SPLITS)}) to a hex "
                        f"digest, got {sha256!r}.")
    cache = pathlib.Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    for split, rows in MNIST_SPLITS.items():
        name = f"binarized_mnist_{split}.amat"
        target = cache / name
        expected_rows = rows if check_sizes else None
        if target.is_file():
            read_amat(target, split, expected_rows)
            continue
        handle, temporary = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
        os.close(handle)
        temporary = pathlib.Path(temporary)
        try:
            url = f"{base_url}/{name}"
            try:
                with urllib.request.urlopen(url) as response, open(temporary, "wb") as out:
                    shutil.copyfileobj(response, out)
            except urllib.error.URLError as error:  # no network, a wrong address, HTTP 404
                raise ConnectionError(f"could not download {url}: {error.reason}") from None
            if sha256 and split in sha256 and _sha256(temporary) != sha256[split]:
                raise ValueError(f"{base_url}/{name}: SHA-256 {_sha256(temporary)} does not "
                                 f"match the expected {sha256[split]}.")
            read_amat(temporary, split, expected_rows)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
    return cache


def blobs(n: int = 2000, *, seed: int = 0, num_components: int = 3) -> Dataset:
    """Samples of a 2-D Gaussian mixture (``models.gmm``), labelled by component.

    Equal weights, means on a circle of radius 3, covariance 0.49 I; the first 80% of
    the draws train, the rest test.

    Args:
      n: number of points >= 2, a Python int.
      seed: JAX PRNG seed, an int in [0, 2**32 - 1001].
      num_components: number of mixture components >= 1.

    Returns:
      A ``Dataset`` named ``"blobs"`` with train and test float32 ``[N, 2]``, valid None, int32
      component labels ``[N]``, binary False, image_shape None.
    """
    from jlvm import _checks

    n = _checks.positive_int(n, "n")
    num_components = _checks.positive_int(num_components, "num_components")
    seed = _seed(seed)
    if n < 2:
        raise ValueError(f"n must be >= 2 (a training and a test split), got {n}.")
    import jax
    import jax.numpy as jnp

    from jlvm.models import gmm

    angles = 2 * np.pi * np.arange(num_components) / num_components
    params = gmm.Params(
        logits=jnp.zeros(num_components),
        means=jnp.asarray(3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), jnp.float32),
        scale_tril=jnp.broadcast_to(0.7 * jnp.eye(2), (num_components, 2, 2)))
    x, z = gmm.sample(jax.random.PRNGKey(seed), params, n)
    x, z = np.asarray(x, np.float32), np.asarray(z, np.int32)
    cut = int(0.8 * n)
    return Dataset("blobs", x[:cut], None, x[cut:], z[:cut], z[cut:], False, None)


def lecture_2d(n: int = 2000, *, seed: int = 0) -> Dataset:
    """Samples of the lecture's 2-D example (``models.vae.lecture_example``).

    ``x | z ~ N(mu(z), Sigma(z))``, mu(z) = sigmoid(Az + c),
    Sigma(z) = diag(exp(sigmoid(Bz + d))), z ~ N(0, I_2); the first 80% train.

    Args:
      n: number of points >= 2, a Python int.
      seed: JAX PRNG seed of the draws (the model's parameters use seed + 1000), an int in
        [0, 2**32 - 1001].

    Returns:
      A ``Dataset`` named ``"lecture-2d"`` with train and test float32 ``[N, 2]``, valid and
      labels None, binary False, image_shape None.
    """
    from jlvm import _checks

    n = _checks.positive_int(n, "n")
    seed = _seed(seed)
    if n < 2:
        raise ValueError(f"n must be >= 2 (a training and a test split), got {n}.")
    import jax

    from jlvm.models import vae

    params = vae.lecture_example(jax.random.PRNGKey(seed + 1000))
    x, _ = vae.sample(jax.random.PRNGKey(seed), params, n)
    x = np.asarray(x, np.float32)
    cut = int(0.8 * n)
    return Dataset("lecture-2d", x[:cut], None, x[cut:], None, None, False, None)


def _seed(seed: object) -> int:
    """A seed JAX keeps whole: 2**32 would give the same draws as 0."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or \
            not 0 <= seed < 2**32 - 1000:
        raise ValueError(f"seed must be an int in [0, {2**32 - 1001}], got {seed!r}.")
    return int(seed)


def load(name: str, *, path: str | os.PathLike | None = None) -> Dataset:
    """A data set by its command-line name, with each loader's defaults.

    Args:
      name: one of ``NAMES``.
      path: for ``"binarized-mnist"``, as in ``binarized_mnist``; ignored otherwise.

    Returns:
      The ``Dataset``.

    Raises:
      ValueError: an unknown name.
    """
    if name == "digits":
        return digits(binarize=True)
    if name == "digits-gray":
        return digits(binarize=False)
    if name == "binarized-mnist":
        return binarized_mnist(path)
    if name == "blobs":
        return blobs()
    if name == "lecture-2d":
        return lecture_2d()
    raise ValueError(f"data must be one of {NAMES}, got {name!r}.")
