"""jlvm.data: the bundled digits, binarized MNIST files (read, checked, downloaded), synthetic."""

import os
import pathlib

import numpy as np
import pytest

from jlvm import data


def test_digits_split_shapes_ranges_and_determinism():
    split = data.digits(binarize=False)
    assert split.train.shape == (1438, 64) and split.test.shape == (359, 64)
    assert split.train.dtype == np.float32 and split.valid is None
    assert split.train.min() == 0.0 and split.train.max() == 1.0
    assert set(np.unique(split.test_labels)) == set(range(10))
    np.testing.assert_array_equal(split.train, data.digits(binarize=False).train)
    assert not np.array_equal(split.train, data.digits(binarize=False, split_seed=1).train)
    binary = data.digits()
    assert binary.binary and set(np.unique(binary.train)) == {0.0, 1.0}
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.5)


def _tiny_mnist(rng, rows):
    return {s: (rng.random((n, 784)) < 0.3).astype(np.uint8) for s, n in rows.items()}


ROWS = {"train": 5, "valid": 3, "test": 2}


def test_reads_npz_and_amat_and_they_agree(tmp_path):
    splits = _tiny_mnist(np.random.default_rng(0), ROWS)
    np.savez(tmp_path / "binarized_mnist.npz", **splits)
    amat_dir = tmp_path / "amat"
    amat_dir.mkdir()
    for name, array in splits.items():
        np.savetxt(amat_dir / f"binarized_mnist_{name}.amat", array, fmt="%d")
    from_npz = data.binarized_mnist(tmp_path, check_sizes=False)
    from_amat = data.binarized_mnist(amat_dir, check_sizes=False)
    for name in ROWS:
        np.testing.assert_array_equal(getattr(from_npz, name), splits[name])
        np.testing.assert_array_equal(getattr(from_amat, name), splits[name])
    assert from_npz.image_shape == (28, 28) and from_npz.train.dtype == np.float32


def test_environment_variable_and_sizes(tmp_path, monkeypatch):
    np.savez(tmp_path / "binarized_mnist.npz", **_tiny_mnist(np.random.default_rng(1), ROWS))
    monkeypatch.setenv("JLVM_DATA_DIR", str(tmp_path))
    assert data.binarized_mnist(check_sizes=False).train.shape == (5, 784)
    with pytest.raises(ValueError, match="50000 rows"):
        data.binarized_mnist()  # the published split sizes are checked by default
    monkeypatch.delenv("JLVM_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="JLVM_DATA_DIR"):
        data.binarized_mnist()


def test_corrupt_files_are_rejected_with_what_and_where(tmp_path):
    splits = _tiny_mnist(np.random.default_rng(2), ROWS)
    bad_values = dict(splits, test=np.full((2, 784), 2, np.uint8))
    np.savez(tmp_path / "binarized_mnist.npz", **bad_values)
    with pytest.raises(ValueError, match="0/1"):
        data.binarized_mnist(tmp_path, check_sizes=False)
    (tmp_path / "binarized_mnist.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"binarized_mnist\.npz"):
        data.binarized_mnist(tmp_path, check_sizes=False)
    np.savez(tmp_path / "binarized_mnist.npz", train=splits["train"])
    with pytest.raises(ValueError, match="missing keys"):
        data.binarized_mnist(tmp_path, check_sizes=False)
    short = tmp_path / "short.amat"
    short.write_text("0 1 1\n1 0 0\n")
    with pytest.raises(ValueError, match="784"):
        data.read_amat(short)
    with pytest.raises(FileNotFoundError, match=r"expected binarized_mnist\.npz"):
        data.binarized_mnist(tmp_path / "nowhere")


def test_download_fetches_verifies_and_never_leaves_partial_files(tmp_path):
    import hashlib

    source = tmp_path / "server"
    source.mkdir()
    splits = _tiny_mnist(np.random.default_rng(3), ROWS)
    for name, array in splits.items():
        np.savetxt(source / f"binarized_mnist_{name}.amat", array, fmt="%d")
    digests = {name: hashlib.sha256((source / f"binarized_mnist_{name}.amat").read_bytes())
               .hexdigest() for name in ROWS}
    cache = data.download_binarized_mnist(tmp_path / "cache", base_url=source.as_uri(),
                                          sha256=digests, check_sizes=False)
    loaded = data.binarized_mnist(cache, check_sizes=False)
    np.testing.assert_array_equal(loaded.valid, splits["valid"])
    # a wrong digest: the file is refused and nothing half-done stays behind
    with pytest.raises(ValueError, match="SHA-256"):
        data.download_binarized_mnist(tmp_path / "cache2", base_url=source.as_uri(),
                                      sha256={"train": "0" * 64}, check_sizes=False)
    assert sorted(os.listdir(tmp_path / "cache2")) == []


@pytest.mark.skipif(not os.environ.get("JLVM_DATA_DIR") or not pathlib.Path(
    os.environ.get("JLVM_DATA_DIR", "/nonexistent"), "binarized_mnist.npz").is_file(),
    reason="the shared binarized MNIST is not available (JLVM_DATA_DIR)")
def test_the_real_binarized_mnist():
    dataset = data.binarized_mnist()
    assert dataset.train.shape == (50000, 784) and dataset.valid.shape == (10000, 784)
    assert 0.10 < dataset.test.mean() < 0.16  # about 13% of pixels are on


def test_synthetic_sets_and_the_loader_names():
    blobs = data.blobs(500)
    assert blobs.train.shape == (400, 2) and blobs.test_labels.shape == (100,)
    lecture = data.lecture_2d(300)
    assert lecture.train.shape == (240, 2) and not lecture.binary
    assert data.load("digits").binary
    with pytest.raises(ValueError, match="data must be one of"):
        data.load("cifar")


def test_bad_synthetic_sizes_and_truncated_archives_are_named(tmp_path):
    with pytest.raises(ValueError, match="num_components must be >= 1"):
        data.blobs(num_components=0)
    with pytest.raises(ValueError, match="n must be"):
        data.lecture_2d(n=1)
    with pytest.raises(ValueError, match="seed must be an int"):
        data.blobs(seed=2**32)
    archive = tmp_path / "binarized_mnist.npz"
    np.savez(archive, train=np.zeros((2, 784)), valid=np.zeros((2, 784)),
             test=np.zeros((2, 784)))
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"not a readable \.npz archive"):
        data.binarized_mnist(archive, check_sizes=False)


def test_splits_seeds_downloads_and_paths_are_named(tmp_path):
    with pytest.raises(ValueError, match="leaves an empty split"):
        data.digits(test_fraction=1e-9)
    with pytest.raises(ValueError, match="split_seed must be an int"):
        data.digits(split_seed=-1)
    # NumPy integers are integers
    np.testing.assert_array_equal(data.digits(split_seed=np.int64(3)).test,
                                  data.digits(split_seed=3).test)
    assert data.blobs(50, seed=np.int32(1)).train.shape == (40, 2)
    with pytest.raises(TypeError, match="sha256 must be a dict"):
        data.download_binarized_mnist(tmp_path / "cache", sha256="abc")
    # no network here (nor in CI): a clean error naming the address, and no files left
    with pytest.raises(ConnectionError, match=r"could not download http://nonexistent\.invalid"):
        data.download_binarized_mnist(tmp_path / "cache", base_url="http://nonexistent.invalid")
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(TypeError, match="path must be a file or folder path"):
        data.binarized_mnist(123)
