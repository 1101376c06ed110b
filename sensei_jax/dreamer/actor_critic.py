"""Actor-critic learned in imagination: policy network, lambda-returns, percentile return normalization, and the
pluggable reward sources and weighting that SENSEI's go/explore switch builds on.

Shapes: N imagined trajectories (every posterior state of the batch, N = B*T), H imagination steps, H + 1 states
including the start. A reward source maps the imagined trajectory to a reward per state [N, H + 1] (index i is
the reward for arriving in state i; index 0 is unused). Every source k has its own critic, slow critic and return
normalizer; the actor's advantage is sum_k w_k * (R_k - V_k) / S_k with per-state weights w_k [N, H] chosen by a
`Weighting` (default: scale_k / sum of scales, constant).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.distributions import ActionCategorical, BoundedNormal
from sensei_jax.dreamer.nets import MLP, Linear


class Actor(nnx.Module):
    """feat [..., F] -> action distribution (BoundedNormal for continuous, ActionCategorical for discrete)."""

    def __init__(self, cfg: DreamerConfig, in_size: int, action_size: int, discrete: bool, *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        size = cfg.size()
        self.discrete = discrete
        self.min_std, self.max_std, self.unimix = cfg.actor_min_std, cfg.actor_max_std, cfg.actor_unimix
        self.mlp = MLP(in_size, size.units, size.layers, cfg.norm, dtype=dtype, rngs=rngs)
        out = action_size if discrete else 2 * action_size
        self.out = Linear(self.mlp.out_size, out, outscale=0.01, dtype=dtype, rngs=rngs)

    def __call__(self, feat: jax.Array) -> BoundedNormal | ActionCategorical:
        out = self.out(self.mlp(feat)).astype(jnp.float32)
        if self.discrete:
            return ActionCategorical(out, self.unimix)
        mean, std = jnp.split(out, 2, -1)
        return BoundedNormal(mean, std, self.min_std, self.max_std)


def lambda_return(reward: jax.Array, discount: jax.Array, value: jax.Array, lam: float) -> jax.Array:
    """TD(lambda) returns [N, H] from reward [N, H] (r_{t+1}), discount [N, H] (gamma * cont_{t+1}) and
    value [N, H + 1] (V_0..V_H):  R_t = r_{t+1} + d_{t+1} * ((1 - lam) * V_{t+1} + lam * R_{t+1}),  R_H = V_H."""
    bad_value = value.shape[:-1] != reward.shape[:-1] or value.shape[-1] != reward.shape[-1] + 1
    if reward.shape != discount.shape or bad_value:
        raise ValueError(f"lambda_return shapes: reward {reward.shape}, discount {discount.shape}, value {value.shape}")

    def step(ret_next, inputs):
        r, d, v_next = inputs
        ret = r + d * ((1 - lam) * v_next + lam * ret_next)
        return ret, ret

    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    _, rets = jax.lax.scan(step, value[:, -1], (swap(reward), swap(discount), swap(value[:, 1:])), reverse=True)
    return swap(rets)


# ----------------------------------------------------------------------------------------------------------------
# Return normalization: EMAs of the 5th and 95th percentiles of the lambda-returns.


def retnorm_init() -> dict[str, jax.Array]:
    return {"low": jnp.zeros((), jnp.float32), "high": jnp.zeros((), jnp.float32)}


def retnorm_update(state: dict[str, jax.Array], returns: jax.Array, cfg: DreamerConfig) -> dict[str, jax.Array]:
    flat = returns.reshape(-1).astype(jnp.float32)
    low = jnp.percentile(flat, cfg.retnorm_low)
    high = jnp.percentile(flat, cfg.retnorm_high)
    rate = cfg.retnorm_rate
    return {"low": (1 - rate) * state["low"] + rate * low, "high": (1 - rate) * state["high"] + rate * high}


def retnorm_scale(state: dict[str, jax.Array], cfg: DreamerConfig) -> jax.Array:
    """max(limit, EMA(P_high) - EMA(P_low)): advantages are divided by this."""
    return jnp.maximum(cfg.retnorm_limit, state["high"] - state["low"])


# ----------------------------------------------------------------------------------------------------------------
# Extension points.

RewardFn = Callable[[dict[str, jax.Array], Any, dict[str, nnx.Module]], jax.Array]


@dataclasses.dataclass(frozen=True)
class RewardSource:
    """A reward for the actor-critic, with its own critic and return normalizer.

    fn(traj, wm, extras) -> reward [N, H + 1] float32, where traj is the imagined trajectory (a dict with
    'deter' [N, H+1, D], 'stoch' [N, H+1, S, K], 'feat' [N, H+1, F], 'action' [N, H+1, A] (the action taken in
    each state), 'cont' [N, H+1]), wm the merged `WorldModel` module and extras the merged extra modules by name
    (e.g. a Plan2Explore ensemble). The trajectory is stop-gradient, except under `actor_grad_cont: backprop`,
    where the actor's gradient flows through the reward (module parameters stay fixed either way).
    """

    fn: RewardFn


def extrinsic_reward(traj: dict[str, jax.Array], wm: Any, extras: dict[str, nnx.Module]) -> jax.Array:
    """The world model's reward head on the imagined states: [N, H + 1]."""
    return wm.reward(traj["feat"]).mean()


@dataclasses.dataclass
class WeightContext:
    """What a weighting sees, per source name: rewards [N, H] (r_{t+1}, for arriving in the state step t leads
    to), state_rewards [N, H] (the source at s_t itself, the state step t starts from: index t of its [N, H + 1]
    output), returns [N, H], values [N, H] (online critic V_t), return scales [] (after this step's normalizer
    update), retnorm states, and the source scales."""

    rewards: dict[str, jax.Array]
    state_rewards: dict[str, jax.Array]
    returns: dict[str, jax.Array]
    values: dict[str, jax.Array]
    return_scales: dict[str, jax.Array]
    retnorm: dict[str, dict[str, jax.Array]]
    scales: dict[str, float]
    traj: dict[str, jax.Array]


class Weighting(Protocol):
    """Per-state weights of the reward sources in the actor's advantage; may keep its own state (e.g. EMAs)."""

    def init(self) -> Any: ...

    def __call__(self, state: Any, ctx: WeightContext) -> tuple[dict[str, jax.Array], Any, dict[str, jax.Array]]:
        """-> (weights name -> [N, H], new state, scalar metrics)."""
        ...


class ScaleWeighting:
    """Constant weights scale_k / sum_k scale_k, as in the reference's multi-critic actor."""

    def init(self) -> dict:
        return {}

    def __call__(self, state: dict, ctx: WeightContext):
        total = sum(ctx.scales.values())
        if total <= 0:
            raise ValueError(f"reward scales must sum to a positive number, got {ctx.scales}")
        weights = {k: jnp.full_like(ctx.returns[k], s / total) for k, s in ctx.scales.items()}
        return weights, state, {}


# ----------------------------------------------------------------------------------------------------------------
# Losses on a fixed imagined trajectory.


def imagination_weight(cont: jax.Array, discount: float, form: str) -> jax.Array:
    """Per-step loss weights [N, H] from the continuation of the imagined states cont [N, H + 1].

    `cont` (2024 reference): w_t = prod_{i<=t} cont_i. `discounted` (2023 reference, SENSEI):
    w_t = prod_{i<=t} (discount * cont_i) / discount = discount^t * prod_{i<=t} cont_i, so w_0 = cont_0.
    """
    if form == "cont":
        return jnp.cumprod(cont, 1)[:, :-1]
    if form == "discounted":
        return jnp.cumprod(discount * cont, 1)[:, :-1] / discount
    raise ValueError(f"dreamer.imag_weight must be 'cont' or 'discounted', got {form!r}")


def actor_loss(actor: Actor, traj: dict[str, jax.Array], advantage: jax.Array, weight: jax.Array,
               entropy_scale: float, backprop: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The actor's loss with an entropy bonus: REINFORCE, -w * (log pi(a) * sg(adv) + eta * H) (the 2024 reference,
    and discrete actions in both), or with `backprop` -w * (adv + eta * H), where the advantage carries the
    gradient of the imagined trajectory (the 2023 reference for continuous actions).

    traj feat [N, H+1, F] and action [N, H+1, A]; advantage and weight [N, H]. The policy is evaluated on
    stop-gradient states. Returns the scalar loss and metrics.
    """
    dist = actor(jax.lax.stop_gradient(traj["feat"][:, :-1]))
    logp = dist.log_prob(jax.lax.stop_gradient(traj["action"][:, :-1]))
    entropy = dist.entropy()
    objective = advantage if backprop else logp * jax.lax.stop_gradient(advantage)
    loss = -weight * (objective + entropy_scale * entropy)
    metrics = {"actor/entropy": entropy.mean(), "actor/logp": logp.mean(), "actor/advantage": advantage.mean(),
               "actor/advantage_std": advantage.std()}
    if isinstance(dist, BoundedNormal):
        metrics["actor/std"] = dist.scale.mean()
    return loss.mean(), metrics


def critic_loss(critic: nnx.Module, feat: jax.Array, returns: jax.Array, slow_mean: jax.Array, weight: jax.Array,
                slow_reg: float) -> jax.Array:
    """Two-hot cross-entropy toward sg(returns) plus slow_reg times toward the slow critic's mean; feat
    [N, H+1, F], returns / slow_mean / weight [N, H]."""
    dist = critic(feat[:, :-1])
    sg = jax.lax.stop_gradient
    loss = -dist.log_prob(sg(returns)) - slow_reg * dist.log_prob(sg(slow_mean))
    return (weight * loss).mean()
