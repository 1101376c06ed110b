"""The toy domain (config section `toy`): `CornerReach`, a point mass on [-1, 1]^2 whose preferred feature is the
top-right corner. Pure JAX and tiny, so the whole pipeline (collect -> pairs -> oracle annotate -> distill ->
explore -> evaluate -> report) runs in seconds on a CPU: the fast end-to-end path of the tests, and the smallest
example of a domain (docs/architecture.md).

A collected frame's `state` is the agent's position [x, y]; the heuristic scores a frame by x + y, so the oracle
prefers the frame nearer the corner, a tie within `toy.tie_margin`. The reward model scores the agent's `image`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sensei_jax.domains.base import StoredStateDomain


class ToyDomain(StoredStateDomain):
    name = "toy"
    label = "Toy corner"
    section = "toy"
    exploration_text = "Steps with the agent in the top-right corner region (`corner`), summed over the run."

    def build_env(self, cfg: Any, reward_view: bool = False, **overrides):
        from sensei_jax.envs.toy import CornerReach

        toy = cfg.toy
        return CornerReach(image_size=toy.image_size, episode_length=toy.episode_length,
                           fixed_target=tuple(toy.fixed_target), action_scale=toy.action_scale, corner=toy.corner)

    def success_names(self, cfg: Any) -> tuple[str, ...]:
        return ("reach",)

    def record(self, env, states) -> dict:
        import jax.numpy as jnp

        flags, success = states.info["interaction_flags"], states.info["success"]
        return {
            "image": states.obs["image"].astype(jnp.uint8),
            "state": states.position.astype(jnp.float32),
            "interaction": jnp.stack([flags[name] for name in sorted(flags)], axis=-1).astype(bool),
            "success": jnp.stack([success[name] for name in sorted(success)], axis=-1).astype(bool),
            "reward": states.reward.astype(jnp.float32),
            "done": states.done.astype(bool),
            "episode_step": states.info["episode_step"].astype(jnp.int32),
        }

    def frame_labels(self, features: Mapping[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
        """`good`: in the corner region; `bad`: on the far side of the anti-diagonal (x + y < 0)."""
        position = np.asarray(features["state"], np.float32)
        score = self.frame_scores(position, cfg)
        return {"score": score, "good": (position > cfg.toy.corner).all(-1), "bad": score < 0.0}

    def frame_scores(self, states: np.ndarray, cfg: Any) -> np.ndarray:
        return np.asarray(states, np.float32)[..., :2].sum(-1)

    def compare(self, score_first, score_second, cfg: Any):
        from sensei_jax.reward.labels import Label

        gap = np.asarray(score_first, np.float32) - np.asarray(score_second, np.float32)
        label = np.where(np.abs(gap) < cfg.toy.tie_margin, Label.TIE, np.where(gap > 0, Label.FIRST, Label.SECOND))
        prob = np.where(label == Label.FIRST, 1.0, np.where(label == Label.SECOND, 0.0, 0.5))
        return prob.astype(np.float32), label.astype(np.int8)


DOMAIN = ToyDomain()
