"""Text and image preprocessing for Qwen3-VL without torch: `tokenizers` for text, PIL + numpy for images.

Images follow the checkpoint's preprocessor_config.json with Qwen2VLImageProcessor semantics (the PIL path):
`smart_resize` to the nearest size whose sides are multiples of patch_size * merge_size and whose area lies in
[min_pixels, max_pixels] (`size.shortest_edge` / `size.longest_edge`), aspect ratio kept as closely as possible;
bicubic; rescale and normalize. No crop and no padding: the token count follows the image size, one text token
per merge x merge patches. Pixels stay NHWC [h, w, 3]; `flat_patches` gives transformers' flattened layout.

The conversation is Qwen's ChatML as the Qwen3-VL-Instruct chat template renders it: an optional system turn,
`<|im_start|>user\\n{message}<|im_end|>\\n` per user turn with each image as
`<|vision_start|><|image_pad|><|vision_end|>`, answers as assistant turns, and `<|im_start|>assistant\\n` to end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from sensei_jax.vlm.processor import answer_tokens, pad_rows
from sensei_jax.vlm.qwen3_vl.config import Qwen3VLConfig
from sensei_jax.vlm.qwen3_vl.positions import merged_grid, prompt_positions

IMAGE_MARKER = re.compile(r"<image>\n?")  # how family-neutral prompts mark an image (`vlm/family.py`)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """Qwen2VLImageProcessor settings; defaults are that class's, a Qwen3-VL preprocessor_config.json sets
    patch 16, mean = std = 0.5 and pixels in [65536, 16777216]."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    do_resize: bool = True
    resample: int = 3  # PIL.Image.BICUBIC
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = "preprocessor_config.json") -> ImageConfig:
        kwargs: dict[str, Any] = {}
        size = data.get("size") or {}
        if not isinstance(size, dict):
            raise ValueError(f"{source}: size {size!r} must be a mapping with shortest_edge and longest_edge")
        for name, keys in (("min_pixels", ("min_pixels", "shortest_edge")),
                           ("max_pixels", ("max_pixels", "longest_edge"))):
            value = data.get(keys[0], size.get(keys[1]))
            if value is not None:
                kwargs[name] = int(value)
        for name in ("patch_size", "temporal_patch_size", "merge_size", "resample"):
            if data.get(name) is not None:
                kwargs[name] = int(data[name])
        for name in ("do_resize", "do_rescale", "do_normalize"):
            if name in data:
                kwargs[name] = bool(data[name])
        if "rescale_factor" in data:
            kwargs["rescale_factor"] = float(data["rescale_factor"])
        for name in ("image_mean", "image_std"):
            if data.get(name) is not None:
                kwargs[name] = tuple(float(x) for x in data[name])
        cfg = cls(**kwargs)
        if cfg.min_pixels > cfg.max_pixels:
            raise ValueError(f"{source}: min pixels {cfg.min_pixels} exceed max pixels {cfg.max_pixels}")
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        return {"image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen3VLProcessor",
                "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
                "merge_size": self.merge_size, "do_resize": self.do_resize, "resample": self.resample,
                "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
                "do_normalize": self.do_normalize, "image_mean": list(self.image_mean),
                "image_std": list(self.image_std), "do_convert_rgb": True}


def smart_resize(height: int, width: int, cfg: ImageConfig) -> tuple[int, int]:
    """The (h, w) an image of height x width is resized to: sides multiples of `cfg.factor`, area within
    [min_pixels, max_pixels], aspect ratio as close as rounding allows (Qwen2-VL's rule)."""
    factor = cfg.factor
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image {height}x{width}: the aspect ratio must be below 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > cfg.max_pixels:
        beta = math.sqrt(height * width / cfg.max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < cfg.min_pixels:
        beta = math.sqrt(cfg.min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def preprocess_image(image: np.ndarray, cfg: ImageConfig) -> np.ndarray:
    """One RGB uint8 image [H, W, 3] -> float32 [h, w, 3] (`smart_resize`d, rescaled, normalized; NHWC)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    if cfg.do_resize:
        height, width = smart_resize(*image.shape[:2], cfg)
        image = np.asarray(Image.fromarray(image).resize((width, height), resample=cfg.resample))
    elif image.shape[0] % cfg.factor or image.shape[1] % cfg.factor:
        raise ValueError(f"image {image.shape[0]}x{image.shape[1]} is not a multiple of {cfg.factor} pixels and "
                         "do_resize is off")
    pixels = image.astype(np.float32)
    if cfg.do_rescale:
        pixels = pixels * np.float32(cfg.rescale_factor)
    if cfg.do_normalize:
        pixels = (pixels - np.asarray(cfg.image_mean, np.float32)) / np.asarray(cfg.image_std, np.float32)
    return pixels


def flat_patches(pixels: np.ndarray, cfg: ImageConfig) -> np.ndarray:
    """Preprocessed pixels [h, w, 3] -> transformers' `pixel_values` rows [h/p * w/p, 3 * T * p * p]: patches in
    merge-block order (block row, block column, row and column inside the block), each flattened as
    (channel, temporal copy, row, column), the still image repeated over the T temporal slots."""
    p, m, t = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    height, width, channels = pixels.shape
    grid = pixels.reshape(height // (p * m), m, p, width // (p * m), m, p, channels)
    grid = grid.transpose(0, 3, 1, 4, 6, 2, 5)  # block row, block col, in-row, in-col, C, patch row, patch col
    grid = np.broadcast_to(grid[:, :, :, :, :, None], (*grid.shape[:5], t, p, p))
    return grid.reshape((height // p) * (width // p), channels * t * p * p)


class Qwen3VLProcessor:
    """Prompts -> token ids with each image's placeholder expanded to its token count; images -> normalized NHWC
    pixels. The qwen3_vl family's processor (`vlm/family.py`): ChatML, size-dependent token counts, MRoPE ids."""

    eos_token = "<|im_end|>"
    fixed_image_tokens = False

    def __init__(self, tokenizer, image_config: ImageConfig, model_config: Qwen3VLConfig):
        self.tokenizer, self.image_config, self.model_config = tokenizer, image_config, model_config
        self.image_token_index = model_config.image_token_id
        tokens = {}
        for name, index in (("image", model_config.image_token_id),
                            ("vision_start", model_config.vision_start_token_id),
                            ("vision_end", model_config.vision_end_token_id)):
            tokens[name] = tokenizer.id_to_token(index)
            if tokens[name] is None:
                raise ValueError(f"the tokenizer has no token with the {name} id {index} of config.json")
        self.image_token = tokens["image"]
        self.image_block = tokens["vision_start"] + tokens["image"] + tokens["vision_end"]

    @classmethod
    def from_pretrained(cls, path: str | Path, pad_to_square: bool | None = None) -> Qwen3VLProcessor:
        """Reads tokenizer.json, preprocessor_config.json and config.json of a checkpoint directory.
        `pad_to_square` (vlm.pad_to_square, for LLaVA's center crop) has no effect: nothing is cropped here."""
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {path}")
        tokenizer_file, image_file = path / "tokenizer.json", path / "preprocessor_config.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path} (Qwen3-VL checkpoints ship one; copy it from "
                                    "the checkpoint's release)")
        if not image_file.is_file():
            raise FileNotFoundError(f"no preprocessor_config.json in {path} (the image processor's settings)")
        image_config = ImageConfig.from_hf_dict(json.loads(image_file.read_text()), str(image_file))
        return cls(Tokenizer.from_file(str(tokenizer_file)), image_config, Qwen3VLConfig.from_pretrained(path))

    # -- images ------------------------------------------------------------------------------------------------

    def preprocess_images(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images [N, H, W, 3] of one size -> float32 [N, h, w, 3]."""
        return np.stack([preprocess_image(image, self.image_config) for image in images])

    def pixel_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return smart_resize(*image_size, self.image_config) if self.image_config.do_resize else tuple(image_size)

    def grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Merged (text-token) grid of a raw (H, W) image."""
        cfg = self.image_config
        return merged_grid(*self.pixel_shape(image_size), cfg.patch_size, cfg.merge_size)

    # -- text --------------------------------------------------------------------------------------------------

    def chat_prompt(self, turns: Sequence[tuple[str, str | None]], system: str = "") -> str:
        """ChatML, ready for the next answer; each "<image>\\n" of a user message becomes an image block."""
        parts = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
        for user, assistant in turns:
            parts.append(f"<|im_start|>user\n{IMAGE_MARKER.sub(self.image_block, user)}<|im_end|>\n")
            parts.append(f"<|im_start|>assistant\n{assistant}<|im_end|>\n" if assistant else "<|im_start|>assistant\n")
        return "".join(parts)

    def expand(self, prompt: str, image_sizes: Sequence[tuple[int, int]] | None = None) -> str:
        """Each image's single placeholder as its grid's token count (raw sizes in order); None leaves one each."""
        if image_sizes is None:
            return prompt
        pieces = prompt.split(self.image_token)
        if len(pieces) - 1 != len(image_sizes):
            raise ValueError(f"the prompt has {len(pieces) - 1} images but {len(image_sizes)} image sizes were given")
        runs = [self.image_token * int(np.prod(self.grid(size))) for size in image_sizes]
        return pieces[0] + "".join(run + piece for run, piece in zip(runs, pieces[1:]))

    def tokenize(self, prompt: str, add_special_tokens: bool = True,
                 image_sizes: Sequence[tuple[int, int]] | None = None) -> list[int]:
        return self.tokenizer.encode(self.expand(prompt, image_sizes), add_special_tokens=add_special_tokens).ids

    def positions(self, input_ids: Sequence[int], image_sizes: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """MRoPE ids int32 [3, T] of one prompt (`positions.prompt_positions`)."""
        grids = [self.grid(size) for size in image_sizes or ()]
        return prompt_positions(input_ids, grids, self.image_token_index)

    def answer_tokens(self, prompt: str, answers: Sequence[str]) -> tuple[list[int], list[int]]:
        """As `LlavaProcessor.answer_tokens`, for the answers without their leading whitespace: the assistant
        turn starts on its own line, so its first word carries no space."""
        return answer_tokens(self.tokenizer, prompt, [answer.lstrip() for answer in answers])

    def encode(self, prompts: Sequence[str], length: int | None = None, padding_side: str = "right",
               pad_id: int = 0, image_sizes: Sequence[tuple[int, int]] | None = None):
        """Prompts -> (input_ids int32 [B, T], attention_mask int32 [B, T]); `image_sizes`: every image of the
        batch, row-major."""
        rows, used = [], 0
        for prompt in prompts:
            count = prompt.count(self.image_token)
            sizes = None if image_sizes is None else image_sizes[used:used + count]
            rows.append(self.tokenize(prompt, image_sizes=sizes))
            used += count
        return pad_rows(rows, length, padding_side, pad_id)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(int(i) for i in ids), skip_special_tokens=skip_special_tokens)
