"""Architecture of a LLaVA-1.5 model: CLIP vision tower, projector, Llama decoder.

The llava-hf `config.json` files leave many fields out and rely on the Hugging Face class defaults (LlamaConfig,
CLIPVisionConfig, LlavaConfig). Those defaults are written out here explicitly, so a config read from disk means
the same thing it means to transformers. No jax import: reading a config is cheap.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Llama decoder. Defaults are LlamaConfig's (Llama-2-7B / Vicuna-7B shapes)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: multi-head attention (as many KV heads as query heads)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def __post_init__(self):
        if self.num_attention_heads % self.kv_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.kv_heads}")
        if self.head_size % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {self.head_size}")
        if self.hidden_act != "silu":
            raise ValueError(f"text hidden_act {self.hidden_act!r} is not supported (Llama uses 'silu')")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """CLIP vision transformer. Defaults are CLIPVisionConfig's, except the shapes, which are CLIP ViT-L/14-336."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 336
    patch_size: int = 14
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"vision hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"vision hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")


ACTIVATIONS = ("quick_gelu", "gelu", "gelu_pytorch_tanh", "gelu_new", "silu", "relu")


@dataclasses.dataclass(frozen=True)
class LlavaConfig:
    """The whole model. Defaults are LlavaConfig's (llava-1.5)."""

    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    image_token_index: int = 32000
    pad_token_id: int | None = None
    vision_feature_layer: int = -2  # index into CLIP's hidden states (0 = embeddings, i = output of layer i)
    vision_feature_select_strategy: str = "default"  # "default" drops the CLS token, "full" keeps it
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True

    def __post_init__(self):
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy must be 'default' or 'full', "
                             f"got {self.vision_feature_select_strategy!r}")
        if self.projector_hidden_act not in ACTIVATIONS:
            raise ValueError(f"projector_hidden_act {self.projector_hidden_act!r} is not one of {ACTIVATIONS}")
        layers = self.vision.num_hidden_layers
        if not -layers - 1 <= self.vision_feature_layer <= layers:
            raise ValueError(f"vision_feature_layer={self.vision_feature_layer} is outside the "
                             f"{layers + 1} hidden states of the vision tower")

    @property
    def vision_layers_used(self) -> int:
        """How many CLIP layers have to run to produce the selected hidden state."""
        layers = self.vision.num_hidden_layers
        return self.vision_feature_layer % (layers + 1)

    def model_parallel_sizes(self) -> dict[str, int]:
        """The sizes the `model` mesh axis splits (`sharding.check_model_parallel`)."""
        text, vision = self.text, self.vision
        return {"text num_attention_heads": text.num_attention_heads, "text num_key_value_heads": text.kv_heads,
                "text intermediate_size": text.intermediate_size, "text hidden_size": text.hidden_size,
                "text vocab_size": text.vocab_size, "vision num_attention_heads": vision.num_attention_heads,
                "vision intermediate_size": vision.intermediate_size}

    @property
    def image_seq_length(self) -> int:
        """Image tokens per image: one per patch, plus the CLS token for the "full" strategy."""
        return self.vision.num_patches + (self.vision_feature_select_strategy == "full")

    # -- presets -------------------------------------------------------------------------------------------------

    @classmethod
    def llava_1_5_7b(cls) -> LlavaConfig:
        """llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 + Vicuna-7B, 576 image tokens."""
        return cls(text=TextConfig(vocab_size=32064, rms_norm_eps=1e-5), pad_token_id=32001)

    @classmethod
    def llava_1_5_13b(cls) -> LlavaConfig:
        """llava-hf/llava-1.5-13b-hf: CLIP ViT-L/14-336 + Vicuna-13B."""
        text = TextConfig(vocab_size=32064, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                          num_attention_heads=40, rms_norm_eps=1e-5)
        return cls(text=text, pad_token_id=32001)

    @classmethod
    def tiny(cls, vocab_size: int = 96, image_token_index: int = 3, num_key_value_heads: int = 2) -> LlavaConfig:
        """A few-kB model for tests: 32-px images of 8-px patches (16 image tokens), 2 layers everywhere."""
        text = TextConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=num_key_value_heads, rms_norm_eps=1e-5,
                          max_position_embeddings=512)
        vision = VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
        return cls(text=text, vision=vision, image_token_index=image_token_index, pad_token_id=0)

    # -- Hugging Face config.json --------------------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = "config.json") -> LlavaConfig:
        """Reads a llava-hf `config.json` (transformers 4.x or 5.x), filling in what it leaves out."""
        model_type = data.get("model_type", "llava")
        if model_type != "llava":
            raise ValueError(f"{source}: model_type is {model_type!r}; only 'llava' (LLaVA-1.5) is supported")
        text_data = dict(data.get("text_config") or {})
        vision_data = dict(data.get("vision_config") or {})
        if text_data.get("model_type", "llama") != "llama":
            raise ValueError(f"{source}: text_config.model_type is {text_data['model_type']!r}; only 'llama' "
                             f"decoders are supported")
        if vision_data.get("model_type", "clip_vision_model") != "clip_vision_model":
            raise ValueError(f"{source}: vision_config.model_type is {vision_data['model_type']!r}; only "
                             f"'clip_vision_model' towers are supported")
        # transformers 5 moved rope_theta into rope_parameters; 4.x configs may carry rope_scaling.
        rope = text_data.get("rope_parameters") or {}
        scaling = text_data.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", scaling.get("rope_type", scaling.get("type", "default"))))
        if rope_type != "default":
            raise ValueError(f"{source}: rope type {rope_type!r} is not supported (only 'default' rotary embeddings)")
        text_kwargs = _known(TextConfig, text_data)
        text_kwargs["rope_theta"] = float(rope.get("rope_theta", text_data.get("rope_theta", 10000.0)))
        if "tie_word_embeddings" in data:
            text_kwargs["tie_word_embeddings"] = bool(data["tie_word_embeddings"])
        feature_layer = data.get("vision_feature_layer", -2)
        if not isinstance(feature_layer, int):
            raise ValueError(f"{source}: vision_feature_layer={feature_layer!r}; only a single layer is supported")
        image_token = data.get("image_token_index", data.get("image_token_id", 32000))
        try:
            return cls(
                text=TextConfig(**text_kwargs),
                vision=VisionConfig(**_known(VisionConfig, vision_data)),
                image_token_index=int(image_token),
                pad_token_id=data.get("pad_token_id", text_data.get("pad_token_id")),
                vision_feature_layer=feature_layer,
                vision_feature_select_strategy=data.get("vision_feature_select_strategy", "default"),
                projector_hidden_act=data.get("projector_hidden_act", "gelu"),
                multimodal_projector_bias=bool(data.get("multimodal_projector_bias", True)),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error

    @classmethod
    def from_pretrained(cls, path: str | Path) -> LlavaConfig:
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no LLaVA config.json at {file}")
        return cls.from_hf_dict(json.loads(file.read_text()), source=str(file))

    def to_hf_dict(self) -> dict[str, Any]:
        """A llava-hf style config.json (transformers 4.x keys, understood by 5.x too)."""
        text = dataclasses.asdict(self.text)
        text.pop("tie_word_embeddings")
        text["num_key_value_heads"] = self.text.kv_heads
        text["head_dim"] = self.text.head_size
        text["model_type"] = "llama"
        vision = dataclasses.asdict(self.vision)
        vision["model_type"] = "clip_vision_model"
        vision["projection_dim"] = vision["hidden_size"]
        return {
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava",
            "image_token_index": self.image_token_index,
            "pad_token_id": self.pad_token_id,
            "vision_feature_layer": self.vision_feature_layer,
            "vision_feature_select_strategy": self.vision_feature_select_strategy,
            "projector_hidden_act": self.projector_hidden_act,
            "multimodal_projector_bias": self.multimodal_projector_bias,
            "image_seq_length": self.image_seq_length,
            "tie_word_embeddings": self.text.tie_word_embeddings,
            "text_config": text,
            "vision_config": vision,
        }


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of dataclass `cls` (HF configs carry many we do not need)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names and v is not None}
