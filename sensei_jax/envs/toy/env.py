"""Small pure-JAX test environments with the same functional API as the Robodesk env.

`PointReach` is a point mass on the plane [-1, 1]^2 that must reach a target. It renders an RGB image (the agent a
red blob, the target a green one) and also exposes vector observations, so it exercises both the CNN and the MLP
encoders of the agent. Stepping costs microseconds, which makes it the sanity env for the training loop and the
environment of the loop's learning tests.

It satisfies `sensei_jax.envs.Env` (see `sensei_jax.envs.protocol`), and `reset`/`step` also work on one world
without a batch axis. `info` holds `episode_step`, `success` and `is_terminal`; the env never resets itself.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ToyState:
    position: jax.Array  # f32 [2]
    target: jax.Array  # f32 [2]
    obs: dict[str, jax.Array]
    reward: jax.Array  # f32 []
    done: jax.Array  # bool []
    info: dict[str, Any]


class PointReach:
    """Reach a target with a point mass whose velocity is the action.

    Args:
      image_size: side of the rendered square image (16 is enough to see both blobs; 64 matches Robodesk).
      episode_length: steps until `done` (a time limit, so `is_terminal` stays False).
      random_target: a new target every episode (given in `obs['target']` and visible in the image); otherwise the
        target sits at `fixed_target`.
      action_scale: the largest displacement per step along each axis.
      success_radius: distance below which the step counts as a success; the reward is 1 - distance / 2, plus 1
        inside the radius, so it is in [~-0.4, 2].
    """

    action_size = 2

    def __init__(self, image_size: int = 16, episode_length: int = 16, random_target: bool = False,
                 fixed_target: tuple[float, float] = (0.5, 0.5), action_scale: float = 0.4,
                 success_radius: float = 0.2):
        if image_size < 8:
            raise ValueError(f"PointReach image_size must be at least 8, got {image_size}")
        if episode_length < 1:
            raise ValueError(f"PointReach episode_length must be positive, got {episode_length}")
        self.image_size = image_size
        self.episode_length = episode_length
        self.random_target = random_target
        self.fixed_target = jnp.asarray(fixed_target, jnp.float32)
        self.action_scale = action_scale
        self.success_radius = success_radius

    def reset(self, key: jax.Array) -> ToyState:
        pos_key, target_key = jax.random.split(key)
        position = jax.random.uniform(pos_key, (2,), jnp.float32, -0.9, 0.9)
        if self.random_target:
            target = jax.random.uniform(target_key, (2,), jnp.float32, -0.8, 0.8)
        else:
            target = self.fixed_target
        step = jnp.zeros((), jnp.int32)
        return ToyState(position=position, target=target, obs=self._obs(position, target),
                        reward=jnp.zeros((), jnp.float32), done=jnp.zeros((), bool),
                        info=self._info(position, target, step))

    def reset_batch(self, key: jax.Array, n: int) -> ToyState:
        return self.reset_worlds(jax.random.split(key, n))

    def reset_worlds(self, keys: jax.Array) -> ToyState:
        """Fresh worlds, one per key of `keys` [N]: world i depends on keys[i] alone."""
        return jax.vmap(self.reset)(keys)

    def step(self, state: ToyState, action: jax.Array) -> ToyState:
        """action: f32 [2] for one world, or [N, 2] for a batch from `reset_batch`; clipped to [-1, 1]."""
        if jnp.ndim(action) == 2:
            return jax.vmap(self.step)(state, action)
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        position = jnp.clip(state.position + self.action_scale * action, -1.0, 1.0)
        step = state.info["episode_step"] + 1
        distance = jnp.linalg.norm(position - state.target)
        reward = 1.0 - distance / 2.0 + (distance < self.success_radius).astype(jnp.float32)
        return ToyState(position=position, target=state.target, obs=self._obs(position, state.target),
                        reward=reward.astype(jnp.float32), done=step >= self.episode_length,
                        info=self._info(position, state.target, step))

    def observation_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
        return jax.eval_shape(self.reset, jax.random.key(0)).obs

    def render(self, state: ToyState, size: int | None = None) -> jax.Array:
        return self._render(state.position, state.target, size or self.image_size)

    # ------------------------------------------------------------------------------------------------------------

    def _obs(self, position: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
        return {"image": self._render(position, target, self.image_size), "position": position, "target": target}

    def _info(self, position: jax.Array, target: jax.Array, step: jax.Array) -> dict[str, Any]:
        success = jnp.linalg.norm(position - target) < self.success_radius
        return {"episode_step": step, "success": {"reach": success}, "is_terminal": jnp.zeros((), bool)}

    @staticmethod
    def _render(position: jax.Array, target: jax.Array, size: int) -> jax.Array:
        """uint8 [size, size, 3]: Gaussian blobs, red at the agent, green at the target, on a dark blue floor."""
        coords = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2.0 - 1.0
        grid = jnp.stack(jnp.meshgrid(coords, -coords, indexing="xy"), -1)  # [H, W, 2], y up
        width = 2.0 * (2.0 / size) ** 2 * 2.0

        def blob(center):
            return jnp.exp(-jnp.sum((grid - center) ** 2, -1) / width)

        agent, goal = blob(position), blob(target)
        image = jnp.stack([agent, goal, 0.25 * (1.0 - jnp.maximum(agent, goal))], -1)
        return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8)


class CornerReach(PointReach):
    """PointReach whose info carries one interaction flag, `corner`: the agent is in the top-right corner region
    (both coordinates above `corner`). The preferred feature of SENSEI's toy experiment (benchmarks/sensei_effect.py):
    a reward model distilled from frames labelled "nearer the top-right corner is better" should draw the agent
    there; the target stays where it is and plays no part in it."""

    def __init__(self, *args, corner: float = 0.4, **kwargs):
        super().__init__(*args, **kwargs)
        self.corner = corner

    def _info(self, position: jax.Array, target: jax.Array, step: jax.Array) -> dict[str, Any]:
        info = super()._info(position, target, step)
        inside = (position[0] > self.corner) & (position[1] > self.corner)
        return {**info, "interaction_flags": {"corner": inside}}
