"""CLIP vision transformer (the LLaVA-1.5 vision tower), NHWC, patch embedding as one matmul."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sensei_jax.vlm.layers import INIT, LayerNorm, activation, attention, linear
from sensei_jax.vlm.llava_config import VisionConfig


class ClipEmbeddings(nnx.Module):
    """Non-overlapping patches -> one matmul (a stride=kernel conv without bias), CLS token, learned positions."""

    def __init__(self, cfg: VisionConfig, dtype, *, rngs: nnx.Rngs):
        self.cfg = cfg
        patch_dim = cfg.patch_size * cfg.patch_size * cfg.num_channels
        # kernel [kh * kw * C, D]: a torch conv weight [D, C, kh, kw] transposed to (kh, kw, C, D) and flattened.
        self.patch_embedding = nnx.Param(INIT(rngs.params(), (patch_dim, cfg.hidden_size), dtype))
        self.class_embedding = nnx.Param(INIT(rngs.params(), (cfg.hidden_size,), dtype))
        self.position_embedding = nnx.Embed(cfg.num_patches + 1, cfg.hidden_size, dtype=dtype, param_dtype=dtype,
                                            embedding_init=INIT, rngs=rngs)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels [B, H, W, C] float (normalized) -> [B, 1 + P, D]."""
        batch, height, width, channels = pixels.shape
        p = self.cfg.patch_size
        patches = pixels.reshape(batch, height // p, p, width // p, p, channels).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(batch, (height // p) * (width // p), p * p * channels)
        kernel = self.patch_embedding[...]
        x = jnp.einsum("bpc,cd->bpd", patches.astype(kernel.dtype), kernel)
        cls = jnp.broadcast_to(self.class_embedding[...], (batch, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1)
        return x + self.position_embedding.embedding[...][None]


class ClipAttention(nnx.Module):
    def __init__(self, cfg: VisionConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.attention_kernel = attention_kernel
        self.q_proj = linear(d, d, True, dtype, rngs)
        self.k_proj = linear(d, d, True, dtype, rngs)
        self.v_proj = linear(d, d, True, dtype, rngs)
        self.out_proj = linear(d, d, True, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, d = x.shape
        split = lambda t: t.reshape(batch, length, self.heads, d // self.heads)  # noqa: E731
        out = attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), None,
                        self.attention_kernel)
        return self.out_proj(out.reshape(batch, length, d))


class ClipMlp(nnx.Module):
    def __init__(self, cfg: VisionConfig, dtype, *, rngs: nnx.Rngs):
        self.fc1 = linear(cfg.hidden_size, cfg.intermediate_size, True, dtype, rngs)
        self.fc2 = linear(cfg.intermediate_size, cfg.hidden_size, True, dtype, rngs)
        self.act = activation(cfg.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class ClipEncoderLayer(nnx.Module):
    """Pre-LN transformer block."""

    def __init__(self, cfg: VisionConfig, dtype, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        self.layer_norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.self_attn = ClipAttention(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.mlp = ClipMlp(cfg, dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipVisionTower(nnx.Module):
    """Embeddings, `pre_layrnorm` (Hugging Face's spelling), and only the first `num_layers` encoder layers.

    LLaVA reads an intermediate hidden state (by default the output of the second-to-last layer), so the layers
    after it and the final `post_layernorm` are never built: they would be dead weight.
    """

    def __init__(self, cfg: VisionConfig, num_layers: int, dtype, *, attention_kernel: str = "auto",
                 rngs: nnx.Rngs):
        self.embeddings = ClipEmbeddings(cfg, dtype, rngs=rngs)
        self.pre_layrnorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.layers = nnx.List([ClipEncoderLayer(cfg, dtype, attention_kernel=attention_kernel, rngs=rngs)
                                for _ in range(num_layers)])

    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels [B, H, W, C] -> hidden state after the last built layer, [B, 1 + P, D]."""
        x = self.pre_layrnorm(self.embeddings(pixels))
        for layer in self.layers:
            x = layer(x)
        return x
