"""Layers of the DreamerV3 networks in flax.nnx: linear, block-linear, conv, norm, MLP, image and vector codecs.

Parameters are float32; matmuls and convs run in the compute dtype (float32 or bfloat16); norms upcast to float32.
Weights use a truncated normal (built by numpy when not traced) scaled by 1/sqrt(fan_in) times `outscale` (0 gives
zeros, as for the reward and value outputs); biases start at zero.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.dreamer.distributions import symlog


def truncated_normal(key: jax.Array, shape: tuple[int, ...], std: float) -> jax.Array:
    """Normal(0, std) truncated at two standard deviations, float32.

    Outside of tracing the draw is made by numpy from the key's bits: XLA takes seconds to compile each
    differently shaped jax.random call on a CPU, which made building a model cost tens of seconds.
    """
    if isinstance(key, jax.core.Tracer):
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) * std
    bits = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    rng = np.random.default_rng(np.asarray(bits).ravel().tolist())
    x = rng.standard_normal(shape, dtype=np.float32)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
        bad = np.abs(x) > 2
    return jnp.asarray(x * np.float32(std))


def _kernel(key: jax.Array, shape: tuple[int, ...], fan_in: int, outscale: float = 1.0) -> jax.Array:
    """Truncated normal with std outscale / sqrt(fan_in), corrected for the truncation; zeros for outscale 0."""
    if outscale == 0:
        return jnp.zeros(shape, jnp.float32)
    return truncated_normal(key, shape, outscale / math.sqrt(fan_in) / 0.87962566)


class Linear(nnx.Module):
    """x [..., I] -> [..., O]."""

    def __init__(self, in_size: int, out_size: int, *, bias: bool = True, outscale: float = 1.0, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.kernel = nnx.Param(_kernel(rngs.params(), (in_size, out_size), in_size, outscale))
        self.bias = nnx.Param(jnp.zeros((out_size,), jnp.float32)) if bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x.astype(self.dtype) @ self.kernel[...].astype(self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class BlockLinear(nnx.Module):
    """Block-diagonal linear map: x [..., G, I/G] -> [..., G, O/G], one dense block per group."""

    def __init__(self, in_size: int, out_size: int, blocks: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if in_size % blocks or out_size % blocks:
            raise ValueError(f"BlockLinear sizes {in_size}->{out_size} must be divisible by {blocks} blocks")
        # fan_in is the full input width, as in the reference, so blocks start as small as a dense layer would.
        self.kernel = nnx.Param(_kernel(rngs.params(), (blocks, in_size // blocks, out_size // blocks), in_size))
        self.bias = nnx.Param(jnp.zeros((blocks, out_size // blocks), jnp.float32))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        # One matmul per group, stacked on the group axis (the same products as einsum('...gi,gio->...go')): XLA's
        # CPU backend lowers that einsum to a batched dot with the group axis first, which transposes the input
        # and the output every call, most of the block GRU's time inside the imagination and observe scans.
        x = x.astype(self.dtype)
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.stack([x[..., g, :] @ kernel[g] for g in range(kernel.shape[0])], -2)
        return y + self.bias[...].astype(self.dtype)


class Norm(nnx.Module):
    """RMSNorm (learned scale) or LayerNorm (scale and shift) over the last axis, computed in float32."""

    def __init__(self, size: int, kind: str = "rms", *, dtype=jnp.float32):
        self.kind = kind
        self.eps = 1e-4 if kind == "rms" else 1e-3
        self.scale = nnx.Param(jnp.ones((size,), jnp.float32))
        self.shift = nnx.Param(jnp.zeros((size,), jnp.float32)) if kind == "layer" else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        if self.kind == "rms":
            x = x * jax.lax.rsqrt(jnp.mean(x**2, -1, keepdims=True) + self.eps) * self.scale[...]
        else:
            x = x - jnp.mean(x, -1, keepdims=True)
            x = x * jax.lax.rsqrt(jnp.mean(x**2, -1, keepdims=True) + self.eps) * self.scale[...] + self.shift[...]
        return x.astype(self.dtype)


class Dense(nnx.Module):
    """Linear (no bias) -> Norm -> SiLU."""

    def __init__(self, in_size: int, out_size: int, norm: str, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.linear = Linear(in_size, out_size, bias=False, dtype=dtype, rngs=rngs)
        self.norm = Norm(out_size, norm, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.silu(self.norm(self.linear(x)))


class MLP(nnx.Module):
    """`layers` x Dense(units): x [..., I] -> [..., units] (identity when layers is 0)."""

    def __init__(self, in_size: int, units: int, layers: int, norm: str, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.layers = nnx.Dict(
            {f"l{i}": Dense(in_size if i == 0 else units, units, norm, dtype=dtype, rngs=rngs) for i in range(layers)}
        )
        self.out_size = units if layers else in_size

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(len(self.layers)):
            x = self.layers[f"l{i}"](x)
        return x


class Conv(nnx.Module):
    """2D convolution, NHWC: x [..., H, W, I] -> [..., H / stride, W / stride, O], SAME padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, bias: bool = True,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        shape = (kernel, kernel, in_ch, out_ch)
        self.kernel = nnx.Param(_kernel(rngs.params(), shape, kernel * kernel * in_ch))
        self.bias = nnx.Param(jnp.zeros((out_ch,), jnp.float32)) if bias else None
        self.stride = stride
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        batch = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:]).astype(self.dtype)
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...].astype(self.dtype), (self.stride, self.stride), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y.reshape(batch + y.shape[1:])

    def upsampled(self, x: jax.Array) -> jax.Array:
        """conv(x2 nearest upsampling of x), computed without the upsampled tensor: [..., H, W, I] -> [..., 2H, 2W, O].

        Output pixel (2i + p, 2j + q) of the conv over the repeated image reads only low-resolution pixels near
        (i, j), each through the sum of the kernel taps that land on it. So each of the four output phases (p, q) is
        a small conv at the input's resolution with summed taps (3x3 for kernel 5, 2x2 for kernel 3), and the
        phases interleave into the output: 2.8x (kernel 5) or 2.25x (kernel 3) fewer multiply-adds than the conv
        at the upsampled size, and no 4x larger input to store for the backward pass. Same function as
        `self(jnp.repeat(jnp.repeat(x, 2, -3), 2, -2))` up to float summation order (tests pin it at 1e-5).
        """
        if self.stride != 1:
            raise ValueError("Conv.upsampled needs a stride-1 conv")
        batch = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:]).astype(self.dtype)
        kernel = self.kernel[...]
        size = kernel.shape[0]
        phases = [_phase_taps(size, p) for p in (0, 1)]  # (first offset, [taps, size] 0/1 summing matrix)
        if phases[0][0] == phases[1][0] and phases[0][1].shape == phases[1][1].shape:
            # Both phases read the same window (odd kernel 4n+1, e.g. 5): one conv with the four phases' kernels
            # side by side on the output channels.
            lo, m0 = phases[0]
            m1 = phases[1][1]
            mats = np.stack([m0, m1])  # [2 phases, taps, size]
            k4 = jnp.einsum("pad,qbe,deio->abipqo", mats, mats, kernel)
            k4 = k4.reshape(k4.shape[:3] + (-1,)).astype(self.dtype)
            pad = [(-lo, m0.shape[0] - 1 + lo)] * 2
            y = jax.lax.conv_general_dilated(x, k4, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = y.reshape(y.shape[:3] + (2, 2, -1))  # [N, H, W, p, q, O]
        else:
            rows = []
            for lo_p, mp in phases:
                cols = []
                for lo_q, mq in phases:
                    kpq = jnp.einsum("ad,be,deio->abio", mp, mq, kernel).astype(self.dtype)
                    pad = [(-lo_p, mp.shape[0] - 1 + lo_p), (-lo_q, mq.shape[0] - 1 + lo_q)]
                    cols.append(jax.lax.conv_general_dilated(x, kpq, (1, 1), pad,
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
                rows.append(jnp.stack(cols, -2))  # [N, H, W, q, O]
            y = jnp.stack(rows, -3)  # [N, H, W, p, q, O]
        n, h, w = y.shape[:3]
        y = jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(n, 2 * h, 2 * w, y.shape[-1])
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y.reshape(batch + y.shape[1:])

    def strided_as_dense(self, x: jax.Array) -> jax.Array:
        """This stride-2 SAME conv computed as a stride-1 conv over the 2x2 space-to-depth of x: [..., H, W, I] ->
        [..., H / 2, W / 2, O], same function as `self(x)` up to float summation order.

        Output o reads input rows 2o - pad + d (d < kernel); row 2b + r is channel block r of space-to-depth row b,
        so each output reads block rows o + floor((d - pad) / 2) through a kernel whose taps are the original ones
        placed by (offset, parity) and zeros elsewhere (3x3 blocks for kernel 5). XLA's CPU backend runs the
        backward pass of a strided conv (its input gradient is an lhs-dilated conv) on a slow generic path; the
        stride-1 form's backward passes are ordinary convs.
        """
        if self.stride != 2:
            raise ValueError("Conv.strided_as_dense needs a stride-2 conv")
        batch = x.shape[:-3]
        n_h, n_w, chans = x.shape[-3:]
        if n_h % 2 or n_w % 2:
            raise ValueError(f"Conv.strided_as_dense needs an even height and width, got {x.shape[-3:]}")
        x = x.reshape((-1, n_h // 2, 2, n_w // 2, 2, chans)).astype(self.dtype)
        x = jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape((-1, n_h // 2, n_w // 2, 4 * chans))
        size = self.kernel.shape[0]
        pad = (size - 2) // 2  # SAME for stride 2 over an even size pads size - 2 in total, the smaller half first
        blocks = [(d - pad) // 2 for d in range(size)]
        lo = blocks[0]
        mat = np.zeros((blocks[-1] - lo + 1, 2, size), np.float32)  # [block offset, parity, tap]
        for d, b in enumerate(blocks):
            mat[b - lo, (d - pad) % 2, d] = 1.0
        kernel = jnp.einsum("apd,bqe,deio->abpqio", mat, mat, self.kernel[...])
        kernel = kernel.reshape(kernel.shape[:2] + (4 * chans, -1)).astype(self.dtype)
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), [(-lo, mat.shape[0] - 1 + lo)] * 2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y.reshape(batch + y.shape[1:])


def _phase_taps(size: int, phase: int) -> tuple[int, np.ndarray]:
    """For a stride-1 SAME conv of width `size` over a x2 nearest-upsampled axis: output 2i + phase reads upsampled
    positions 2i + phase - (size - 1) // 2 + d (d < size), i.e. low-resolution positions i + floor((phase - pad +
    d) / 2). Returns (the lowest offset, a [taps, size] float32 matrix summing the kernel taps per offset)."""
    pad = (size - 1) // 2
    offsets = [(phase - pad + d) // 2 for d in range(size)]
    lo = offsets[0]
    mat = np.zeros((offsets[-1] - lo + 1, size), np.float32)
    for d, o in enumerate(offsets):
        mat[o - lo, d] = 1.0
    return lo, mat


def _image_stages(shape: tuple[int, ...], minres: int) -> int:
    height, width = shape[:2]
    stages = int(round(math.log2(height / minres))) if height >= minres else -1
    if height != width or stages < 1 or minres * 2**stages != height:
        raise ValueError(f"image shape {shape} must be square with side minres*2^k (minres={minres}, k>=1)")
    return stages


def stage_channels(shape: tuple[int, ...], depth: int, minres: int, mults: tuple[int, ...] = ()) -> list[int]:
    """Channels of the CNN stages, highest resolution first: depth * mults, or depth * (1, 2, 4, ...) when empty."""
    stages = _image_stages(shape, minres)
    if not mults:
        return [depth * 2**i for i in range(stages)]
    if len(mults) != stages:
        raise ValueError(
            f"dreamer.cnn_mults {list(mults)} has {len(mults)} entries, but images of shape {tuple(shape)} with "
            f"cnn_minres {minres} take {stages} stride-2 stages (log2({shape[0]} / {minres})); give one multiplier "
            f"per stage")
    return [depth * int(m) for m in mults]


class ImageEncoder(nnx.Module):
    """uint8 images [..., H, W, C] -> features [..., minres^2 * depth * 2^(stages-1)].

    Stride-2 convs with channels depth * mults (default (1, 2, 4, ...)), each followed by Norm and SiLU, down to
    minres x minres.
    """

    def __init__(self, shape: tuple[int, int, int], depth: int, kernel: int, minres: int, norm: str, *,
                 mults: tuple[int, ...] = (), dtype=jnp.float32, rngs: nnx.Rngs):
        channels = [shape[2]] + stage_channels(shape, depth, minres, mults)
        stages = len(channels) - 1
        self.convs = nnx.Dict({
            f"c{i}": Conv(channels[i], channels[i + 1], kernel, 2, bias=False, dtype=dtype, rngs=rngs)
            for i in range(stages)})
        self.norms = nnx.Dict({f"n{i}": Norm(channels[i + 1], norm, dtype=dtype) for i in range(stages)})
        self.out_size = minres * minres * channels[-1]

    def __call__(self, image: jax.Array) -> jax.Array:
        x = image.astype(jnp.float32) / 255.0 - 0.5
        for i in range(len(self.convs)):
            # After the first stage, the stride-2 convs run as stride-1 convs over space-to-depth blocks (see
            # Conv.strided_as_dense: faster backward passes on XLA's CPU backend). The first stage keeps the
            # strided form: with 3 input channels its dense form costs more than it saves.
            conv = self.convs[f"c{i}"]
            x = conv.strided_as_dense(x) if i > 0 else conv(x)
            x = jax.nn.silu(self.norms[f"n{i}"](x))
        return x.reshape(x.shape[:-3] + (-1,))


class ImageDecoder(nnx.Module):
    """features [..., F] -> images [..., H, W, C] float32 in about [0, 1].

    Linear to minres x minres x (the encoder's last channels), then per stage: x2 nearest upsampling, conv, Norm,
    SiLU, with the encoder's channels in reverse; the last conv maps to C channels. Output + 0.5, so zero output
    means mid-grey.
    """

    def __init__(self, in_size: int, shape: tuple[int, int, int], depth: int, kernel: int, minres: int, norm: str,
                 *, mults: tuple[int, ...] = (), dtype=jnp.float32, rngs: nnx.Rngs):
        channels = stage_channels(shape, depth, minres, mults)[::-1] + [shape[2]]
        stages = len(channels) - 1
        self.minres = minres
        self.first_channels = channels[0]
        self.linear = Linear(in_size, minres * minres * channels[0], dtype=dtype, rngs=rngs)
        self.convs = nnx.Dict({
            f"c{i}": Conv(channels[i], channels[i + 1], kernel - 1 if kernel % 2 == 0 else kernel, 1,
                          bias=(i == stages - 1), dtype=dtype, rngs=rngs)
            for i in range(stages)})
        self.norms = nnx.Dict({f"n{i}": Norm(channels[i + 1], norm, dtype=dtype) for i in range(stages - 1)})

    def __call__(self, feat: jax.Array) -> jax.Array:
        x = self.linear(feat)
        x = x.reshape(x.shape[:-1] + (self.minres, self.minres, self.first_channels))
        stages = len(self.convs)
        for i in range(stages):
            x = self.convs[f"c{i}"].upsampled(x)  # = conv(repeat(repeat(x, 2, -3), 2, -2)), see Conv.upsampled
            if i < stages - 1:
                x = jax.nn.silu(self.norms[f"n{i}"](x))
        return x.astype(jnp.float32) + 0.5


class VectorEncoder(nnx.Module):
    """Concatenated vector observations [..., N] -> symlog -> MLP -> [..., units]."""

    def __init__(self, in_size: int, units: int, layers: int, norm: str, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.mlp = MLP(in_size, units, max(layers, 1), norm, dtype=dtype, rngs=rngs)
        self.out_size = units

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.mlp(symlog(x.astype(jnp.float32)))


class VectorDecoder(nnx.Module):
    """features [..., F] -> predictions of the concatenated symlog vector observations [..., N] (float32)."""

    def __init__(self, in_size: int, out_size: int, units: int, layers: int, norm: str, *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.mlp = MLP(in_size, units, max(layers, 1), norm, dtype=dtype, rngs=rngs)
        self.out = Linear(units, out_size, dtype=dtype, rngs=rngs)

    def __call__(self, feat: jax.Array) -> jax.Array:
        return self.out(self.mlp(feat)).astype(jnp.float32)
