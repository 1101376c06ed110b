"""Configuration of the DreamerV3 training loop (the `train` section of a run config).

Kept free of JAX imports so that reading a config stays fast. Step counts are env (policy) steps summed over all
parallel envs, as the reference counts them; `train_ratio` is replayed steps per env step (SENSEI: 512), so the
number of updates per env step is train_ratio / (batch_size * batch_length).

This section is the one data and update schedule of every command that runs the loop: `train` (plain DreamerV3)
and `explore` / `baseline` / a Plan2Explore `collect` (the Explorer) read the same keys, `SCHEDULE_KEYS`. What an
exploration sets itself is its budget (`explore.steps`), its worlds (the env section's), the stored observations,
the exploring policy, no stored final observation (its envs reset themselves), no videos and one kept checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# The keys of the data and update schedule: what `train` and `explore` both read from this section, and what a
# downstream transfer takes over from the exploration it starts from.
SCHEDULE_KEYS = ("train_ratio", "batch_size", "batch_length", "replay_context", "replay_capacity", "replay_recency",
                 "train_start", "random_steps", "collect_steps", "log_every", "save_every")


@dataclasses.dataclass
class TrainConfig:
    env: Literal["robodesk", "point_reach"] = "robodesk"  # point_reach: the pure-JAX toy env (sanity runs, tests)
    steps: int = 250_000  # env steps in total, over all envs
    num_envs: int = 16
    train_ratio: float = 512.0
    batch_size: int = 16
    batch_length: int = 64
    # Leading steps of each sampled window that only supply the stored latent carry (1, the 2024 reference), or 0:
    # no latent is stored and every window starts from the agent's initial state (the 2023 reference and SENSEI,
    # whose replay marks the first step of every sampled window as is_first).
    replay_context: int = 1
    replay_capacity: int = 1_000_000  # env steps kept (FIFO), over all envs
    replay_recency: float = 0.0  # fraction of each batch sampled with p ~ 1/age instead of uniformly
    train_start: int = 1024  # env steps collected before the first update (at least one window per env)
    collect_steps: int = 1  # vectorized env steps per compiled collection call (one lax.scan)
    obs_keys: tuple[str, ...] = ()  # env observations given to the agent and stored; empty: all of them
    policy_mode: Literal["explore", "eval"] = "explore"
    random_steps: int = 0  # env steps at the start taken with uniform random actions in [-1, 1] (prefill)
    # True: a finished world's final observation is stored (is_last) and the world restarts on the next step (the
    # env must not reset itself). False: it restarts within the step that ended the episode, so the final
    # observation is neither stored nor acted on (for envs that reset themselves, e.g. Robodesk's auto_reset).
    store_final_obs: bool = True
    precision: Literal["float32", "bfloat16"] | None = None  # compute dtype handed to the agent; None: dreamer's

    log_every: int = 2_500  # env steps between metric rows
    save_every: int = 25_000  # env steps between checkpoints (also saved at the end)
    video_every: int = 0  # env steps between open-loop prediction videos (0: never)
    video_sequences: int = 4
    keep_checkpoints: int = 2
    progress: bool = True

    # Devices to spread the worlds, the replay and the batches over: the first `devices` of `jax.devices()`, which
    # lists every process's devices in a multi-process job (0: all of them; a job of several processes uses all).
    devices: int = 0

    def __post_init__(self):
        for name in ("steps", "num_envs", "batch_size", "batch_length", "replay_capacity", "collect_steps",
                     "log_every", "save_every", "video_sequences", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.train_ratio <= 0:
            raise ValueError(f"train.train_ratio must be positive, got {self.train_ratio}")
        if self.replay_context not in (0, 1):
            raise ValueError(f"train.replay_context must be 0 or 1, got {self.replay_context}")
        if not 0.0 <= self.replay_recency <= 1.0:
            raise ValueError(f"train.replay_recency must be in [0, 1], got {self.replay_recency}")
        if self.video_every < 0 or self.devices < 0 or self.train_start < 0 or self.random_steps < 0:
            raise ValueError("train.video_every, train.devices, train.train_start and train.random_steps must be >= 0")

    def check_replay(self) -> None:
        """Raises ValueError, naming the keys, unless the replay holds one sampled window per world of the `train`
        command (`train.num_envs`). Not checked on reading the section: an exploration runs its own world count
        and sizes its replay for them (`sensei_jax.explore.explorer.train_config`)."""
        per_env = self.replay_capacity // self.num_envs
        if per_env < self.sequence_length:
            raise ValueError(f"train.replay_capacity {self.replay_capacity} gives {per_env} steps per env over "
                             f"train.num_envs {self.num_envs}, fewer than batch_length + replay_context = "
                             f"{self.sequence_length}")

    @property
    def sequence_length(self) -> int:
        return self.batch_length + self.replay_context
