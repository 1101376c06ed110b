"""Configuration of the Robodesk environment (the `env` section of a run config)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RobodeskConfig:
    task: str = "open_drawer"
    reward: str = "dense"  # dense | sparse | success
    camera: str = "right"  # top | right | left; SENSEI's agent sees the 'right' view
    image_size: int = 64
    action_repeat: int = 2  # SENSEI: 2 (episode of 500 sim steps = 250 agent steps)
    episode_length: int = 500  # in simulator control steps, as Robodesk counts them
    num_envs: int = 4
    auto_reset: bool = True
    assets_dir: str | None = None  # local Robodesk assets; default: provisioned from the robodesk sdist
