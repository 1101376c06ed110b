"""LLaVA-1.5 in flax.nnx and the image-pair annotators.

Modules: `llava_config` (architecture + HF config.json), `vision` (CLIP), `language` (Llama), `model`
(`LlavaModel`, `LlavaModel.from_pretrained`), `params` (safetensors loading in every key layout), `processor`
(tokenizer + images), `generate` (cached greedy decoding), `annotate` (`make_annotator`: llava, oracle, random),
`oracle` (SENSEI's state heuristic), `tiny` (a random test checkpoint), `config` (the `vlm` and `annotate` config
sections). The names below are imported on first use, so reading the config sections stays free of jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ImageProcessorConfig": "sensei_jax.vlm.processor",
    "LlavaConfig": "sensei_jax.vlm.llava_config",
    "LlavaModel": "sensei_jax.vlm.model",
    "LlavaProcessor": "sensei_jax.vlm.processor",
    "greedy_generate": "sensei_jax.vlm.generate",
    "random_model": "sensei_jax.vlm.model",
    "save_pretrained": "sensei_jax.vlm.params",
    "write_tiny_checkpoint": "sensei_jax.vlm.tiny",
})
