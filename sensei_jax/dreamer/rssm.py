"""Recurrent state-space model of DreamerV3: a GRU for the deterministic state and groups of categoricals.

A latent state is a dict `{'deter': [B, D] float32, 'stoch': [B, S, K] float32 one-hot}`; the feature the heads
read is concat(deter, flat stoch) [B, D + S*K]. Actions [B, A] are divided by max(1, |a|) before use; on
`is_first` the previous action is zeroed and the latent replaced by the initial state (zeros, or the learned one:
`DreamerConfig.initial_state`). The GRU is the 2024 block GRU or the 2023 dense one (`DreamerConfig.rssm_core`).
`observe` and `imagine` run `jax.lax.scan` over time, so they compile to one loop.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.distributions import LatentCategorical, sg
from sensei_jax.dreamer.nets import BlockLinear, Dense, Linear, MLP, Norm

Latent = dict[str, jax.Array]


def feature(latent: Latent) -> jax.Array:
    """[..., D + S*K]: the deterministic state and the flattened one-hot stochastic state."""
    stoch = latent["stoch"]
    return jnp.concatenate([latent["deter"], stoch.reshape(stoch.shape[:-2] + (-1,))], -1)


class RSSM(nnx.Module):
    def __init__(self, cfg: DreamerConfig, action_size: int, embed_size: int, *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        size = cfg.size()
        self.deter, self.stoch, self.classes, self.blocks = size.deter, size.stoch, size.classes, cfg.blocks
        self.unimix, self.free_nats = cfg.unimix, cfg.free_nats
        hidden, norm = size.units, cfg.norm
        self.core_kind = cfg.rssm_core
        if cfg.rssm_core == "block":
            # Three input projections, then a block GRU whose groups each see the projected inputs and their own
            # slice of the deterministic state.
            self.in_deter = Dense(size.deter, hidden, norm, dtype=dtype, rngs=rngs)
            self.in_stoch = Dense(size.stoch_size, hidden, norm, dtype=dtype, rngs=rngs)
            self.in_action = Dense(action_size, hidden, norm, dtype=dtype, rngs=rngs)
            group_in = 3 * hidden + size.deter // cfg.blocks
            self.gru_hidden = BlockLinear(cfg.blocks * group_in, size.deter, cfg.blocks, dtype=dtype, rngs=rngs)
            self.gru_norm = Norm(size.deter, norm, dtype=dtype)
            self.gru_gates = BlockLinear(size.deter, 3 * size.deter, cfg.blocks, dtype=dtype, rngs=rngs)
        else:
            # One projection of [stoch, action], then all three gates from one normed linear (no bias: the norm's
            # shift takes its place) over [deter, projected input].
            self.in_dense = Dense(size.stoch_size + action_size, hidden, norm, dtype=dtype, rngs=rngs)
            self.gru_gates = Linear(size.deter + hidden, 3 * size.deter, bias=False, dtype=dtype, rngs=rngs)
            self.gru_norm = Norm(3 * size.deter, norm, dtype=dtype)
        self.initial_kind = cfg.initial_state
        self.initial_deter = nnx.Param(jnp.zeros((size.deter,), jnp.float32)) if cfg.initial_state == "learned" \
            else None
        # Prior from the deterministic state alone; posterior also from the observation embedding.
        self.prior_mlp = MLP(size.deter, hidden, cfg.prior_layers, norm, dtype=dtype, rngs=rngs)
        self.prior_out = Linear(hidden, size.stoch_size, dtype=dtype, rngs=rngs)
        self.post_mlp = MLP(size.deter + embed_size, hidden, 1, norm, dtype=dtype, rngs=rngs)
        self.post_out = Linear(hidden, size.stoch_size, dtype=dtype, rngs=rngs)

    # ------------------------------------------------------------------------------------------------------------
    def initial(self, batch_size: int) -> Latent:
        """The state before an episode's first step, [B, ...]: zeros, or tanh of the learned vector with the
        prior's mode as stoch (the mode carries no gradient, as in the 2023 reference)."""
        if self.initial_deter is None:
            return {
                "deter": jnp.zeros((batch_size, self.deter), jnp.float32),
                "stoch": jnp.zeros((batch_size, self.stoch, self.classes), jnp.float32),
            }
        deter = jnp.tanh(self.initial_deter[...])
        stoch = jax.nn.one_hot(jnp.argmax(self.prior_logits(deter[None]), -1), self.classes, dtype=jnp.float32)
        return {"deter": jnp.broadcast_to(deter, (batch_size, self.deter)),
                "stoch": jnp.broadcast_to(stoch, (batch_size, self.stoch, self.classes))}

    def _logits(self, out: jax.Array) -> jax.Array:
        return out.astype(jnp.float32).reshape(out.shape[:-1] + (self.stoch, self.classes))

    def prior_logits(self, deter: jax.Array) -> jax.Array:
        """[B, D] -> [B, S, K]."""
        return self._logits(self.prior_out(self.prior_mlp(deter)))

    def project_embed(self, embed: jax.Array) -> jax.Array:
        """The embedding's share of the posterior's first layer, [..., E] -> [..., hidden]. It does not depend on
        the recurrent state, so `observe` computes it for all steps at once, outside the sequential loop (at the
        medium size it is the largest matmul of a posterior step)."""
        first = self.post_mlp.layers["l0"].linear
        return embed.astype(first.dtype) @ first.kernel[...][self.deter:].astype(first.dtype)

    def _post_from(self, deter: jax.Array, embed_part: jax.Array) -> jax.Array:
        first = self.post_mlp.layers["l0"]
        kernel = first.linear.kernel[...][:self.deter].astype(first.linear.dtype)
        x = jax.nn.silu(first.norm(deter.astype(first.linear.dtype) @ kernel + embed_part))
        for i in range(1, len(self.post_mlp.layers)):
            x = self.post_mlp.layers[f"l{i}"](x)
        return self._logits(self.post_out(x))

    def dist(self, logits: jax.Array) -> LatentCategorical:
        return LatentCategorical(logits, self.unimix)

    def core(self, latent: Latent, action: jax.Array) -> jax.Array:
        """GRU step: the next deterministic state [B, D] float32."""
        deter, stoch = latent["deter"], latent["stoch"]
        action = action / sg(jnp.maximum(1.0, jnp.abs(action)))
        if self.core_kind == "dense":
            x = self.in_dense(jnp.concatenate([stoch.reshape(stoch.shape[:-2] + (-1,)), action], -1))
            gates = self.gru_norm(self.gru_gates(jnp.concatenate([deter.astype(x.dtype), x], -1)))
            reset, cand, update = jnp.split(gates.astype(jnp.float32), 3, -1)
            reset = jax.nn.sigmoid(reset)
            cand = jnp.tanh(reset * cand)
            update = jax.nn.sigmoid(update - 1.0)
            return update * cand + (1 - update) * deter
        x = jnp.concatenate([
            self.in_deter(deter), self.in_stoch(stoch.reshape(stoch.shape[:-2] + (-1,))), self.in_action(action)], -1)
        groups = self.blocks
        x = jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (groups, x.shape[-1]))
        own = deter.reshape(deter.shape[:-1] + (groups, -1)).astype(x.dtype)
        x = self.gru_hidden(jnp.concatenate([x, own], -1))
        x = jax.nn.silu(self.gru_norm(x.reshape(x.shape[:-2] + (-1,))))
        gates = self.gru_gates(x.reshape(x.shape[:-1] + (groups, -1))).astype(jnp.float32)
        reset, cand, update = jnp.split(gates, 3, -1)
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        flat = lambda t: t.reshape(t.shape[:-2] + (-1,))  # noqa: E731
        update, cand = flat(update), flat(cand)
        return update * cand + (1 - update) * deter

    def img_step(self, latent: Latent, action: jax.Array, key: jax.Array) -> tuple[Latent, jax.Array]:
        """One prior step: (latent, action [B, A]) -> (next latent, prior logits [B, S, K])."""
        deter = self.core(latent, action)
        logits = self.prior_logits(deter)
        return {"deter": deter, "stoch": self.dist(logits).sample(key)}, logits

    def obs_step(self, latent: Latent, prev_action: jax.Array, embed: jax.Array, is_first: jax.Array,
                 key: jax.Array) -> tuple[Latent, jax.Array, jax.Array]:
        """One posterior step. latent, prev_action [B, A], embed [B, E], is_first [B] bool ->
        (posterior latent, posterior logits [B, S, K], prior logits [B, S, K])."""
        latent, post = self._posterior(latent, prev_action, self.project_embed(embed), is_first, key)
        return latent, post, self.prior_logits(latent["deter"])

    def _posterior(self, latent: Latent, prev_action: jax.Array, embed_part: jax.Array, is_first: jax.Array,
                   key: jax.Array) -> tuple[Latent, jax.Array]:
        keep = 1.0 - is_first.astype(jnp.float32)
        expand = lambda m, v: m.reshape((-1,) + (1,) * (v.ndim - 1))  # noqa: E731
        latent = {k: v * expand(keep, v) for k, v in latent.items()}
        if self.initial_deter is not None:
            start = self.initial(keep.shape[0])
            latent = {k: v + start[k] * expand(1.0 - keep, v) for k, v in latent.items()}
        prev_action = prev_action * keep[:, None]
        deter = self.core(latent, prev_action)
        post = self._post_from(deter, embed_part)
        return {"deter": deter, "stoch": self.dist(post).sample(key)}, post

    def observe(self, latent: Latent, prev_actions: jax.Array, embeds: jax.Array, is_first: jax.Array,
                key: jax.Array) -> tuple[Latent, dict[str, jax.Array]]:
        """Posterior rollout over a sequence.

        latent: the carry before the first step ([B, ...]); prev_actions [B, T, A] (the action taken before each
        step); embeds [B, T, E]; is_first [B, T] bool. Returns the last latent and a dict of [B, T, ...] arrays:
        deter, stoch (posterior samples), post (logits), prior (logits). `key` is one PRNG key, or one per step [T]
        (then a sequence split in two and observed piece by piece, carrying the latent, samples the same).
        """
        steps = embeds.shape[1]
        keys = key if key.shape == (steps,) else jax.random.split(key, steps)

        def step(carry, inputs):
            act, emb, first, k = inputs
            new, post = self._posterior(carry, act, emb, first, k)
            return new, {**new, "post": post}

        swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        embed_parts = self.project_embed(embeds)
        last, outs = jax.lax.scan(step, latent, (swap(prev_actions), swap(embed_parts), swap(is_first), keys))
        outs = jax.tree.map(swap, outs)
        # The prior is not part of the recurrence, so it runs once over all steps after the loop.
        return last, {**outs, "prior": self.prior_logits(outs["deter"])}

    def imagine(self, latent: Latent, policy: Callable[[Latent, jax.Array], jax.Array], horizon: int,
                key: jax.Array) -> tuple[Latent, jax.Array]:
        """Prior rollout driven by `policy(latent, key) -> action [B, A]`.

        Returns the latents [B, horizon + 1, ...] (index 0 is the start) and the actions [B, horizon + 1, A] taken
        in each of them (the last one is sampled too, so that every state has an action).
        """
        keys = jax.random.split(key, horizon + 1)

        def step(carry, k):
            k_act, k_dyn = jax.random.split(k)
            action = policy(carry, k_act)
            nxt, _ = self.img_step(carry, action, k_dyn)
            return nxt, (carry, action)

        last, (latents, actions) = jax.lax.scan(step, latent, keys[:-1])
        last_action = policy(last, keys[-1])
        latents = jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]], 0), latents, last)
        actions = jnp.concatenate([actions, last_action[None]], 0)
        swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        return jax.tree.map(swap, latents), swap(actions)

    def open_loop(self, latent: Latent, actions: jax.Array, key: jax.Array) -> Latent:
        """Prior rollout with given actions [B, T, A] -> latents [B, T, ...] (the state after each action)."""
        keys = jax.random.split(key, actions.shape[1])

        def step(carry, inputs):
            act, k = inputs
            nxt, _ = self.img_step(carry, act, k)
            return nxt, nxt

        _, latents = jax.lax.scan(step, latent, (jnp.swapaxes(actions, 0, 1), keys))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), latents)

    def kl_losses(self, post: jax.Array, prior: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Dynamics and representation KL terms, each [...], summed over groups and clipped below at free_nats.

        dyn = KL(sg(post) || prior) trains the prior; rep = KL(post || sg(prior)) regularizes the posterior.
        """
        dyn = self.dist(sg(post)).kl(self.dist(prior))
        rep = self.dist(post).kl(self.dist(sg(prior)))
        return jnp.maximum(dyn, self.free_nats), jnp.maximum(rep, self.free_nats)
