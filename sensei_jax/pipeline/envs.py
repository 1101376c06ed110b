"""The run's environment, shared by the stages of one process.

Building a Robodesk env compiles its model and Warp kernels; a resumed pipeline or the pairs renderer after
collection reuses the env (and the compiled functions built around it) instead of building them again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from sensei_jax import config as config_lib
from sensei_jax.config import Config

_ENVS: dict[str, Any] = {}
_COMPILED_FNS: dict[tuple, Any] = {}


def make_env(cfg: Config, reward_view: bool = False, **overrides):
    """The Robodesk env of `cfg.env` (with `overrides` of `Robodesk.from_config`), built once per process and
    config. The reward view (`env.reward_image_size`) is rendered only with `reward_view`: the stages that score
    it ask for it, the others (collection, re-rendering, plain DreamerV3) do not pay for a 224x224 render a step."""
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
