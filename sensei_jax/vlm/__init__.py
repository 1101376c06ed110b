"""Vision-language models in flax.nnx (LLaVA-1.5; Qwen3-VL in the `qwen3_vl` package), behind one model interface
(`family`: the registry of families and what each class offers). The image-pair annotator built on them is
`sensei_jax.annotators.vlm`: annotators depend on models, never the other way.

LLaVA's modules: `llava_config` (architecture + HF config.json), `vision` (CLIP), `language` (Llama), `model`
(`LlavaModel`, `LlavaModel.from_pretrained`), `params` (safetensors loading in every key layout), `sharding` (the
(data, model) mesh and the tensor-parallel parameter layout), `processor` (tokenizer, images, the llava_v1
conversation format), `generate` (cached greedy or sampled decoding), `tiny` (a random test checkpoint), `config`
(the `vlm` config section). The names below are imported on first use, so reading the config sections stays free
of jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ImageProcessorConfig": "sensei_jax.vlm.processor",
    "LlavaConfig": "sensei_jax.vlm.llava_config",
    "LlavaModel": "sensei_jax.vlm.model",
    "LlavaProcessor": "sensei_jax.vlm.processor",
    "Qwen3VLModel": "sensei_jax.vlm.qwen3_vl.model",
    "Qwen3VLProcessor": "sensei_jax.vlm.qwen3_vl.processor",
    "greedy_generate": "sensei_jax.vlm.generate",
    "random_model": "sensei_jax.vlm.model",
    "sample_generate": "sensei_jax.vlm.generate",
    "save_pretrained": "sensei_jax.vlm.params",
    "write_tiny_checkpoint": "sensei_jax.vlm.tiny",
})
