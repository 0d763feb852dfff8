"""jlvm.data: the bundled digits."""

import numpy as np
import pytest

from jlvm import data


def test_digits_split_shapes_ranges_and_determinism():
    split = data.digits()
    assert split.train.shape == (1438, 64) and split.test.shape == (359, 64)
    assert split.train.dtype == np.float32
    assert split.train.min() == 0.0 and split.train.max() == 1.0
    assert set(np.unique(split.test_labels)) == set(range(10))
    again = data.digits()
    np.testing.assert_array_equal(split.train, again.train)
    other = data.digits(split_seed=1)
    assert not np.array_equal(split.train, other.train)


def test_binarized_digits_are_zero_one():
    split = data.digits(binarize=True)
    assert set(np.unique(split.train)) == {0.0, 1.0}


def test_bad_test_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.5)
