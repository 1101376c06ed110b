"""Plan2Explore: an ensemble of one-step latent predictors whose disagreement is an intrinsic reward.

Each member is an MLP (SiLU, LayerNorm) mapping the model state and action, concat(deter_t, stoch_t, action_t), to
the next stochastic latent stoch_{t+1}. The members differ only by initialization and are trained on the world
model's replay posteriors. On imagined trajectories, the intrinsic reward is the standard deviation of the members'
predictions, averaged over the latent's dimensions (no log, no offset, as in SENSEI's code).

The members are vectorized: every weight carries a leading member axis [M, ...] and one einsum runs them all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class EnsembleLinear(nnx.Module):
    """M independent dense layers applied in one einsum. Input [M, ..., I] -> output [M, ..., O]."""

    def __init__(self, members: int, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1)
        self.kernel = nnx.Param(init(rngs.params(), (members, in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((members, out_features), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        bias = self.bias[...]
        bias = bias.reshape(bias.shape[:1] + (1,) * (x.ndim - 2) + bias.shape[1:])
        return jnp.einsum("m...i,mio->m...o", x, self.kernel[...]) + bias


class EnsembleLayerNorm(nnx.Module):
    """Per-member LayerNorm over the last axis, computed in float32. Input/output [M, ..., D]."""

    def __init__(self, members: int, features: int, eps: float = 1e-3):
        self.scale = nnx.Param(jnp.ones((members, features), jnp.float32))
        self.offset = nnx.Param(jnp.zeros((members, features), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        x = (x - mean) * jax.lax.rsqrt(var + self.eps)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        return x * self.scale[...].reshape(shape) + self.offset[...].reshape(shape)


class DisagreementEnsemble(nnx.Module):
    """M MLPs predicting stoch_{t+1} [..., S] from (deter_t [..., D], stoch_t [..., S], action_t [..., A]).

    `stoch` is the flattened stochastic latent (e.g. 32x32 one-hot samples -> 1024). Predictions are [M, ..., S].
    """

    def __init__(self, deter_size: int, stoch_size: int, action_size: int, *, members: int = 8, units: int = 640,
                 layers: int = 3, rngs: nnx.Rngs):
        if members < 2:
            raise ValueError(f"a disagreement ensemble needs at least 2 members, got {members}")
        self.members = members
        self.sizes = (deter_size, stoch_size, action_size)
        self.hidden = nnx.List()
        self.norms = nnx.List()
        width = deter_size + stoch_size + action_size
        for _ in range(layers):
            self.hidden.append(EnsembleLinear(members, width, units, rngs=rngs))
            self.norms.append(EnsembleLayerNorm(members, units))
            width = units
        self.out = EnsembleLinear(members, width, stoch_size, rngs=rngs)

    def __call__(self, deter: jax.Array, stoch: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([deter, stoch, action], -1).astype(jnp.float32)
        x = jnp.broadcast_to(x, (self.members,) + x.shape)
        for linear, norm in zip(self.hidden, self.norms):
            x = jax.nn.silu(norm(linear(x)))
        return self.out(x)

    def disagreement(self, deter: jax.Array, stoch: jax.Array, action: jax.Array) -> jax.Array:
        """Intrinsic reward [...]: ensemble std of the predicted next latent, averaged over its dimensions."""
        return self(deter, stoch, action).std(0).mean(-1)


def ensemble_loss(model: DisagreementEnsemble, deter: jax.Array, stoch: jax.Array, action: jax.Array,
                  next_stoch: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum over members of the mean (over batch/time) squared error summed over latent dims (an MSE NLL).

    All inputs share leading axes [...]; mask [...] (optional, 0/1) drops transitions, e.g. across an episode
    boundary. The target is stop-gradient, since only the ensemble learns here.
    """
    target = jax.lax.stop_gradient(next_stoch).astype(jnp.float32)
    predictions = model(jax.lax.stop_gradient(deter), jax.lax.stop_gradient(stoch), jax.lax.stop_gradient(action))
    sse = jnp.square(predictions - target).sum(-1).reshape(model.members, -1)  # [M, N]
    if mask is None:
        per_member = sse.mean(-1)
    else:
        weight = mask.reshape(1, -1).astype(jnp.float32)
        per_member = (sse * weight).sum(-1) / jnp.maximum(weight.sum(), 1.0)  # [M]
    loss = per_member.sum()
    metrics = {"p2e/loss": loss, "p2e/member_mse": per_member.mean(),
               "p2e/disagreement": predictions.std(0).mean()}
    return loss, metrics


def shift_transitions(deter: jax.Array, stoch: jax.Array, action: jax.Array):
    """Pairs replay posteriors along time: inputs at t, target stoch at t+1.

    deter [B, T, D], stoch [B, T, S] and action [B, T, A] with action[:, t] taken in state t (the replay
    convention of this agent) -> (deter, stoch, action) [B, T-1, .] and next_stoch [B, T-1, S].
    """
    return deter[:, :-1], stoch[:, :-1], action[:, :-1], stoch[:, 1:]


def make_optimizer(lr: float = 1e-4, eps: float = 1e-5, clip: float = 100.0) -> optax.GradientTransformation:
    """Adam with global-norm clipping, SENSEI's `expl_opt` (lr 1e-4, eps 1e-5, clip 100)."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=eps))


def replay_loss(model: DisagreementEnsemble, outs: dict[str, jax.Array], batch: dict[str, jax.Array],
                key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The ensemble's loss on the world model's replay posteriors, in the agent's `ExtraModule.loss` form.

    outs: 'deter' [B, T, D], 'stoch' [B, T, S, K] one-hot, 'action' [B, T, A] (taken at each step). Transitions
    into a step with batch['is_first'] (a new episode) are masked out.
    """
    stoch = outs["stoch"].reshape(outs["stoch"].shape[:2] + (-1,))
    deter, stoch_t, action, next_stoch = shift_transitions(outs["deter"], stoch, outs["action"])
    mask = 1.0 - batch["is_first"][:, 1:].astype(jnp.float32)
    loss, metrics = ensemble_loss(model, deter, stoch_t, action, next_stoch, mask)
    return loss, {k.split("/", 1)[1]: v for k, v in metrics.items()}


def create(cfg, deter_size: int, stoch_size: int, action_size: int, key: jax.Array):
    """Builds the ensemble and its optimizer from an `ExploreConfig`. Returns (model, nnx.Optimizer)."""
    model = DisagreementEnsemble(deter_size, stoch_size, action_size, members=cfg.ensemble_size,
                                 units=cfg.ensemble_units, layers=cfg.ensemble_layers, rngs=nnx.Rngs(params=key))
    optimizer = nnx.Optimizer(model, make_optimizer(cfg.ensemble_lr, cfg.ensemble_eps, cfg.ensemble_clip),
                              wrt=nnx.Param)
    return model, optimizer


def train_step(model: DisagreementEnsemble, optimizer: nnx.Optimizer, deter: jax.Array, stoch: jax.Array,
               action: jax.Array, next_stoch: jax.Array) -> dict[str, jax.Array]:
    """One gradient step of the ensemble on aligned transitions (see `shift_transitions`). Updates in place;
    call inside `nnx.jit` (or a jitted function that owns both modules)."""
    grad_fn = nnx.value_and_grad(ensemble_loss, has_aux=True)
    (_, metrics), grads = grad_fn(model, deter, stoch, action, next_stoch)
    optimizer.update(model, grads)
    return metrics
