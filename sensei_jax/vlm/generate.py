"""Decoding with a static key/value cache, prefill and every step inside one jit-compiled function: greedy, or
sampling with a temperature and nucleus (top-p) filtering.

Prompts are left-padded to a static length P, so every row's last prompt token sits at P - 1 and all rows write
the same cache slot at each step. The prompt's positions are the model family's (`model.prompt_positions`: for
LLaVA they count real tokens only, the cumsum of the mask, so padding does not shift the rotary phases; Qwen3-VL's
are its MRoPE ids), and each generated token takes the prompt's largest position plus its step, on every
position axis. The cache holds P + max_new_tokens positions. The step loop is a `lax.while_loop` that
ends when every row has produced EOS (or after max_new_tokens), so a long budget costs only what is generated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax.distributed import rows_array, to_host


def nucleus_mask(logits: jax.Array, top_p: float | jax.Array) -> jax.Array:
    """logits [..., V] -> bool [..., V]: the smallest set of most probable tokens whose probability mass reaches
    `top_p` (always at least the most probable token; ties at the boundary are broken by token order)."""
    order = jnp.argsort(-logits, axis=-1, stable=True)
    sorted_probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), order, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < top_p
    keep_sorted = keep_sorted.at[..., 0].set(True)
    # Scatter the sorted decisions back to vocabulary order.
    return jnp.put_along_axis(jnp.zeros_like(keep_sorted), order, keep_sorted, axis=-1, inplace=False)


def sample_token(key: jax.Array, logits: jax.Array, temperature, top_p) -> jax.Array:
    """One token from logits [V]: divide by `temperature`, keep the top-p nucleus of that distribution, sample."""
    scaled = logits.astype(jnp.float32) / temperature
    scaled = jnp.where(nucleus_mask(scaled, top_p), scaled, -jnp.inf)
    return jax.random.categorical(key, scaled).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("max_new_tokens", "sample"))
def _decode(model, input_ids, attention_mask, positions, pixel_values, eos_id, pad_id, keys, temperature, top_p,
            max_new_tokens: int, sample: bool):
    batch, prompt_len = input_ids.shape
    total = prompt_len + max_new_tokens

    def choose(logits, t):
        if not sample:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        # One key per row and step: a row's tokens do not depend on what else is in the batch.
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
        return jax.vmap(sample_token, in_axes=(0, 0, None, None))(step_keys, logits, temperature, top_p)

    features = None if pixel_values is None else model.image_features(pixel_values)
    embeds, extra = model.decode_inputs(input_ids, features)
    valid = jnp.concatenate([attention_mask.astype(bool), jnp.ones((batch, max_new_tokens), bool)], axis=1)
    positions = jnp.moveaxis(positions, 0, -2)  # rows first (as the mesh splits them) -> [..., B, P]
    slots = jnp.arange(total)
    # Prefill: query i sees valid cache slots j <= i, and always itself (padding rows stay finite).
    causal = (slots[None, :] <= jnp.arange(prompt_len)[:, None])[None] & valid[:, None, :]
    causal = causal | (slots[None, :] == jnp.arange(prompt_len)[:, None])[None]
    cache = model.language_model.init_cache(batch, total)
    logits, cache = model.decode(embeds, positions, causal, cache, 0, extra)
    token = choose(logits[:, -1], 0)
    done = token == eos_id
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)
    last_position = positions.max(axis=-1)  # [..., B]

    def running(carry):
        t, _, _, done, _ = carry
        return (t < max_new_tokens) & ~done.all()

    def step(carry):
        t, cache, token, done, out = carry
        slot = prompt_len + t - 1  # where the token generated at step t - 1 goes
        embeds, _ = model.decode_inputs(token[:, None], None)
        mask = (valid & (slots[None, :] <= slot))[:, None, :]
        logits, cache = model.decode(embeds, (last_position + t)[..., None], mask, cache, slot)
        next_token = jnp.where(done, pad_id, choose(logits[:, -1], t))
        out = out.at[:, t].set(next_token)
        return t + 1, cache, next_token, done | (next_token == eos_id), out

    *_, out = jax.lax.while_loop(running, step, (jnp.int32(1), cache, token, done, out))
    return out


def _check_prompts(model, input_ids, attention_mask, pixel_values, max_new_tokens: int, mesh):
    """Validated prompts and their positions (rows first) as device arrays: on the default device, or with
    `mesh` split by rows over its `data` axis (the parameters carry their own shardings)."""
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask, np.int32)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {attention_mask.shape} does not match input_ids {input_ids.shape}")
    if not attention_mask[:, -1].all():
        raise ValueError("generation needs left-padded prompts (every row's last position must be real)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    model.check_image_count(input_ids, 0 if pixel_values is None else len(pixel_values))
    positions = np.asarray(model.prompt_positions(input_ids, attention_mask, pixel_values))
    positions = np.moveaxis(positions, -2, 0)  # [B, ..., P]: rows first, so the mesh splits them like the ids
    arrays = [input_ids, attention_mask, positions] + ([] if pixel_values is None else [np.asarray(pixel_values)])
    if mesh is None:
        placed = [jnp.asarray(a) for a in arrays]
    else:
        placed = [rows_array(mesh, a.shape, a.__getitem__) for a in arrays]
    return placed[0], placed[1], placed[2], (placed[3] if pixel_values is not None else None)


def greedy_generate(model, input_ids, attention_mask, pixel_values=None, *, max_new_tokens: int,
                    eos_id: int, pad_id: int = 0, mesh=None) -> np.ndarray:
    """Greedy continuation of left-padded prompts.

    input_ids int [B, P] (left-padded), attention_mask [B, P] (1 = real), pixel_values float [N, H, W, C] for the
    N image placeholder runs -> int32 [B, max_new_tokens], the generated ids, `pad_id` after each row's EOS. With a
    `mesh` (`sharding.make_mesh`; B and N multiples of its data axis) the prompts are split over `data` and the
    cache follows the parameters' heads over `model`; the tokens come back whole on every host.
    """
    ids, mask, positions, pixels = _check_prompts(model, input_ids, attention_mask, pixel_values, max_new_tokens,
                                                  mesh)
    out = _decode(model, ids, mask, positions, pixels, jnp.int32(eos_id), jnp.int32(pad_id), None, None, None,
                  max_new_tokens=max_new_tokens, sample=False)
    return to_host(out)


def sample_generate(model, input_ids, attention_mask, pixel_values=None, *, keys, temperature: float,
                    top_p: float = 1.0, max_new_tokens: int, eos_id: int, pad_id: int = 0, mesh=None) -> np.ndarray:
    """Sampled continuation of left-padded prompts (arguments and result as `greedy_generate`).

    keys: uint32 [B, 2], one `jax.random.PRNGKey` per row (the same key gives the same tokens); temperature > 0
    divides the logits; top_p in (0, 1] keeps the nucleus of the tempered distribution (1: no filtering).
    """
    if not temperature > 0:
        raise ValueError(f"sampling needs a temperature > 0, got {temperature} (use greedy_generate for 0)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    keys = np.asarray(keys, np.uint32)
    if keys.shape != (np.shape(input_ids)[0], 2):
        raise ValueError(f"keys must be uint32 [B, 2] (one PRNGKey per prompt), got {keys.shape} for "
                         f"{np.shape(input_ids)[0]} prompts")
    ids, mask, positions, pixels = _check_prompts(model, input_ids, attention_mask, pixel_values, max_new_tokens,
                                                  mesh)
    keys = jnp.asarray(keys) if mesh is None else rows_array(mesh, keys.shape, keys.__getitem__)
    out = _decode(model, ids, mask, positions, pixels, jnp.int32(eos_id), jnp.int32(pad_id), keys, jnp.float32(temperature),
                  jnp.float32(top_p), max_new_tokens=max_new_tokens, sample=True)
    return to_host(out)
