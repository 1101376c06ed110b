"""Config section of the MiniHack package: `minihack` (the task, the number of worlds, the views, the workers).

No jax and no nle import: `sensei_jax.config` composes this into `Config` at start-up.
"""

from __future__ import annotations

import dataclasses

MINIHACK_TASKS = ("keyroom", "keychest")
# NetHack tiles are 16 x 16 px: a crop of `crop` tiles renders natively at crop * 16 px (the reward/annotator view).
TILE_PIXELS = 16


@dataclasses.dataclass
class MiniHackConfig:
    task: str = "keyroom"
    num_envs: int = 8
    image_size: int = 64  # the agent's view: the egocentric crop resized to this (nearest pixel)
    crop: int = 5  # tiles of the egocentric crop; 16 px per tile -> the 80 x 80 reward/annotator view
    episode_length: int = 0  # 0: the task's own (KeyRoom 600, KeyChest 800, per the authors)
    workers: int = 0  # worker processes (0: one per CPU core, at most num_envs)

    def __post_init__(self):
        if self.task not in MINIHACK_TASKS:
            raise ValueError(f"minihack.task: unknown task {self.task!r}; known: {', '.join(MINIHACK_TASKS)}")
        for key, low in (("num_envs", 1), ("image_size", 8), ("crop", 1), ("episode_length", 0), ("workers", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"minihack.{key} must be an integer >= {low}, got {value!r}")
        if self.image_size > 1024:
            raise ValueError(f"minihack.image_size must be <= 1024, got {self.image_size}")
        if self.crop % 2 != 1:
            # MiniHack centres the crop on the agent, so it needs an odd number of tiles.
            raise ValueError(f"minihack.crop must be odd (the agent sits at its centre), got {self.crop}")

    @property
    def reward_image_size(self) -> int:
        """Side in pixels of the native crop (`reward_image`): crop tiles of 16 px."""
        return self.crop * TILE_PIXELS
