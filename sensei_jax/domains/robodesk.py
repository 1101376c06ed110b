"""Robodesk on MJX-Warp (config section `env`): restorable worlds, SENSEI's interest heuristic, the state oracle."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from sensei_jax.domains.base import Domain
from sensei_jax.envs.robodesk.config import TASKS

# The report's bars: the objects as SENSEI's Robodesk figure groups them (buttons summed).
FIGURE_OBJECTS = (("drawer", ("drawer",)), ("slide", ("slide",)),
                  ("buttons", ("red_button", "green_button", "blue_button")), ("ball", ("ball",)),
                  ("upright block", ("upright_block",)), ("flat block", ("flat_block",)))
# What a collected step stores (`sensei_jax.pipeline.collection` documents each key): besides the common keys, the
# simulator state to restore and the heuristic's inputs, so that pairs are planned without restoring any world.
CHUNK_KEYS = ("image", "state", "interaction", "success", "reward", "done", "episode_step", "distance", "drawer_qpos",
              "stack_error")


class RobodeskDomain(Domain):
    name = "robodesk"
    label = "Robodesk"
    section = "env"
    restorable = True
    uses_warp = True
    env_tools = True
    chunk_keys = CHUNK_KEYS
    interest_keys = ("state", "interaction", "distance", "drawer_qpos", "stack_error")
    figure_objects = FIGURE_OBJECTS
    counted = "steps with object motion"
    exploration_text = "Steps with object motion (|qvel| > 0.02), summed over the run, as the paper counts them."

    def env_key(self, cfg: Any, reward_view: bool, overrides: Mapping[str, Any]) -> Any:
        return [dataclasses.asdict(self._env_config(cfg, reward_view)), dict(overrides)]

    def build_env(self, cfg: Any, reward_view: bool = False, **overrides):
        """Robodesk from `cfg.env` (with `overrides` of `Robodesk.from_config`). It renders its reward view
        (`env.reward_image_size`) only with `reward_view`: the stages that score it ask for it, the others
        (collection, re-rendering, plain DreamerV3) do not pay for a 224x224 render a step."""
        from sensei_jax.envs.robodesk import Robodesk

        return Robodesk.from_config(self._env_config(cfg, reward_view), **overrides)

    @staticmethod
    def _env_config(cfg: Any, reward_view: bool):
        return cfg.env if reward_view else dataclasses.replace(cfg.env, reward_image_size=None)

    def success_names(self, cfg: Any) -> tuple[str, ...]:
        return TASKS

    def frame_size(self, cfg: Any) -> int:
        return int(cfg.env.image_size)

    def reward_view_size(self, cfg: Any) -> int | None:
        """`env.reward_image_size`, or None: without a reward view the model scores obs['image'], resized inside
        the model to reward.image_size."""
        return cfg.env.reward_image_size

    def check(self, cfg: Any) -> str | None:
        view, trained = cfg.env.reward_image_size, cfg.reward.image_size
        if view is not None and view != trained:
            return (f"env.reward_image_size ({view}) and reward.image_size ({trained}) must be equal: the reward "
                    "model scores the env's reward view at the resolution it is trained at")
        return None

    def record(self, env, states) -> dict:
        import jax.numpy as jnp

        from sensei_jax.envs.robodesk import interest
        from sensei_jax.envs.robodesk.tasks import INTERACTIONS

        flags, success = states.info["interaction_flags"], states.info["success"]
        heuristic = interest.features(env.scene(states))  # distance [B, D], drawer_qpos [B], stack_error [B]
        return {
            "image": states.obs["image"].astype(jnp.uint8),
            "state": env.physics_state(states).astype(jnp.float32),
            "interaction": jnp.stack([flags[name] for name in INTERACTIONS], axis=-1).astype(bool),
            "success": jnp.stack([success[name] for name in sorted(success)], axis=-1).astype(bool),
            "reward": states.reward.astype(jnp.float32),
            "done": states.done.astype(bool),
            "episode_step": states.info["episode_step"].astype(jnp.int32),
            "distance": heuristic["distance"],
            "drawer_qpos": heuristic["drawer_qpos"],
            "stack_error": heuristic["stack_error"],
        }

    def collection_meta(self, cfg: Any, env) -> dict[str, Any]:
        from sensei_jax.envs.robodesk import interest
        from sensei_jax.envs.robodesk.tasks import INTERACTIONS

        return {"domain": self.name, "num_envs": cfg.env.num_envs, "interaction_names": list(INTERACTIONS),
                "distance_names": list(interest.TARGETS), "success_names": sorted(TASKS),
                "image_size": cfg.env.image_size, "camera": cfg.env.camera}

    def frame_labels(self, features: Mapping[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
        from sensei_jax.envs.robodesk import interest

        return interest.interest(features, cfg.interest)

    def compare(self, score_first, score_second, cfg: Any):
        from sensei_jax.envs.robodesk import interest

        return interest.compare(score_first, score_second, cfg.interest)

    def oracle_scores(self, cfg: Any, env=None):
        """SENSEI's heuristic on the simulator states behind the images, restored in `env` (built from `cfg.env`
        without rendering when not given)."""
        from sensei_jax.envs.robodesk import Robodesk, interest

        if env is None:
            env = Robodesk.from_config(cfg.env, render_images=False)
        decode = interest.make_state_decoder(env)
        return lambda states: interest.interest(decode(states), cfg.interest)["score"]

    def oracle_fingerprint(self, cfg: Any) -> dict[str, Any]:
        return dataclasses.asdict(cfg.interest)


DOMAIN = RobodeskDomain()
