"""LLaVA-1.5: CLIP vision tower -> two-layer GELU projector -> Llama decoder with image features in place of the
image placeholder tokens. Plain causal attention over all tokens, image tokens included; untied head.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.vlm.language import KVCache, LlamaModel
from sensei_jax.vlm.layers import ATTENTION_KERNELS, activation, causal_mask, linear
from sensei_jax.vlm.llava_config import LlavaConfig
from sensei_jax.vlm.params import load_weights
from sensei_jax.vlm.sharding import check_model_parallel, parameter_shardings
from sensei_jax.vlm.vision import ClipVisionTower


class MultiModalProjector(nnx.Module):
    """linear_1 -> GELU (exact erf form for "gelu") -> linear_2, from vision width to text width."""

    def __init__(self, cfg: LlavaConfig, dtype, *, rngs: nnx.Rngs):
        bias = cfg.multimodal_projector_bias
        self.linear_1 = linear(cfg.vision.hidden_size, cfg.text.hidden_size, bias, dtype, rngs)
        self.linear_2 = linear(cfg.text.hidden_size, cfg.text.hidden_size, bias, dtype, rngs)
        self.act = activation(cfg.projector_hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(self.act(self.linear_1(x)))


class LlavaModel(nnx.Module):
    """The whole model. Parameters live in `dtype` (float32, bfloat16 or float16); logits are float32.
    `attention_kernel` ("auto", "xla", "cudnn") is `layers.attention`'s choice of kernel."""

    def __init__(self, cfg: LlavaConfig, dtype=jnp.float32, *, attention_kernel: str = "auto", rngs: nnx.Rngs):
        if attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(f"vlm.attention: unknown kernel {attention_kernel!r}; known: "
                             f"{', '.join(ATTENTION_KERNELS)}")
        self.config = cfg
        self.vision_tower = ClipVisionTower(cfg.vision, cfg.vision_layers_used, dtype,
                                            attention_kernel=attention_kernel, rngs=rngs)
        self.multi_modal_projector = MultiModalProjector(cfg, dtype, rngs=rngs)
        self.language_model = LlamaModel(cfg.text, dtype, attention_kernel=attention_kernel, rngs=rngs)
        if not cfg.text.tie_word_embeddings:
            self.lm_head = linear(cfg.text.hidden_size, cfg.text.vocab_size, False, dtype, rngs)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype=jnp.float32, mesh=None,
                        attention_kernel: str = "auto") -> LlavaModel:
        """Loads a local Hugging Face LLaVA checkpoint directory (config.json + safetensors, any key layout), with
        the parameters cast to `dtype`; with a `mesh` (`sharding.make_mesh`) each parameter is loaded straight into
        its tensor-parallel sharding over the mesh's `model` axis."""
        abstract = abstract_model(LlavaConfig.from_pretrained(path), dtype, attention_kernel)
        if mesh is None:
            return load_weights(abstract, path)
        check_model_parallel(abstract.config, mesh.shape["model"])
        return load_weights(abstract, path, parameter_shardings(abstract, mesh))

    @property
    def dtype(self):
        return self.language_model.embed_tokens.embedding[...].dtype

    # -- pieces ------------------------------------------------------------------------------------------------

    def image_features(self, pixel_values: jax.Array) -> jax.Array:
        """pixel_values [N, H, W, C] (preprocessed, NHWC) -> projected features [N, L, D_text], L image tokens."""
        hidden = self.vision_tower(pixel_values.astype(self.dtype))
        if self.config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        return self.multi_modal_projector(hidden)

    def embed(self, input_ids: jax.Array, image_features: jax.Array | None) -> jax.Array:
        """Token embeddings [B, T, D] with the image placeholders replaced, in order of appearance (row-major over
        the batch), by the rows of image_features [N, L, D]."""
        is_image = input_ids == self.config.image_token_index
        ids = jnp.where(is_image, 0, input_ids)  # the placeholder id may lie outside the embedding table
        embeds = self.language_model.embed_tokens(ids)
        if image_features is None:
            return embeds
        flat = image_features.reshape(-1, image_features.shape[-1]).astype(embeds.dtype)
        index = jnp.cumsum(is_image.reshape(-1)) - 1
        gathered = jnp.take(flat, jnp.clip(index, 0, flat.shape[0] - 1), axis=0).reshape(embeds.shape)
        return jnp.where(is_image[..., None], gathered, embeds)

    def head(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> float32 logits [..., vocab]."""
        if self.config.text.tie_word_embeddings:
            table = self.language_model.embed_tokens.embedding[...]
            return jnp.einsum("...d,vd->...v", hidden, table, preferred_element_type=jnp.float32)
        kernel = self.lm_head.kernel[...]
        return jnp.einsum("...d,dv->...v", hidden.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)

    def check_image_count(self, input_ids, num_images: int) -> None:
        """Raises if the placeholders in input_ids do not match num_images images (skipped under tracing)."""
        if isinstance(input_ids, jax.core.Tracer):
            return
        found = int(np.sum(np.asarray(input_ids) == self.config.image_token_index))
        expected = num_images * self.config.image_seq_length
        if found != expected:
            raise ValueError(f"input_ids hold {found} image placeholder tokens (id {self.config.image_token_index}) "
                             f"but {num_images} images need {expected} ({self.config.image_seq_length} each)")

    # -- forward -----------------------------------------------------------------------------------------------

    def hidden_states(self, input_ids: jax.Array, pixel_values: jax.Array | None = None,
                      attention_mask: jax.Array | None = None, image_features: jax.Array | None = None,
                      positions: jax.Array | None = None) -> jax.Array:
        """Final-norm hidden states [B, T, D] for right-padded input_ids [B, T] (attention_mask [B, T], 1 = real;
        positions int [B, T], by default 0..T-1)."""
        if image_features is None and pixel_values is not None:
            self.check_image_count(input_ids, pixel_values.shape[0])
            image_features = self.image_features(pixel_values)
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, bool)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        hidden, _ = self.language_model(self.embed(input_ids, image_features), positions,
                                        causal_mask(attention_mask))
        return hidden

    def __call__(self, input_ids: jax.Array, pixel_values: jax.Array | None = None,
                 attention_mask: jax.Array | None = None) -> jax.Array:
        """input_ids int [B, T] (right-padded), pixel_values float [N, H, W, C], one per image placeholder run in
        order of appearance, attention_mask [B, T] -> float32 logits [B, T, vocab]."""
        return self.head(self.hidden_states(input_ids, pixel_values, attention_mask))

    # -- cached decoding (`generate.py`) ------------------------------------------------------------------------

    def prompt_positions(self, input_ids, attention_mask, pixel_values=None) -> np.ndarray:
        """Positions of left-padded prompts, int [B, P]: real tokens counted from 0, padding at 0."""
        return np.maximum(np.cumsum(np.asarray(attention_mask), axis=1) - 1, 0)

    def decode_inputs(self, input_ids: jax.Array, image_features: jax.Array | None):
        """(embeddings [B, T, D] with the image features in place, nothing else the decoder needs)."""
        return self.embed(input_ids, image_features), None

    def decode(self, embeds: jax.Array, positions: jax.Array, mask: jax.Array, cache: list[KVCache],
               cache_index, extra=None) -> tuple[jax.Array, list[KVCache]]:
        """One cached step: embeds [B, T, D] written at cache_index -> (logits [B, T, vocab], cache)."""
        hidden, cache = self.language_model(embeds, positions, mask, cache, cache_index)
        return self.head(hidden), cache


def parameter_count(model_or_state) -> int:
    """Number of parameters of a model (or of its abstract `nnx.eval_shape` version)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model_or_state, nnx.Param))))


def parameter_bytes(model_or_state) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(nnx.state(model_or_state, nnx.Param))))


def abstract_model(cfg: LlavaConfig, dtype=jnp.float32, attention_kernel: str = "auto") -> LlavaModel:
    """A LlavaModel of shapes and dtypes only (`nnx.eval_shape`): nothing allocated, nothing compiled."""
    return nnx.eval_shape(lambda: LlavaModel(cfg, dtype, attention_kernel=attention_kernel, rngs=nnx.Rngs(0)))


def random_model(cfg: LlavaConfig, dtype=jnp.float32, seed: int = 0, std: float = 0.02) -> LlavaModel:
    """A `LlavaModel` with random weights drawn by numpy into an `abstract_model` skeleton.

    Much cheaper than running the nnx initializers (no XLA compilation at all), which matters for tests on
    a loaded CPU. Kernels, embeddings and biases ~ N(0, std); norm scales ~ 1 + N(0, 0.1).
    """
    graphdef, state = nnx.split(abstract_model(cfg, dtype))
    rng = np.random.default_rng(seed)
    leaves = []
    for path, leaf in nnx.to_flat_state(state):
        noise = rng.normal(size=leaf.shape).astype(np.float32)
        value = 1.0 + 0.1 * noise if path[-1] == "scale" else std * noise
        leaves.append((path, leaf.replace(jnp.asarray(value.astype(leaf.dtype)))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))
