"""Model families behind one interface: which classes read, run and prompt a checkpoint folder.

A family is a config class, a model class and a processor class, named here by import path so that resolving a
family (the `vlm` section, `doctor`, the checkpoint check) imports no jax. The family of a checkpoint is
`vlm.family` when set, otherwise its `config.json`'s `model_type`:

    family      model_type     config                 model              processor (chat template, positions)
    llava       llava          LlavaConfig            LlavaModel         LlavaProcessor (llava_v1 / llava-hf)
    qwen3_vl    qwen3_vl       Qwen3VLConfig          Qwen3VLModel       Qwen3VLProcessor (ChatML, MRoPE ids)

What each class must offer is written down as the protocols below; the annotator (`annotators/vlm.py`), the mesh
(`vlm/sharding.py`), the checkpoint check (`vlm/checkpoint.py`), `doctor` and the throughput benchmark use nothing
else. Adding a family is a new module with the three classes and one `Family` entry in `FAMILIES`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

CONFIG_FILE = "config.json"


class FamilyConfig(Protocol):
    """A family's architecture, read from a Hugging Face `config.json` (no jax)."""

    text: Any  # .max_position_embeddings, .vocab_size

    @classmethod
    def from_hf_dict(cls, data: dict, source: str = CONFIG_FILE) -> FamilyConfig: ...

    @classmethod
    def from_pretrained(cls, path: str | Path) -> FamilyConfig: ...

    def model_parallel_sizes(self) -> dict[str, int]:
        """Every size the `model` mesh axis splits, by name (`annotate.model_parallel` must divide each)."""


class FamilyModel(Protocol):
    """A vision-language model in flax.nnx. Image features are a pytree whose leaves are [images, tokens, ...]:
    the annotator regroups them per prompt along those two axes without knowing what they hold."""

    config: FamilyConfig

    @classmethod
    def from_pretrained(cls, path, dtype, mesh=None, attention_kernel: str = "auto") -> FamilyModel: ...

    def image_features(self, pixel_values):
        """Preprocessed pixels [N, h, w, 3] (one image size) -> features, leaves [N, L, ...]."""

    def hidden_states(self, input_ids, pixel_values=None, attention_mask=None, image_features=None,
                      positions=None):
        """Final-norm hidden states [B, T, D]; image features fill the image placeholders in order."""

    def head(self, hidden):
        """hidden [..., D] -> float32 logits [..., vocab]."""


class FamilyProcessor(Protocol):
    """Text and images for one family: its chat template, its image placeholders and its position ids."""

    tokenizer: Any
    image_token_index: int
    eos_token: str
    fixed_image_tokens: bool  # True: an image takes the same number of tokens whatever its size

    def chat_prompt(self, turns: Sequence[tuple[str, str | None]], system: str = "") -> str:
        """A conversation ready for the next answer; "<image>\\n" in a user message stands for one image."""

    def expand(self, prompt: str, image_sizes: Sequence[tuple[int, int]] | None = None) -> str:
        """The prompt with each image placeholder expanded to the image's tokens (sizes: raw (H, W) in order)."""

    def tokenize(self, prompt: str, add_special_tokens: bool = True,
                 image_sizes: Sequence[tuple[int, int]] | None = None) -> list[int]: ...

    def answer_tokens(self, prompt: str, answers: Sequence[str]) -> tuple[list[int], list[int]]: ...

    def positions(self, input_ids: Sequence[int], image_sizes: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """Position ids of one prompt, int32 [..., T] (the last axis is time) as the model's rotary embedding
        takes them."""

    def preprocess_images(self, images) -> np.ndarray:
        """uint8 images [N, H, W, 3] of one size -> float32 [N, h, w, 3]."""

    def pixel_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the preprocessed pixels of a raw (H, W) image."""


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: the `model_type` values of the `config.json` files it reads and its three classes, each
    as "module:name" (imported on first use)."""

    name: str
    title: str
    model_types: tuple[str, ...]
    config: str
    model: str
    processor: str

    def config_class(self) -> type:
        return _load(self.config)

    def model_class(self) -> type:
        return _load(self.model)

    def processor_class(self) -> type:
        return _load(self.processor)


FAMILIES: dict[str, Family] = {
    "llava": Family("llava", "LLaVA-1.5", ("llava",), "sensei_jax.vlm.llava_config:LlavaConfig",
                    "sensei_jax.vlm.model:LlavaModel", "sensei_jax.vlm.processor:LlavaProcessor"),
    "qwen3_vl": Family("qwen3_vl", "Qwen3-VL", ("qwen3_vl",), "sensei_jax.vlm.qwen3_vl.config:Qwen3VLConfig",
                       "sensei_jax.vlm.qwen3_vl.model:Qwen3VLModel",
                       "sensei_jax.vlm.qwen3_vl.processor:Qwen3VLProcessor"),
}


def _load(reference: str) -> Any:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def get(name: str, key: str = "vlm.family") -> Family:
    """The family registered as `name`; a ValueError naming `key` and the known families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"{key}: unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def of_model_type(model_type: str, source: str) -> Family:
    """The family that reads `config.json` files of `model_type`; a ValueError naming `source` otherwise."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ValueError(f"{source}: model_type is {model_type!r}; supported: {known_model_types()}")


def known_model_types() -> str:
    """Every registered model_type and its family, for messages."""
    return ", ".join(f"{t!r} ({f.title})" for f in FAMILIES.values() for t in f.model_types)


def read_model_type(directory: str | Path) -> tuple[str, Path]:
    """(`model_type` of the checkpoint's config.json, the file). LLaVA configs written without one count as llava."""
    file = Path(directory) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing (expected the model config of a Hugging Face checkpoint)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{file} holds a {type(data).__name__}, expected a JSON object")
    return str(data.get("model_type", "llava")), file


def resolve(directory: str | Path, configured: str | None = None) -> Family:
    """The family of checkpoint folder `directory`: `configured` (vlm.family) when given, which must then agree
    with the folder's model_type, else the family of that model_type."""
    model_type, file = read_model_type(directory)
    if configured is None:
        return of_model_type(model_type, str(file))
    family = get(configured)
    if model_type not in family.model_types:
        raise ValueError(f"vlm.family is {configured!r} but {file} says model_type {model_type!r} "
                         f"({configured} reads {', '.join(map(repr, family.model_types))})")
    return family
