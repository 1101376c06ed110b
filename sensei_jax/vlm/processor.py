"""Text and image preprocessing for LLaVA, without torch: `tokenizers` for text, PIL + numpy for images.

Images follow the checkpoint's preprocessor_config.json (CLIPImageProcessor semantics: resize the shortest edge,
bicubic, center crop, rescale, normalize), optionally after padding to a square with the mean colour as original
LLaVA-1.5 does (`image_aspect_ratio="pad"`); composite pair images must be padded, or the crop cuts both halves.
Each `<image>` in a prompt is expanded to the model's number of image tokens before tokenizing. `chat_prompt`
renders a conversation in LLaVA-1.5's `llava_v1` format.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from sensei_jax.vlm.llava_config import LlavaConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_TOKEN = "<image>"


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
    """CLIPImageProcessor settings; defaults are llava-1.5's preprocessor_config.json."""

    shortest_edge: int | None = 336  # None: resize to (height, width) below instead
    height: int | None = None
    width: int | None = None
    crop_height: int = 336
    crop_width: int = 336
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    resample: int = 3  # PIL.Image.BICUBIC
    pad_to_square: bool = False

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = "preprocessor_config.json") -> ImageProcessorConfig:
        size, crop = data.get("size", {"shortest_edge": 336}), data.get("crop_size", 336)
        kwargs: dict[str, Any] = {}
        if isinstance(size, int):
            kwargs["shortest_edge"] = size
        elif "shortest_edge" in size:
            kwargs["shortest_edge"] = int(size["shortest_edge"])
        elif "height" in size and "width" in size:
            kwargs.update(shortest_edge=None, height=int(size["height"]), width=int(size["width"]))
        else:
            raise ValueError(f"{source}: size {size!r} has neither 'shortest_edge' nor 'height'/'width'")
        if isinstance(crop, int):
            kwargs.update(crop_height=crop, crop_width=crop)
        else:
            kwargs.update(crop_height=int(crop["height"]), crop_width=int(crop["width"]))
        for name in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
            if name in data:
                kwargs[name] = bool(data[name])
        for name in ("rescale_factor",):
            if name in data:
                kwargs[name] = float(data[name])
        for name in ("image_mean", "image_std"):
            if name in data:
                kwargs[name] = tuple(float(x) for x in data[name])
        if "resample" in data:
            kwargs["resample"] = int(data["resample"])
        if data.get("do_pad"):
            kwargs["pad_to_square"] = True
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        size = ({"shortest_edge": self.shortest_edge} if self.shortest_edge
                else {"height": self.height, "width": self.width})
        return {"image_processor_type": "CLIPImageProcessor", "size": size,
                "crop_size": {"height": self.crop_height, "width": self.crop_width}, "do_resize": self.do_resize,
                "do_center_crop": self.do_center_crop, "do_rescale": self.do_rescale,
                "rescale_factor": self.rescale_factor, "do_normalize": self.do_normalize,
                "image_mean": list(self.image_mean), "image_std": list(self.image_std), "resample": self.resample,
                "do_convert_rgb": True}


def chat_prompt(turns: Sequence[tuple[str, str | None]], system: str = "") -> str:
    """A conversation in LLaVA-1.5's `llava_v1` format (separator style "two"), ready for the next answer.

    turns: (user message, assistant answer) in order; the last answer is None (the one to generate or score).
    Renders `system`, then per turn "USER: {message} " and "ASSISTANT: {answer}</s>"; a missing or empty answer
    renders "ASSISTANT:" alone, as the llava_v1 template does. An empty `system` leaves out the system line and
    its separator, which is llava-hf's chat template.
    """
    parts = [system + " "] if system else []
    for user, assistant in turns:
        parts.append(f"USER: {user} ")
        parts.append(f"ASSISTANT: {assistant}</s>" if assistant else "ASSISTANT:")
    return "".join(parts)


def pad_to_square(image: np.ndarray, fill: Sequence[int]) -> np.ndarray:
    """uint8 [H, W, 3] -> [S, S, 3], S = max(H, W), the image centred on a `fill` background."""
    height, width = image.shape[:2]
    side = max(height, width)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = image
    return out


def preprocess_image(image: np.ndarray, cfg: ImageProcessorConfig) -> np.ndarray:
    """One RGB uint8 image [H, W, 3] -> float32 [crop_h, crop_w, 3] (NHWC, normalized)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    if cfg.pad_to_square:
        image = pad_to_square(image, [int(m * 255) for m in cfg.image_mean])
    if cfg.do_resize:
        height, width = image.shape[:2]
        if cfg.shortest_edge:
            short, long = sorted((height, width))
            new_short, new_long = cfg.shortest_edge, int(cfg.shortest_edge * long / short)
            size = (new_short, new_long) if height <= width else (new_long, new_short)
        else:
            size = (cfg.height, cfg.width)
        if size != (height, width):
            image = np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample=cfg.resample))
    if cfg.do_center_crop:
        height, width = image.shape[:2]
        if height < cfg.crop_height or width < cfg.crop_width:
            raise ValueError(f"image {height}x{width} is smaller than the crop {cfg.crop_height}x{cfg.crop_width}")
        top, left = (height - cfg.crop_height) // 2, (width - cfg.crop_width) // 2
        image = image[top:top + cfg.crop_height, left:left + cfg.crop_width]
    pixels = image.astype(np.float32)
    if cfg.do_rescale:
        pixels = pixels * np.float32(cfg.rescale_factor)
    if cfg.do_normalize:
        pixels = (pixels - np.asarray(cfg.image_mean, np.float32)) / np.asarray(cfg.image_std, np.float32)
    return pixels


def pad_rows(rows: Sequence[Sequence[int]], length: int | None = None, padding_side: str = "right",
             pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token id rows -> (input_ids int32 [B, T], attention_mask int32 [B, T]), padded to `length` (default: the
    longest row) on `padding_side`."""
    longest = max(len(r) for r in rows)
    length = length or longest
    if longest > length:
        raise ValueError(f"a prompt has {longest} tokens, more than the padded length {length}")
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if padding_side == "right" else slice(length - len(row), length)
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def answer_tokens(tokenizer, prompt: str, answers: Sequence[str]) -> tuple[list[int], list[int]]:
    """How each answer continues `prompt`: (the tokens all answers begin with, e.g. Llama's lone "▁" before a
    digit; then each answer's one remaining token). Raises if an answer changes how the prompt itself tokenizes
    or takes more than one token after the shared ones."""
    base = tokenizer.encode(prompt, add_special_tokens=False).ids
    tails = []
    for answer in answers:
        full = tokenizer.encode(prompt + answer, add_special_tokens=False).ids
        if full[:len(base)] != base:
            raise ValueError(f"answer {answer!r} merges with the end of the prompt when tokenized; start it "
                             f"with a space")
        tails.append(full[len(base):])
    shared: list[int] = []
    while (len(shared) + 1 < min(len(t) for t in tails)
           and all(t[len(shared)] == tails[0][len(shared)] for t in tails)):
        shared.append(tails[0][len(shared)])
    for answer, tail in zip(answers, tails):
        if len(tail) != len(shared) + 1:
            pieces = [tokenizer.id_to_token(i) for i in tail]
            raise ValueError(f"answer {answer!r} is not a single token after the prompt (it tokenizes as "
                             f"{pieces}); pick answer words that are one token each, e.g. with a leading space")
    return shared, [tail[-1] for tail in tails]


class LlavaProcessor:
    """Prompts -> token ids with expanded image placeholders; images -> normalized NHWC pixel arrays. The llava
    family's processor (`vlm/family.py`): every image takes `image_seq_length` tokens whatever its size, and
    positions count tokens."""

    eos_token = "</s>"
    fixed_image_tokens = True

    def __init__(self, tokenizer, image_config: ImageProcessorConfig, image_token_index: int, image_seq_length: int):
        self.tokenizer = tokenizer
        self.image_config = image_config
        self.image_token_index = image_token_index
        self.image_seq_length = image_seq_length
        token = tokenizer.id_to_token(image_token_index)
        if token is None:
            raise ValueError(f"the tokenizer has no token with the image placeholder id {image_token_index}")
        self.image_token = token

    @classmethod
    def from_pretrained(cls, path: str | Path, pad_to_square: bool | None = None) -> LlavaProcessor:
        """Reads tokenizer.json, preprocessor_config.json and config.json of a checkpoint directory.

        pad_to_square: None keeps the checkpoint's setting (llava-hf: no padding); True pads as original LLaVA.
        """
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {path}")
        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path} (a fast-tokenizer file is required; convert a "
                                    f"sentencepiece tokenizer.model once with transformers' save_pretrained)")
        image_file = path / "preprocessor_config.json"
        if image_file.is_file():
            image_config = ImageProcessorConfig.from_hf_dict(json.loads(image_file.read_text()), str(image_file))
        else:
            raise FileNotFoundError(f"no preprocessor_config.json in {path}")
        if pad_to_square is not None:
            image_config = dataclasses.replace(image_config, pad_to_square=pad_to_square)
        model_cfg = LlavaConfig.from_pretrained(path)
        return cls(Tokenizer.from_file(str(tokenizer_file)), image_config, model_cfg.image_token_index,
                   model_cfg.image_seq_length)

    # -- images ------------------------------------------------------------------------------------------------

    def preprocess_images(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images [N, H, W, 3] (or a list of differently sized ones) -> float32 [N, crop_h, crop_w, 3]."""
        return np.stack([preprocess_image(image, self.image_config) for image in images])

    def pixel_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the preprocessed pixels: the crop, whatever the raw size."""
        return self.image_config.crop_height, self.image_config.crop_width

    # -- text --------------------------------------------------------------------------------------------------

    def chat_prompt(self, turns: Sequence[tuple[str, str | None]], system: str = "") -> str:
        """`chat_prompt`: the llava_v1 format, `<image>\n` placeholders as written."""
        return chat_prompt(turns, system)

    def expand(self, prompt: str, image_sizes: Sequence[tuple[int, int]] | None = None) -> str:
        """Each `<image>` as `image_seq_length` image tokens (the same for every image size)."""
        return prompt.replace(IMAGE_TOKEN, self.image_token * self.image_seq_length)

    def tokenize(self, prompt: str, add_special_tokens: bool = True,
                 image_sizes: Sequence[tuple[int, int]] | None = None) -> list[int]:
        """Token ids of one prompt with each `<image>` expanded to the image token count."""
        return self.tokenizer.encode(self.expand(prompt), add_special_tokens=add_special_tokens).ids

    def positions(self, input_ids: Sequence[int], image_sizes: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """Llama's positions: int32 [T], one per token, image tokens included."""
        return np.arange(len(input_ids), dtype=np.int32)

    def encode(self, prompts: Sequence[str], length: int | None = None, padding_side: str = "right",
               pad_id: int = 0, image_sizes: Sequence[tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Prompts -> (input_ids int32 [B, T], attention_mask int32 [B, T]), padded to `length` (default: the
        longest prompt) on `padding_side` ("right" for scoring, "left" for generation); `image_sizes` does not
        change LLaVA's token counts."""
        return pad_rows([self.tokenize(p) for p in prompts], length, padding_side, pad_id)

    def answer_tokens(self, prompt: str, answers: Sequence[str]) -> tuple[list[int], list[int]]:
        """`answer_tokens` with this processor's tokenizer."""
        return answer_tokens(self.tokenizer, prompt, answers)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(int(i) for i in ids), skip_special_tokens=skip_special_tokens)
