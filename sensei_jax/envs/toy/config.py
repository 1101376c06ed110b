"""Configuration of the toy domain's env (the `toy` section of a run config): `CornerReach`, a point mass whose
preferred feature is the top-right corner region. Kept free of JAX imports so that reading a config stays fast.

The defaults are those of the toy seeds benchmark (`benchmarks/sensei_effect.py --toy`): 16 px frames, 32-step
episodes, the target fixed at (-0.5, -0.5), away from the corner, so that a reward for reaching the target and
the corner's semantic reward pull apart.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ToyConfig:
    num_envs: int = 4
    image_size: int = 16  # side of the rendered frame (agent and target blobs)
    episode_length: int = 32
    corner: float = 0.4  # the `corner` flag holds where both coordinates exceed this
    fixed_target: tuple[float, float] = (-0.5, -0.5)
    action_scale: float = 0.4  # the largest displacement per step along each axis
    # Ground truth of a pair: the frame nearer the top-right corner (larger x + y) is preferred, a tie within this.
    tie_margin: float = 0.05

    def __post_init__(self):
        for key, low in (("num_envs", 1), ("image_size", 8), ("episode_length", 1)):
            if getattr(self, key) < low:
                raise ValueError(f"toy.{key} must be >= {low}, got {getattr(self, key)}")
        if not -1.0 < self.corner < 1.0:
            raise ValueError(f"toy.corner must be in (-1, 1), got {self.corner}")
        if self.action_scale <= 0 or self.tie_margin < 0:
            raise ValueError(f"toy.action_scale must be positive and toy.tie_margin >= 0, got {self.action_scale}, "
                             f"{self.tie_margin}")
        if len(self.fixed_target) != 2:
            raise ValueError(f"toy.fixed_target must be two numbers, got {list(self.fixed_target)}")
