"""Greedy decoding with a static key/value cache, prefill and every step inside one jit-compiled function.

Prompts are left-padded to a static length P, so every row's last prompt token sits at P - 1 and all rows write
the same cache slot at each step; positions count real tokens only (cumsum of the mask), so padding does not
shift the rotary phases. The cache holds P + max_new_tokens positions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax.vlm.model import LlavaModel


@functools.partial(jax.jit, static_argnames=("max_new_tokens",))
def _greedy(model: LlavaModel, input_ids, attention_mask, pixel_values, eos_id, pad_id, max_new_tokens: int):
    batch, prompt_len = input_ids.shape
    total = prompt_len + max_new_tokens
    features = None if pixel_values is None else model.image_features(pixel_values)
    embeds = model.embed(input_ids, features)
    valid = jnp.concatenate([attention_mask.astype(bool), jnp.ones((batch, max_new_tokens), bool)], axis=1)
    positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
    slots = jnp.arange(total)
    # Prefill: query i sees valid cache slots j <= i, and always itself (padding rows stay finite).
    causal = (slots[None, :] <= jnp.arange(prompt_len)[:, None])[None] & valid[:, None, :]
    causal = causal | (slots[None, :] == jnp.arange(prompt_len)[:, None])[None]
    cache = model.language_model.init_cache(batch, total)
    logits, cache = model.decode(embeds, positions, causal, cache, 0)
    token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    done = token == eos_id
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)
    last_position = positions[:, -1]

    def step(t, carry):
        cache, token, done, out = carry
        slot = prompt_len + t - 1  # where the token generated at step t - 1 goes
        embeds = model.embed(token[:, None], None)
        mask = (valid & (slots[None, :] <= slot))[:, None, :]
        logits, cache = model.decode(embeds, (last_position + t)[:, None], mask, cache, slot)
        next_token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        next_token = jnp.where(done, pad_id, next_token)
        out = out.at[:, t].set(next_token)
        return cache, next_token, done | (next_token == eos_id), out

    _, _, _, out = jax.lax.fori_loop(1, max_new_tokens, step, (cache, token, done, out))
    return out


def greedy_generate(model: LlavaModel, input_ids, attention_mask, pixel_values=None, *, max_new_tokens: int,
                    eos_id: int, pad_id: int = 0) -> np.ndarray:
    """Greedy continuation of left-padded prompts.

    input_ids int [B, P] (left-padded), attention_mask [B, P] (1 = real), pixel_values float [N, H, W, C] for the
    N image placeholder runs -> int32 [B, max_new_tokens], the generated ids, `pad_id` after each row's EOS.
    """
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {attention_mask.shape} does not match input_ids {input_ids.shape}")
    if not attention_mask[:, -1].all():
        raise ValueError("greedy_generate needs left-padded prompts (every row's last position must be real)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    model.check_image_count(input_ids, 0 if pixel_values is None else len(pixel_values))
    out = _greedy(model, jnp.asarray(input_ids), jnp.asarray(attention_mask, jnp.int32),
                  None if pixel_values is None else jnp.asarray(pixel_values), jnp.int32(eos_id), jnp.int32(pad_id),
                  max_new_tokens=max_new_tokens)
    return np.asarray(out)
