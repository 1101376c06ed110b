"""Config sections of the Robodesk package: `env` (the environment) and `interest` (SENSEI's heuristic).

No jax import at module level: `sensei_jax.config` composes these into `Config` at start-up.
"""

from __future__ import annotations

import dataclasses

# The names a config may name, here rather than in `tasks` (which re-exports them) so that validating a config
# does not import jax.
CORE_TASKS = ("open_slide", "open_drawer", "push_green", "stack", "upright_block_off_table", "flat_block_in_bin",
              "flat_block_in_shelf", "lift_upright_block", "lift_ball")
EXTRA_TASKS = ("push_blue", "push_red", "flat_block_off_table", "ball_off_table", "upright_block_in_bin",
               "ball_in_bin", "upright_block_in_shelf", "ball_in_shelf", "lift_flat_block")
SENSEI_TASKS = ("open_drawer_easy", "open_drawer_medium", "open_slide_easy")
TASKS = CORE_TASKS + EXTRA_TASKS + SENSEI_TASKS
REWARD_MODES = ("dense", "sparse", "success")
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


@dataclasses.dataclass
class InterestConfig:
    """Thresholds of SENSEI's heuristic for an interesting Robodesk state (the `interest` section), in metres.

    Read by pair sampling (the good/bad classes and the uniform pairs' ground truth), the oracle annotator and the
    report; the heuristic itself is `sensei_jax.envs.robodesk.interest`. What counts as an object moving is the
    env's own interaction test (`tasks.INTERACTION_VELOCITY`), not a threshold here.
    """

    near_distance: float = 0.145  # gripper this close to the ball, a block or a handle: interesting
    very_near_distance: float = 0.122  # "very good": interesting and the closest target nearer than this
    far_mean_distance: float = 0.65  # "very bad": not interesting, the mean target distance above this ...
    far_min_distance: float = 0.45  # ... and the closest target farther than this
    drawer_open: float = -0.18  # drawer joint below this: open
    stack_distance: float = 0.04  # upright block within this of "stacked on the flat block"
    # Two states whose scores differ by less than this tie. Between two uninteresting states only the gripper's
    # proximity term differs, so a small margin still ranks "closer to a target" higher.
    tie_margin: float = 0.01
    temperature: float = 0.1  # P(first preferred) = sigmoid(score difference / temperature)

    def __post_init__(self):
        for key in ("near_distance", "very_near_distance", "far_mean_distance", "far_min_distance",
                    "stack_distance", "temperature"):
            if getattr(self, key) <= 0:
                raise ValueError(f"interest.{key} must be positive, got {getattr(self, key)}")
        if self.tie_margin < 0:
            raise ValueError(f"interest.tie_margin must be >= 0, got {self.tie_margin}")
