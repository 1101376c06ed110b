"""The run's environment, shared by the stages of one process.

Building a Robodesk env compiles its model and Warp kernels, a MiniHack env starts its NetHack worker processes; a
resumed pipeline or the pairs renderer after collection reuses the env (and the compiled functions built around
it) instead of building them again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from sensei_jax import config as config_lib
from sensei_jax.config import Config

_ENVS: dict[str, Any] = {}
_COMPILED_FNS: dict[tuple, Any] = {}


def is_minihack(cfg: Config) -> bool:
    """Whether the run's domain is MiniHack (`run.domain`), whose env is the `minihack` section."""
    return cfg.run.domain == "minihack"


def num_envs(cfg: Config) -> int:
    """The run's world count: `minihack.num_envs` or `env.num_envs`, by `run.domain`."""
    return cfg.minihack.num_envs if is_minihack(cfg) else cfg.env.num_envs


def success_names(cfg: Config) -> tuple[str, ...]:
    """The tasks whose success the run's env reports (what task heads and transfer tasks may name), read from the
    task tables without building the env: every Robodesk task, or the MiniHack task's own."""
    if is_minihack(cfg):
        from sensei_jax.envs.minihack.tasks import SUCCESSES

        return SUCCESSES[cfg.minihack.task]
    from sensei_jax.envs.robodesk.config import TASKS

    return TASKS


def make_env(cfg: Config, reward_view: bool = False, **overrides):
    """The run's env, built once per process and config: Robodesk from `cfg.env` (with `overrides` of
    `Robodesk.from_config`) or, with `run.domain: minihack`, MiniHack from `cfg.minihack` (its worker processes
    start here and stay up for the process's later stages). Robodesk renders its reward view
    (`env.reward_image_size`) only with `reward_view`: the stages that score it ask for it, the others
    (collection, re-rendering, plain DreamerV3) do not pay for a 224x224 render a step; MiniHack's reward view is
    its native 80x80 crop, which every step produces anyway."""
    if is_minihack(cfg):
        from sensei_jax.envs.minihack import MiniHack

        key = json.dumps(["minihack", config_lib.to_dict(cfg.minihack), cfg.run.seed], sort_keys=True)
        if key not in _ENVS:
            _ENVS[key] = MiniHack.from_config(cfg.minihack, seed=cfg.run.seed)
        return _ENVS[key]
    from sensei_jax.envs.robodesk import Robodesk

    env_cfg = cfg.env if reward_view else dataclasses.replace(cfg.env, reward_image_size=None)
    key = json.dumps([config_lib.to_dict(env_cfg), overrides], sort_keys=True, default=str)
    if key not in _ENVS:
        _ENVS[key] = Robodesk.from_config(env_cfg, **overrides)
    return _ENVS[key]


def compiled_once(env, name: str, build: Callable[[], Any]):
    """`build()` once per (env, name): compiled functions survive a stage restarting in the same process."""
    key = (id(env), name)
    if key not in _COMPILED_FNS:
        _COMPILED_FNS[key] = build()
    return _COMPILED_FNS[key]
