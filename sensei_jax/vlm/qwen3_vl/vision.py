"""Qwen3-VL's vision tower, NHWC, a batch of same-sized images at a time.

Patches are taken in merge-block order (the 2 x 2 patches one text token merges from lie next to each other in
the sequence), as transformers lays them out. A still image is its own two-frame clip, so the 3D patch
convolution over (time, row, column) is the sum of its temporal kernel slices applied to the frame, one matmul.
The learned square position grid is resampled to each image's patch grid bilinearly (corners aligned); the
attention heads rotate by the patch's row and column (2D rotary embedding); blocks attend within one image. The
merger (LayerNorm, 2 x 2 patches concatenated, GELU MLP) turns the last block's output into text tokens, and one
DeepStack merger per tapped block (LayerNorm after the concatenation) gives the features added into the first
decoder layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.vlm.layers import INIT, LayerNorm, activation, attention, linear, rotate
from sensei_jax.vlm.language import inverse_frequencies
from sensei_jax.vlm.qwen3_vl.config import VisionConfig


def block_order(rows: int, cols: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every patch of a rows x cols grid in merge-block order: int [rows * cols] each."""
    row, col = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    blocks = (rows // merge, merge, cols // merge, merge)
    return (row.reshape(blocks).transpose(0, 2, 1, 3).reshape(-1),
            col.reshape(blocks).transpose(0, 2, 1, 3).reshape(-1))


@functools.lru_cache(maxsize=64)
def interpolation(rows: int, cols: int, side: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resampling (corners aligned) of a side x side table to a rows x cols grid, patches in
    merge-block order: (indices int32 [P, 4] into the flattened table, float32 weights [P, 4])."""

    def taps(index, size):
        source = index * (side - 1) / max(size - 1, 1)
        floor = np.floor(source)
        offsets = np.arange(2)
        return (np.clip(floor[:, None] + offsets, 0, side - 1).astype(np.int64),
                np.clip(1 - np.abs(source[:, None] - floor[:, None] - offsets), 0, None))

    row, col = block_order(rows, cols, merge)
    row_taps, row_weights = taps(row.astype(np.float64), rows)
    col_taps, col_weights = taps(col.astype(np.float64), cols)
    indices = (row_taps[:, :, None] * side + col_taps[:, None, :]).reshape(-1, 4)
    weights = (row_weights[:, :, None] * col_weights[:, None, :]).reshape(-1, 4)
    return indices.astype(np.int32), weights.astype(np.float32)


class PatchConv(nnx.Module):
    """The 3D patch convolution (kernel = stride = temporal x patch x patch, with bias) as one matmul over still
    images. `kernel` [T, p, p, C, D] (a torch Conv3d weight [D, C, T, p, p] transposed), `bias` [D]."""

    def __init__(self, cfg: VisionConfig, dtype, *, rngs: nnx.Rngs):
        p = cfg.patch_size
        shape = (cfg.temporal_patch_size, p, p, cfg.in_channels, cfg.hidden_size)
        self.kernel = nnx.Param(INIT(rngs.params(), shape, dtype))
        self.bias = nnx.Param(jnp.zeros((cfg.hidden_size,), dtype))

    def __call__(self, patches: jax.Array) -> jax.Array:
        """patches [N, P, p * p * C] (row, column, channel) -> [N, P, D]."""
        kernel = self.kernel[...]
        frame_kernel = kernel.astype(jnp.float32).sum(0).astype(kernel.dtype).reshape(-1, kernel.shape[-1])
        return jnp.einsum("npc,cd->npd", patches.astype(kernel.dtype), frame_kernel) + self.bias[...]


class PatchEmbed(nnx.Module):
    def __init__(self, cfg: VisionConfig, dtype, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.proj = PatchConv(cfg, dtype, rngs=rngs)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels [N, H, W, C] -> patch embeddings [N, P, D], P = (H / p) (W / p) in merge-block order."""
        batch, height, width, channels = pixels.shape
        p, m = self.cfg.patch_size, self.cfg.spatial_merge_size
        grid = pixels.reshape(batch, height // (p * m), m, p, width // (p * m), m, p, channels)
        grid = grid.transpose(0, 1, 4, 2, 5, 3, 6, 7)  # block row, block col, in-row, in-col, patch row, col, C
        return self.proj(grid.reshape(batch, (height // p) * (width // p), p * p * channels))


class VisionAttention(nnx.Module):
    """Bidirectional attention within one image, q and k rotated by the patch's (row, column)."""

    def __init__(self, cfg: VisionConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.heads, self.attention_kernel = cfg.num_heads, attention_kernel
        self.qkv = linear(cfg.hidden_size, 3 * cfg.hidden_size, True, dtype, rngs)
        self.proj = linear(cfg.hidden_size, cfg.hidden_size, True, dtype, rngs)

    def __call__(self, x: jax.Array, angles: jax.Array) -> jax.Array:
        batch, length, width = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, width // self.heads)
        q, k, v = rotate(qkv[:, :, 0], angles), rotate(qkv[:, :, 1], angles), qkv[:, :, 2]
        out = attention(q, k, v, None, self.attention_kernel)
        return self.proj(out.reshape(batch, length, width))


class VisionMlp(nnx.Module):
    def __init__(self, cfg: VisionConfig, dtype, *, rngs: nnx.Rngs):
        self.linear_fc1 = linear(cfg.hidden_size, cfg.intermediate_size, True, dtype, rngs)
        self.linear_fc2 = linear(cfg.intermediate_size, cfg.hidden_size, True, dtype, rngs)
        self.act = activation(cfg.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_fc2(self.act(self.linear_fc1(x)))


class VisionBlock(nnx.Module):
    """Pre-LN transformer block."""

    def __init__(self, cfg: VisionConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.attn = VisionAttention(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
        self.mlp = VisionMlp(cfg, dtype, rngs=rngs)

    def __call__(self, x: jax.Array, angles: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x), angles)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """merge x merge neighbouring patches -> one text-width token: LayerNorm (before the concatenation, or after
    it for the DeepStack mergers), linear, exact GELU, linear."""

    def __init__(self, cfg: VisionConfig, dtype, *, postshuffle_norm: bool, rngs: nnx.Rngs):
        self.merged = cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.postshuffle_norm = postshuffle_norm
        self.norm = LayerNorm(self.merged if postshuffle_norm else cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.linear_fc1 = linear(self.merged, self.merged, True, dtype, rngs)
        self.linear_fc2 = linear(self.merged, cfg.out_hidden_size, True, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [N, P, D] (merge-block order) -> [N, P / merge^2, out_hidden_size]."""
        if not self.postshuffle_norm:
            x = self.norm(x)
        x = x.reshape(x.shape[0], -1, self.merged)
        if self.postshuffle_norm:
            x = self.norm(x)
        return self.linear_fc2(jax.nn.gelu(self.linear_fc1(x), approximate=False))


class VisionModel(nnx.Module):
    """Patch embedding, learned positions, blocks, merger and DeepStack mergers."""

    def __init__(self, cfg: VisionConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg, dtype, rngs=rngs)
        self.pos_embed = nnx.Embed(cfg.num_position_embeddings, cfg.hidden_size, dtype=dtype, param_dtype=dtype,
                                   embedding_init=INIT, rngs=rngs)
        self.blocks = nnx.List([VisionBlock(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
                                for _ in range(cfg.depth)])
        self.merger = PatchMerger(cfg, dtype, postshuffle_norm=False, rngs=rngs)
        self.deepstack_merger_list = nnx.List([PatchMerger(cfg, dtype, postshuffle_norm=True, rngs=rngs)
                                               for _ in cfg.deepstack_visual_indexes])

    def positions(self, rows: int, cols: int) -> jax.Array:
        """Learned position embeddings resampled to a rows x cols patch grid, float32 [P, D]."""
        indices, weights = interpolation(rows, cols, self.cfg.grid_side, self.cfg.spatial_merge_size)
        table = self.pos_embed.embedding[...].astype(jnp.float32)
        return jnp.einsum("pkd,pk->pd", table[jnp.asarray(indices)], jnp.asarray(weights))

    def angles(self, rows: int, cols: int) -> jax.Array:
        """Rotary angles of every patch, float32 [P, head_size / 2]: row frequencies then column frequencies."""
        row, col = block_order(rows, cols, self.cfg.spatial_merge_size)
        inv_freq = inverse_frequencies(self.cfg.head_size // 2, self.cfg.rope_theta)
        return jnp.concatenate([jnp.asarray(row, jnp.float32)[:, None] * inv_freq,
                                jnp.asarray(col, jnp.float32)[:, None] * inv_freq], axis=-1)

    def __call__(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """pixels [N, H, W, C] (H, W multiples of patch * merge) -> (tokens [N, L, D_text], DeepStack features
        [N, L, K, D_text]), L = P / merge^2, K tapped blocks."""
        rows, cols = pixels.shape[1] // self.cfg.patch_size, pixels.shape[2] // self.cfg.patch_size
        x = self.patch_embed(pixels)
        x = x + self.positions(rows, cols).astype(x.dtype)[None]
        angles = self.angles(rows, cols)[None]  # [1, P, H/2]: the same for every image of the batch
        taps = []
        for index, block in enumerate(self.blocks):
            x = block(x, angles)
            if index in self.cfg.deepstack_visual_indexes:
                merger = self.deepstack_merger_list[self.cfg.deepstack_visual_indexes.index(index)]
                taps.append(merger(x))
        tokens = self.merger(x)
        if not taps:
            return tokens, jnp.zeros((*tokens.shape[:2], 0, tokens.shape[-1]), tokens.dtype)
        return tokens, jnp.stack(taps, axis=2)
