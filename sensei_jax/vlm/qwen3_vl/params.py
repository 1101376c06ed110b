"""Loading (and writing) Qwen3-VL checkpoints in Hugging Face's safetensors layouts, without torch.

Stored keys are brought to one canonical form, the model's own parameter paths with Hugging Face leaf names:

    transformers 4.57 / 5.x (hub files)   model.visual.X          model.language_model.X      lm_head.weight
    Qwen2-VL-style exports                visual.X                model.X (layers, embed_tokens, norm)
    canonical (this module)               visual.X                language_model.X            lm_head.weight

Linear weights [out, in] become kernels [in, out]; the Conv3d patch weight [D, C, T, p, p] becomes [T, p, p, C,
D]; norms and embeddings map as they are. A tied checkpoint (2B, 4B) has no head of its own; an `lm_head.weight`
stored beside tied embeddings is left unused. Everything else must match one-to-one
(`vlm.params.load_tensors` reports missing, unexpected and mis-shaped tensors together).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
from flax import nnx

from sensei_jax.vlm.params import Slot, load_tensors, write_weights
from sensei_jax.vlm.qwen3_vl.config import Qwen3VLConfig


def canonical_key(key: str) -> str:
    """Any supported layout's key -> the canonical key."""
    key = re.sub(r"^model\.(visual|language_model)\.", r"\1.", key)
    return re.sub(r"^model\.(layers|embed_tokens|norm)\b", r"language_model.\1", key)


def hub_key(canonical: str) -> str:
    """The canonical key -> the key transformers writes (`model.visual.*`, `model.language_model.*`)."""
    return canonical if canonical.startswith("lm_head.") else f"model.{canonical}"


def _transform(names: list[str]) -> tuple[str, str]:
    """(canonical key, transform) of the parameter at nnx path `names`."""
    last = names[-1]
    if names[-3:] == ["patch_embed", "proj", "kernel"]:
        return ".".join(names[:-1]) + ".weight", "conv3d"
    if last == "kernel":
        return ".".join(names[:-1]) + ".weight", "linear"
    if last in ("scale", "embedding"):
        return ".".join(names[:-1]) + ".weight", "none"
    if last == "bias":
        return ".".join(names), "none"
    raise AssertionError(f"parameter {'.'.join(names)} has no checkpoint mapping")


def _to_model(array: np.ndarray, transform: str) -> np.ndarray:
    if transform == "linear":
        return array.T
    if transform == "conv3d":  # [D, C, T, p, p] -> [T, p, p, C, D]
        return array.transpose(2, 3, 4, 1, 0)
    return array


def _to_checkpoint(array: np.ndarray, transform: str) -> np.ndarray:
    if transform == "linear":
        return array.T
    if transform == "conv3d":
        return array.transpose(4, 3, 0, 1, 2)
    return array


def _stored_shape(shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    if transform == "linear":
        return shape[::-1]
    if transform == "conv3d":
        return tuple(shape[i] for i in (4, 3, 0, 1, 2))
    return tuple(shape)


def parameter_slots(abstract: nnx.Module) -> dict[str, tuple[tuple, str, object]]:
    """canonical key -> (nnx path, transform, leaf) for every parameter of a (possibly abstract) Qwen3VLModel."""
    table = {}
    for path, leaf in nnx.to_flat_state(nnx.state(abstract)):
        key, transform = _transform([str(p) for p in path])
        table[key] = (path, transform, leaf)
    return table


def load_weights(abstract: nnx.Module, directory: str | Path, shardings: dict | None = None) -> nnx.Module:
    """`abstract` (a Qwen3VLModel of shapes only) with the weights of the checkpoint in `directory`, cast to the
    model's parameter dtypes; with `shardings` (nnx path -> sharding) each tensor goes straight into its own."""
    cfg: Qwen3VLConfig = abstract.config
    slots = {key: Slot(path, leaf, _stored_shape(leaf.shape, transform), functools.partial(_to_model,
                                                                                          transform=transform))
             for key, (path, transform, leaf) in parameter_slots(abstract).items()}

    def unused(key: str) -> bool:
        return key == "lm_head.weight" and cfg.text.tie_word_embeddings

    return load_tensors(abstract, directory, slots, canonical_key, unused, shardings)


def save_pretrained(model, directory: str | Path, dtype=None, max_shard_bytes: int | None = None) -> Path:
    """Writes `model` as a Hugging Face checkpoint directory (config.json, model.safetensors or shards of at
    most `max_shard_bytes` with their index) in the layout transformers writes, which
    `Qwen3VLForConditionalGeneration.from_pretrained` reads; tensors in `dtype` (default: the model's)."""
    cfg: Qwen3VLConfig = model.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, (_, transform, leaf) in sorted(parameter_slots(model).items()):
        array = _to_checkpoint(np.asarray(leaf[...]), transform)
        tensors[hub_key(key)] = array.astype(dtype) if dtype is not None else array
    config = cfg.to_hf_dict()
    config["dtype"] = str(np.dtype(dtype or next(iter(tensors.values())).dtype).name)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return write_weights(directory, tensors, max_shard_bytes)
