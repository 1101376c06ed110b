"""The run's environment, shared by the stages of one process.

Building a Robodesk env compiles its model and Warp kernels, a MiniHack env starts its NetHack worker processes; a
resumed pipeline or the pairs renderer after collection reuses the env (and the compiled functions built around
it) instead of building them again.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from sensei_jax import domains
from sensei_jax.config import Config
from sensei_jax.domains import Domain

_ENVS: dict[str, Any] = {}
_COMPILED_FNS: dict[tuple, Any] = {}


def domain(cfg: Config) -> Domain:
    """The run's domain (`run.domain`, see `sensei_jax.domains`)."""
    return domains.of(cfg)


def num_envs(cfg: Config) -> int:
    """The run's world count, from its domain's env section (`env.num_envs`, `minihack.num_envs`, ...)."""
    return domain(cfg).num_envs(cfg)


def success_names(cfg: Config) -> tuple[str, ...]:
    """The tasks whose success the run's env reports (what task heads and transfer tasks may name), read from the
    domain's task tables without building the env."""
    return domain(cfg).success_names(cfg)


def make_env(cfg: Config, reward_view: bool = False, **overrides):
    """The run's env, built once per process and config by its domain (`Domain.build_env`, with `overrides` of
    the env's constructor). `reward_view`: the env also renders the view the reward model scores, where that costs
    a render of its own (Robodesk's `env.reward_image_size`); the stages that score it ask for it."""
    found = domain(cfg)
    key = json.dumps(found.env_key(cfg, reward_view, overrides), sort_keys=True, default=str)
    if key not in _ENVS:
        _ENVS[key] = found.build_env(cfg, reward_view, **overrides)
    return _ENVS[key]


def compiled_once(env, name: str, build: Callable[[], Any]):
    """`build()` once per (env, name): compiled functions survive a stage restarting in the same process."""
    key = (id(env), name)
    if key not in _COMPILED_FNS:
        _COMPILED_FNS[key] = build()
    return _COMPILED_FNS[key]
