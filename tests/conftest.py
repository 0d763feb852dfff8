"""Test configuration: CPU, strict rank promotion (broadcasting bugs cannot hide)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# The tests check mathematics to float32 accuracy; on NVIDIA GPUs XLA's default float32
# matmuls use TF32 (10-bit mantissa), off by ~1e-2 nats on these models. A hardware speed
# choice, not a bug in an estimator: the suite pins full precision so it means the same
# on every device.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def key():
    return jax.random.PRNGKey(20261124)
