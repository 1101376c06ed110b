"""A tiny random LLaVA checkpoint written to disk in the Hugging Face format, with a word-level tokenizer.

No download is possible in tests, CI or the CPU default pipeline, so this builds a complete checkpoint directory
(config.json, safetensors in any supported key layout, tokenizer.json, preprocessor_config.json) from a seed.
Its answers are meaningless, but every code path of loading, preprocessing, scoring and generation runs on it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Iterable

import jax.numpy as jnp

from sensei_jax.vlm.llava_config import LlavaConfig
from sensei_jax.vlm.model import random_model
from sensei_jax.vlm.params import Layout, save_pretrained
from sensei_jax.vlm.processor import IMAGE_TOKEN, ImageProcessorConfig

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", IMAGE_TOKEN, "<unk>")  # ids 0..4
WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")  # what the `Whitespace` pre-tokenizer splits on


def build_tokenizer(texts: Iterable[str]):
    """A word-level `tokenizers.Tokenizer` whose vocabulary holds every word and punctuation run in `texts`.

    `<s>` is prepended to every encoded sequence (like Llama's tokenizer), `<image>` is a special token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    words = sorted({w for text in texts for w in WORD_PATTERN.findall(text.replace(IMAGE_TOKEN, " "))})
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                             special_tokens=[("<s>", 1)])
    return tokenizer


def write_tiny_checkpoint(directory: str | Path, texts: Iterable[str] = (), layout: Layout = "hub", seed: int = 0,
                          dtype=jnp.float32, config: LlavaConfig | None = None, std: float = 0.02) -> Path:
    """Writes a random tiny LLaVA (`LlavaConfig.tiny()` shapes, or `config`'s) whose tokenizer covers the words of
    `texts`; weights ~ N(0, std) as `random_model` draws them (a larger std spreads the answer probabilities)."""
    directory = Path(directory)
    tokenizer = build_tokenizer(list(texts) + ["USER ASSISTANT : first second top bottom tie 0 1 2 3 - ?"])
    vocab_size = 16 * math.ceil(tokenizer.get_vocab_size() / 16)
    cfg = config or LlavaConfig.tiny(vocab_size=vocab_size, image_token_index=SPECIAL_TOKENS.index(IMAGE_TOKEN))
    if cfg.text.vocab_size < tokenizer.get_vocab_size():
        cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=vocab_size))
    model = random_model(cfg, dtype, seed, std)
    save_pretrained(model, directory, layout=layout)
    tokenizer.save(str(directory / "tokenizer.json"))
    size = cfg.vision.image_size
    image_cfg = ImageProcessorConfig(shortest_edge=size, crop_height=size, crop_width=size)
    (directory / "preprocessor_config.json").write_text(json.dumps(image_cfg.to_hf_dict(), indent=2))
    return directory
