"""The registry of the exploring agent's reward sources: name -> what the agent needs to optimise it.

A reward source is an intrinsic reward on imagined states with its own critic and return normalizer;
`explore.weights` weights registered sources per go/explore mode. Each entry says how to build its parts for the
agent (`SourceParts`: the reward function, the world-model heads it reads, the extra modules it trains) and what
it needs from collection: the replay keys its heads learn from, and whether the distilled reward model writes
them. Adding a source (an RND or count bonus, a second semantic model) is one `register` call; the config, the
agent builder, the go/explore switch and the Explorer all read this table.

The module stays free of jax, so that a config checks its source names without importing it: a builder is a
function or a 'module:function' string, imported when the agent is built. The built-in sources, `semantic` and
`disagreement`, are built in `sensei_jax.explore.sensei`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

SEMANTIC_KEY = "semantic_reward"  # replay key of the clipped reward-model output on each observed image


@dataclasses.dataclass(frozen=True)
class SourceParts:
    """What one source adds to the exploring agent.

    reward: a `RewardSource` (fn(traj, wm, extras) -> reward [N, H + 1] float32, see dreamer.actor_critic).
    heads: {name: HeadSpec} world-model heads the reward reads as wm.heads[name].
    modules: {name: ExtraModule} modules trained after the world model; the reward reads them as extras[name].
    """

    reward: Any
    heads: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    modules: Mapping[str, Any] = dataclasses.field(default_factory=dict)


Builder = Callable[[Any, Any, int], SourceParts]  # (ExploreConfig, DreamerConfig, action size) -> parts


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A registered source. build: a `Builder` or 'module:function' naming one. replay_keys: replay keys written
    at collection that its heads learn from (the agent refuses an observation space without them). reward_model:
    whether the distilled reward model writes those keys, so that exploring with this source needs one."""

    name: str
    build: Builder | str
    replay_keys: tuple[str, ...] = ()
    reward_model: bool = False

    def parts(self, explore: Any, dreamer: Any, action_size: int) -> SourceParts:
        """Builds this source's parts for an agent of `dreamer` with `action_size` actions."""
        build = self.build
        if isinstance(build, str):
            module, _, attribute = build.partition(":")
            build = getattr(importlib.import_module(module), attribute)
        parts = build(explore, dreamer, action_size)
        if not isinstance(parts, SourceParts):
            raise TypeError(f"reward source '{self.name}': its builder returned {type(parts).__name__}, "
                            "not SourceParts")
        return parts


_REGISTRY: dict[str, SourceSpec] = {}


def register(spec: SourceSpec) -> SourceSpec:
    """Adds `spec` to the registry (after the sources already there: the order in which critics are built)."""
    if not spec.name or not spec.name.isidentifier():
        raise ValueError(f"a reward source needs a name that is an identifier, got {spec.name!r}")
    if spec.name in _REGISTRY:
        raise ValueError(f"reward source '{spec.name}' is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes source `name` (the built-in ones stay)."""
    if name in BUILT_IN:
        raise ValueError(f"reward source '{name}' is built in and cannot be removed")
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered sources, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> SourceSpec:
    """The spec of source `name`; KeyError naming the registered ones when there is none."""
    if name not in _REGISTRY:
        raise KeyError(f"no reward source '{name}' is registered (registered: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def in_order(selected: Mapping[str, Any] | tuple[str, ...]) -> tuple[str, ...]:
    """The names in `selected` in registration order, so that a run builds its critics in the same order however
    its config lists them."""
    return tuple(name for name in _REGISTRY if name in selected)


BUILT_IN = (
    # The semantic head's mean on imagined states; the head learns the reward model's clipped output.
    register(SourceSpec("semantic", "sensei_jax.explore.sensei:semantic_parts", replay_keys=(SEMANTIC_KEY,),
                        reward_model=True)).name,
    # Plan2Explore: the disagreement of an ensemble of one-step latent predictors.
    register(SourceSpec("disagreement", "sensei_jax.explore.sensei:disagreement_parts")).name,
)
