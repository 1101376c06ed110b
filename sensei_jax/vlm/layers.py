"""Small building blocks shared by the vision tower, the projector and the language model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# Hugging Face initializer_range: random models (tests, benchmarks) get weights of a realistic scale.
INIT = nnx.initializers.normal(0.02)


def activation(name: str):
    """Activation by its Hugging Face name. "gelu" is the exact (erf) GELU, as torch's default is."""
    table = {
        "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
        "silu": jax.nn.silu,
        "relu": jax.nn.relu,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(table)}")
    return table[name]


def linear(d_in: int, d_out: int, bias: bool, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A dense layer whose parameters and computation are in `dtype` (kernel [d_in, d_out])."""
    return nnx.Linear(d_in, d_out, use_bias=bias, dtype=dtype, param_dtype=dtype, kernel_init=INIT, rngs=rngs)


class LayerNorm(nnx.Module):
    """LayerNorm computed in float32 whatever the parameter dtype; parameters `scale`, `bias` [D]."""

    def __init__(self, dim: int, eps: float, dtype):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


class RMSNorm(nnx.Module):
    """Llama RMSNorm with Hugging Face numerics: normalize in float32, cast back, then multiply by `scale` [D]."""

    def __init__(self, dim: int, eps: float, dtype):
        self.scale = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
        return self.scale[...] * y.astype(x.dtype)


def causal_mask(attention_mask: jax.Array) -> jax.Array:
    """[B, T] validity (1 = real token) -> bool [B, T, T]: causal, padded keys hidden, the diagonal always kept
    (so a padding query never has an empty softmax)."""
    length = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    return (causal[None] & attention_mask.astype(bool)[:, None, :]) | jnp.eye(length, dtype=bool)[None]


def rotate(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotary embedding in Hugging Face's rotate-half form: x [..., N, H] by float32 angles [..., H / 2] (one per
    frequency, broadcast over the N heads), computed in float32 and cast back."""
    angles = jnp.concatenate([angles, angles], axis=-1)[..., None, :]
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


ATTENTION_KERNELS = ("auto", "xla", "cudnn")


def attention_implementation(dtype, head_size: int) -> str:
    """Which `jax.nn.dot_product_attention` kernel runs: cuDNN's fused attention on a GPU for half-precision
    inputs whose head size it supports (a multiple of 8, at most 128), XLA's einsum-softmax-einsum elsewhere (CPU,
    TPU, float32)."""
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if jax.default_backend() == "gpu" and half and head_size % 8 == 0 and head_size <= 128:
        return "cudnn"
    return "xla"


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, kernel: str = "auto") -> jax.Array:
    """Scaled dot-product attention with grouped KV heads through `jax.nn.dot_product_attention` (softmax in
    float32 in both kernels). `kernel`: "auto" (`attention_implementation`'s choice), "xla" or "cudnn" (forced:
    cuDNN's errors are raised).

    q [B, T, N, H], k and v [B, S, K, H] with N a multiple of K, mask bool [B, T, S] (True = may attend) or None
    -> [B, T, N, H] in v's dtype. Every query row must keep at least one key (the callers' masks keep the diagonal).
    """
    mask = None if mask is None else mask[:, None]  # [B, 1, T, S]: the same mask for every head
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; known: {', '.join(ATTENTION_KERNELS)}")
    if kernel == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn").astype(v.dtype)
    if kernel == "auto" and attention_implementation(q.dtype, q.shape[-1]) == "cudnn":
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn").astype(v.dtype)
        except (NotImplementedError, ValueError, RuntimeError):
            pass  # cuDNN refuses this shape, GPU or cuDNN version while tracing: the XLA kernel computes the same
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla").astype(v.dtype)
