"""SENSEI's behaviour: mixing a semantic (VLM-distilled) reward with Plan2Explore disagreement, per imagined state.

Two critics, `semantic` and `disagreement`, each with its own return normalization, give two advantages. Each
imagined state is either in "go" mode (not yet interesting: seek the semantic reward, weights {semantic 1,
disagreement 0}) or in "explore" mode (interesting: look for novelty around it, {semantic 0.1, disagreement 1}).
The actor's advantage is sum_k w_k * adv_k / denominator (the reference divides by a fixed 1.1).

The mode threshold comes in two forms (ExploreConfig.threshold):
- `paper` (default): the paper's description. A state explores when its semantic reward is at or above the k-th
  quantile (k = 0.75 on Robodesk) of the semantic rewards, tracked by an exponential moving average (debiased)
  over training steps.
- `code`: what the reference implementation computes. The semantic critic's lambda-return is compared with
  max(1, EMA(P_k(R)) - EMA(P_low(R))), the inverse scale of its percentile return normalizer (EMA not debiased,
  starting from zero, as there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sensei_jax.dreamer.explore_config import SOURCES, ExploreConfig


class SwitchStat(nnx.Variable):
    """Running statistics of the go/explore threshold (not trained by gradients)."""


def clip_semantic(reward: jax.Array, clip: float) -> jax.Array:
    """The reward model's raw output clipped to [-clip, clip] (SENSEI: 200), in float32."""
    return jnp.clip(reward.astype(jnp.float32), -clip, clip)


class GoExploreSwitch(nnx.Module):
    """Per-state reward-source weights for the actor. Stateful: holds the EMA of the threshold quantiles."""

    def __init__(self, cfg: ExploreConfig):
        self.behaviour = cfg.behaviour
        self.form = cfg.threshold
        self.quantile = cfg.quantile
        self.low_quantile = cfg.low_quantile
        self.decay = cfg.threshold_decay
        self.min_threshold = cfg.code_min_threshold
        self.go = dict(zip(SOURCES, cfg.go_weights))
        self.explore = dict(zip(SOURCES, cfg.explore_weights))
        fixed = {"p2x": {"semantic": 0.0, "disagreement": 1.0}, "motif": {"semantic": 1.0, "disagreement": 0.0}}
        self.fixed = fixed.get(cfg.behaviour)
        if cfg.advantage_denominator is not None:
            self.denominator = float(cfg.advantage_denominator)
        elif self.fixed is not None:
            self.denominator = 1.0
        else:
            self.denominator = float(sum(cfg.explore_weights))
        self.high = SwitchStat(jnp.zeros((), jnp.float32))
        self.low = SwitchStat(jnp.zeros((), jnp.float32))
        self.count = SwitchStat(jnp.zeros((), jnp.int32))

    @property
    def sources(self) -> tuple[str, ...]:
        return SOURCES if self.fixed is None else tuple(k for k, v in self.fixed.items() if v > 0)

    def threshold(self) -> jax.Array:
        """The current threshold (a scalar) from the running statistics, without updating them."""
        if self.form == "paper":
            debias = 1.0 - self.decay ** jnp.maximum(self.count[...], 1).astype(jnp.float32)
            return self.high[...] / debias
        return jnp.maximum(self.min_threshold, self.high[...] - self.low[...])

    def update(self, semantic_reward: jax.Array, semantic_return: jax.Array) -> jax.Array:
        """Folds this batch of imagined states into the running quantiles; returns the new threshold."""
        values = semantic_reward if self.form == "paper" else semantic_return
        values = jax.lax.stop_gradient(values.astype(jnp.float32)).reshape(-1)
        high = jnp.quantile(values, self.quantile)
        low = jnp.quantile(values, self.low_quantile)
        self.high[...] = self.decay * self.high[...] + (1.0 - self.decay) * high
        self.low[...] = self.decay * self.low[...] + (1.0 - self.decay) * low
        self.count[...] = self.count[...] + 1
        return self.threshold()

    def __call__(self, semantic_reward: jax.Array, semantic_return: jax.Array, update: bool = True
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """Weights per imagined state.

        semantic_reward: [...] the semantic head's reward at each imagined state (clipped).
        semantic_return: [...] the semantic critic's lambda-return at the same states.
        Returns ({"semantic": w [...], "disagreement": w [...]}, metrics). With `update` the threshold statistics
        first absorb this batch (once per training step).
        """
        shape = semantic_reward.shape
        if self.fixed is not None:
            weights = {k: jnp.full(shape, v, jnp.float32) for k, v in self.fixed.items()}
            explore = jnp.full(shape, self.behaviour == "p2x")
            return weights, {"sensei/explore_fraction": explore.mean(dtype=jnp.float32),
                             "sensei/go_fraction": 1.0 - explore.mean(dtype=jnp.float32)}
        threshold = self.update(semantic_reward, semantic_return) if update else self.threshold()
        values = semantic_reward if self.form == "paper" else semantic_return
        explore = jax.lax.stop_gradient(values) >= threshold
        weights = {k: jnp.where(explore, self.explore[k], self.go[k]).astype(jnp.float32) for k in SOURCES}
        fraction = explore.mean(dtype=jnp.float32)
        metrics = {"sensei/threshold": threshold, "sensei/explore_fraction": fraction,
                   "sensei/go_fraction": 1.0 - fraction}
        return weights, metrics

    def mix(self, advantages: dict[str, jax.Array], weights: dict[str, jax.Array]) -> jax.Array:
        """The actor's advantage [...]: sum_k w_k * adv_k / denominator over the sources present in `advantages`.

        `advantages` are already normalized by each critic's own return scale.
        """
        total = sum(weights[k] * advantages[k] for k in advantages)
        return total / self.denominator
