"""LLaVA-1.5 in flax.nnx and its image-pair annotator.

Modules: `llava_config` (architecture + HF config.json), `vision` (CLIP), `language` (Llama), `model`
(`LlavaModel`), `params` (safetensors loading in every key layout), `processor` (tokenizer + images),
`generate` (cached greedy decoding), `annotate` (`LlavaAnnotator`), `tiny` (a random test checkpoint), `config`
(the `vlm` config section). The oracle and random annotators and `make_annotator` are `sensei_jax.annotators`.
Nothing is imported here, so reading the config sections stays free of jax.
"""
