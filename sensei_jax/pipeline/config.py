"""Config sections of the pipeline's own stages: `collect`, `pairs`, `evaluate`, `report`."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass
class CollectConfig:
    """Exploration rollouts that feed the pair sampler (SENSEI used 3.2M transitions of 4 Plan2Explore runs)."""

    # random: a smooth random walk. p2x: a Plan2Explore (disagreement-only) DreamerV3 agent that trains while it
    # collects, as SENSEI's data came from; its network, ensemble and schedule (prefill, train ratio, batch, replay,
    # log_every) come from the `dreamer` and `explore` sections, one loop collection call per chunk; its first
    # explore.prefill env steps (all worlds together) take uniform random actions, as in the explore stage.
    policy: Literal["random", "p2x"] = "random"
    steps: int = 2_000  # policy steps per world; total transitions = steps * env.num_envs
    chunk_steps: int = 250  # policy steps per world in one chunk file (the unit of resumption)
    # Random policy: a smooth random walk, so the arm travels instead of jittering in place. Each step the action
    # moves towards a fresh uniform sample by this fraction (1.0 = independent uniform actions).
    action_smoothing: float = 0.3

    def __post_init__(self):
        if self.steps <= 0 or self.chunk_steps <= 0:
            raise ValueError(f"collect.steps and collect.chunk_steps must be positive, got {self.steps}, "
                             f"{self.chunk_steps}")
        if not 0.0 < self.action_smoothing <= 1.0:
            raise ValueError(f"collect.action_smoothing must be in (0, 1], got {self.action_smoothing}")


@dataclasses.dataclass
class PairsConfig:
    """Pair sampling (SENSEI's contrastive heuristic and/or uniform pairs) and re-rendering for the annotator.
    The heuristic's thresholds are the `interest` section (envs/robodesk/config.py)."""

    contrastive: int = 256  # (interesting, uninteresting) pairs, the interesting frame in a random slot
    uniform: int = 0  # uniformly random pairs (ground truth from the interestingness score)
    image_size: int | None = None  # re-render resolution; None: the annotator's (vlm.image_size) or the env's
    camera: str | None = None  # re-render camera; None: the env's camera ("right", as SENSEI)
    # A second view of every pair (SENSEI's GPT-4 set: "left"), rendered into pairs/views/<camera>/; the annotate
    # stage labels both views and keeps a label only where the two views agree (else unknown), as SENSEI kept the
    # pairs whose left- and right-view labels agreed. Doubles rendering and annotation. None: one view.
    second_camera: str | None = None
    # With tiny collections the strict classes can be empty; fall back to the top/bottom quantile of the score.
    fallback_quantile: float = 0.2
    render_batch: int = 32

    def __post_init__(self):
        if self.contrastive < 0 or self.uniform < 0 or self.contrastive + self.uniform == 0:
            raise ValueError(f"pairs.contrastive + pairs.uniform must be positive, got {self.contrastive}, "
                             f"{self.uniform}")
        if not 0.0 < self.fallback_quantile < 0.5:
            raise ValueError(f"pairs.fallback_quantile must be in (0, 0.5), got {self.fallback_quantile}")


@dataclasses.dataclass
class EvaluateConfig:
    """Counts over the exploration runs, plus an optional downstream-transfer evaluation."""

    transfer: bool = False  # also train a task policy from the SENSEI checkpoint (the `transfer` stage)
    transfer_task: str = "open_drawer"


@dataclasses.dataclass
class ReportConfig:
    strip_frames: int = 8  # frames in the strip of the most interesting episode
    strip_episodes: int = 3
    dpi: int = 110
