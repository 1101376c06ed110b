"""Prediction heads on the latent feature [..., F]: two-hot scalar heads (reward, values, extra scalars such as
SENSEI's semantic reward) and the Bernoulli continue head. Extra world-model heads are declared with `HeadSpec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.distributions import Bernoulli, TwoHot, twohot_bins
from sensei_jax.dreamer.nets import MLP, Linear


class ScalarHead(nnx.Module):
    """MLP -> Linear(bins), zero-initialized: feat [..., F] -> TwoHot over symlog bins (predicts 0 at init)."""

    def __init__(self, cfg: DreamerConfig, in_size: int, layers: int | None = None, *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        size = cfg.size()
        self.mlp = MLP(in_size, size.units, size.layers if layers is None else layers, cfg.norm, dtype=dtype,
                       rngs=rngs)
        self.out = Linear(self.mlp.out_size, cfg.twohot_bins, outscale=0.0, dtype=dtype, rngs=rngs)
        self.num_bins, self.extent = cfg.twohot_bins, cfg.twohot_range

    def __call__(self, feat: jax.Array) -> TwoHot:
        return TwoHot(self.out(self.mlp(feat)), twohot_bins(self.num_bins, self.extent))


class BinaryHead(nnx.Module):
    """MLP -> Linear(1): feat [..., F] -> Bernoulli with logits [...]."""

    def __init__(self, cfg: DreamerConfig, in_size: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        size = cfg.size()
        self.mlp = MLP(in_size, size.units, size.layers, cfg.norm, dtype=dtype, rngs=rngs)
        self.out = Linear(self.mlp.out_size, 1, dtype=dtype, rngs=rngs)

    def __call__(self, feat: jax.Array) -> Bernoulli:
        return Bernoulli(self.out(self.mlp(feat))[..., 0])


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """An extra world-model head, trained with the world model's loss.

    target: a batch key holding the target [B, T] (e.g. 'semantic_reward'), or a function
        `target(batch, outs) -> [B, T]` computed inside the train step (outs: the world model's posterior outputs,
        see `WorldModel.loss`). Steps where the batch key is missing are an error at trace time.
    make: builds the head `make(cfg, feat_size, rngs) -> nnx.Module` whose call returns a distribution with
        `log_prob(target)` and `mean()`; default: a two-hot `ScalarHead` (symlog bins).
    scale: loss weight. grad: let the loss shape the representation (False: the head reads sg(feat), like
        SENSEI's semantic head).
    """

    target: str | Callable[[dict[str, jax.Array], dict[str, Any]], jax.Array]
    make: Callable[[DreamerConfig, int, nnx.Rngs], nnx.Module] | None = None
    scale: float = 1.0
    grad: bool = False

    def build(self, cfg: DreamerConfig, feat_size: int, dtype, rngs: nnx.Rngs) -> nnx.Module:
        if self.make is not None:
            return self.make(cfg, feat_size, rngs)
        return ScalarHead(cfg, feat_size, dtype=dtype, rngs=rngs)

    def target_values(self, batch: dict[str, jax.Array], outs: dict[str, Any]) -> jax.Array:
        if callable(self.target):
            return self.target(batch, outs)
        if self.target not in batch:
            raise KeyError(f"extra head target '{self.target}' is not in the batch (keys: {sorted(batch)})")
        return batch[self.target]
