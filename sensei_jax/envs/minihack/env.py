"""MiniHack (KeyRoom, KeyChest) behind the env contract, its worlds stepped on the host by a `WorkerPool`.

    env = MiniHack.from_config(MiniHackConfig(task="keyroom", num_envs=8))
    state = jax.jit(env.reset_batch, static_argnums=1)(key, 8)     # leaves [8, ...]
    state = jax.jit(env.step)(state, one_hot_actions)              # float32 [8, 9]; argmax taken
    env.close()

NetHack cannot run inside XLA, so `reset_worlds` and `step` call the worker pool through
`jax.experimental.io_callback` (unordered): the caller's program stays one compiled program (policy, reward model
and replay writes included), and each call is one batched message per worker. Inside `shard_map` every device's
block calls back with its own worlds (the `world` indices in the state say which). The same methods work eagerly.

The state (`MiniHackState`, leaves [N, ...]):
  obs: image uint8 [N, S, S, 3] (the 5x5-tile egocentric crop, resized to S = image_size), inventory float32 [N, 1]
    (the key is in the inventory), reward_image uint8 [N, 80, 80, 3] (the crop at 16 px per tile: the view the
    reward model and the annotators score)
  reward: float32 [N], the env reward (1 on the task's success; the agent never sees it during exploration)
  done: bool [N]; the env resets itself (`auto_reset`): on a step that ends an episode, reward, done, is_terminal,
    interaction_flags and success belong to that step, obs, features and episode_step to the next episode's start
  info: episode_step int32 [N], is_terminal bool [N], interaction_flags {name: bool [N]} and success
    {task: bool [N]} (see `tasks`), features float32 [N, F] (the oracle's inputs, `tasks.FEATURES`)
  world: int32 [N], which pool worlds these are

Actions are one-hot float32 [N, A] over the task's actions (DreamerV3's discrete actor); the argmax is taken.
A worker that dies raises `WorkerCrashed` when called eagerly; inside a compiled program JAX reports it as a
`JaxRuntimeError` carrying the same text; `env.host_error` holds the `WorkerCrashed`, which
`sensei_jax.envs.protocol.host_errors(env)` raises in its place (the Trainer and the collect stage use it).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

from sensei_jax.envs.minihack import tasks
from sensei_jax.envs.minihack.config import MiniHackConfig
from sensei_jax.envs.minihack.pool import WorkerCrashed, WorkerPool, output_fields

__all__ = ["MiniHack", "MiniHackState"]


@struct.dataclass
class MiniHackState:
    obs: dict[str, jax.Array]
    reward: jax.Array  # float32 [N]
    done: jax.Array  # bool [N]
    info: dict[str, Any]
    world: jax.Array  # int32 [N]


class MiniHack:
    """The MiniHack env of one task over `num_envs` host worlds (a `sensei_jax.envs.Env`; see the module
    docstring). Arguments are those of `MiniHackConfig`, plus `timeout` (seconds before a silent worker counts as
    hung)."""

    host_stepped = True  # the worlds live in worker processes, outside JAX
    auto_reset = True
    discrete_actions = True

    def __init__(self, task: str = "keyroom", num_envs: int = 8, image_size: int = 64, crop: int = 5,
                 episode_length: int = 0, workers: int = 0, timeout: float = 120.0):
        cfg = MiniHackConfig(task=task, num_envs=num_envs, image_size=image_size, crop=crop,
                             episode_length=episode_length, workers=workers)  # validates, naming the key
        self.cfg = cfg
        self.task = tasks.TASKS[task]
        self.num_envs, self.image_size, self.crop = cfg.num_envs, cfg.image_size, cfg.crop
        self.episode_length = cfg.episode_length or self.task.episode_length
        self.action_size = len(self.task.actions)
        self.interactions, self.successes = self.task.interactions, self.task.successes
        self._fields = output_fields(task, cfg.image_size, cfg.crop)
        self.pool = WorkerPool(task, cfg.num_envs, image_size=cfg.image_size, crop=cfg.crop,
                               episode_length=self.episode_length, workers=cfg.workers, timeout=timeout)

    @classmethod
    def from_config(cls, cfg: MiniHackConfig, seed: int = 0, **overrides) -> MiniHack:
        """The env of the `minihack` config section; keyword overrides win. `seed` is accepted for symmetry with
        the other envs: every world's randomness comes from the keys given to `reset_worlds`."""
        del seed
        kwargs = dict(task=cfg.task, num_envs=cfg.num_envs, image_size=cfg.image_size, crop=cfg.crop,
                      episode_length=cfg.episode_length, workers=cfg.workers)
        kwargs.update(overrides)
        return cls(**kwargs)

    def observation_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
        return {name: jax.ShapeDtypeStruct(self._fields[name][0], self._fields[name][1])
                for name in ("image", "inventory", "reward_image")}

    def reset_worlds(self, keys: jax.Array, worlds: jax.Array | None = None) -> MiniHackState:
        """New episodes in `worlds` int32 [N] (default 0..N-1), world i's game seeded from keys[i] [N] alone."""
        n = keys.shape[0]
        worlds = jnp.arange(n, dtype=jnp.int32) if worlds is None else jnp.asarray(worlds, jnp.int32)
        self._check_worlds(n, worlds)
        seeds = jax.vmap(lambda k: jax.random.bits(k, (), jnp.uint32))(keys)
        out = io_callback(self._host_reset, self._result_shapes(n), worlds, seeds, ordered=False)
        return self._state(out, worlds)

    def reset_batch(self, key: jax.Array, n: int) -> MiniHackState:
        return self.reset_worlds(jax.random.split(key, n), jnp.arange(n, dtype=jnp.int32))

    def step(self, state: MiniHackState, action: jax.Array) -> MiniHackState:
        """One step of every world of `state` under one-hot (or any score) actions float32 [N, A]."""
        n = state.world.shape[0]
        if action.shape != (n, self.action_size):
            raise ValueError(f"MiniHack.step: actions must be [{n}, {self.action_size}] (one-hot over the "
                             f"{self.task.name} actions {self.task.actions}), got {action.shape}")
        index = jnp.argmax(action, axis=-1).astype(jnp.int32)
        # episode_step goes along only to order the callbacks: each step's call then depends on the last one's output.
        out = io_callback(self._host_step, self._result_shapes(n), state.world, index, state.info["episode_step"],
                          ordered=False)
        return self._state(out, state.world)

    def close(self) -> None:
        self.pool.close()

    @property
    def host_error(self) -> WorkerCrashed | None:
        """The crash of a worker as a `WorkerCrashed` (None while all are alive): the Trainer raises it in place of
        the JaxRuntimeError that a failed host step becomes inside a compiled program."""
        return self.pool.crashed

    # ------------------------------------------------------------------------------------------------------------

    def _check_worlds(self, n: int, worlds: jax.Array) -> None:
        if n > self.num_envs:
            raise ValueError(f"MiniHack: {n} worlds requested but minihack.num_envs is {self.num_envs}")
        if worlds.shape != (n,):
            raise ValueError(f"MiniHack.reset_worlds: worlds must be [{n}], got {worlds.shape}")

    def _result_shapes(self, n: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {name: jax.ShapeDtypeStruct((n, *shape), dtype) for name, (shape, dtype) in self._fields.items()}

    def _host_reset(self, worlds: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        return self.pool.reset(np.asarray(worlds), np.asarray(seeds).astype(np.int64))

    def _host_step(self, worlds: np.ndarray, actions: np.ndarray, _: np.ndarray) -> dict[str, np.ndarray]:
        return self.pool.step(np.asarray(worlds), np.asarray(actions))

    def _state(self, out: dict[str, jax.Array], worlds: jax.Array) -> MiniHackState:
        info = {
            "episode_step": out["episode_step"],
            "is_terminal": out["is_terminal"],
            "interaction_flags": {name: out["interaction_flags"][:, k] for k, name in enumerate(self.interactions)},
            "success": {name: out["success"][:, j] for j, name in enumerate(self.successes)},
            "features": out["features"],
        }
        obs = {name: out[name] for name in ("image", "inventory", "reward_image")}
        return MiniHackState(obs=obs, reward=out["reward"], done=out["done"], info=info, world=worlds)
