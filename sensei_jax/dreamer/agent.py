"""The DreamerV3 agent as pure functions over one state pytree.

Contract (the training loop and SENSEI build on exactly this):

    agent = Agent(cfg: DreamerConfig, obs_space: {key: (shape, dtype)}, action_size: int, discrete: bool = False,
                  reward_sources=None, weighting=None, extra_heads=None, extra_modules=None)
    state = agent.init(key)
    carry = agent.initial_carry(batch_size)
    action, carry = agent.policy(state, carry, obs, key, mode="explore" | "eval")
    state, metrics = agent.train(state, batch, key)
    state, metrics, latents = agent.train(state, batch, key, return_latents=True)
    videos = agent.report(state, batch, key)
    name = first_nonfinite_loss(metrics)   # host side, after fetching metrics

All of them are pure and jit-compatible (`init` also runs eagerly in about a second: weights are drawn by numpy
outside of tracing); none is jitted here, so the caller compiles each once with its own
shardings and donation (`mode` and `return_latents` are Python values: use `static_argnames` or
`functools.partial`).

state (a pytree of float32/int32 arrays and nested dicts of str keys only, so orbax saves it as is):
    params:        {'wm': ..., 'actor': ..., 'critics': {source: ...}, 'extras': {name: ...}}  (nnx pure dicts)
    slow_critics:  {source: ...}  EMA copies of the critics
    opt:           {'wm', 'actor', 'critics', 'extras': {name}} optax states ('critics' holds one state per
                   source with `critic_optimizers: separate`)
    retnorm:       {source: {'low', 'high'}}  EMA percentiles of the lambda-returns
    weighting:     the state of the source weighting (empty for the default)
    step:          int32 [] number of train steps taken

carry (policy recurrent state) = {'deter': [B, D] f32, 'stoch': [B, S, K] f32 one-hot, 'action': [B, A] f32}:
    the posterior after the last observation and the action taken from it. Start with `initial_carry(B)`; on
    `obs['is_first']` the carry is reset inside `policy`, so auto-resetting envs need no special handling.

obs (policy): {key: [B, *shape]} for every key of obs_space the model reads, plus 'is_first' [B] bool. Images are
    uint8 [B, H, W, C]. The returned action is float32 [B, A]: clipped to [-1, 1] when continuous, one-hot when
    discrete (mode 'explore' samples, 'eval' takes the mode).

batch (train): {key: [B, T, *shape]} obs keys; 'action' [B, T, A] f32 (the action taken after observing step t,
    i.e. the policy's output at that step); 'reward' [B, T] f32 (received on arriving at step t); 'is_first',
    'is_terminal' [B, T] bool; optional 'context' = {'deter': [B, D], 'stoch': [B, S] int (class indices) or
    [B, S, K] one-hot, 'action': [B, A]}: the policy carry after the step *before* the window (replay context;
    without it the window starts from the RSSM's initial state). Extra head targets (HeadSpec.target) are more
    [B, T] keys.
    With return_latents=True, train also returns {'deter': [B, T, D] f32, 'stoch': [B, T, S] int32}: the fresh
    posteriors of every batch step, to write back into replay as later windows' context.

metrics: a flat dict of float32 scalars: 'loss/<name>' for every loss ('loss/image', 'loss/reward', 'loss/cont',
    'loss/kl_dyn', 'loss/kl_rep', 'loss/<extra head>', 'loss/model' (total), 'loss/actor', 'loss/critic_<source>',
    'loss/<extra module>'), 'finite/<name>' (1.0 if that loss is finite) for each of them, and 'ret/<source>',
    'rew/<source>', 'value/<source>', 'retscale/<source>', 'weight/<source>', 'actor/...', 'grad_norm/<group>',
    'wm/...', and per extra head 'fit/<head>/{corr, mae, target_mean, target_std}' (its prediction against its
    target on the batch's posterior states).

Extension points (for Plan2Explore and SENSEI), all given to the constructor:
    reward_sources: {name: RewardSource(fn)}; fn(traj, wm, extras) -> reward [N, H+1]. The built-in 'extr' is
        the reward head. The sources used are the keys of cfg.reward_scales; each gets a critic, a slow critic
        and a return normalizer. Under `actor_grad_cont: backprop` fn must be differentiable in traj (the
        actor's gradient flows through it).
    weighting: a `Weighting` (init() -> state; __call__(state, WeightContext) -> (weights {source: [N, H]}, state,
        metrics)); default: constant scale_k / sum(scales).
    extra_heads: {name: HeadSpec} world-model heads trained in the world-model loss (e.g. the semantic reward
        head on stop-gradient features); a reward source reads them as wm.heads[name](feat).
    extra_modules: {name: ExtraModule(make, loss, optimizer)} trained after the world model and before the
        actor-critic, each with its own optimizer, on the stop-gradient posteriors (e.g. the disagreement
        ensemble); reward sources receive them merged, in `extras`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sensei_jax.dreamer.actor_critic import (
    Actor, RewardSource, ScaleWeighting, WeightContext, Weighting, actor_loss, critic_loss, extrinsic_reward,
    imagination_weight, lambda_return, retnorm_init, retnorm_scale, retnorm_update)
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.distributions import LatentCategorical
from sensei_jax.dreamer.heads import HeadSpec, ScalarHead
from sensei_jax.dreamer.optim import make_optimizer
from sensei_jax.dreamer.rssm import feature
from sensei_jax.dreamer.world_model import ObsSpace, WorldModel, split_obs_keys

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class ExtraModule:
    """A module trained alongside the world model with its own optimizer (e.g. a Plan2Explore ensemble).

    make(rngs) -> nnx.Module.
    loss(module, outs, batch, key) -> (scalar loss, {name: scalar metric}); outs are the stop-gradient posterior
        outputs of the world model for the batch: 'deter' [B, T, D], 'stoch' [B, T, S, K], 'feat' [B, T, F], and
        'action' [B, T, A] (the action taken at each step).
    """

    make: Callable[[nnx.Rngs], nnx.Module]
    loss: Callable[[nnx.Module, dict[str, jax.Array], dict[str, jax.Array], jax.Array],
                   tuple[jax.Array, dict[str, jax.Array]]]
    optimizer: optax.GradientTransformation


def _pure(module: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(module))


def _loss_order(name: str) -> tuple[int, str]:
    # World-model and extra-module losses come first: a NaN there spreads to the critics and the actor.
    if name == "actor":
        return 3, name
    if name.startswith("critic_"):
        return 2, name
    if name == "model":
        return 1, name
    return 0, name


def first_nonfinite_loss(metrics: Mapping[str, Any]) -> str | None:
    """Host side: the name of the loss that went non-finite first in the update (its 'finite/<name>' flag is 0 or
    its 'loss/<name>' value is NaN/inf), or None when all are finite."""
    bad = set()
    for name, value in metrics.items():
        if name.startswith("finite/") and not float(np.asarray(value)) > 0.5:
            bad.add(name[len("finite/"):])
        elif name.startswith("loss/") and not np.isfinite(np.asarray(value)).all():
            bad.add(name[len("loss/"):])
    return min(bad, key=_loss_order) if bad else None


class Agent:
    def __init__(self, cfg: DreamerConfig, obs_space: ObsSpace, action_size: int, discrete: bool = False, *,
                 reward_sources: Mapping[str, RewardSource] | None = None, weighting: Weighting | None = None,
                 extra_heads: Mapping[str, HeadSpec] | None = None,
                 extra_modules: Mapping[str, ExtraModule] | None = None):
        if action_size < 1:
            raise ValueError(f"action_size must be positive, got {action_size}")
        self.cfg = cfg
        self.obs_space = {k: (tuple(int(d) for d in s), np.dtype(t)) for k, (s, t) in obs_space.items()}
        self.action_size = action_size
        self.discrete = discrete
        self.backprop = cfg.actor_grad_cont == "backprop" and not discrete
        sources = {"extr": RewardSource(extrinsic_reward), **dict(reward_sources or {})}
        missing = [k for k in cfg.reward_scales if k not in sources]
        if missing:
            raise ValueError(f"dreamer.reward_scales names reward sources {missing} that are not registered "
                             f"(registered: {sorted(sources)})")
        self.sources = {k: sources[k] for k in cfg.reward_scales}
        self.scales = dict(cfg.reward_scales)
        self.weighting = weighting if weighting is not None else ScaleWeighting()
        self.extra_heads = dict(extra_heads or {})
        self.extra_modules = dict(extra_modules or {})
        self.size = cfg.size()
        images, vectors = split_obs_keys(self.obs_space, cfg.encoder_keys)
        dec_images, dec_vectors = split_obs_keys(self.obs_space, cfg.decoder_keys)
        self._encoder_keys = tuple(sorted(images + vectors))
        self._model_keys = tuple(sorted(set(images + vectors + dec_images + dec_vectors)))
        self.dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
        self.opt = {"wm": make_optimizer(cfg, "model"), "actor": make_optimizer(cfg, "actor"),
                    "critics": make_optimizer(cfg, "critic")}
        # Graph definitions (structure without arrays), from abstract modules: nothing is allocated here.
        self.graphdefs = {name: nnx.split(nnx.eval_shape(build))[0] for name, build in self._builders(0).items()}
        self.graphdefs.update({f"extra:{k}": nnx.split(nnx.eval_shape(lambda m=m: m.make(nnx.Rngs(0))))[0]
                               for k, m in self.extra_modules.items()})

    def _builders(self, seed: int) -> dict[str, Callable[[], nnx.Module]]:
        feat = self.size.feat_size

        def wm():
            return WorldModel(self.cfg, self.obs_space, self.action_size, self.extra_heads, rngs=nnx.Rngs(seed))

        def actor():
            return Actor(self.cfg, feat, self.action_size, self.discrete, dtype=self.dtype, rngs=nnx.Rngs(seed + 1))

        def critic():
            return ScalarHead(self.cfg, feat, dtype=self.dtype, rngs=nnx.Rngs(seed + 2))

        return {"wm": wm, "actor": actor, "critic": critic}

    # ------------------------------------------------------------------------------------------------------------
    def init(self, key: jax.Array) -> dict[str, Any]:
        """Fresh parameters, optimizer states, normalizers and counters from a PRNG key."""
        keys = jax.random.split(key, 4 + len(self.extra_modules))
        wm = WorldModel(self.cfg, self.obs_space, self.action_size, self.extra_heads, rngs=nnx.Rngs(keys[0]))
        actor = Actor(self.cfg, self.size.feat_size, self.action_size, self.discrete, dtype=self.dtype,
                      rngs=nnx.Rngs(keys[1]))
        critic_keys = jax.random.split(keys[2], len(self.sources))
        critics = {k: _pure(ScalarHead(self.cfg, self.size.feat_size, dtype=self.dtype, rngs=nnx.Rngs(ck)))
                   for k, ck in zip(self.sources, critic_keys)}
        extras = {k: _pure(m.make(nnx.Rngs(keys[4 + i]))) for i, (k, m) in enumerate(self.extra_modules.items())}
        params = {"wm": _pure(wm), "actor": _pure(actor), "critics": critics, "extras": extras}
        opt = {name: self.opt[name].init(params[name]) for name in ("wm", "actor", "critics")}
        if self.cfg.critic_optimizers == "separate":
            opt["critics"] = {k: self.opt["critics"].init(v) for k, v in critics.items()}
        opt["extras"] = {k: m.optimizer.init(extras[k]) for k, m in self.extra_modules.items()}
        return {
            "params": params,
            "slow_critics": jax.tree.map(jnp.array, critics),
            "opt": opt,
            "retnorm": {k: retnorm_init() for k in self.sources},
            "weighting": self.weighting.init(),
            "step": jnp.zeros((), jnp.int32),
        }

    def initial_carry(self, batch_size: int) -> dict[str, jax.Array]:
        return {
            "deter": jnp.zeros((batch_size, self.size.deter), jnp.float32),
            "stoch": jnp.zeros((batch_size, self.size.stoch, self.size.classes), jnp.float32),
            "action": jnp.zeros((batch_size, self.action_size), jnp.float32),
        }

    def world_model(self, state: Mapping[str, Any]) -> WorldModel:
        """The world model as an nnx module (e.g. for reward sources, reports or analysis)."""
        return nnx.merge(self.graphdefs["wm"], state["params"]["wm"])

    def actor(self, state: Mapping[str, Any]) -> Actor:
        return nnx.merge(self.graphdefs["actor"], state["params"]["actor"])

    def _critic(self, params: Any) -> ScalarHead:
        return nnx.merge(self.graphdefs["critic"], params)

    def _extras(self, params: Mapping[str, Any]) -> dict[str, nnx.Module]:
        return {k: nnx.merge(self.graphdefs[f"extra:{k}"], params[k]) for k in self.extra_modules}

    # ------------------------------------------------------------------------------------------------------------
    def policy(self, state: Mapping[str, Any], carry: Mapping[str, jax.Array], obs: Mapping[str, jax.Array],
               key: jax.Array, mode: str = "explore") -> tuple[jax.Array, dict[str, jax.Array]]:
        """One batched acting step: observe obs [B, ...], update the posterior, pick an action [B, A]."""
        if mode not in ("explore", "eval"):
            raise ValueError(f"policy mode must be 'explore' or 'eval', got {mode!r}")
        self._check_inputs(obs, 1, "policy obs")
        wm, actor = self.world_model(state), self.actor(state)
        k_latent, k_action = jax.random.split(key)
        embed = wm.encode(obs)
        latent = {"deter": carry["deter"], "stoch": carry["stoch"]}
        latent, _, _ = wm.rssm.obs_step(latent, carry["action"], embed, obs["is_first"], k_latent)
        dist = actor(feature(latent))
        action = dist.sample(k_action) if mode == "explore" else dist.mode()
        if not self.discrete:
            action = jnp.clip(action, -1.0, 1.0)
        action = sg(action).astype(jnp.float32)
        latent = jax.tree.map(sg, latent)
        return action, {"deter": latent["deter"], "stoch": latent["stoch"], "action": action}

    # ------------------------------------------------------------------------------------------------------------
    def _check_inputs(self, data: Mapping[str, Any], lead: int, where: str) -> None:
        """Trace-time checks of a batch (lead = 2 dims [B, T]) or policy obs (lead = 1 dim [B]); names the key."""
        needed = {"is_first": ()}
        if lead == 2:
            needed.update({"action": (self.action_size,), "reward": (), "is_terminal": ()})
        model_keys = self._model_keys if lead == 2 else self._encoder_keys
        needed.update({k: self.obs_space[k][0] for k in model_keys})
        batch_shape = None
        for key, tail in needed.items():
            if key not in data:
                raise ValueError(f"{where}: missing key '{key}' (got {sorted(data)})")
            shape = tuple(data[key].shape)
            if len(shape) != lead + len(tail) or shape[lead:] != tuple(tail):
                raise ValueError(f"{where}: '{key}' has shape {shape}, expected {('B', 'T')[:lead] + tuple(tail)}")
            if batch_shape is None:
                batch_shape = shape[:lead]
            elif shape[:lead] != batch_shape:
                raise ValueError(f"{where}: '{key}' has leading dims {shape[:lead]}, others have {batch_shape}")

    def _context(self, batch: Mapping[str, Any], batch_size: int, wm: WorldModel
                 ) -> tuple[dict[str, jax.Array], jax.Array]:
        if "context" not in batch:  # the window starts from the initial state, as an episode does
            return wm.rssm.initial(batch_size), jnp.zeros((batch_size, self.action_size), jnp.float32)
        ctx = batch["context"]
        stoch = ctx["stoch"]
        if jnp.issubdtype(stoch.dtype, jnp.integer):
            stoch = jax.nn.one_hot(stoch, self.size.classes, dtype=jnp.float32)
        return {"deter": ctx["deter"].astype(jnp.float32), "stoch": stoch.astype(jnp.float32)}, \
            ctx["action"].astype(jnp.float32)

    def train(self, state: dict[str, Any], batch: Mapping[str, Any], key: jax.Array, return_latents: bool = False):
        """One update of the world model, the extra modules and the actor-critic. See the module docstring."""
        cfg = self.cfg
        params, opt = state["params"], state["opt"]
        data = {k: v for k, v in batch.items() if k != "context"}
        self._check_inputs(data, 2, "train batch")
        batch_size, length = data["is_first"].shape
        k_wm, k_extra, k_imag = jax.random.split(key, 3)
        metrics: dict[str, jax.Array] = {}

        # World model (a learned initial state is a parameter, so the window's start is built inside the loss).
        def wm_loss(wm_params):
            wm = nnx.merge(self.graphdefs["wm"], wm_params)
            carry, prev_action = self._context(batch, batch_size, wm)
            return wm.loss(data, carry, prev_action, k_wm)

        (model_loss, (losses, outs)), grads = jax.value_and_grad(wm_loss, has_aux=True)(params["wm"])
        updates, opt_wm = self.opt["wm"].update(grads, opt["wm"], params["wm"])
        wm_params = optax.apply_updates(params["wm"], updates)
        for name, value in losses.items():
            metrics[f"loss/{name}"] = value.mean()
        metrics["loss/model"] = model_loss
        metrics["grad_norm/wm"] = optax.tree.norm(grads)
        post_ent = self._latent_entropy(outs["post"])
        prior_ent = self._latent_entropy(outs["prior"])
        metrics["wm/post_entropy"], metrics["wm/prior_entropy"] = post_ent, prior_ent
        for name, (prediction, target) in outs["head_fit"].items():
            metrics.update({f"fit/{name}/{k}": v for k, v in head_fit(prediction, target).items()})
        posterior = jax.tree.map(sg, {k: outs[k] for k in ("deter", "stoch", "feat")})

        extra_params, extra_opt, extra_metrics = self._train_extras(params["extras"], opt["extras"], posterior, data,
                                                                    k_extra)
        metrics.update(extra_metrics)

        # Actor-critic in imagination from every posterior state, with the updated world model.
        wm = nnx.merge(self.graphdefs["wm"], wm_params)
        extras = self._extras(extra_params)
        behavior = self._behavior(state, params, opt, wm, extras, posterior, data, k_imag)
        new_params, new_opt, new_state_parts, ac_metrics = behavior
        metrics.update(ac_metrics)

        params = {"wm": wm_params, "actor": new_params["actor"], "critics": new_params["critics"],
                  "extras": extra_params}
        opt = {"wm": opt_wm, "actor": new_opt["actor"], "critics": new_opt["critics"], "extras": extra_opt}
        step = state["step"] + 1
        every = max(cfg.critic_slow_every, 1)
        mix = jnp.where(step % every == 0, cfg.critic_slow_rate, 0.0)
        slow = jax.tree.map(lambda s, p: s + mix * (p - s), state["slow_critics"], params["critics"])
        new_state = {"params": params, "slow_critics": slow, "opt": opt, "retnorm": new_state_parts["retnorm"],
                     "weighting": new_state_parts["weighting"], "step": step}
        for name in [k[len("loss/"):] for k in metrics if k.startswith("loss/")]:
            metrics[f"finite/{name}"] = jnp.isfinite(metrics[f"loss/{name}"]).astype(jnp.float32)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        if return_latents:
            latents = {"deter": posterior["deter"], "stoch": jnp.argmax(posterior["stoch"], -1).astype(jnp.int32)}
            return new_state, metrics, latents
        return new_state, metrics

    def _train_extras(self, params: dict, opt: dict, posterior: dict, data: Mapping[str, Any], key: jax.Array):
        """One step of each extra module (its own optimizer) on the stop-gradient posteriors -> (params, opt,
        metrics)."""
        params, opt, metrics = dict(params), dict(opt), {}
        inputs = {**posterior, "action": data["action"].astype(jnp.float32)}
        for i, (name, module) in enumerate(self.extra_modules.items()):
            def extra_loss(p, name=name, module=module, k=jax.random.fold_in(key, i)):
                return module.loss(nnx.merge(self.graphdefs[f"extra:{name}"], p), inputs, data, k)

            (loss, mets), grads = jax.value_and_grad(extra_loss, has_aux=True)(params[name])
            updates, opt[name] = module.optimizer.update(grads, opt[name], params[name])
            params[name] = optax.apply_updates(params[name], updates)
            metrics[f"loss/{name}"] = loss
            metrics.update({f"{name}/{k}": v for k, v in mets.items()})
        return params, opt, metrics

    def _latent_entropy(self, logits: jax.Array) -> jax.Array:
        return LatentCategorical(logits, self.cfg.unimix).entropy().mean()

    def imagine(self, actor_params: Any, wm: WorldModel, starts: Mapping[str, jax.Array], is_terminal: jax.Array,
                key: jax.Array) -> dict[str, jax.Array]:
        """Imagined trajectories from every start state, with the actor of `actor_params` choosing the actions.

        starts: 'deter' [N, D], 'stoch' [N, S, K]; is_terminal [N] bool (the start's own flag). Returns 'deter',
        'stoch', 'feat', 'action' and 'cont' [N, H + 1, ...]. The actor reads stop-gradient states; under
        `actor_grad_cont: backprop` the trajectory stays differentiable in `actor_params` (through the sampled
        actions and the dynamics), otherwise all of it is stop-gradient. 'cont' is stop-gradient either way.
        """
        cfg = self.cfg
        actor = nnx.merge(self.graphdefs["actor"], actor_params)

        def act(latent, k):
            return actor(sg(feature(latent))).sample(k)

        latents, actions = wm.rssm.imagine(dict(starts), act, cfg.imag_horizon, key)
        traj = {**latents, "feat": feature(latents), "action": actions}
        cont = wm.cont(traj["feat"])
        cont = cont.mean() if cfg.imag_cont == "mean" else (cont.logits > 0).astype(jnp.float32)
        cont = sg(cont).at[:, 0].set(1.0 - is_terminal.astype(jnp.float32))
        traj["cont"] = cont
        return traj if self.backprop else jax.tree.map(sg, traj)

    def _score(self, state, params, wm: WorldModel, extras, traj) -> dict[str, Any]:
        """Rewards, values, lambda-returns, normalizers, source weights and the advantage [N, H] of `traj`.

        Values and returns keep the trajectory's gradient (so the advantage is differentiable under backprop);
        the critics' own parameters, the normalizer scales and the source weights are constants.
        """
        cfg = self.cfg
        discount = cfg.discount * traj["cont"][:, 1:]
        rewards, state_rewards, values, slow_values, returns = {}, {}, {}, {}, {}
        retnorm, return_scales = {}, {}
        metrics: dict[str, jax.Array] = {}
        for name, source in self.sources.items():
            reward = source.fn(traj, wm, extras).astype(jnp.float32)
            if reward.shape != traj["cont"].shape:
                raise ValueError(f"reward source '{name}' returned shape {reward.shape}, expected "
                                 f"{traj['cont'].shape} ([N, H + 1])")
            rewards[name] = reward[:, 1:]
            state_rewards[name] = reward[:, :-1]
            values[name] = self._critic(sg(params["critics"][name]))(traj["feat"]).mean()
            slow_values[name] = self._critic(sg(state["slow_critics"][name]))(traj["feat"]).mean()
            boot = slow_values[name] if cfg.critic_slow_target else values[name]
            returns[name] = lambda_return(rewards[name], discount, boot, cfg.return_lambda)
            retnorm[name] = retnorm_update(state["retnorm"][name], sg(returns[name]), cfg)
            return_scales[name] = retnorm_scale(retnorm[name], cfg)
            metrics[f"rew/{name}"] = rewards[name].mean()
            metrics[f"ret/{name}"] = returns[name].mean()
            metrics[f"value/{name}"] = values[name].mean()
            metrics[f"retscale/{name}"] = return_scales[name]

        ctx = WeightContext(rewards=sg(rewards), state_rewards=sg(state_rewards), returns=sg(returns),
                            values={k: sg(v[:, :-1]) for k, v in values.items()}, return_scales=return_scales,
                            retnorm=retnorm, scales=self.scales, traj=sg(traj))
        weights, weighting_state, weight_metrics = self.weighting(state["weighting"], ctx)
        weights = sg(weights)
        metrics.update({f"weighting/{k}": v for k, v in weight_metrics.items()})
        advantage = sum(weights[k] * (returns[k] - values[k][:, :-1]) / return_scales[k] for k in self.sources)
        for k in self.sources:
            metrics[f"weight/{k}"] = jnp.mean(weights[k])
        weight = sg(imagination_weight(traj["cont"], cfg.discount, cfg.imag_weight))
        return {"advantage": advantage, "weight": weight, "returns": returns, "slow_values": slow_values,
                "retnorm": retnorm, "weighting": weighting_state, "metrics": metrics}

    def actor_objective(self, state, params, wm: WorldModel, extras, starts: Mapping[str, jax.Array],
                        is_terminal: jax.Array, key: jax.Array, policy_params: Any, loss_params: Any):
        """The actor's loss with the parameters that drive imagination (`policy_params`) kept apart from those
        that score the imagined actions (`loss_params`); the train step passes the actor's parameters as both.

        The gradient in `policy_params` is the path through the imagined states (nonzero only under
        `actor_grad_cont: backprop`); the one in `loss_params` is the direct path (log-probability and entropy).
        Returns (loss, (stop-gradient trajectory, stop-gradient scores, actor metrics)).
        """
        traj = self.imagine(policy_params, wm, starts, is_terminal, key)
        scored = self._score(state, params, wm, extras, traj)
        actor = nnx.merge(self.graphdefs["actor"], loss_params)
        loss, metrics = actor_loss(actor, traj, scored["advantage"], scored["weight"], self.cfg.actor_entropy,
                                   backprop=self.backprop)
        return loss, (jax.tree.map(sg, traj), jax.tree.map(sg, scored), metrics)

    def critic_updates(self, grads: Mapping[str, Any], opt_state: Any, params: Mapping[str, Any]):
        """Optimizer updates of all critics {source: tree} -> (updates, new optimizer state): one optimizer over
        all of them (`critic_optimizers: shared`), or one per source, each clipped on its own gradient."""
        if self.cfg.critic_optimizers == "shared":
            return self.opt["critics"].update(grads, opt_state, params)
        updates, new_state = {}, {}
        for k in grads:
            updates[k], new_state[k] = self.opt["critics"].update(grads[k], opt_state[k], params[k])
        return updates, new_state

    def _behavior(self, state, params, opt, wm: WorldModel, extras, posterior, data, key):
        cfg = self.cfg
        starts = {k: posterior[k].reshape((-1,) + posterior[k].shape[2:]) for k in ("deter", "stoch")}
        is_terminal = data["is_terminal"].reshape(-1)

        if self.backprop:
            def a_loss(actor_params):
                return self.actor_objective(state, params, wm, extras, starts, is_terminal, key, actor_params,
                                            actor_params)

            (loss, (traj, scored, actor_mets)), grads = jax.value_and_grad(a_loss, has_aux=True)(params["actor"])
        else:
            # The trajectory and its scores do not depend on the actor's gradient here, so they are computed once,
            # outside of the differentiated function.
            traj = self.imagine(params["actor"], wm, starts, is_terminal, key)
            scored = self._score(state, params, wm, extras, traj)

            def a_loss(actor_params):
                module = nnx.merge(self.graphdefs["actor"], actor_params)
                return actor_loss(module, traj, scored["advantage"], scored["weight"], cfg.actor_entropy)

            (loss, actor_mets), grads = jax.value_and_grad(a_loss, has_aux=True)(params["actor"])
        metrics = dict(scored["metrics"])
        updates, opt_actor = self.opt["actor"].update(grads, opt["actor"], params["actor"])
        actor_params = optax.apply_updates(params["actor"], updates)
        metrics["loss/actor"] = loss
        metrics["grad_norm/actor"] = optax.tree.norm(grads)
        metrics.update(actor_mets)

        returns, slow_values, weight = scored["returns"], scored["slow_values"], scored["weight"]

        def c_loss(critic_params):
            per = {k: critic_loss(self._critic(critic_params[k]), traj["feat"], returns[k], slow_values[k][:, :-1],
                                  weight, cfg.critic_slow_reg) for k in self.sources}
            return sum(per.values()), per

        (_, per_critic), grads = jax.value_and_grad(c_loss, has_aux=True)(params["critics"])
        updates, opt_critics = self.critic_updates(grads, opt["critics"], params["critics"])
        critic_params = optax.apply_updates(params["critics"], updates)
        metrics.update({f"loss/critic_{k}": v for k, v in per_critic.items()})
        metrics["grad_norm/critics"] = optax.tree.norm(grads)
        metrics["imag/cont"] = traj["cont"].mean()
        return ({"actor": actor_params, "critics": critic_params}, {"actor": opt_actor, "critics": opt_critics},
                {"retnorm": scored["retnorm"], "weighting": scored["weighting"]}, metrics)

    # ------------------------------------------------------------------------------------------------------------
    def report(self, state: Mapping[str, Any], batch: Mapping[str, Any], key: jax.Array) -> dict[str, jax.Array]:
        """Open-loop prediction videos: observe cfg.report_context steps, then imagine the rest with the batch's
        actions. Returns {'openloop/<image key>': uint8 [B, T, H, 3 * W, C]} with truth | model | error side by
        side (pass a few sequences only, e.g. B = 4)."""
        wm = self.world_model(state)
        data = {k: v for k, v in batch.items() if k != "context"}
        batch_size, length = data["is_first"].shape
        context = min(self.cfg.report_context, length - 1)
        carry, prev_action = self._context(batch, batch_size, wm)
        k_obs, k_img = jax.random.split(key)
        head = jax.tree.map(lambda x: x[:, :context], data)
        embed = wm.encode(head)
        actions = data["action"].astype(jnp.float32)
        prev_actions = jnp.concatenate([prev_action[:, None], actions[:, :context - 1]], 1)
        last, outs = wm.rssm.observe(carry, prev_actions, embed, head["is_first"], k_obs)
        future = wm.rssm.open_loop(last, actions[:, context - 1:-1], k_img)
        feat = jnp.concatenate([feature(outs), feature(future)], 1)
        recon = wm.decode(feat)
        videos = {}
        for k in wm.dec_images:
            truth = data[k].astype(jnp.float32) / 255.0
            model = jnp.clip(recon[k], 0.0, 1.0)
            error = (model - truth + 1.0) / 2.0
            video = jnp.concatenate([truth, model, error], -2)
            videos[f"openloop/{k}"] = (video * 255).astype(jnp.uint8)
        return videos


def head_fit(prediction: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    """How well an extra head tracks its target on a batch (both [B, T]): Pearson correlation (0 where either is
    constant), mean absolute error, and the target's mean and std."""
    prediction, target = prediction.reshape(-1), target.reshape(-1)
    dp, dt = prediction - prediction.mean(), target - target.mean()
    denom = jnp.sqrt(jnp.sum(dp ** 2) * jnp.sum(dt ** 2))
    corr = jnp.where(denom > 1e-12, jnp.sum(dp * dt) / jnp.maximum(denom, 1e-12), 0.0)
    return {"corr": corr, "mae": jnp.abs(prediction - target).mean(), "target_mean": target.mean(),
            "target_std": target.std()}


def count_params(tree: Any) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))
