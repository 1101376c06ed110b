"""Config sections `vlm` (which model, in which dtype) and `annotate` (how image pairs are labelled).

No jax import here: `sensei_jax.config` composes these into `Config` at start-up.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# SENSEI's Robodesk interestingness criteria (its GPT-4 prompt, sensei_motif.md §1), asked for a one-word answer.
ROBODESK_CRITERIA = (
    "These images show a simulated robot arm in front of a desk. Which image shows more interesting behaviour? "
    "Interesting: (1) the robot holds an object in its gripper; (2) the robot pushes an object, presses a button, "
    "opens the drawer or otherwise interacts with things on the desk; (3) objects on the desk are in an "
    "interesting arrangement, such as a stack. A retracted arm far from the desk, or an arm stretched out "
    "without touching anything, is not interesting."
)


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

    def __post_init__(self):
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"vlm.image_size must be at least 8 pixels, got {self.image_size}")


@dataclasses.dataclass
class OracleConfig:
    """SENSEI's privileged-state heuristic (sensei_motif.md §1), distances in metres."""

    moving_speed: float = 0.02  # any object joint velocity above this: something is being moved
    near_distance: float = 0.145  # gripper this close to the ball, a block or a handle
    drawer_open: float = -0.18  # drawer joint below this: open
    stack_distance: float = 0.04  # upright block within this of "stacked on the flat block"
    # Ties: the continuous scores of the two frames differ by less than this. Between two uninteresting frames
    # only the gripper's proximity term differs, so a small margin still ranks "closer to a target" higher.
    tie_margin: float = 0.01
    temperature: float = 0.1  # prob_first = sigmoid(score difference / temperature)

    def __post_init__(self):
        if self.tie_margin < 0 or self.temperature <= 0:
            raise ValueError(f"annotate.oracle.tie_margin must be >= 0 and temperature > 0, got "
                             f"{self.tie_margin}, {self.temperature}")


@dataclasses.dataclass
class AnnotateConfig:
    """How the `annotate` stage labels pairs: annotator, prompt, pair layout, decision margins, batching."""

    annotator: Literal["llava", "oracle", "random"] = "oracle"
    name: str | None = None  # label set written to preference/preferences_<name>.npy; None: the annotator's name
    # "score": one prefill per ordering, log-probabilities of the two answer tokens (no generation).
    # "free-text": greedy generation and answer parsing, as the reference LLaVA study did (for comparison).
    mode: Literal["score", "free-text"] = "score"
    layout: Literal["two-images", "composite"] = "two-images"  # two <image> placeholders, or one stacked image
    composite_gap: int = 28  # white pixels between the stacked images (the reference study used 28)
    both_orders: bool = True  # also ask with the images swapped and average, so position bias cancels
    # Prompt: `template` with {images} (one "<image>\n" per image) and {question}.
    template: str = "USER: {images}{question} ASSISTANT:"
    question: str = ROBODESK_CRITERIA + " Answer with one word: first or second."
    answers: tuple[str, str] = (" first", " second")  # each must be a single token after the prompt
    composite_question: str = (ROBODESK_CRITERIA.replace("These images", "The top and the bottom image")
                               + " Answer with one word: top or bottom.")
    composite_answers: tuple[str, str] = (" top", " bottom")
    tie_margin: float = 0.1  # |P(first) - 0.5| below this: tie (2)
    min_answer_mass: float = 0.05  # mean probability of the two answer tokens below this: unknown (3)
    # Free-text mode: answers are lower-cased, stripped of punctuation and matched exactly (unmatched: unknown).
    max_new_tokens: int = 16
    free_text_first: tuple[str, ...] = ("first", "top", "1", "image 1")
    free_text_second: tuple[str, ...] = ("second", "bottom", "2", "image 2")
    free_text_tie: tuple[str, ...] = ("tie", "both", "-1", "same")
    batch_size: int = 8  # pairs per compiled call
    partition_size: int = 256  # pairs per partition file (the unit of resumption)
    seq_bucket: int = 64  # prompt lengths are padded up to a multiple of this (static shapes, one compile)
    seed: int = 0  # random annotator
    oracle: OracleConfig = dataclasses.field(default_factory=OracleConfig)

    def __post_init__(self):
        if self.batch_size <= 0 or self.partition_size <= 0 or self.seq_bucket <= 0:
            raise ValueError(f"annotate.batch_size, partition_size and seq_bucket must be positive, got "
                             f"{self.batch_size}, {self.partition_size}, {self.seq_bucket}")
        if not 0.0 <= self.tie_margin < 0.5:
            raise ValueError(f"annotate.tie_margin must be in [0, 0.5), got {self.tie_margin}")
        if not 0.0 <= self.min_answer_mass < 1.0:
            raise ValueError(f"annotate.min_answer_mass must be in [0, 1), got {self.min_answer_mass}")
        if "{images}" not in self.template or "{question}" not in self.template:
            raise ValueError(f"annotate.template must contain {{images}} and {{question}}, got {self.template!r}")
        if self.composite_gap < 0 or self.max_new_tokens < 1:
            raise ValueError("annotate.composite_gap must be >= 0 and annotate.max_new_tokens >= 1")

    @property
    def label_name(self) -> str:
        return self.name or self.annotator
