"""Config section `vlm`: which LLaVA checkpoint, in which dtype, at which image resolution.

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
    """The vision-language model: a local Hugging Face LLaVA-1.5 checkpoint directory."""

    path: str | None = None  # checkpoint directory (config.json, safetensors, tokenizer.json, preprocessor_config)
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
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"vlm.image_size must be at least 8 pixels, got {self.image_size}")
