"""Collection: the compiled calls that step every world with the policy and write the steps into replay.

A collection call scans `train.collect_steps` steps; each is a per-world policy step (or a uniform random action
in prefill), the env transition with the loop's own reset of finished worlds, the replay write and the episode
statistics. It runs under `shard_map`, so each device steps, resets and stores only its own block of worlds.
The hooks (`store_fn`, `log_fn`, `record_fn`, see `sensei_jax.dreamer.loop`) are traced into the step.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from sensei_jax.dreamer.agent import Agent
from sensei_jax.dreamer.mesh import replay_specs, shardings
from sensei_jax.dreamer.replay import Replay, ReplayState
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.envs.protocol import Env, host_errors

StepFn = Callable[[Any, Mapping[str, jax.Array], Any], dict[str, jax.Array]]


@flax.struct.dataclass
class LoopState:
    env: Any  # the batched env state, worlds first
    carry: dict[str, jax.Array]  # the policy's recurrent state, [N, ...]
    is_first: jax.Array  # bool [N]: the env state holds the first observation of an episode
    episode_return: jax.Array  # f32 [N]
    episode_length: jax.Array  # int32 [N]
    episode_log: dict[str, jax.Array]  # {name: f32 [N]} per-episode sums of the log hook
    key: jax.Array  # uint32 [N, 2]: each world's raw PRNG key of collection


def select_worlds(mask: jax.Array, fresh: Any, current: Any) -> Any:
    """Per-world select between two batched env states: leaves with leading axis N take `fresh` where mask.

    Used when some but not all worlds finish at once (all finishing, as with Robodesk's fixed-length episodes,
    simply takes the fresh state); an env may define its own (see `sensei_jax.envs.Env`).
    """

    def pick(a, b):
        if not hasattr(a, "ndim") or a.ndim == 0 or a.shape[0] != mask.shape[0]:
            return b
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = jnp.where(_expand(mask, jax.random.key_data(a)), jax.random.key_data(a), jax.random.key_data(b))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        return jnp.where(_expand(mask, a), a, b)

    return jax.tree.map(pick, fresh, current)


def _expand(mask: jax.Array, like: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


class Collection:
    """Steps the worlds of a run and stores what they saw, one compiled call per `collect_steps` steps.

    Args:
      cfg: the `train` section; agent: acts (`policy`, `initial_carry`); env: the batched env; mesh: the `data` mesh.
      obs_keys: the env observations the agent sees and replay stores.
      store_fn, log_fn, record_fn: hooks (see `sensei_jax.dreamer.loop`); hook_args: their last argument, laid
        out on the mesh, handed to every call as an argument (never a constant of the program).

    `replay` (built here, since what one step stores is found by tracing the collection step) is the buffer the
    calls write into.
    """

    def __init__(self, cfg: TrainConfig, agent: Agent, env: Env, mesh: Mesh, obs_keys: tuple[str, ...], *,
                 store_fn: StepFn | None = None, log_fn: StepFn | None = None, record_fn: StepFn | None = None,
                 hook_args: Any = None):
        self.cfg, self.agent, self.env, self.mesh, self.obs_keys = cfg, agent, env, mesh, tuple(obs_keys)
        self.store_fn, self.log_fn, self.record_fn, self.hook_args = store_fn, log_fn, record_fn, hook_args
        self.local_envs = cfg.num_envs // mesh.size  # worlds per device
        self.host_stepped = bool(getattr(env, "host_stepped", False))
        self.replay = Replay(self.step_spec(), num_streams=cfg.num_envs, capacity=cfg.replay_capacity,
                             length=cfg.sequence_length, batch_size=cfg.batch_size, recency=cfg.replay_recency)
        self.loop_specs = jax.tree.map(lambda x: P("data") if x.ndim else P(),
                                       jax.eval_shape(lambda k: self.local_loop(k, 0),
                                                      jnp.zeros(2, jnp.uint32)))
        self._compiled: dict[tuple[str, bool], Callable] = {}
        self._init_loop = jax.jit(self.sharded_loop, in_shardings=shardings(mesh, P()),
                                  out_shardings=shardings(mesh, self.loop_specs))

    # ------------------------------------------------------------------------------------------------------------
    # What one step stores

    def step_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes and dtypes of one stored step (per env), found by tracing the collection step abstractly."""
        n = self.local_envs
        env_state = jax.eval_shape(lambda k: self.env.reset_batch(k, n), jax.random.key(0))
        carry = jax.eval_shape(lambda: self.agent.initial_carry(n))
        params = jax.eval_shape(self.agent.init, jax.random.key(0))
        obs = {k: env_state.obs[k] for k in self.obs_keys}
        obs["is_first"] = jax.ShapeDtypeStruct((n,), jnp.bool_)
        action, new_carry = jax.eval_shape(
            lambda p, c, o, k: self.agent.policy(p, c, o, k, self.cfg.policy_mode), params, carry, obs,
            jax.random.key(0))
        step = jax.eval_shape(self.stored_step, env_state, obs, action, new_carry, self.hook_args)
        return {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for k, v in step.items()}

    def stored_step(self, env_state: Any, obs: Mapping[str, jax.Array], action: jax.Array,
                    carry: Mapping[str, jax.Array], hook_args: Any) -> dict[str, jax.Array]:
        """The replay entry of one step of this device's worlds: the observation with 'is_first', the 'reward'
        received on arriving at it, 'is_last', 'is_terminal', the 'action' taken, the posterior latent
        (replay_context 1) and the store hook's arrays."""
        n = obs["is_first"].shape[0]  # this device's worlds
        classes = carry["stoch"].shape[-1]
        step = dict(obs)
        step["action"] = action.astype(jnp.float32)
        step["reward"] = jnp.asarray(env_state.reward, jnp.float32).reshape(n)
        step["is_last"] = jnp.asarray(env_state.done, bool).reshape(n)
        if not self.cfg.store_final_obs:
            # A first observation was reached by a reset: it carries no reward (a self-resetting env keeps the
            # finished episode's last reward in its state), and final observations are never stored.
            step["reward"] = jnp.where(obs["is_first"], 0.0, step["reward"])
            step["is_last"] = jnp.zeros(n, bool)
        terminal = env_state.info.get("is_terminal") if isinstance(env_state.info, Mapping) else None
        step["is_terminal"] = jnp.zeros(n, bool) if terminal is None else jnp.asarray(terminal, bool).reshape(n)
        if self.cfg.replay_context:
            step["deter"] = carry["deter"].astype(jnp.float32)
            step["stoch"] = jnp.argmax(carry["stoch"], -1).astype(jnp.uint8 if classes <= 256 else jnp.int32)
        if self.store_fn is not None:
            extra = self.store_fn(env_state, obs, hook_args)
            clash = set(extra) & set(step)
            if clash:
                raise ValueError(f"store_fn returned keys {sorted(clash)} that the loop already stores")
            step.update(extra)
        return step

    # ------------------------------------------------------------------------------------------------------------
    # Fresh worlds

    def reset_worlds(self, keys: jax.Array, worlds: jax.Array | None = None) -> Any:
        """Fresh worlds from per-world raw keys [n, 2]: one key per world where the env can (`reset_worlds`), else
        the block's first key for `reset_batch`. A host-stepped env also gets the worlds' global indices `worlds`
        [n], which say which of its host worlds to restart."""
        if self.host_stepped:
            return self.env.reset_worlds(jax.vmap(jax.random.wrap_key_data)(keys), worlds)
        reset_worlds = getattr(self.env, "reset_worlds", None)
        if reset_worlds is not None:
            return reset_worlds(jax.vmap(jax.random.wrap_key_data)(keys))
        return self.env.reset_batch(jax.random.wrap_key_data(keys[0]), keys.shape[0])

    def local_loop(self, key: jax.Array, first: Any = None) -> LoopState:
        """One device's block of fresh worlds from the raw key `key` [2], its first world's global index `first`
        (default: from the device's place on the `data` axis, inside `shard_map`). World i resets with, and
        collects from, keys folded from its global index i, so its stream does not depend on the device count."""
        n = self.local_envs
        first = jax.lax.axis_index("data") * n if first is None else first
        worlds = first + jnp.arange(n)
        k_env, k_loop = jax.random.split(jax.random.wrap_key_data(key))
        per_world = lambda k: jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(k, i)))(worlds)  # noqa: E731
        env_state = self.reset_worlds(per_world(k_env), worlds)
        return LoopState(env=env_state, carry=self.agent.initial_carry(n), is_first=jnp.ones(n, bool),
                         episode_return=jnp.zeros(n), episode_length=jnp.zeros(n, jnp.int32),
                         episode_log={k: jnp.zeros(n, jnp.float32) for k in self._log_names(env_state)},
                         key=per_world(k_loop))

    def _log_names(self, env_state: Any) -> tuple[str, ...]:
        if self.log_fn is None:
            return ()
        obs = {k: env_state.obs[k] for k in self.obs_keys}
        obs["is_first"] = jnp.ones(env_state.obs[self.obs_keys[0]].shape[0], bool)
        return tuple(jax.eval_shape(self.log_fn, env_state, obs, self.hook_args))

    def sharded_loop(self, key: jax.Array) -> LoopState:
        """Fresh worlds on every device from the raw key `key` [2] (each device its own block, `local_loop`)."""
        return jax.shard_map(self.local_loop, mesh=self.mesh, in_specs=P(),
                             out_specs=self.loop_specs, check_vma=False)(key)

    def new_loop(self, key: np.ndarray) -> LoopState:
        """Fresh worlds from the raw key [2], laid out over the mesh; a failed host reset raises the env's error."""
        with host_errors(self.env):
            return jax.block_until_ready(self._init_loop(key))

    def abstract_loop(self, key: np.ndarray) -> LoopState:
        """Shapes and dtypes of `new_loop(key)`, computing nothing."""
        return jax.eval_shape(self._init_loop, key)

    # ------------------------------------------------------------------------------------------------------------
    # One step

    def _reset_finished(self, done: jax.Array, stepped: Any, keys: jax.Array) -> Any:
        """`stepped` with the worlds in `done` restarted from their keys (all of them at once when all are done)."""
        # Envs whose state holds buffers shared by all worlds (MJX-Warp contacts) can provide their own select.
        select = getattr(self.env, "select_worlds", select_worlds)

        def reset(stepped):
            fresh = self.reset_worlds(keys)
            return jax.lax.cond(jnp.all(done), lambda: fresh, lambda: select(done, fresh, stepped))

        return jax.lax.cond(jnp.any(done), reset, lambda s: s, stepped)

    def _env_transition(self, loop: LoopState, action: jax.Array, keys: jax.Array) -> tuple[Any, Any, jax.Array]:
        """(next env state, the stepped state before resets, the worlds whose episode ended)."""
        n = loop.is_first.shape[0]
        stepped = self.env.step(loop.env, action)
        if self.cfg.store_final_obs:  # worlds at their final observation restart instead of stepping on
            done = jnp.asarray(loop.env.done, bool).reshape(n)
            return self._reset_finished(done, stepped, keys), stepped, done
        done = jnp.asarray(stepped.done, bool).reshape(n)
        if getattr(self.env, "auto_reset", False):
            return stepped, stepped, done
        return self._reset_finished(done, stepped, keys), stepped, done

    def _act(self, agent_state: Any, carry: Any, obs: Any, key: jax.Array, mode: str) -> tuple[jax.Array, Any]:
        """The policy on one world (its own key), as a batch of one: vmapped over worlds, so that a world's
        action does not depend on which other worlds share its device."""
        one = lambda tree: jax.tree.map(lambda x: x[None], tree)  # noqa: E731
        action, new_carry = self.agent.policy(agent_state, one(carry), one(obs), jax.random.wrap_key_data(key), mode)
        return action[0], jax.tree.map(lambda x: x[0], new_carry)

    def _uniform_actions(self, keys: jax.Array, size: int) -> jax.Array:
        """Uniformly random actions [n, size] from per-world raw keys: one-hot for a discrete agent (as its actor
        emits), else in [-1, 1]."""
        if self.agent.discrete:
            return jax.vmap(lambda k: jax.nn.one_hot(jax.random.randint(jax.random.wrap_key_data(k), (), 0, size),
                                                     size))(keys)
        return jax.vmap(lambda k: jax.random.uniform(jax.random.wrap_key_data(k), (size,), jnp.float32,
                                                     -1.0, 1.0))(keys)

    def _episode_sums(self, loop: LoopState, step: Mapping[str, jax.Array],
                      stepped: Any) -> tuple[jax.Array, jax.Array]:
        """The return and length of each world's episode after this step."""
        first = loop.is_first
        if self.cfg.store_final_obs:
            return (jnp.where(first, 0.0, loop.episode_return + step["reward"]),
                    jnp.where(first, 0, loop.episode_length + 1))
        # The episode's last reward arrives with the step that ends it.
        reward = jnp.asarray(stepped.reward, jnp.float32).reshape(loop.is_first.shape[0])
        return jnp.where(first, 0.0, loop.episode_return) + reward, jnp.where(first, 0, loop.episode_length) + 1

    def _step(self, agent_state: Any, hook_args: Any, random: jax.Array, mode: str,
              carry_in: tuple[LoopState, ReplayState | None], _: Any) -> tuple[tuple, dict[str, Any]]:
        """One scan step on this device's worlds: act, store, log, step the envs. Returns ((loop, replay_state),
        the step's outputs)."""
        loop, replay_state = carry_in
        n = loop.is_first.shape[0]  # this device's worlds
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(loop.key)  # [n, 3, 2]
        key, k_policy, k_reset = keys[:, 0], keys[:, 1], keys[:, 2]
        obs = {k: loop.env.obs[k] for k in self.obs_keys}
        obs["is_first"] = loop.is_first
        action, policy_carry = jax.vmap(lambda c, o, k: self._act(agent_state, c, o, k, mode))(loop.carry, obs,
                                                                                             k_policy)
        # `random` is an argument, not a constant, so prefill and policy collection share one program.
        action = jnp.where(random, self._uniform_actions(k_policy, action.shape[-1]), action)
        policy_carry = {**policy_carry, "action": action}
        step = self.stored_step(loop.env, obs, action, policy_carry, hook_args)
        if replay_state is not None:
            replay_state = self.replay.add(replay_state, step)

        logged = self.log_fn(loop.env, obs, hook_args) if self.log_fn is not None else {}
        logged = {k: jnp.asarray(v, jnp.float32).reshape(n) for k, v in logged.items()}
        episode_log = {k: jnp.where(loop.is_first, 0.0, loop.episode_log[k]) + v for k, v in logged.items()}
        next_env, stepped, done = self._env_transition(loop, action, k_reset)
        episode_return, episode_length = self._episode_sums(loop, step, stepped)
        outputs = {"is_last": done, "return": episode_return, "length": episode_length,
                   "log": logged, "episode_log": episode_log}
        if self.record_fn is not None:
            outputs["records"] = self.record_fn(step, stepped, hook_args)
        loop = LoopState(env=next_env, carry=policy_carry, is_first=done, episode_return=episode_return,
                         episode_length=episode_length, episode_log=episode_log, key=key)
        return (loop, replay_state), outputs

    def _collect_local(self, agent_state, loop, replay_state, hook_args, random, mode):
        """`collect_steps` scan steps on this device's block of worlds."""
        (loop, replay_state), outputs = jax.lax.scan(
            lambda c, x: self._step(agent_state, hook_args, random, mode, c, x), (loop, replay_state), None,
            length=self.cfg.collect_steps)
        return loop, replay_state, outputs

    # ------------------------------------------------------------------------------------------------------------
    # The compiled call

    def __call__(self, agent_state: Any, loop: LoopState, replay_state: ReplayState | None, *,
                 random: bool = False, mode: str | None = None) -> tuple[LoopState, ReplayState | None, Any]:
        """One collection call on every device's worlds with the policy in `mode` (default train.policy_mode;
        uniform random actions with `random`), `loop` and `replay_state` donated (None: nothing stored).
        Compiled once per (mode, with replay): whether the actions are uniformly random (prefill) is an argument
        of the program. Returns (loop, replay_state, per-step outputs [S, N, ...] on the devices)."""
        mode = self.cfg.policy_mode if mode is None else mode
        return self._program(mode, replay_state is not None)(agent_state, loop, replay_state, self.hook_args,
                                                              np.bool_(random))

    def _program(self, mode: str, with_replay: bool) -> Callable:
        """The jitted shard_map of `_collect_local` for `mode`, with or without a replay to write."""
        signature = (mode, with_replay)
        if signature not in self._compiled:
            specs = (P(), self.loop_specs, replay_specs(self.replay) if with_replay else P(), P(), P())
            out_specs = (self.loop_specs, specs[2], P(None, "data"))  # outputs [S, N, ...]
            fn = jax.shard_map(lambda a, l, r, h, rand: self._collect_local(a, l, r, h, rand, mode), mesh=self.mesh,
                               in_specs=specs, out_specs=out_specs, check_vma=False)
            self._compiled[signature] = jax.jit(fn, in_shardings=shardings(self.mesh, specs),
                                                out_shardings=shardings(self.mesh, out_specs), donate_argnums=(1, 2))
        return self._compiled[signature]
