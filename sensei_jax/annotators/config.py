"""Config section `annotate`: which annotator labels the image pairs, and how (prompt, layout, margins, batching).

No jax import here: `sensei_jax.config` composes it into `Config` at start-up. The oracle's thresholds are the
`interest` section (`sensei_jax.envs.robodesk.config.InterestConfig`), which it shares with pair sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# SENSEI's Robodesk interestingness criteria (its GPT-4 prompt, Sancaktar, Gumbsch et al. 2025), asked for a
# one-word answer.
ROBODESK_CRITERIA = (
    "These images show a simulated robot arm in front of a desk. Which image shows more interesting behaviour? "
    "Interesting: (1) the robot holds an object in its gripper; (2) the robot pushes an object, presses a button, "
    "opens the drawer or otherwise interacts with things on the desk; (3) objects on the desk are in an "
    "interesting arrangement, such as a stack. A retracted arm far from the desk, or an arm stretched out "
    "without touching anything, is not interesting."
)


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
    tie_margin: float = 0.1  # llava: |P(first) - 0.5| below this is a tie (the oracle's: interest.tie_margin)
    min_answer_mass: float = 0.05  # llava: mean probability of the two answer tokens below this: unknown
    # Free-text mode: answers are lower-cased, stripped of punctuation and matched exactly (unmatched: unknown).
    max_new_tokens: int = 16
    free_text_first: tuple[str, ...] = ("first", "top", "1", "image 1")
    free_text_second: tuple[str, ...] = ("second", "bottom", "2", "image 2")
    free_text_tie: tuple[str, ...] = ("tie", "both", "-1", "same")
    batch_size: int = 8  # pairs per compiled call
    partition_size: int = 256  # pairs per partition file (the unit of resumption)
    seq_bucket: int = 64  # prompt lengths are padded up to a multiple of this (static shapes, one compile)
    seed: int = 0  # random annotator

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
