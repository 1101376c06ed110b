"""What a VLM checkpoint folder must hold, checked without loading it (no jax import, reads headers only).

A Hugging Face folder of a registered family (`vlm/family.py`), as its model and processor classes read it:

    config.json                       model_type 'llava' (a 'llama' text model, a 'clip_vision_model' tower) or
                                      'qwen3_vl'; the family's config class reads it
    model.safetensors                 the weights, or model.safetensors.index.json and the shards it lists
    tokenizer.json                    the fast tokenizer
    preprocessor_config.json          the image processor's settings (CLIPImageProcessor, Qwen2VLImageProcessor)

`check_folder` finds a missing file, an unreadable JSON file, a config of another model family, and a weight file
cut short (a partial download) in seconds, before a run collects for hours and then fails to load its annotator.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from sensei_jax import files
from sensei_jax.vlm import family as family_lib

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


def checkpoint_files(directory: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint directory: the shards listed by the index file, or the single file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    index = directory / INDEX_FILE
    if index.is_file():
        record = files.read_json(index)
        weight_map = record.get("weight_map") if isinstance(record, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map'")
        shards = [directory / name for name in dict.fromkeys(weight_map.values())]
        for shard in shards:
            if not shard.is_file():
                raise FileNotFoundError(f"{index} lists shard {shard.name}, which is missing from {directory}")
        return shards
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}")


def check_folder(directory: str | Path, family: str | None = None):
    """The model config of checkpoint folder `directory` once every file it needs is there and readable, read by
    its family (`family`, i.e. vlm.family, or the one its model_type names). Raises FileNotFoundError or
    ValueError naming the file and what it should hold."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder (expected a vision-language model checkpoint in "
                                "Hugging Face format)")
    config_file = directory / CONFIG_FILE
    data = _json_object(config_file, "the model config, a Hugging Face config.json")
    kind = family_lib.resolve(directory, family)
    cfg = kind.config_class().from_hf_dict(data, source=str(config_file))
    for shard in checkpoint_files(directory):
        check_safetensors(shard)
    tokenizer = _json_object(directory / TOKENIZER_FILE, "a fast tokenizer in Hugging Face tokenizers format")
    if "model" not in tokenizer:
        raise ValueError(f"{directory / TOKENIZER_FILE} has no 'model' entry: expected a fast tokenizer in "
                         "Hugging Face tokenizers format")
    _json_object(directory / PREPROCESSOR_FILE, "the image processor's settings")
    return cfg


def check_safetensors(path: Path) -> None:
    """Raises ValueError unless `path` starts with a safetensors header whose tensors all fit in the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file: {size} bytes, shorter than its 8-byte header length")
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            raise ValueError(f"{path} is not a safetensors file (or is cut short): its header claims {header_size} "
                             f"bytes, the file has {size}")
        try:
            header = json.loads(f.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} has an unreadable safetensors header: {error}") from error
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    needed = 8 + header_size + max(ends, default=0)
    if needed > size:
        raise ValueError(f"{path} is cut short: its tensors need {needed} bytes, the file has {size} (an unfinished "
                         "download?)")


def _json_object(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (expected {what})")
    data = files.read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a JSON object with {what}")
    return data
