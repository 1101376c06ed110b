"""Loading (and writing) LLaVA checkpoints in Hugging Face's safetensors layouts, without torch.

Checkpoint keys differ between transformers versions; all of them are first brought to one canonical form:

    hub files / save_pretrained (4.x)   language_model.model.X      vision_tower.vision_model.encoder.layers.N
    in-memory state dict (>= 4.52)      model.language_model.X      model.vision_tower.vision_model.encoder...
    transformers 5.x save_pretrained    language_model.model.X      vision_tower.encoder.layers.N
    canonical (this module)             language_model.X            vision_tower.layers.N

and the head is `language_model.lm_head` or `lm_head` -> `lm_head`. The model's own parameter paths are the
canonical keys with the nnx leaf names (`kernel`, `scale`, `embedding`), so the key table is derived from the
model instead of being written twice. Every tensor must be used exactly once: missing, unexpected and mis-shaped
tensors are collected and reported together, by checkpoint key.

Tensors are read straight from the file with numpy memory maps, so bfloat16 works (through ml_dtypes) and a
sharded 7B checkpoint streams shard by shard into an `nnx.eval_shape` skeleton without a float32 copy; given
parameter shardings, each device receives only its own block of each tensor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import struct
from pathlib import Path
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from sensei_jax.vlm.checkpoint import INDEX_FILE, SINGLE_FILE, checkpoint_files  # noqa: F401
from sensei_jax.vlm.llava_config import LlavaConfig

SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
Layout = Literal["hub", "in-memory", "transformers5"]

# Tensors a checkpoint may carry that this model has no use for: CLIP layers after the selected hidden state, its
# final norm, and buffers older transformers versions saved.
_UNUSED = (re.compile(r"vision_tower\.post_layernorm\.(weight|bias)"),
           re.compile(r"vision_tower\.embeddings\.position_ids"),
           re.compile(r"language_model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"))


# ---------------------------------------------------------------------------------------------------------------
# safetensors files


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as read-only numpy memory maps (any dtype, bfloat16 included)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (header_size,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(f.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} has an unreadable safetensors header: {error}") from error
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape} {info['dtype']}")
        tensors[name] = data[begin:end].view(dtype).reshape(shape)
    return tensors


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
    """Writes numpy arrays (bfloat16 included) as one .safetensors file, in the given key order."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    arrays = {}
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if array.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name} has dtype {array.dtype}, which safetensors cannot store")
        header[name] = {"dtype": DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        arrays[name] = array
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for array in arrays.values():
            f.write(array.tobytes())
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------------------
# key layouts


def canonical_key(key: str) -> str:
    """Any supported layout's key -> the canonical key (see the module docstring)."""
    key = re.sub(r"^model\.(language_model|vision_tower|multi_modal_projector)\.", r"\1.", key)
    key = re.sub(r"^language_model\.lm_head\.", "lm_head.", key)
    key = re.sub(r"^language_model\.model\.", "language_model.", key)
    key = re.sub(r"^vision_tower\.vision_model\.", "vision_tower.", key)
    return re.sub(r"^vision_tower\.encoder\.layers\.", "vision_tower.layers.", key)


def layout_key(canonical: str, layout: Layout) -> str:
    """The canonical key -> the key that `layout` stores (the inverse of `canonical_key`)."""
    vision = re.sub(r"^vision_tower\.layers\.", "vision_tower.encoder.layers.", canonical)
    if layout == "hub":
        key = re.sub(r"^vision_tower\.", "vision_tower.vision_model.", vision)
        key = re.sub(r"^language_model\.", "language_model.model.", key)
        return re.sub(r"^lm_head\.", "language_model.lm_head.", key)
    if layout == "in-memory":
        key = re.sub(r"^vision_tower\.", "vision_tower.vision_model.", vision)
        return re.sub(r"^(language_model|vision_tower|multi_modal_projector)\.", r"model.\1.", key)
    if layout == "transformers5":  # as transformers 5.x save_pretrained writes it: hub text keys, flat vision keys
        key = re.sub(r"^language_model\.", "language_model.model.", vision)
        return re.sub(r"^lm_head\.", "language_model.lm_head.", key)
    raise ValueError(f"unknown checkpoint layout {layout!r}; known: hub, in-memory, transformers5")


def _parameter_table(abstract_state) -> dict[str, tuple[tuple, str, Any]]:
    """canonical key -> (nnx path, transform, abstract leaf) for every parameter of the model."""
    table = {}
    for path, leaf in nnx.to_flat_state(abstract_state):
        names = [str(p) for p in path]
        last = names[-1]
        if last == "patch_embedding":
            key, transform = ".".join(names) + ".weight", "conv"
        elif last == "class_embedding":
            key, transform = ".".join(names), "none"
        elif last == "kernel":
            key, transform = ".".join(names[:-1]) + ".weight", "linear"
        elif last in ("scale", "embedding"):
            key, transform = ".".join(names[:-1]) + ".weight", "none"
        elif last == "bias":
            key, transform = ".".join(names), "none"
        else:
            raise AssertionError(f"parameter {'.'.join(names)} has no checkpoint mapping")
        table[key] = (path, transform, leaf)
    return table


def _to_model(array: np.ndarray, transform: str) -> np.ndarray:
    if transform == "linear":  # torch [out, in] -> [in, out]
        return array.T
    if transform == "conv":  # torch [D, C, kh, kw] -> [kh * kw * C, D]
        return array.transpose(2, 3, 1, 0).reshape(-1, array.shape[0])
    return array


def _to_checkpoint(array: np.ndarray, transform: str, conv_shape: tuple[int, ...] | None = None) -> np.ndarray:
    if transform == "linear":
        return array.T
    if transform == "conv":
        out, channels, kh, kw = conv_shape
        return array.reshape(kh, kw, channels, out).transpose(3, 2, 0, 1)
    return array


def _checkpoint_shape(shape: tuple[int, ...], transform: str, cfg: LlavaConfig) -> tuple[int, ...]:
    if transform == "linear":
        return shape[::-1]
    if transform == "conv":
        v = cfg.vision
        return (v.hidden_size, v.num_channels, v.patch_size, v.patch_size)
    return shape


def _is_unused(key: str, cfg: LlavaConfig) -> bool:
    match = re.match(r"vision_tower\.layers\.(\d+)\.", key)
    if match:
        return cfg.vision_layers_used <= int(match.group(1)) < cfg.vision.num_hidden_layers
    return any(pattern.fullmatch(key) for pattern in _UNUSED)


# ---------------------------------------------------------------------------------------------------------------
# loading and saving


def _place(array: np.ndarray, dtype, sharding: jax.sharding.Sharding | None) -> jax.Array:
    """A host tensor (a memory-map view) on the devices: whole on the default device, or with `sharding` each
    device's block read from the view and cast alone (the full tensor never lands on one device)."""
    if sharding is None:
        return jnp.asarray(np.ascontiguousarray(array).astype(dtype))
    return jax.make_array_from_callback(array.shape, sharding,
                                        lambda index: np.ascontiguousarray(array[index]).astype(dtype))


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one checkpoint tensor goes: the model's nnx path, the abstract leaf (shape and dtype), the shape the
    checkpoint stores it in, and the function that turns the stored array into the model's layout."""

    path: tuple
    leaf: Any
    checkpoint_shape: tuple[int, ...]
    to_model: Callable[[np.ndarray], np.ndarray]


def load_tensors(abstract: nnx.Module, directory: str | Path, slots: dict[str, Slot],
                 canonical: Callable[[str], str], unused: Callable[[str], bool],
                 shardings: dict[tuple, jax.sharding.Sharding] | None = None) -> nnx.Module:
    """`abstract` (a model of shapes only) with the tensors of the safetensors files in `directory`, for any
    family: each stored key is brought to its `canonical` form and goes to its slot, cast to the slot's dtype
    (with `shardings`, nnx path -> sharding, straight into its sharding). Keys without a slot must be `unused`;
    missing, unexpected, duplicated and mis-shaped tensors are reported together, by checkpoint key."""
    directory = Path(directory)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = shardings or {}
    values: dict[tuple, jax.Array] = {}
    seen: dict[str, str] = {}
    errors: list[str] = []
    for file in checkpoint_files(directory):
        for raw_key, array in read_safetensors(file).items():
            key = canonical(raw_key)
            if key in seen:
                errors.append(f"{raw_key} ({file.name}) duplicates {seen[key]}")
                continue
            seen[key] = raw_key
            if key not in slots:
                if not unused(key):
                    errors.append(f"unexpected tensor {raw_key} ({file.name})")
                continue
            slot = slots[key]
            if tuple(array.shape) != slot.checkpoint_shape:
                errors.append(f"tensor {raw_key} ({file.name}) has shape {tuple(array.shape)}, expected "
                              f"{slot.checkpoint_shape}")
                continue
            if not np.issubdtype(array.dtype, np.floating) and array.dtype != ml_dtypes.bfloat16:
                errors.append(f"tensor {raw_key} ({file.name}) has non-float dtype {array.dtype}")
                continue
            values[slot.path] = _place(slot.to_model(array), slot.leaf.dtype, shardings.get(slot.path))
    errors.extend(f"missing tensor {key} (in any layout)" for key, slot in slots.items()
                  if slot.path not in values and key not in seen)
    if errors:
        shown = "\n  ".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise ValueError(f"checkpoint {directory} does not match its config.json:\n  {shown}")
    state = nnx.from_flat_state([(path, abstract_state_leaf.replace(values[path]))
                                 for path, abstract_state_leaf in nnx.to_flat_state(abstract_state)])
    return nnx.merge(graphdef, state)


def load_weights(abstract: nnx.Module, directory: str | Path,
                 shardings: dict[tuple, jax.sharding.Sharding] | None = None) -> nnx.Module:
    """`abstract` (a LlavaModel of shapes only, from `nnx.eval_shape`, built from the config.json in `directory`)
    with the weights of the Hugging Face checkpoint in `directory`, cast to the model's parameter dtypes.

    With `shardings` (nnx path -> sharding, e.g. `sharding.parameter_shardings`) every tensor goes from the file
    straight into its sharding. The model is passed in, not built here, so that `LlavaModel.from_pretrained` can
    call this module without this module importing the model back."""
    cfg: LlavaConfig = abstract.config
    slots = {key: Slot(path, leaf, _checkpoint_shape(leaf.shape, transform, cfg),
                       functools.partial(_to_model, transform=transform))
             for key, (path, transform, leaf) in _parameter_table(nnx.state(abstract)).items()}
    return load_tensors(abstract, directory, slots, canonical_key, lambda key: _is_unused(key, cfg), shardings)


def save_pretrained(model, directory: str | Path, layout: Layout = "hub", dtype=None,
                    max_shard_bytes: int | None = None, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Writes `model` as a Hugging Face checkpoint directory: config.json and safetensors in `layout` (sharded with
    an index file when max_shard_bytes is given). `extra` adds tensors under their raw keys (tests use it for
    tensors a real checkpoint carries but the model ignores)."""
    cfg: LlavaConfig = model.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    conv_shape = _checkpoint_shape((), "conv", cfg)
    for key, (_, transform, leaf) in _parameter_table(nnx.state(model, nnx.Param)).items():
        array = _to_checkpoint(np.asarray(leaf[...]), transform, conv_shape)
        tensors[layout_key(key, layout)] = array.astype(dtype) if dtype is not None else array
    tensors.update(extra or {})
    config = cfg.to_hf_dict()
    config["torch_dtype"] = str(np.dtype(dtype or next(iter(tensors.values())).dtype).name)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return write_weights(directory, tensors, max_shard_bytes)


def write_weights(directory: str | Path, tensors: dict[str, np.ndarray], max_shard_bytes: int | None = None) -> Path:
    """Writes `tensors` as model.safetensors, or (with max_shard_bytes) as shards of at most that size plus the
    model.safetensors.index.json that lists them, as Hugging Face checkpoints are stored."""
    directory = Path(directory)
    if max_shard_bytes is None:
        write_safetensors(directory / SINGLE_FILE, tensors)
        return directory
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key, array in tensors.items():
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = array
        size += array.nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(directory / name, shard)
        weight_map.update({key: name for key in shard})
    total = sum(a.nbytes for a in tensors.values())
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                   indent=2))
    return directory
