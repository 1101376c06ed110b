"""MiniHack on host worker processes (config section `minihack`): worlds that cannot be restored, so frames are
stored at the native crop the annotator sees, with the task heuristic's features instead of a simulator state."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import numpy as np

from sensei_jax.domains.base import StoredStateDomain


class MiniHackDomain(StoredStateDomain):
    name = "minihack"
    label = "MiniHack"
    section = "minihack"
    episode_measure = True
    exploration_text = ("Steps in which each flag held, summed over the run; the return is the env's reward, which "
                        "the agent never sees.")

    def describe(self, cfg: Any, markdown: bool = False) -> str:
        task = f"`{cfg.minihack.task}`" if markdown else cfg.minihack.task
        return f"MiniHack {task}"

    def env_key(self, cfg: Any, reward_view: bool, overrides: Mapping[str, Any]) -> Any:
        # Its reward view is the native crop, which every step produces anyway: one env serves both uses.
        return json.dumps(["minihack", dataclasses.asdict(cfg.minihack), cfg.run.seed], sort_keys=True)

    def build_env(self, cfg: Any, reward_view: bool = False, **overrides):
        """MiniHack from `cfg.minihack`; its worker processes start here and stay up for the process's later
        stages."""
        from sensei_jax.envs.minihack import MiniHack

        return MiniHack.from_config(cfg.minihack, seed=cfg.run.seed)

    def success_names(self, cfg: Any) -> tuple[str, ...]:
        from sensei_jax.envs.minihack.tasks import SUCCESSES

        return SUCCESSES[cfg.minihack.task]

    def reward_view_size(self, cfg: Any) -> int:
        return cfg.minihack.reward_image_size

    def check(self, cfg: Any) -> str | None:
        native = cfg.minihack.reward_image_size
        if cfg.reward.image_size != native:
            return (f"reward.image_size ({cfg.reward.image_size}) must be {native} with run.domain minihack: the "
                    f"reward model scores the native {native}x{native} crop (minihack.crop {cfg.minihack.crop} "
                    "tiles of 16 px)")
        return None

    def record(self, env, states) -> dict:
        """The 80x80 crop the annotator sees and the oracle's features instead of a simulator state, which NetHack
        cannot restore."""
        import jax.numpy as jnp

        flags, success = states.info["interaction_flags"], states.info["success"]
        num = states.reward.shape[0]
        return {
            "image": states.obs["reward_image"].astype(jnp.uint8),
            "state": states.info["features"].astype(jnp.float32),
            # Sorted, as meta.json names them: the info dict keeps the env's order here, inside the traced step,
            # but comes back key-sorted from any pytree round trip (e.g. `jax.eval_shape`).
            "interaction": jnp.stack([flags[name] for name in sorted(flags)], axis=-1).astype(bool),
            "success": jnp.stack([success[name] for name in sorted(success)], axis=-1).astype(bool)
            if success else jnp.zeros((num, 0), bool),
            "reward": states.reward.astype(jnp.float32),
            "done": states.done.astype(bool),
            "episode_step": states.info["episode_step"].astype(jnp.int32),
        }

    def collection_meta(self, cfg: Any, env) -> dict[str, Any]:
        return {**super().collection_meta(cfg, env), "task": cfg.minihack.task, "camera": "crop"}

    def random_actions(self, key, num_envs: int, action_size: int):
        """Uniform discrete actions, one-hot."""
        import jax

        return jax.nn.one_hot(jax.random.randint(key, (num_envs,), 0, action_size), action_size)

    def frame_labels(self, features: Mapping[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
        from sensei_jax.envs.minihack import tasks

        return tasks.frame_classes(np.asarray(features["state"]), cfg.minihack.task)

    def frame_scores(self, states: np.ndarray, cfg: Any) -> np.ndarray:
        from sensei_jax.envs.minihack import tasks

        return np.asarray(tasks.interest_score(states, cfg.minihack.task))

    def compare(self, score_first, score_second, cfg: Any):
        from sensei_jax.envs.minihack import tasks

        return tasks.compare(score_first, score_second)

    def oracle_fingerprint(self, cfg: Any) -> dict[str, Any]:
        return {"minihack_task": cfg.minihack.task}


DOMAIN = MiniHackDomain()
