"""Configuration of the Robodesk environment (the `env` section of a run config)."""

from __future__ import annotations

import dataclasses

# The observation of the reward view (`reward_image_size`): what the reward model scores during exploration.
REWARD_IMAGE_KEY = "reward_image"


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
    contacts_per_world: int = 64  # MJX-Warp contact budget per world (naconmax = this x num_envs)
    constraints_per_world: int = 256  # MJX-Warp constraint rows per world (njmax)
    ik_iterations: int = 4  # damped Gauss-Newton iterations of the end-effector position IK
    solver_iterations: int = 20  # MuJoCo Newton solver iterations (Robodesk: 100); each costs kernel launches
    ls_iterations: int = 10  # its line-search iterations (Robodesk: 50)
    cameras: dict[str, int] = dataclasses.field(default_factory=dict)  # extra views per step: obs image_<camera>
    shadows: bool = False  # shadows in the Warp ray tracer (Robodesk's OpenGL view has them; costs render time)
    # The reward view: with a size, every step also renders `reward_camera` at reward_image_size x reward_image_size
    # as obs['reward_image'] (uint8), and the explore stage's reward model scores it instead of the agent's image,
    # as SENSEI scores its 224x224 'right' render (`hr_image`). Must equal reward.image_size. Neither the world model
    # (unless dreamer.encoder_keys/decoder_keys name it) nor the replay sees it. None: the reward model scores
    # obs['image'] (resized inside the model to reward.image_size). SENSEI configs: right, 224.
    reward_camera: str = "right"
    reward_image_size: int | None = None

    def __post_init__(self):
        from sensei_jax.envs.robodesk.tasks import REWARD_MODES, TASKS  # local: tasks imports jax

        if self.task not in TASKS:
            raise ValueError(f"env.task: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.reward not in REWARD_MODES:
            raise ValueError(f"env.reward: {self.reward!r} is not one of {REWARD_MODES}")
        if self.camera not in ("top", "right", "left"):
            raise ValueError(f"env.camera: {self.camera!r} is not one of top, right, left")
        if self.reward_camera not in ("top", "right", "left"):
            raise ValueError(f"env.reward_camera: {self.reward_camera!r} is not one of top, right, left")
        if self.reward_image_size is not None and not 8 <= self.reward_image_size <= 1024:
            raise ValueError(f"env.reward_image_size: {self.reward_image_size} is not in [8, 1024]")
        for name, size in self.cameras.items():
            if name not in ("top", "right", "left") or not isinstance(size, int) or not 8 <= size <= 1024:
                raise ValueError(f"env.cameras: {name!r}: {size!r} must map top/right/left to a size in [8, 1024]")
        for key in ("image_size", "action_repeat", "episode_length", "num_envs", "contacts_per_world",
                    "constraints_per_world", "ik_iterations", "solver_iterations", "ls_iterations"):
            if getattr(self, key) < 1:
                raise ValueError(f"env.{key} must be >= 1, got {getattr(self, key)}")
