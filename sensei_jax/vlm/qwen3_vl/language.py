"""The Qwen3 decoder of Qwen3-VL: RMSNorm on every query and key head before the rotary embedding, grouped-query
attention, SwiGLU MLP, interleaved multimodal rotary embeddings, and DeepStack: the vision tower's tapped
features added onto the image tokens' hidden states after each of the first decoder layers.

Interleaved MRoPE: frequency i of a head rotates by the token's height position when i % 3 == 1 and i < 3 *
sections[1], by its width position when i % 3 == 2 and i < 3 * sections[2], by its time position otherwise.
Attention takes an explicit boolean mask, so one code path serves right-padded scoring and cached decoding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.vlm.language import KVCache, LlamaMlp, inverse_frequencies
from sensei_jax.vlm.layers import INIT, RMSNorm, attention, linear, rotate
from sensei_jax.vlm.qwen3_vl.config import TextConfig


def mrope_axes(head_size: int, sections: tuple[int, int, int]) -> np.ndarray:
    """Which position axis (0 time, 1 height, 2 width) each of the head_size / 2 frequencies rotates by."""
    index = np.arange(head_size // 2)
    axes = np.zeros_like(index)
    axes[(index % 3 == 1) & (index < 3 * sections[1])] = 1
    axes[(index % 3 == 2) & (index < 3 * sections[2])] = 2
    return axes


def mrope_angles(positions: jax.Array, cfg: TextConfig) -> jax.Array:
    """positions int [3, B, T] -> float32 rotary angles [B, T, head_size / 2]."""
    inv_freq = inverse_frequencies(cfg.head_size, cfg.rope_theta)
    axes = jnp.asarray(mrope_axes(cfg.head_size, cfg.mrope_section))
    per_axis = positions.astype(jnp.float32)[..., None] * inv_freq  # [3, B, T, H/2]
    return jnp.take_along_axis(per_axis, axes[None, None, None, :], axis=0)[0]


def deepstack_level(deepstack, level: int) -> jax.Array:
    """What DeepStack adds after decoder layer `level`: deepstack = (is_image bool [B, T], index int [B, T] of each
    image token's row, features [L_total, K, D]) -> [B, T, D], zero off the image tokens."""
    is_image, index, features = deepstack
    gathered = jnp.take(features[:, level], index, axis=0)
    return jnp.where(is_image[..., None], gathered, jnp.zeros((), gathered.dtype))


class Qwen3Attention(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.cfg, self.attention_kernel = cfg, attention_kernel
        d, heads, kv, size = cfg.hidden_size, cfg.num_attention_heads, cfg.kv_heads, cfg.head_size
        self.q_proj = linear(d, heads * size, cfg.attention_bias, dtype, rngs)
        self.k_proj = linear(d, kv * size, cfg.attention_bias, dtype, rngs)
        self.v_proj = linear(d, kv * size, cfg.attention_bias, dtype, rngs)
        self.o_proj = linear(heads * size, d, cfg.attention_bias, dtype, rngs)
        self.q_norm = RMSNorm(size, cfg.rms_norm_eps, dtype)
        self.k_norm = RMSNorm(size, cfg.rms_norm_eps, dtype)

    def __call__(self, x, angles, mask, cache: KVCache | None, cache_index) -> tuple[jax.Array, KVCache | None]:
        batch, length, _ = x.shape
        cfg = self.cfg
        q = self.q_norm(self.q_proj(x).reshape(batch, length, cfg.num_attention_heads, cfg.head_size))
        k = self.k_norm(self.k_proj(x).reshape(batch, length, cfg.kv_heads, cfg.head_size))
        v = self.v_proj(x).reshape(batch, length, cfg.kv_heads, cfg.head_size)
        q, k = rotate(q, angles), rotate(k, angles)
        if cache is not None:
            start = (0, cache_index, 0, 0)
            cache = (jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start),
                     jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start))
            k, v = cache
        out = attention(q, k, v, mask, self.attention_kernel)
        return self.o_proj(out.reshape(batch, length, -1)), cache


class Qwen3DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = Qwen3Attention(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = LlamaMlp(cfg, dtype, rngs=rngs)  # gate/up/down SwiGLU, the same as Llama's (no bias)

    def __call__(self, x, angles, mask, cache, cache_index):
        h, cache = self.self_attn(self.input_layernorm(x), angles, mask, cache, cache_index)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class Qwen3TextModel(nnx.Module):
    """Token embeddings, decoder layers with DeepStack injection, the final norm (the head is the model's)."""

    def __init__(self, cfg: TextConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=dtype,
                                      embedding_init=INIT, rngs=rngs)
        self.layers = nnx.List([Qwen3DecoderLayer(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
                                for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)

    def __call__(self, embeds: jax.Array, positions: jax.Array, mask: jax.Array,
                 cache: list[KVCache] | None = None, cache_index: jax.Array | int = 0, deepstack=None):
        """embeds [B, T, D], positions int [3, B, T], mask bool [B, T, S] (S = T, or the cache length).

        deepstack: None (no image in this step) or the image tokens' DeepStack features (`deepstack_level`), added
        after each of the first K layers. With `cache` (one (k, v) pair [B, S, K, H] per layer) this step's
        keys and values are written at `cache_index`. Returns (hidden [B, T, D] after the final norm, cache)."""
        angles = mrope_angles(positions, self.cfg)
        levels = 0 if deepstack is None else deepstack[2].shape[1]
        x, new_cache = embeds, []
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, angles, mask, None if cache is None else cache[i], cache_index)
            new_cache.append(layer_cache)
            if i < levels:
                x = x + deepstack_level(deepstack, i).astype(x.dtype)
        return self.norm(x), (new_cache if cache is not None else None)

    def init_cache(self, batch: int, length: int, dtype=None) -> list[KVCache]:
        """Zeroed cache for `length` positions, [B, S, K, H] per layer, in the parameters' dtype by default."""
        dtype = dtype or self.embed_tokens.embedding[...].dtype
        shape = (batch, length, self.cfg.kv_heads, self.cfg.head_size)
        return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in self.layers]
