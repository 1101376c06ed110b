"""A tiny random Qwen3-VL checkpoint written to disk in the Hugging Face format, with a byte-level BPE tokenizer.

Like `vlm/tiny.py` for LLaVA, for tests and the CPU pipeline where nothing can be downloaded: config.json,
model.safetensors (the layout transformers writes), tokenizer.json (a byte-level BPE trained on the given texts
with Qwen2's pre-tokenizer, so answers and digits split as Qwen's do) and preprocessor_config.json, from a seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Iterable

import jax.numpy as jnp

from sensei_jax.vlm.qwen3_vl.config import Qwen3VLConfig
from sensei_jax.vlm.qwen3_vl.model import random_model
from sensei_jax.vlm.qwen3_vl.params import save_pretrained
from sensei_jax.vlm.qwen3_vl.processor import ImageConfig

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")  # ids 0..6
# Qwen2's pre-tokenizer split: contractions, letters with one leading non-letter, single digits, punctuation runs,
# newlines, spaces.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Words a scorer asks for, after a space and at the start of the assistant's line: trained until one token each.
ANSWER_WORDS = ("first", "second", "top", "bottom", "tie", "the")


def build_tokenizer(texts: Iterable[str], vocab_size: int = 640):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts`, Qwen's special tokens at ids 0..6."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    answers = " ".join(ANSWER_WORDS) + "\n" + "\n".join(ANSWER_WORDS)
    tokenizer.train_from_iterator(list(texts) + [answers] * 64, trainer)
    return tokenizer


def write_tiny_checkpoint(directory: str | Path, texts: Iterable[str] = (), seed: int = 0, dtype=jnp.float32,
                          config: Qwen3VLConfig | None = None, std: float = 0.02,
                          image_config: ImageConfig | None = None) -> Path:
    """Writes a random tiny Qwen3-VL (`Qwen3VLConfig.tiny()` shapes, or `config`'s, with the vocabulary grown to
    the tokenizer's) whose tokenizer covers `texts`; weights ~ N(0, std). Images: 8-px patches merged 2 x 2,
    between 32 x 32 and 256 x 256 pixels after resizing, unless `image_config` says otherwise."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts)
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    cfg = config or Qwen3VLConfig.tiny(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                                       vision_start_token_id=ids["<|vision_start|>"],
                                       vision_end_token_id=ids["<|vision_end|>"])
    vocab_size = 16 * math.ceil(tokenizer.get_vocab_size() / 16)
    if cfg.text.vocab_size < vocab_size:
        cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=vocab_size))
    save_pretrained(random_model(cfg, dtype, seed, std), directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    patch = cfg.vision.patch_size
    image_cfg = image_config or ImageConfig(patch_size=patch, temporal_patch_size=cfg.vision.temporal_patch_size,
                                            merge_size=cfg.vision.spatial_merge_size, min_pixels=32 * 32,
                                            max_pixels=256 * 256, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    (directory / "preprocessor_config.json").write_text(json.dumps(image_cfg.to_hf_dict(), indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
         "model_max_length": cfg.text.max_position_embeddings}, indent=2))
    return directory
