"""Llama decoder: RMSNorm, rotary embeddings (rotate-half form), grouped-query attention, SwiGLU MLP.

Attention takes an explicit boolean mask, so the same code serves right-padded scoring (no cache) and
left-padded decoding with a static key/value cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sensei_jax.vlm.layers import INIT, RMSNorm, attention, linear, rotate
from sensei_jax.vlm.llava_config import TextConfig

# One layer's cache: keys and values [B, S, K, H].
KVCache = tuple[jax.Array, jax.Array]


def inverse_frequencies(size: int, theta: float) -> jax.Array:
    """float32 [size / 2]: theta^(-2i / size), the rotary frequencies of a head of `size` features."""
    return 1.0 / theta ** (jnp.arange(0, size, 2, dtype=jnp.float32) / size)


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding of x [B, T, N, H] at integer positions [B, T], computed in float32."""
    angles = positions.astype(jnp.float32)[..., None] * inverse_frequencies(x.shape[-1], theta)  # [B, T, H/2]
    return rotate(x, angles)


class LlamaAttention(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.cfg = cfg
        self.attention_kernel = attention_kernel
        d, heads, kv, size = cfg.hidden_size, cfg.num_attention_heads, cfg.kv_heads, cfg.head_size
        self.q_proj = linear(d, heads * size, cfg.attention_bias, dtype, rngs)
        self.k_proj = linear(d, kv * size, cfg.attention_bias, dtype, rngs)
        self.v_proj = linear(d, kv * size, cfg.attention_bias, dtype, rngs)
        self.o_proj = linear(heads * size, d, cfg.attention_bias, dtype, rngs)

    def __call__(self, x, positions, mask, cache: KVCache | None, cache_index) -> tuple[jax.Array, KVCache | None]:
        batch, length, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).reshape(batch, length, cfg.num_attention_heads, cfg.head_size)
        k = self.k_proj(x).reshape(batch, length, cfg.kv_heads, cfg.head_size)
        v = self.v_proj(x).reshape(batch, length, cfg.kv_heads, cfg.head_size)
        q, k = rotary(q, positions, cfg.rope_theta), rotary(k, positions, cfg.rope_theta)
        if cache is not None:
            start = (0, cache_index, 0, 0)
            cache = (jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start),
                     jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start))
            k, v = cache
        out = attention(q, k, v, mask, self.attention_kernel)
        return self.o_proj(out.reshape(batch, length, -1)), cache


class LlamaMlp(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype, *, rngs: nnx.Rngs):
        self.gate_proj = linear(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias, dtype, rngs)
        self.up_proj = linear(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias, dtype, rngs)
        self.down_proj = linear(cfg.intermediate_size, cfg.hidden_size, cfg.mlp_bias, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = LlamaAttention(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = LlamaMlp(cfg, dtype, rngs=rngs)

    def __call__(self, x, positions, mask, cache, cache_index):
        h, cache = self.self_attn(self.input_layernorm(x), positions, mask, cache, cache_index)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class LlamaModel(nnx.Module):
    """Token embeddings, decoder layers and the final norm (the head lives in `LlavaModel`)."""

    def __init__(self, cfg: TextConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=dtype,
                                      embedding_init=INIT, rngs=rngs)
        self.layers = nnx.List([LlamaDecoderLayer(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
                                for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)

    def __call__(self, embeds: jax.Array, positions: jax.Array, mask: jax.Array,
                 cache: list[KVCache] | None = None, cache_index: jax.Array | int = 0):
        """embeds [B, T, D], positions int [B, T], mask bool [B, T, S] (S = T, or the cache length).

        With `cache` (one (k, v) pair [B, S, K, H] per layer), this step's keys and values are written at
        `cache_index` and attention runs over the whole cache. Returns (hidden [B, T, D] after the final norm,
        the updated cache or None).
        """
        x = embeds
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, positions, mask, None if cache is None else cache[i], cache_index)
            new_cache.append(layer_cache)
        return self.norm(x), (new_cache if cache is not None else None)

    def init_cache(self, batch: int, length: int, dtype=None) -> list[KVCache]:
        """Zeroed cache for `length` positions, [B, S, K, H] per layer, in the parameters' dtype by default."""
        dtype = dtype or self.embed_tokens.embedding[...].dtype
        shape = (batch, length, self.cfg.kv_heads, self.cfg.head_size)
        return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in self.layers]
