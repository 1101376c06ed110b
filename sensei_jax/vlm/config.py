"""Config section `vlm`: which vision-language checkpoint (and model family), in which dtype, at which image
resolution.

No jax import here: `sensei_jax.config` composes it into `Config` at start-up. How pairs are labelled (the
`annotate` section, the LLaVA prompt included) is `sensei_jax.annotators.config`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# The system line of LLaVA-1.5's `llava_v1` conversation template (the original LLaVA code's default for v1.5).
LLAVA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                   "helpful, detailed, and polite answers to the human's questions.")


@dataclasses.dataclass
class VlmConfig:
    """The vision-language model: a local Hugging Face checkpoint directory of a registered family
    (`sensei_jax.vlm.family`: llava, qwen3_vl)."""

    path: str | None = None  # checkpoint directory (config.json, safetensors, tokenizer.json, preprocessor_config)
    # Model family; None: the one whose model_type the checkpoint's config.json names. Set, it must agree with it.
    family: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    # Resolution the `pairs` stage renders for the annotator (SENSEI: 224); None keeps the env's image size.
    image_size: int | None = None
    # Pad images to a square with the mean colour before the CLIP resize/crop, as original LLaVA-1.5 does
    # (needed for composite pair images, which the center crop would otherwise cut).
    pad_to_square: bool = True
    # Attention kernel: "auto" takes cuDNN's fused attention on a GPU in bfloat16/float16 where cuDNN supports the
    # shape, XLA's elsewhere; "xla" always XLA's (the way out if cuDNN fails on some GPU); "cudnn" insists.
    attention: Literal["auto", "xla", "cudnn"] = "auto"

    def __post_init__(self):
        if self.family is not None:
            from sensei_jax.vlm.family import get

            get(self.family)
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"vlm.image_size must be at least 8 pixels, got {self.image_size}")
