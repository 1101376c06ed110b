"""SENSEI's behaviour: mixing a semantic (VLM-distilled) reward with Plan2Explore disagreement, per imagined state.

Two reward sources, `semantic` (the world model's semantic head on imagined states) and `disagreement` (the
Plan2Explore ensemble's std), each get their own critic and return normalizer in the actor-critic. Each imagined
state is either in "go" mode (not yet interesting: seek the semantic reward, weights {semantic 1, disagreement 0})
or in "explore" mode (interesting: look for novelty around it, {semantic 0.1, disagreement 1}). The actor's
advantage is sum_k w_k * adv_k / denominator (the reference divides by a fixed 1.1).

The mode threshold comes in two forms (ExploreConfig.threshold):
- `paper` (default): the paper's description. A state explores when its semantic reward is at or above the k-th
  quantile (k = 0.75 on Robodesk) of the semantic rewards, tracked by an exponential moving average (debiased)
  over training steps.
- `code`: what the reference implementation computes. The semantic critic's lambda-return is compared with
  max(1, EMA(P_k(R)) - EMA(P_low(R))), the inverse scale of a percentile return normalizer (EMA not debiased,
  starting from zero, as there).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from sensei_jax.dreamer.actor_critic import RewardSource, WeightContext
from sensei_jax.dreamer.agent import Agent, ExtraModule
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.heads import HeadSpec
from sensei_jax.explore import plan2explore
from sensei_jax.explore import sources as source_registry
from sensei_jax.explore.config import MODES, ExploreConfig
from sensei_jax.explore.sources import SEMANTIC_KEY, SourceParts
TASK_KEY = "task_{}"  # replay keys of the sparse task-success flags (float 0/1)
ENSEMBLE = "p2e"  # name of the Plan2Explore ensemble among the agent's extra modules


def clip_semantic(reward: jax.Array, clip: float) -> jax.Array:
    """The reward model's raw output clipped to [-clip, clip] (SENSEI: 200), in float32."""
    return jnp.clip(reward.astype(jnp.float32), -clip, clip)


class GoExploreSwitch:
    """Per-state reward-source weights for the actor (the actor-critic's `Weighting` protocol).

    Pure: `init()` gives the running statistics of the threshold, `__call__(state, ctx)` returns
    (weights name -> [N, H], new state, metrics). Weights already include the 1 / denominator factor. With one mode
    (`p2x`: explore, `motif`: go) every imagined state is in it and no threshold is kept.
    """

    def __init__(self, cfg: ExploreConfig):
        self.behaviour = cfg.behaviour
        self.form = cfg.threshold
        self.mode_reward = cfg.mode_reward
        self.quantile = cfg.quantile
        self.low_quantile = cfg.low_quantile
        self.decay = cfg.threshold_decay
        self.min_threshold = cfg.code_min_threshold
        self.modes, self.sources = cfg.modes, cfg.sources
        weights = cfg.resolved_weights
        last = weights[self.modes[-1]]  # the explore mode's, or the one mode's
        self.denominator = float(cfg.advantage_denominator if cfg.advantage_denominator is not None
                                 else sum(last.values()))
        # mode -> (weight per source, before the denominator); one mode fills both rows.
        self.table = {mode: tuple(float(weights[mode if mode in weights else self.modes[0]].get(k, 0.0))
                                  for k in self.sources) for mode in MODES}

    @property
    def switches(self) -> bool:
        """Whether each imagined state's mode is decided by the threshold (both modes weighted)."""
        return len(self.modes) == 2

    def init(self) -> dict[str, jax.Array]:
        """Running quantile statistics, and the mode weights [2 (go, explore), sources] already divided by the
        denominator. The weights live in the state (not in the compiled program), so they are checkpointed with the
        agent and runs that differ only in weights share one compilation."""
        table = jnp.array([self.table[mode] for mode in MODES], jnp.float32)
        return {"high": jnp.zeros((), jnp.float32), "low": jnp.zeros((), jnp.float32),
                "count": jnp.zeros((), jnp.int32), "weights": table / self.denominator}

    def threshold(self, state: dict[str, jax.Array]) -> jax.Array:
        """The threshold (a scalar) from the running statistics."""
        if self.form == "paper":
            debias = 1.0 - self.decay ** jnp.maximum(state["count"], 1).astype(jnp.float32)
            return state["high"] / debias
        return jnp.maximum(self.min_threshold, state["high"] - state["low"])

    def update(self, state: dict[str, jax.Array], values: jax.Array) -> dict[str, jax.Array]:
        """Folds this batch of compared values (rewards or returns, see the forms) into the running quantiles."""
        flat = jax.lax.stop_gradient(values.astype(jnp.float32)).reshape(-1)
        high, low = jnp.quantile(flat, self.quantile), jnp.quantile(flat, self.low_quantile)
        return {**state, "high": self.decay * state["high"] + (1.0 - self.decay) * high,
                "low": self.decay * state["low"] + (1.0 - self.decay) * low, "count": state["count"] + 1}

    def mode(self, state: dict[str, jax.Array], semantic_reward: jax.Array, semantic_return: jax.Array,
             update: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
        """-> (explore mask [...] bool, new state). Inputs [...]: the semantic reward and lambda-return per state."""
        values = jax.lax.stop_gradient(semantic_reward if self.form == "paper" else semantic_return)
        if update:
            state = self.update(state, values)
        return values >= self.threshold(state), state

    def weights(self, state: dict[str, jax.Array], semantic_reward: jax.Array, semantic_return: jax.Array,
                update: bool = True) -> tuple[dict[str, jax.Array], dict[str, jax.Array], dict[str, jax.Array]]:
        """-> (weights name -> [...] including 1/denominator, new state, scalar metrics). With one mode the inputs
        give only the shape."""
        weights, state, metrics, _ = self._switch(state, semantic_reward, semantic_return, update)
        return weights, state, metrics

    def _switch(self, state, semantic_reward, semantic_return, update):
        """`weights` with the explore mask [...] too (None with one mode)."""
        table = state["weights"]
        if not self.switches:
            row = MODES.index(self.modes[0])
            weights = {k: jnp.full(semantic_reward.shape, table[row, i]) for i, k in enumerate(self.sources)}
            explore_fraction = jnp.float32(self.modes[0] == "explore")
            return weights, state, {"sensei/explore_fraction": explore_fraction,
                                    "sensei/go_fraction": 1.0 - explore_fraction}, None
        explore, state = self.mode(state, semantic_reward, semantic_return, update)
        weights = {k: jnp.where(explore, table[1, i], table[0, i]) for i, k in enumerate(self.sources)}
        fraction = explore.mean(dtype=jnp.float32)
        metrics = {"sensei/threshold": self.threshold(state), "sensei/explore_fraction": fraction,
                   "sensei/go_fraction": 1.0 - fraction,
                   **mode_diagnostics(explore, {"semantic_reward": semantic_reward,
                                                "semantic_return": semantic_return})}
        return weights, state, metrics, explore

    def __call__(self, state: Any, ctx: WeightContext):
        """The actor-critic's hook. Per imagined step t (weights [N, H]) the compared semantic reward is that of
        s_t, the state the step is taken in (`explore.mode_reward: state`), or r_{t+1}, of the state it leads into
        (`next`); the compared return (the `code` form) is the semantic R_t."""
        if not self.switches:
            key = self.sources[0]
            return self.weights(state, ctx.rewards[key], ctx.returns[key])
        rewards = ctx.state_rewards if self.mode_reward == "state" else ctx.rewards
        weights, state, metrics, explore = self._switch(state, rewards["semantic"], ctx.returns["semantic"],
                                                        update=True)
        # What each mode achieves in imagination on every other source: its return where the states explore or go.
        metrics.update(mode_diagnostics(explore, {f"{k}_return": ctx.returns[k] for k in self.sources
                                                  if k != "semantic"}, quantiles=False))
        return weights, state, metrics


def mode_diagnostics(explore: jax.Array, values: Mapping[str, jax.Array], quantiles: bool = True
                     ) -> dict[str, jax.Array]:
    """Scalar metrics that show how the switch splits the imagined states: per value [...] its mean over the
    states in each mode (`<name>_go`, `<name>_explore`; 0 where a mode has no state) and, with `quantiles`, its
    5th, 50th, 75th and 95th percentiles (`<name>_p50`, ...), to set against the threshold."""
    mask = explore.astype(jnp.float32)
    metrics = {}
    for name, value in values.items():
        value = jax.lax.stop_gradient(value.astype(jnp.float32))
        for mode, weight in (("explore", mask), ("go", 1.0 - mask)):
            metrics[f"sensei/{name}_{mode}"] = jnp.sum(value * weight) / jnp.maximum(jnp.sum(weight), 1.0)
        if quantiles:
            for q in (5, 50, 75, 95):
                metrics[f"sensei/{name}_p{q}"] = jnp.percentile(value.reshape(-1), q)
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# Reward sources on imagined trajectories (traj: 'deter' [N, H+1, D], 'stoch' [N, H+1, S, K], 'feat', 'action').


def semantic_reward(traj: dict[str, jax.Array], wm: Any, extras: dict[str, Any]) -> jax.Array:
    """The semantic head's mean at each imagined state: [N, H + 1]."""
    return wm.heads["semantic"](traj["feat"]).mean().astype(jnp.float32)


def disagreement_reward(traj: dict[str, jax.Array], wm: Any, extras: dict[str, Any],
                        alignment: str = "incoming") -> jax.Array:
    """Ensemble disagreement as the reward of arriving in each state, [N, H+1]; index 0 (the start state) gets 0
    and is never used as a reward.

    `incoming`: index i holds disag(s_{i-1}, a_{i-1}), the transition into state i. `outgoing` (the reference's
    alignment): index i holds disag(s_i, a_i), the transition the policy takes out of state i.
    """
    stoch = traj["stoch"].reshape(traj["stoch"].shape[:2] + (-1,))
    disag = extras[ENSEMBLE].disagreement(traj["deter"], stoch, traj["action"].astype(jnp.float32))
    if alignment == "incoming":
        return jnp.concatenate([jnp.zeros_like(disag[:, :1]), disag[:, :-1]], 1)
    if alignment == "outgoing":
        return disag.at[:, 0].set(0.0)
    raise ValueError(f"explore.disagreement_alignment must be 'incoming' or 'outgoing', got {alignment!r}")


def semantic_parts(cfg: ExploreConfig, dreamer: DreamerConfig, action_size: int) -> SourceParts:
    """The built-in `semantic` source: the semantic head's mean, the head learning the reward model's output."""
    return SourceParts(RewardSource(semantic_reward), heads={"semantic": semantic_head(cfg)})


def semantic_head(cfg: ExploreConfig) -> HeadSpec:
    """The semantic head: it learns the reward model's clipped output from stop-gradient features."""
    return HeadSpec(target=SEMANTIC_KEY, scale=cfg.semantic_head_scale, grad=False)


def disagreement_parts(cfg: ExploreConfig, dreamer: DreamerConfig, action_size: int) -> SourceParts:
    """The built-in `disagreement` source: Plan2Explore's ensemble std, the ensemble an extra module."""
    reward = functools.partial(disagreement_reward, alignment=cfg.disagreement_alignment)
    return SourceParts(RewardSource(reward), modules={ENSEMBLE: ensemble_module(cfg, dreamer, action_size)})


def source_parts(cfg: ExploreConfig, dreamer: DreamerConfig, action_size: int,
                 obs_space: Mapping[str, Any] | None = None) -> dict[str, SourceParts]:
    """The parts of each source of `cfg` (the registry's builders), in registration order. With `obs_space`, a
    source whose replay keys are missing from it is refused, naming them."""
    parts = {}
    for name in cfg.sources:
        spec = source_registry.get(name)
        missing = [key for key in spec.replay_keys if obs_space is not None and key not in obs_space]
        if missing:
            written = " (the reward model's output at collection)" if spec.reward_model else ""
            raise ValueError(f"reward source '{name}' of behaviour '{cfg.behaviour}' needs the replay keys {missing}"
                             f"{written} in the observation space; got {sorted(obs_space)}")
        parts[name] = spec.parts(cfg, dreamer, action_size)
    return parts


def reward_sources(cfg: ExploreConfig, dreamer: DreamerConfig | None = None, action_size: int = 1
                   ) -> dict[str, RewardSource]:
    """name -> RewardSource of each source of `cfg`."""
    return {k: p.reward for k, p in source_parts(cfg, dreamer or DreamerConfig.tiny(), action_size).items()}


def task_reward_source(task: str) -> RewardSource:
    """The reward of a downstream task: its sparse success head's mean on imagined states [N, H + 1]."""
    return RewardSource(lambda traj, wm, extras: wm.heads[TASK_KEY.format(task)](traj["feat"]).mean())


def head_specs(cfg: ExploreConfig, tasks: tuple[str, ...] | None = None, semantic: bool | None = None
               ) -> dict[str, HeadSpec]:
    """Extra world-model heads: the semantic reward (when the behaviour uses it, or `semantic`) and sparse
    task-success heads, all on stop-gradient features (SENSEI's grad_heads = [decoder, cont]). Targets are replay
    keys written at collection time."""
    specs = {}
    if ("semantic" in cfg.sources) if semantic is None else semantic:
        specs["semantic"] = semantic_head(cfg)
    for task in cfg.task_heads if tasks is None else tasks:
        specs[TASK_KEY.format(task)] = HeadSpec(target=TASK_KEY.format(task), scale=cfg.task_head_scale, grad=False)
    return specs


# ----------------------------------------------------------------------------------------------------------------
# Building the exploring agent and the downstream task agent.


def ensemble_module(cfg: ExploreConfig, dreamer: DreamerConfig, action_size: int) -> ExtraModule:
    """The Plan2Explore ensemble as an agent extra module: trained on the replay posteriors after each world-model
    update, with its own optimizer (Adam, lr 1e-4, eps 1e-5, clip 100 in SENSEI)."""
    size = dreamer.size()

    def make(rngs: nnx.Rngs) -> plan2explore.DisagreementEnsemble:
        return plan2explore.DisagreementEnsemble(size.deter, size.stoch_size, action_size,
                                                 members=cfg.ensemble_size, units=cfg.ensemble_units,
                                                 layers=cfg.ensemble_layers, rngs=rngs)

    optimizer = plan2explore.make_optimizer(cfg.ensemble_lr, cfg.ensemble_eps, cfg.ensemble_clip)
    return ExtraModule(make=make, loss=plan2explore.replay_loss, optimizer=optimizer)


def build_agent(dreamer: DreamerConfig, cfg: ExploreConfig, obs_space: Mapping[str, Any], action_size: int,
                tasks: tuple[str, ...] = (), task: str | None = None, discrete: bool = False) -> Agent:
    """The exploring agent (task None) or a downstream task agent (task given) over the same world model.

    Both carry the semantic head (when the replay has the semantic reward), one sparse success head per name in `tasks` and the
    Plan2Explore ensemble, so a task agent restores an exploration checkpoint's world model and ensemble as they
    are. Exploring: reward sources per cfg.behaviour, weighted by the go/explore switch. Task: one source, the
    task's success head, with the default constant weighting. `dreamer.reward_scales` is replaced by the sources
    used (their scales are the switch's business, not the agent's).
    """
    obs_space = dict(obs_space)
    parts = source_parts(cfg, dreamer, action_size, obs_space)
    heads = head_specs(cfg, tasks, semantic="semantic" in cfg.sources or SEMANTIC_KEY in obs_space)
    extras = {ENSEMBLE: ensemble_module(cfg, dreamer, action_size)}
    for part in parts.values():  # what other sources add (the built-in ones' are above, in their usual order)
        heads.update({k: v for k, v in part.heads.items() if k not in heads})
        extras.update({k: v for k, v in part.modules.items() if k not in extras})
    if task is None:
        sources = {k: part.reward for k, part in parts.items()}
        weighting = GoExploreSwitch(cfg)
    else:
        if task not in tasks:
            raise ValueError(f"task '{task}' has no success head; heads exist for {list(tasks)}")
        sources = {f"task_{task}": task_reward_source(task)}
        weighting = None
    dreamer = dataclasses.replace(dreamer, reward_scales={k: 1.0 for k in sources})
    return Agent(dreamer, obs_space, action_size, discrete, reward_sources=sources, weighting=weighting,
                 extra_heads=heads, extra_modules=extras)
