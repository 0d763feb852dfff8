"""jlvm.models.networks: MLPs, convolutional nets, the VAE's decoder and encoder heads."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
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
    net = networks.MLP(6, (8,), 4, "relu", rngs=nnx.Rngs(1))
    encoder = networks.Encoder(net, "diagonal", 2)
    graph, state = nnx.split(encoder)
    x = jnp.linspace(0, 1, 6)
    q = jax.jit(lambda s: nnx.merge(graph, s)(x).mean())(state)
    np.testing.assert_allclose(q, net(x)[:2], rtol=1e-6)
    assert isinstance(encoder(x), distrax.MultivariateNormalDiag)


def test_conv_nets_take_images_of_any_size_and_give_parameter_major_outputs():
    # odd sizes (7 -> 4 -> 2 and back up to 8, cropped to 7) and two layers
    encoder = networks.ConvEncoderNet((7, 5), (3, 2), 5, "relu", rngs=nnx.Rngs(0))
    assert encoder(jnp.ones(35)).shape == (5,)
    decoder = networks.ConvDecoderNet(2, (3, 2), (7, 5), 3, "relu", rngs=nnx.Rngs(0))
    assert decoder(jnp.array([0.3, -0.2])).shape == (3 * 35,)
    # row p of the parameter-major output: checked by hand below


def _same_as_flax(ours, layer, h):
    """ours(layer, h) equals Flax's layer(h), in value and in gradients (each side one
    compiled program)."""
    graph, state = nnx.split(layer)

    def loss(state, h, fast):
        layer = nnx.merge(graph, state)
        out = ours(layer, h) if fast else layer(h)
        return jnp.sum(jnp.sin(out)), out

    for fast in (True, False):
        grads = jax.jit(jax.grad(loss, (0, 1), has_aux=True), static_argnums=2)
        (state_grad, h_grad), out = grads(state, h, fast)
        leaves = [out, h_grad, *jax.tree_util.tree_leaves(state_grad)]
        if fast:
            mine = leaves
    for a, b in zip(mine, leaves, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("height, width, strides, channels", [
    (7, 5, 2, (3, 4)), (8, 8, 2, (4, 1)), (6, 5, 3, (3, 4)), (5, 4, 1, (4, 1))])
def test_convolutions_are_matrix_products_with_flax_numbers(height, width, strides, channels):
    # channels (3, 4): windows times the kernel; (4, 1): the kernel first, taps summed
    # jlvm's conv nets keep Flax's Conv / ConvTranspose parameters and compute them as
    # matrix products (fast on XLA's CPU backend, in lax.scan too): the same numbers and
    # gradients, odd sizes, kernels of 3 and 4 taps, strides 1 to 3
    rngs, key = nnx.Rngs(0), jax.random.PRNGKey(height * width)
    h = jax.random.normal(key, (height, width, channels[0]))
    for kernel in (3, 4):
        _same_as_flax(networks._conv, nnx.Conv(*channels, kernel_size=(kernel, kernel),
                                               strides=(strides, strides), padding="SAME",
                                               rngs=rngs), h)
        _same_as_flax(networks._conv_transpose, nnx.ConvTranspose(
            *channels, kernel_size=(kernel, kernel), strides=(strides, strides),
            padding="SAME", rngs=rngs), h)
    # the program holds no convolution: make_epoch scans it (jlvm.train._slow_in_a_loop)
    layer = nnx.ConvTranspose(*channels, kernel_size=(3, 3), strides=(strides, strides),
                              padding="SAME", rngs=rngs)
    names = {e.primitive.name for e in jax.make_jaxpr(
        lambda h: networks._conv_transpose(layer, h))(h).jaxpr.eqns}
    assert "conv_general_dilated" not in names and "dot_general" in names


def test_the_conv_decoder_is_the_network_written_out_by_hand():
    # row p of the parameter-major output is channel p of the last convolution, row-major
    # over the image: the network written out by hand with Flax's layers
    decoder = networks.ConvDecoderNet(2, (4,), (8, 8), 2, "tanh", rngs=nnx.Rngs(3))
    z = jnp.array([0.5, -1.0])
    h = jnp.tanh(decoder.inp(z)).reshape(4, 4, 4)
    h = jnp.tanh(decoder.deconvs[0](h))
    image = decoder.out(h)  # [8, 8, 2]
    np.testing.assert_allclose(decoder(z).reshape(2, 64),
                               np.stack([np.ravel(image[..., 0]), np.ravel(image[..., 1])]),
                               rtol=1e-5, atol=1e-6)
    # the encoder reads the vector as an 8x8 image with one channel: 3x3 windows over it
    encoder = networks.ConvEncoderNet((8, 8), (4, 3), 1, "tanh", rngs=nnx.Rngs(0))
    assert encoder.convs[0].kernel[...].shape == (3, 3, 1, 4)
    x = jax.random.uniform(jax.random.PRNGKey(1), (64,))
    h = jnp.tanh(encoder.convs[1](jnp.tanh(encoder.convs[0](x.reshape(8, 8, 1)))))
    np.testing.assert_allclose(encoder(x), encoder.out(h.reshape(-1)), rtol=1e-5, atol=1e-6)


def test_decoder_rows_for_every_likelihood():
    z = jnp.zeros(3)

    def decoder(likelihood, rows):
        return networks.Decoder(networks.MLP(3, (4,), rows * 7, "tanh", rngs=nnx.Rngs(0)),
                                likelihood, 7)

    assert decoder("bernoulli", 1)(z).shape == (1, 7)
    assert decoder("gaussian", 2)(z).shape == (2, 7)
    assert decoder("categorical:5", 5)(z).shape == (5, 7)
    pixel = decoder("gaussian-pixel", 1)
    out = pixel(z)
    assert out.shape == (2, 7)
    np.testing.assert_array_equal(out[1], pixel.log_scale[...])  # a parameter, not of z
    fixed = decoder("gaussian-fixed:0.25", 1)(z)
    np.testing.assert_allclose(fixed[1], np.full(7, np.log(0.25)), rtol=1e-6)
    lecture = networks.SigmoidGaussianDecoder(3, 2, rngs=nnx.Rngs(0))(z)
    assert lecture.shape == (2, 2)
    assert np.all((lecture[0] > 0) & (lecture[0] < 1))
    assert np.all((lecture[1] > 0) & (lecture[1] < 0.5))


def test_encoder_families():
    x = jnp.linspace(-1, 1, 6)
    for family, outputs, kind in (("diagonal", 4, distrax.MultivariateNormalDiag),
                                  ("full", 5, distrax.MultivariateNormalTri),
                                  ("flow", 4 + networks.FLOW_CONTEXT, distrax.Transformed)):
        net = networks.MLP(6, (8,), outputs, "tanh", rngs=nnx.Rngs(2))
        q = networks.Encoder(net, family, 2, flow_hidden=8, rngs=nnx.Rngs(3))(x)
        assert isinstance(q, kind) and q.event_shape == (2,)
    # a flow starts as the identity: its q is its base Gaussian
    net = networks.MLP(6, (8,), 4 + networks.FLOW_CONTEXT, "tanh", rngs=nnx.Rngs(2))
    q = networks.Encoder(net, "flow", 2, flow_hidden=8, rngs=nnx.Rngs(3))(x)
    z = jnp.array([0.3, -0.7])
    np.testing.assert_allclose(q.log_prob(z), q.distribution.log_prob(z), rtol=1e-6)
