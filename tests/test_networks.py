"""jlvm.models.networks: shapes and the (graphdef, state) round trip."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jlvm.models import networks


def test_mlp_layers_and_activation():
    mlp = networks.MLP(3, (5, 4), 2, "tanh", rngs=nnx.Rngs(0))
    x = jnp.array([0.1, -0.2, 0.3])
    h = x
    for layer in mlp.layers[:-1]:
        h = jnp.tanh(h @ layer.kernel[...] + layer.bias[...])
    expected = h @ mlp.layers[-1].kernel[...] + mlp.layers[-1].bias[...]
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-6)


def test_split_merge_round_trip_is_pure():
    encoder = networks.GaussianEncoder(6, (8,), 2, "relu", rngs=nnx.Rngs(1))
    graph, state = nnx.split(encoder)
    x = jnp.linspace(0, 1, 6)
    mean, log_scale = jax.jit(lambda s: nnx.merge(graph, s)(x))(state)
    ref_mean, ref_log_scale = encoder(x)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6)
    np.testing.assert_allclose(log_scale, ref_log_scale, rtol=1e-6)
    assert mean.shape == (2,)


def test_decoders_output_shapes():
    z = jnp.zeros(3)
    assert networks.BernoulliDecoder(3, (4,), 7, "tanh", rngs=nnx.Rngs(0))(z)[0].shape == (7,)
    mean, log_scale = networks.GaussianDecoder(3, (4,), 7, "gelu", rngs=nnx.Rngs(0))(z)
    assert mean.shape == log_scale.shape == (7,)
    mean, log_scale = networks.SigmoidGaussianDecoder(3, 2, rngs=nnx.Rngs(0))(z)
    assert np.all((mean > 0) & (mean < 1)) and np.all((log_scale > 0) & (log_scale < 0.5))
