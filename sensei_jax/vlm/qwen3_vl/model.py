"""Qwen3-VL: the vision tower's merged patches in place of the image placeholder tokens, its DeepStack features
added into the first decoder layers, multimodal rotary positions, and the Qwen3 decoder. Causal attention over
all tokens, image tokens included; the head is tied to the token table in the 2B and 4B models.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.vlm.language import KVCache
from sensei_jax.vlm.layers import ATTENTION_KERNELS, causal_mask, linear
from sensei_jax.vlm.qwen3_vl.config import Qwen3VLConfig
from sensei_jax.vlm.qwen3_vl.language import Qwen3TextModel
from sensei_jax.vlm.qwen3_vl.params import load_weights
from sensei_jax.vlm.qwen3_vl.positions import batch_positions, merged_grid
from sensei_jax.vlm.qwen3_vl.vision import VisionModel
from sensei_jax.vlm.sharding import check_model_parallel, parameter_shardings


class VisualFeatures(NamedTuple):
    """What the vision tower gives the decoder per image: tokens [N, L, D] and DeepStack features [N, L, K, D]."""

    tokens: jax.Array
    deepstack: jax.Array


class Qwen3VLModel(nnx.Module):
    """The whole model. Parameters live in `dtype` (float32, bfloat16 or float16); logits are float32.
    `attention_kernel` ("auto", "xla", "cudnn") is `layers.attention`'s choice of kernel."""

    def __init__(self, cfg: Qwen3VLConfig, dtype=jnp.float32, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        if attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(f"vlm.attention: unknown kernel {attention_kernel!r}; known: "
                             f"{', '.join(ATTENTION_KERNELS)}")
        self.config = cfg
        self.visual = VisionModel(cfg.vision, dtype, attention_kernel=attention_kernel, rngs=rngs)
        self.language_model = Qwen3TextModel(cfg.text, dtype, attention_kernel=attention_kernel, rngs=rngs)
        if not cfg.text.tie_word_embeddings:
            self.lm_head = linear(cfg.text.hidden_size, cfg.text.vocab_size, False, dtype, rngs)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype=jnp.float32, mesh=None,
                        attention_kernel: str = "auto") -> Qwen3VLModel:
        """Loads a local Hugging Face Qwen3-VL checkpoint directory (config.json + safetensors, one file or
        shards), the parameters cast to `dtype`; with a `mesh` each goes straight into its tensor-parallel
        sharding over the mesh's `model` axis."""
        abstract = abstract_model(Qwen3VLConfig.from_pretrained(path), dtype, attention_kernel)
        if mesh is None:
            return load_weights(abstract, path)
        check_model_parallel(abstract.config, mesh.shape["model"])
        return load_weights(abstract, path, parameter_shardings(abstract, mesh))

    @property
    def dtype(self):
        return self.language_model.embed_tokens.embedding[...].dtype

    # -- pieces ------------------------------------------------------------------------------------------------

    def image_features(self, pixel_values: jax.Array) -> VisualFeatures:
        """Preprocessed pixels [N, H, W, 3] of one size (multiples of patch * merge) -> VisualFeatures."""
        return VisualFeatures(*self.visual(pixel_values.astype(self.dtype)))

    def features_of(self, pixel_values: jax.Array | Sequence[jax.Array]) -> VisualFeatures:
        """Features of one array of same-sized images, or of a list of such arrays (mixed sizes) concatenated in
        order as one run ([1, L_total, ...])."""
        if not isinstance(pixel_values, (list, tuple)):
            return self.image_features(pixel_values)
        groups = [self.image_features(pixels) for pixels in pixel_values]
        return VisualFeatures(*(jnp.concatenate([leaf.reshape(1, -1, *leaf.shape[2:]) for leaf in leaves], axis=1)
                                for leaves in zip(*groups)))

    def embed(self, input_ids: jax.Array, features: VisualFeatures | None):
        """(token embeddings [B, T, D] with the image placeholders replaced by the image tokens in order of
        appearance, row-major over the batch; the DeepStack input of `Qwen3TextModel`, None without images)."""
        is_image = input_ids == self.config.image_token_id
        embeds = self.language_model.embed_tokens(jnp.where(is_image, 0, input_ids))
        if features is None:
            return embeds, None
        tokens = features.tokens.reshape(-1, features.tokens.shape[-1]).astype(embeds.dtype)
        deepstack = features.deepstack.reshape(-1, *features.deepstack.shape[2:])
        index = jnp.clip(jnp.cumsum(is_image.reshape(-1)) - 1, 0, tokens.shape[0] - 1).reshape(input_ids.shape)
        embeds = jnp.where(is_image[..., None], jnp.take(tokens, index, axis=0), embeds)
        return embeds, (is_image, index, deepstack)

    def head(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> float32 logits [..., vocab]."""
        if self.config.text.tie_word_embeddings:
            table = self.language_model.embed_tokens.embedding[...]
            return jnp.einsum("...d,vd->...v", hidden, table, preferred_element_type=jnp.float32)
        kernel = self.lm_head.kernel[...]
        return jnp.einsum("...d,dv->...v", hidden.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)

    def grids(self, pixel_values) -> list[tuple[int, int]]:
        """Merged grid of every image in `pixel_values` (an array or a list of arrays), in order."""
        groups = pixel_values if isinstance(pixel_values, (list, tuple)) else [pixel_values]
        v = self.config.vision
        return [merged_grid(g.shape[1], g.shape[2], v.patch_size, v.spatial_merge_size)
                for g in groups for _ in range(g.shape[0])]

    def default_positions(self, input_ids, attention_mask, pixel_values) -> jax.Array:
        """MRoPE ids [3, B, T] from concrete ids and the images' grids (`positions.batch_positions`)."""
        if isinstance(input_ids, jax.core.Tracer):
            raise ValueError("inside jit, pass positions (the processor's, or positions.batch_positions)")
        mask = None if attention_mask is None else np.asarray(attention_mask)
        grids = [] if pixel_values is None else self.grids(pixel_values)
        return jnp.asarray(batch_positions(np.asarray(input_ids), mask, grids, self.config.image_token_id))

    # -- forward -----------------------------------------------------------------------------------------------

    def hidden_states(self, input_ids: jax.Array, pixel_values=None, attention_mask: jax.Array | None = None,
                      image_features: VisualFeatures | None = None, positions: jax.Array | None = None) -> jax.Array:
        """Final-norm hidden states [B, T, D] for right-padded input_ids [B, T] (attention_mask [B, T], 1 = real;
        positions int [3, B, T], by default computed from the ids and the images' grids)."""
        if positions is None:
            positions = self.default_positions(input_ids, attention_mask, pixel_values)
        if image_features is None and pixel_values is not None:
            image_features = self.features_of(pixel_values)
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, bool)
        embeds, deepstack = self.embed(input_ids, image_features)
        hidden, _ = self.language_model(embeds, positions, causal_mask(attention_mask), deepstack=deepstack)
        return hidden

    def __call__(self, input_ids: jax.Array, pixel_values=None, attention_mask: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        """input_ids int [B, T] (right-padded), pixel_values float [N, H, W, 3] or a list of such arrays (one
        per image size), one image per placeholder run in order of appearance -> float32 logits [B, T, vocab]."""
        return self.head(self.hidden_states(input_ids, pixel_values, attention_mask, positions=positions))

    # -- cached decoding (`generate.py`) ------------------------------------------------------------------------

    def check_image_count(self, input_ids, num_images: int) -> None:
        """Raises unless input_ids hold one image placeholder run per image (skipped under tracing)."""
        if isinstance(input_ids, jax.core.Tracer):
            return
        is_image = (np.asarray(input_ids) == self.config.image_token_id).astype(int)
        runs = int((np.diff(is_image, axis=-1, prepend=0) == 1).sum())
        if runs != num_images:
            raise ValueError(f"input_ids hold {runs} image placeholder runs (id {self.config.image_token_id}) but "
                             f"{num_images} images were given")

    def prompt_positions(self, input_ids, attention_mask, pixel_values=None) -> np.ndarray:
        """MRoPE ids of padded prompts, int [3, B, P] (`default_positions`)."""
        return np.asarray(self.default_positions(input_ids, attention_mask, pixel_values))

    def decode_inputs(self, input_ids: jax.Array, image_features: VisualFeatures | None):
        """(embeddings [B, T, D] with the image tokens in place, the DeepStack input; `embed`)."""
        return self.embed(input_ids, image_features)

    def decode(self, embeds: jax.Array, positions: jax.Array, mask: jax.Array, cache: list[KVCache],
               cache_index, deepstack=None) -> tuple[jax.Array, list[KVCache]]:
        """One cached step: embeds [B, T, D] at positions [3, B, T], written at cache_index, with the DeepStack
        input of the prefill (None for generated tokens) -> (logits [B, T, vocab], cache)."""
        hidden, cache = self.language_model(embeds, positions, mask, cache, cache_index, deepstack)
        return self.head(hidden), cache


def abstract_model(cfg: Qwen3VLConfig, dtype=jnp.float32, attention_kernel: str = "auto") -> Qwen3VLModel:
    """A Qwen3VLModel of shapes and dtypes only (`nnx.eval_shape`): nothing allocated, nothing compiled."""
    return nnx.eval_shape(lambda: Qwen3VLModel(cfg, dtype, attention_kernel=attention_kernel, rngs=nnx.Rngs(0)))


def random_model(cfg: Qwen3VLConfig, dtype=jnp.float32, seed: int = 0, std: float = 0.02) -> Qwen3VLModel:
    """A Qwen3VLModel with random weights drawn by numpy (no compilation): kernels, embeddings and biases
    ~ N(0, std), norm scales ~ 1 + N(0, 0.1)."""
    graphdef, state = nnx.split(abstract_model(cfg, dtype))
    rng = np.random.default_rng(seed)
    leaves = []
    for path, leaf in nnx.to_flat_state(state):
        noise = rng.normal(size=leaf.shape).astype(np.float32)
        value = 1.0 + 0.1 * noise if path[-1] == "scale" else std * noise
        leaves.append((path, leaf.replace(jnp.asarray(value.astype(leaf.dtype)))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))
