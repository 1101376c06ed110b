"""How the DreamerV3 CNNs are computed: the sub-pixel decoder conv and the reference-shaped channels (cnn_mults)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sensei_jax.dreamer.agent import Agent
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.nets import BlockLinear, Conv, ImageDecoder, ImageEncoder


def _compare(kernel: int, stride: int, in_side: int, out_side: int, want_fn, got_fn) -> None:
    """Conv(6 -> 5, `kernel`, `stride`) with a non-zero bias: `got_fn(conv, x)` must equal `want_fn(conv, x)` on
    x [2, 3, in_side, in_side, 6], in value and in the gradients of a squared error against a random target
    [2, 3, out_side, out_side, 5], in the input and in every parameter."""
    conv = Conv(6, 5, kernel, stride, rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.linspace(-1.0, 1.0, 5)
    graph, params = nnx.split(conv)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, in_side, in_side, 6)).astype(np.float32))
    target = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, out_side, out_side, 5)).astype(np.float32))
    want = lambda p, x: want_fn(nnx.merge(graph, p), x)  # noqa: E731
    got = lambda p, x: got_fn(nnx.merge(graph, p), x)  # noqa: E731
    assert got(params, x).shape == want(params, x).shape == (2, 3, out_side, out_side, 5)
    np.testing.assert_allclose(got(params, x), want(params, x), atol=1e-5, rtol=1e-5)
    loss = lambda f: lambda p, x: jnp.sum((f(p, x) - target) ** 2)  # noqa: E731
    g_want = jax.grad(loss(want), (0, 1))(params, x)
    g_got = jax.grad(loss(got), (0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        # Gradients are sums over ~1500 products (magnitudes up to ~1e3): compare at float32 precision of the scale.
        np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max()), rtol=0)


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_subpixel_upsampled_conv_equals_repeat_then_conv(kernel):
    # The decoder computes conv(x2 nearest upsampling) as four low-resolution phase convs with summed taps.
    _compare(kernel, 1, 8, 16, lambda conv, x: conv(jnp.repeat(jnp.repeat(x, 2, -3), 2, -2)),
             lambda conv, x: conv.upsampled(x))


def test_image_decoder_convolves_at_low_resolution_and_matches_repeat_then_conv():
    dec = ImageDecoder(24, (32, 32, 3), 4, 5, 4, "rms", mults=(2, 3, 4), rngs=nnx.Rngs(0))
    feat = jnp.asarray(np.random.default_rng(0).normal(size=(2, 24)).astype(np.float32))
    x = dec.linear(feat).reshape((2, 4, 4, dec.first_channels))
    for i in range(len(dec.convs)):
        x = dec.convs[f"c{i}"](jnp.repeat(jnp.repeat(x, 2, -3), 2, -2))
        if i < len(dec.convs) - 1:
            x = jax.nn.silu(dec.norms[f"n{i}"](x))
    np.testing.assert_allclose(dec(feat), x + 0.5, atol=1e-5, rtol=1e-5)
    # No conv reads an upsampled tensor: every conv input is at most half the image side (16 of 32).
    jaxpr = jax.make_jaxpr(dec)(feat).jaxpr
    sides = [e.invars[0].aval.shape[1] for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert sides == [4, 8, 16], sides


def test_cnn_mults_set_the_channels_and_are_validated():
    enc = ImageEncoder((64, 64, 3), 4, 5, 4, "rms", mults=(2, 3, 4, 4), rngs=nnx.Rngs(0))
    assert [enc.convs[f"c{i}"].kernel.shape for i in range(4)] == [
        (5, 5, 3, 8), (5, 5, 8, 12), (5, 5, 12, 16), (5, 5, 16, 16)]
    assert enc.out_size == 4 * 4 * 16
    dec = ImageDecoder(10, (64, 64, 3), 4, 5, 4, "rms", mults=(2, 3, 4, 4), rngs=nnx.Rngs(0))
    assert [dec.convs[f"c{i}"].kernel.shape for i in range(4)] == [
        (5, 5, 16, 16), (5, 5, 16, 12), (5, 5, 12, 8), (5, 5, 8, 3)]
    # The default (no mults) keeps depth * 2^i.
    enc = ImageEncoder((64, 64, 3), 4, 4, 4, "rms", rngs=nnx.Rngs(0))
    assert [enc.convs[f"c{i}"].kernel.shape[-1] for i in range(4)] == [4, 8, 16, 32]
    with pytest.raises(ValueError, match=r"dreamer.cnn_mults \[2, 3, 4\] has 3 entries.*4 stride-2 stages"):
        Agent(DreamerConfig.tiny(cnn_mults=(2, 3, 4)), {"image": ((64, 64, 3), np.uint8)}, 2)
    with pytest.raises(ValueError, match="dreamer.cnn_mults must be positive"):
        DreamerConfig.tiny(cnn_mults=(2, 0))


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_strided_conv_as_dense_conv_over_space_to_depth_equals_the_strided_conv(kernel):
    # The encoder runs its stride-2 convs after the first as stride-1 convs over 2x2 space-to-depth blocks.
    _compare(kernel, 2, 16, 8, lambda conv, x: conv(x), lambda conv, x: conv.strided_as_dense(x))


def test_image_encoder_matches_strided_convs():
    enc = ImageEncoder((32, 32, 3), 4, 5, 4, "rms", mults=(2, 3, 4), rngs=nnx.Rngs(0))
    image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8))
    x = image.astype(jnp.float32) / 255.0 - 0.5
    for i in range(len(enc.convs)):
        x = jax.nn.silu(enc.norms[f"n{i}"](enc.convs[f"c{i}"](x)))
    np.testing.assert_allclose(enc(image), x.reshape((2, -1)), atol=1e-5, rtol=1e-5)


def test_block_linear_equals_the_block_diagonal_einsum():
    # BlockLinear runs one matmul per group; it must stay the block-diagonal map einsum('...gi,gio->...go') + bias.
    layer = BlockLinear(32, 48, 4, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.asarray(np.random.default_rng(3).normal(size=(4, 12)).astype(np.float32))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5, 4, 8)).astype(np.float32))
    want = jnp.einsum("...gi,gio->...go", x, layer.kernel[...]) + layer.bias[...]
    np.testing.assert_allclose(layer(x), want, atol=1e-5, rtol=1e-5)
