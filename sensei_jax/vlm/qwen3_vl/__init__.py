"""Qwen3-VL (dense 2B, 4B, 8B) in flax.nnx, the `qwen3_vl` family of `sensei_jax.vlm.family`.

Modules: `config` (architecture + HF config.json, presets), `vision` (patch embedding, 2D rotary embedding,
blocks, patch and DeepStack mergers), `language` (the Qwen3 decoder with interleaved MRoPE and DeepStack
injection), `model` (`Qwen3VLModel`), `params` (safetensors loading and writing), `positions` (MRoPE ids),
`processor` (smart resize, ChatML, the tokenizer), `tiny` (a random test checkpoint with its tokenizer). Names
are imported on first use, so reading a config stays free of jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Qwen3VLConfig": "sensei_jax.vlm.qwen3_vl.config",
    "Qwen3VLModel": "sensei_jax.vlm.qwen3_vl.model",
    "Qwen3VLProcessor": "sensei_jax.vlm.qwen3_vl.processor",
    "random_model": "sensei_jax.vlm.qwen3_vl.model",
    "save_pretrained": "sensei_jax.vlm.qwen3_vl.params",
    "write_tiny_checkpoint": "sensei_jax.vlm.qwen3_vl.tiny",
})
