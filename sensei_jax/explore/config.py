"""Configuration of SENSEI exploration (the `explore` section of a run config).

Kept free of JAX imports so that reading a config stays fast. Defaults are SENSEI's Robodesk settings
(`robodesk_sensei` in the reference): Plan2Explore ensemble of 8 MLPs of 3x640, semantic reward clipped to +-200,
go/explore switch at the 0.75 quantile of the semantic reward, weights go {semantic 1, disagreement 0} and explore
{semantic 0.1, disagreement 1}. The data and update schedule (batch, train ratio, replay, prefill, intervals) is
not here: an exploration runs the DreamerV3 loop on the `train` section's schedule, as the `train` command does
(`sensei_jax.dreamer.train_config`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

SOURCES = ("semantic", "disagreement")


@dataclasses.dataclass
class ExploreConfig:
    # sensei: semantic + disagreement with the go/explore switch; p2x: disagreement only; motif: semantic only.
    behaviour: Literal["sensei", "p2x", "motif"] = "sensei"
    steps: int = 250_000  # policy steps of exploration (SENSEI's runs: 250K, i.e. 500K env steps at repeat 2)
    reward_model: str | None = None  # directory of the distilled reward model; the pipeline uses <run>/distill
    semantic_clip: float = 200.0  # the raw reward-model output is clipped to [-clip, clip], as SENSEI does
    semantic_head_scale: float = 1.0  # loss scale of the semantic head (trained on stop-gradient features)
    # Sparse success heads learned during exploration, for downstream transfer. SENSEI's 12 `rew_*` heads replace
    # push_red, push_blue and lift_flat_block by upright_block_off_table, flat_block_in_bin, flat_block_in_shelf
    # (set in configs/robodesk_sensei.yaml).
    task_heads: tuple[str, ...] = ("open_drawer", "open_drawer_medium", "open_drawer_easy", "open_slide",
                                   "open_slide_easy", "push_red", "push_green", "push_blue", "lift_upright_block",
                                   "lift_ball", "lift_flat_block", "stack")
    task_head_scale: float = 1.0  # loss scale of the sparse task-success heads (stop-gradient features)

    # Plan2Explore disagreement ensemble (SENSEI: 8 MLPs of 3x640, Adam lr 1e-4, eps 1e-5, clip 100).
    ensemble_size: int = 8
    ensemble_units: int = 640
    ensemble_layers: int = 3
    ensemble_lr: float = 1e-4
    ensemble_eps: float = 1e-5
    ensemble_clip: float = 100.0
    # Which transition's disagreement rewards arriving in imagined state s_{t+1}. `incoming`: the one that led there,
    # std at (s_t, a_t). `outgoing` (the reference's `Disag`, whose per-state std is taken `[1:]`): the one the
    # policy takes next, std at (s_{t+1}, a_{t+1}).
    disagreement_alignment: Literal["incoming", "outgoing"] = "incoming"

    # The go/explore switch. `paper`: per imagined state, the semantic reward against the EMA of its k-th quantile.
    # `code`: the reference code's form, the semantic lambda-return against max(1, EMA(P_k) - EMA(P_low)).
    threshold: Literal["paper", "code"] = "paper"
    # Which semantic reward the `paper` form compares, for the weights of imagined step t (the action taken in
    # state s_t). `state`: the reward of s_t itself, so a state is "interesting" when it is, and the step that
    # enters an interesting state is still a go step, credited by the semantic critic. `next`: r_{t+1}, the reward
    # of the state the step leads into; the step into an interesting state is then weighted as exploration (0.1
    # semantic), and a go-mode agent climbs to the threshold but is not paid for crossing it
    # (docs/exploration.md measures the difference).
    mode_reward: Literal["state", "next"] = "state"
    quantile: float = 0.75  # k; SENSEI uses 0.75 for Robodesk
    low_quantile: float = 0.05  # only used by the `code` form
    threshold_decay: float = 0.99  # EMA decay of the quantile estimates
    code_min_threshold: float = 1.0  # the `code` form's floor, max(1, ...)
    go_weights: tuple[float, float] = (1.0, 0.0)  # (semantic, disagreement) where semantic < threshold
    explore_weights: tuple[float, float] = (0.1, 1.0)  # (semantic, disagreement) where semantic >= threshold
    # The actor's advantage is sum_k w_k * adv_k / denominator. The reference divides by a fixed 1.1 (the sum of
    # its configured scales); None uses the sum of `explore_weights`.
    advantage_denominator: float | None = None

    # Downstream transfer (task policy trained in imagination on a task head of an exploration checkpoint).
    transfer_steps: int = 10_000
    transfer_eval_episodes: int = 10

    def __post_init__(self):
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"explore.quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 <= self.low_quantile < self.quantile:
            raise ValueError(f"explore.low_quantile must be in [0, quantile), got {self.low_quantile}")
        if not 0.0 <= self.threshold_decay < 1.0:
            raise ValueError(f"explore.threshold_decay must be in [0, 1), got {self.threshold_decay}")
        if self.ensemble_size < 2:
            raise ValueError(f"explore.ensemble_size must be >= 2 to measure disagreement, got {self.ensemble_size}")
        if self.semantic_clip <= 0:
            raise ValueError(f"explore.semantic_clip must be positive, got {self.semantic_clip}")
        if self.steps < 0:
            raise ValueError(f"explore.steps must be >= 0, got {self.steps}")
        if self.mode_reward not in ("state", "next"):
            raise ValueError(f"explore.mode_reward must be 'state' or 'next', got {self.mode_reward!r}")
        if self.advantage_denominator is not None and self.advantage_denominator <= 0:
            raise ValueError(f"explore.advantage_denominator must be positive, got {self.advantage_denominator}")

    @property
    def sources(self) -> tuple[str, ...]:
        """The intrinsic reward sources this behaviour optimizes, each with its own critic."""
        return {"sensei": SOURCES, "p2x": ("disagreement",), "motif": ("semantic",)}[self.behaviour]
