"""Config section `annotate`: which annotator labels the image pairs, and how (mode, prompts, layout, margins,
batching).

No jax import here: `sensei_jax.config` composes it into `Config` at start-up. The oracle's thresholds are the
`interest` section (`sensei_jax.envs.robodesk.config.InterestConfig`), which it shares with pair sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from sensei_jax.vlm.config import LLAVA_V1_SYSTEM

# SENSEI's Robodesk interestingness criteria (its GPT-4 prompt, Sancaktar, Gumbsch et al. 2025), asked for a
# one-word answer.
ROBODESK_CRITERIA = (
    "These images show a simulated robot arm in front of a desk. Which image shows more interesting behaviour? "
    "Interesting: (1) the robot holds an object in its gripper; (2) the robot pushes an object, presses a button, "
    "opens the drawer or otherwise interacts with things on the desk; (3) objects on the desk are in an "
    "interesting arrangement, such as a stack. A retracted arm far from the desk, or an arm stretched out "
    "without touching anything, is not interesting."
)

# SENSEI-General's prompt (its GPT-4 annotator with history): a first turn that shows the environment and asks
# what would be interesting to explore, an answer to it (fixed: SENSEI cached one GPT-4 answer and reused it for
# every pair), then the pair with the 0/1/2/3 answer format of SENSEI's GPT-4 prompt. The fixed answer below is
# this project's own description of Robodesk; SENSEI's cached GPT-4 text can be given as `annotate.context_answer`.
GENERAL_CONTEXT_QUESTION = (
    "I will show you an image from a simulated environment. Describe the environment to me and what you deem the "
    "agent and then explain what types of behavior / observations would be useful and interesting for the agent "
    "to explore in this setting?"
)
GENERAL_CONTEXT_ANSWER = (
    "The image shows a robot arm with a two-finger gripper in front of a desk. On the desk are a ball, an upright "
    "block and a flat block; the desk has a drawer, a sliding door, three buttons (red, green and blue), a bin and "
    "a shelf. The agent is the robot arm: it moves its gripper, turns its wrist and opens or closes its fingers.\n"
    "Behaviours worth exploring: reaching each object and holding it in the gripper; lifting an object off the "
    "desk, carrying it, dropping it into the bin or placing it on the shelf; pushing the ball or the blocks; "
    "pressing each button; pulling the drawer open and sliding the door; stacking one block on the other. States "
    "in which the arm is retracted, far from the desk, or moves through empty space without touching anything "
    "teach the agent little."
)
GENERAL_QUESTION = (
    "Now I will show you two images. Based on your answer, choose which one of these images is more interesting "
    "in terms of the showcased behavior?\nAnswer in maximum one word: 0 for image 1, 1 for image 2, 2 for both "
    "images and 3 if you have no clue."
)

# The follow-up LLaVA study's two-turn prompt (its LLaVA annotator), whitespace normalised: the study's strings
# carry the indentation of source-code continuation lines, which carries no meaning.
STUDY_QUERY = (
    "Consider these two images.\n"
    "1. What is shown in the top (upper) image? Is the robot gripper very close to objects on the desk or the "
    "drawer?\n"
    "2. What is shown on the bottom (lower) image? Is the robot gripper close to objects on the desk or the "
    "drawer?\n"
    "3. The goal is for the robot to explore interesting things and interact with objects and drawers. Is there "
    "any difference between the top and bottom image in terms of how interesting it is? Think step by step and "
    "answer based on what you see. Remember: If the robot arm is retracted or away from the desk, there is no "
    "interaction and it is not interesting. The closer the robot gripper is to objects or the drawer, the more "
    "interesting the image is. Hovering above the desk is not more interesting than actively reaching out to a "
    "certain object."
)
STUDY_FOLLOWUP = (
    "Based on the questions below:\n"
    "1. What is shown in the top (upper) image?\n"
    "2. What is shown on the bottom (lower) image?\n"
    "3. The goal is for the robot to explore interesting things and interact with objects and drawers. Is there "
    "any difference between the top and bottom image in terms of how interesting it is? You answered: {answer} "
    "Is the top or bottom image more interesting? Reply maximum in 1 word top or bottom. Reply -1 if the text is "
    "unsure or there is no difference."
)


@dataclasses.dataclass
class AnnotateConfig:
    """How the `annotate` stage labels pairs: annotator, mode, prompts, pair layout, decision margins, batching."""

    annotator: Literal["llava", "oracle", "random"] = "oracle"
    name: str | None = None  # label set written to preference/preferences_<name>.npy; None: the annotator's name
    # llava: "score": one prefill per ordering, log-probabilities of the two answer tokens (no generation).
    # "study": the follow-up LLaVA study's protocol: the pair stacked vertically (first image on top,
    # `composite_gap` white rows), turn 1 `study_query`, turn 2 `study_followup` quoting the first answer, both
    # generated by sampling (`temperature`, `top_p`, `max_new_tokens`) in the llava_v1 format after
    # `study_system`; the final answer, lower-cased and stripped of punctuation, must be exactly "top" (first),
    # "bottom" (second) or "tie", anything else is unknown. One order, as the study asked: `layout`,
    # `both_orders`, `prompt`, the answers and margins are score-mode settings.
    mode: Literal["score", "study"] = "score"
    # Score mode: "specific" asks `question` (`composite_question`) about the pair; "general" is SENSEI-General's
    # prompt: a context turn (`context_question`, with `context_image` if set, answered by the fixed
    # `context_answer`), then `general_question` about the pair, answered by `general_answers`.
    prompt: Literal["specific", "general"] = "specific"
    layout: Literal["two-images", "composite"] = "two-images"  # two <image> placeholders, or one stacked image
    composite_gap: int = 28  # white pixels between the stacked images (the reference study used 28)
    both_orders: bool = True  # also ask with the images swapped and average, so position bias cancels
    # Score mode: the line before the first turn of the llava_v1 conversation format; "" renders none, as
    # llava-hf's chat template (`USER: ... ASSISTANT:`).
    system: str = ""
    question: str = ROBODESK_CRITERIA + " Answer with one word: first or second."
    answers: tuple[str, str] = (" first", " second")  # each must be a single token after the prompt
    composite_question: str = (ROBODESK_CRITERIA.replace("These images", "The top and the bottom image")
                               + " Answer with one word: top or bottom.")
    composite_answers: tuple[str, str] = (" top", " bottom")
    context_question: str = GENERAL_CONTEXT_QUESTION
    context_answer: str = GENERAL_CONTEXT_ANSWER
    # A PNG shown with the context turn (SENSEI-General showed a Robodesk frame); None: a text-only context turn.
    context_image: str | None = None
    general_question: str = GENERAL_QUESTION
    # Tokens shared by both answers (Llama's lone space before a digit) join the prompt; the rest must be one
    # token each.
    general_answers: tuple[str, str] = (" 0", " 1")
    tie_margin: float = 0.1  # llava: |P(first) - 0.5| below this is a tie (the oracle's: interest.tie_margin)
    min_answer_mass: float = 0.05  # llava: mean probability of the two answer tokens below this: unknown
    study_system: str = LLAVA_V1_SYSTEM  # the study's conversation mode, llava_v1, opens with this line
    study_query: str = STUDY_QUERY
    study_followup: str = STUDY_FOLLOWUP  # {answer}: the first turn's answer
    temperature: float = 0.6  # study mode sampling (the study: 0.6); 0: greedy
    top_p: float = 0.8  # study mode nucleus (the study: 0.8); 1: the whole distribution
    max_new_tokens: int = 1024  # study mode: tokens generated per turn at most (the study: 1024)
    batch_size: int = 8  # pairs per compiled call (llava: rounded up to a multiple of the mesh's data axis)
    # llava: devices that hold one copy of the model, its parameters split over them (tensor parallel); the mesh
    # is (data = all devices / model_parallel, model = model_parallel), pairs split over data. Must divide the
    # device count (and each host's), the attention heads, MLP widths and vocabulary.
    model_parallel: int = 1
    partition_size: int = 256  # pairs per partition file (the unit of resumption)
    seq_bucket: int = 64  # prompt lengths are padded up to a multiple of this (static shapes, one compile)
    seed: int = 0  # random annotator; study mode sampling (each pair's key also folds in a hash of its pixels)

    def __post_init__(self):
        if self.batch_size <= 0 or self.partition_size <= 0 or self.seq_bucket <= 0:
            raise ValueError(f"annotate.batch_size, partition_size and seq_bucket must be positive, got "
                             f"{self.batch_size}, {self.partition_size}, {self.seq_bucket}")
        if not isinstance(self.model_parallel, int) or self.model_parallel < 1:
            raise ValueError(f"annotate.model_parallel must be a positive integer, got {self.model_parallel!r}")
        if not 0.0 <= self.tie_margin < 0.5:
            raise ValueError(f"annotate.tie_margin must be in [0, 0.5), got {self.tie_margin}")
        if not 0.0 <= self.min_answer_mass < 1.0:
            raise ValueError(f"annotate.min_answer_mass must be in [0, 1), got {self.min_answer_mass}")
        if self.composite_gap < 0 or self.max_new_tokens < 1:
            raise ValueError(f"annotate.composite_gap must be >= 0 and annotate.max_new_tokens >= 1, got "
                             f"{self.composite_gap}, {self.max_new_tokens}")
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"annotate.temperature must be >= 0 and annotate.top_p in (0, 1], got "
                             f"{self.temperature}, {self.top_p}")
        if "{answer}" not in self.study_followup:
            raise ValueError(f"annotate.study_followup must contain {{answer}} (where the first turn's answer goes), "
                             f"got {self.study_followup!r}")
        if self.prompt == "general" and self.mode == "study":
            raise ValueError("annotate.prompt: general is a score-mode prompt; annotate.mode: study asks its own "
                             "two-turn prompt (annotate.study_query, annotate.study_followup)")
        if self.prompt == "general" and self.layout == "composite":
            raise ValueError("annotate.prompt: general asks about image 1 and image 2; use annotate.layout: "
                             "two-images with it")

    @property
    def label_name(self) -> str:
        return self.name or self.annotator
