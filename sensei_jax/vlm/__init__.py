"""LLaVA-1.5 in flax.nnx and the image-pair annotators.

Modules: `llava_config` (architecture + HF config.json), `vision` (CLIP), `language` (Llama), `model`
(`LlavaModel`), `params` (safetensors loading in every key layout), `processor` (tokenizer + images),
`generate` (cached greedy decoding), `annotate` (`make_annotator`: llava, oracle, random), `oracle` (SENSEI's
state heuristic), `tiny` (a random test checkpoint), `config` (the `vlm` and `annotate` config sections).
Nothing is imported here, so reading the config sections stays free of jax.
"""
