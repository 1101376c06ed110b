"""Architecture of a dense Qwen3-VL model (2B, 4B, 8B): vision tower with DeepStack mergers, Qwen3 decoder.

Defaults are transformers' class defaults (Qwen3VLVisionConfig, Qwen3VLTextConfig, Qwen3VLConfig) where a
`config.json` may leave a field out; the presets are the released checkpoints' shapes. Both config.json
dialects read: transformers 4.57 (`rope_scaling` and `rope_theta` in text_config, vision model_type 'qwen3_vl')
and 5.x (`rope_parameters`, vision model_type 'qwen3_vl_vision'). No jax import: reading a config is cheap.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "gelu_new", "quick_gelu", "silu", "relu")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower: 3D patch embedding, learned position grid, ViT blocks with 2D rotary embeddings, a patch
    merger (merge x merge patches -> one text token) and one DeepStack merger per tapped block."""

    depth: int = 27
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    out_hidden_size: int = 3584
    num_position_embeddings: int = 2304  # a square grid: 48 x 48 for the released models
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    hidden_act: str = "gelu_pytorch_tanh"
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6  # fixed in transformers' code, not a config field

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid_side(self) -> int:
        """Side of the learned position grid."""
        return int(round(self.num_position_embeddings ** 0.5))

    def __post_init__(self):
        if self.hidden_size % self.num_heads or self.head_size % 4:
            raise ValueError(f"vision hidden_size={self.hidden_size} must split into num_heads={self.num_heads} "
                             "heads of a multiple of 4 features (2D rotary embeddings)")
        if self.grid_side ** 2 != self.num_position_embeddings:
            raise ValueError(f"vision num_position_embeddings={self.num_position_embeddings} is not a square")
        if any(not 0 <= i < self.depth for i in self.deepstack_visual_indexes):
            raise ValueError(f"vision deepstack_visual_indexes={list(self.deepstack_visual_indexes)} must be "
                             f"blocks 0..{self.depth - 1}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"vision hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen3 decoder: GQA with RMSNorm on each query and key head, SwiGLU MLP, interleaved multimodal rotary
    embeddings (MRoPE: frequencies cycle through time, height, width)."""

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 500000.0
    mrope_section: tuple[int, int, int] = (24, 20, 20)  # frequencies of time, height, width
    max_position_embeddings: int = 128000
    hidden_act: str = "silu"
    attention_bias: bool = False
    tie_word_embeddings: bool = False

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads

    @property
    def mlp_bias(self) -> bool:
        return False  # Qwen3's MLP has no biases

    @property
    def head_size(self) -> int:
        return self.head_dim

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if sum(self.mrope_section) != self.head_dim // 2:
            raise ValueError(f"mrope_section {list(self.mrope_section)} must sum to head_dim / 2 = "
                             f"{self.head_dim // 2}")
        if self.hidden_act != "silu":
            raise ValueError(f"text hidden_act {self.hidden_act!r} is not supported (Qwen3 uses 'silu')")


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig:
    """The whole model and its special token ids (Qwen3VLConfig's defaults)."""

    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653

    def __post_init__(self):
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(f"vision out_hidden_size={self.vision.out_hidden_size} must equal the text "
                             f"hidden_size={self.text.hidden_size}")

    @property
    def image_token_index(self) -> int:
        return self.image_token_id

    def model_parallel_sizes(self) -> dict[str, int]:
        """The sizes the `model` mesh axis splits (`sharding.check_model_parallel`)."""
        text, vision = self.text, self.vision
        merged = vision.hidden_size * vision.spatial_merge_size ** 2
        return {"text num_attention_heads": text.num_attention_heads,
                "text num_key_value_heads": text.num_key_value_heads,
                "text intermediate_size": text.intermediate_size, "text hidden_size": text.hidden_size,
                "text vocab_size": text.vocab_size, "vision intermediate_size": vision.intermediate_size,
                "vision merged hidden size": merged}

    # -- presets -------------------------------------------------------------------------------------------------

    @classmethod
    def qwen3_vl_2b(cls) -> Qwen3VLConfig:
        """Qwen/Qwen3-VL-2B-Instruct: 24-block tower, 28-layer decoder of width 2048, tied embeddings."""
        vision = VisionConfig(depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048,
                              deepstack_visual_indexes=(5, 11, 17))
        text = TextConfig(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                          num_key_value_heads=8, rope_theta=5_000_000.0, max_position_embeddings=262144,
                          tie_word_embeddings=True)
        return cls(text=text, vision=vision)

    @classmethod
    def qwen3_vl_4b(cls) -> Qwen3VLConfig:
        """Qwen/Qwen3-VL-4B-Instruct: 24-block tower, 36-layer decoder of width 2560, tied embeddings."""
        vision = VisionConfig(depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2560,
                              deepstack_visual_indexes=(5, 11, 17))
        text = TextConfig(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                          num_key_value_heads=8, rope_theta=5_000_000.0, max_position_embeddings=262144,
                          tie_word_embeddings=True)
        return cls(text=text, vision=vision)

    @classmethod
    def qwen3_vl_8b(cls) -> Qwen3VLConfig:
        """Qwen/Qwen3-VL-8B-Instruct: 27-block tower, 36-layer decoder of width 4096, untied head."""
        vision = VisionConfig(out_hidden_size=4096)
        text = TextConfig(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                          num_key_value_heads=8, rope_theta=5_000_000.0, max_position_embeddings=262144)
        return cls(text=text, vision=vision)

    @classmethod
    def tiny(cls, vocab_size: int = 128, image_token_id: int = 5, video_token_id: int = 6,
             vision_start_token_id: int = 3, vision_end_token_id: int = 4,
             tie_word_embeddings: bool = False) -> Qwen3VLConfig:
        """A few-kB model for tests: 8-px patches merged 2 x 2 (one token per 16 x 16 px), a 4 x 4 position grid,
        2 blocks and 2 layers, both blocks tapped by DeepStack."""
        vision = VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=8,
                              out_hidden_size=64, num_position_embeddings=16, deepstack_visual_indexes=(0, 1))
        text = TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0,
                          mrope_section=(6, 5, 5), max_position_embeddings=2048,
                          tie_word_embeddings=tie_word_embeddings)
        return cls(text=text, vision=vision, image_token_id=image_token_id, video_token_id=video_token_id,
                   vision_start_token_id=vision_start_token_id, vision_end_token_id=vision_end_token_id)

    # -- Hugging Face config.json --------------------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = "config.json") -> Qwen3VLConfig:
        """Reads a Qwen3-VL `config.json` (transformers 4.57 or 5.x), filling in what it leaves out."""
        model_type = data.get("model_type")
        if model_type != "qwen3_vl":
            raise ValueError(f"{source}: model_type is {model_type!r}; the qwen3_vl family reads 'qwen3_vl' "
                             "(dense Qwen3-VL)")
        try:
            return cls(text=_text_config(dict(data.get("text_config") or {}), data, source),
                       vision=_vision_config(dict(data.get("vision_config") or {}), source),
                       **{name: int(data[name]) for name in ("image_token_id", "video_token_id",
                                                             "vision_start_token_id", "vision_end_token_id")
                          if data.get(name) is not None})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Qwen3VLConfig:
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no Qwen3-VL config.json at {file}")
        return cls.from_hf_dict(json.loads(file.read_text()), source=str(file))

    def to_hf_dict(self) -> dict[str, Any]:
        """A transformers-5 style config.json, which transformers' Qwen3VLConfig reads back."""
        text = dataclasses.asdict(self.text)
        rope = {"rope_type": "default", "rope_theta": text.pop("rope_theta"),
                "mrope_section": list(text.pop("mrope_section")), "mrope_interleaved": True}
        tie = text.pop("tie_word_embeddings")
        vision = dataclasses.asdict(self.vision)
        vision.pop("layer_norm_eps")
        vision["deepstack_visual_indexes"] = list(vision["deepstack_visual_indexes"])
        vision["rope_parameters"] = {"rope_type": "axial", "rope_theta": vision.pop("rope_theta")}
        return {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
                "image_token_id": self.image_token_id, "video_token_id": self.video_token_id,
                "vision_start_token_id": self.vision_start_token_id, "vision_end_token_id": self.vision_end_token_id,
                "tie_word_embeddings": tie,
                "text_config": {**text, "model_type": "qwen3_vl_text", "rope_parameters": rope},
                "vision_config": {**vision, "model_type": "qwen3_vl_vision"}}


def _text_config(text: dict[str, Any], top: dict[str, Any], source: str) -> TextConfig:
    if text.get("model_type", "qwen3_vl_text") != "qwen3_vl_text":
        raise ValueError(f"text_config.model_type is {text['model_type']!r}; expected 'qwen3_vl_text'")
    rope = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"rope type {rope.get('rope_type', rope.get('type'))!r} is not supported (only 'default')")
    if not rope.get("mrope_interleaved", True):
        raise ValueError("mrope_interleaved is false: only Qwen3-VL's interleaved MRoPE is supported")
    kwargs = _known(TextConfig, text)
    kwargs["rope_theta"] = float(rope.get("rope_theta", text.get("rope_theta", TextConfig.rope_theta)))
    if "mrope_section" in rope:
        kwargs["mrope_section"] = tuple(int(x) for x in rope["mrope_section"])
    tie = top.get("tie_word_embeddings", text.get("tie_word_embeddings"))
    if tie is not None:
        kwargs["tie_word_embeddings"] = bool(tie)
    return TextConfig(**kwargs)


def _vision_config(vision: dict[str, Any], source: str) -> VisionConfig:
    if vision.get("model_type", "qwen3_vl_vision") not in ("qwen3_vl_vision", "qwen3_vl"):
        raise ValueError(f"vision_config.model_type is {vision['model_type']!r}; expected 'qwen3_vl_vision'")
    kwargs = _known(VisionConfig, vision)
    for name in ("patch_size", "temporal_patch_size"):
        if isinstance(kwargs.get(name), (list, tuple)):
            values = set(kwargs[name])
            if len(values) != 1:
                raise ValueError(f"vision {name}={kwargs[name]} must be square")
            kwargs[name] = values.pop()
    if "deepstack_visual_indexes" in kwargs:
        kwargs["deepstack_visual_indexes"] = tuple(int(i) for i in kwargs["deepstack_visual_indexes"])
    rope = vision.get("rope_parameters") or {}
    if "rope_theta" in rope:
        kwargs["rope_theta"] = float(rope["rope_theta"])
    return VisionConfig(**kwargs)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of dataclass `cls` (HF configs carry many we do not need)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"rope_theta", "mrope_section", "tie_word_embeddings"}
    return {k: v for k, v in data.items() if k in names and v is not None}
