"""The DreamerV3 training loop: vectorized JAX envs stepped inside jit, sequence replay, compiled train steps.

One iteration is
  1. `collect`: one compiled call that scans `collect_steps` vectorized env steps, each a batched policy step, an
     env step (with the loop's own reset of finished worlds, so the last observation of an episode is stored), a
     replay write and the episode statistics;
  2. as many compiled `train_step`s as the train ratio owes (replayed steps per env step), each sampling a batch
     of windows from replay, running `agent.train` and writing the fresh posteriors back into replay as context;
  3. host work: a finite-loss check, metrics, videos and checkpoints at their intervals.

Everything the run needs to continue lives in one pytree (agent state, replay, env state, policy carry, episode
accumulators, PRNG keys, counters) that is checkpointed with orbax, so a killed run resumes from its last save
and repeats exactly the env steps after it (the same ones, by the same keys). Envs stepped on the host (`host_stepped`,
e.g. MiniHack's NetHack worlds) cannot be saved: a resumed run keeps agent, replay and counters and starts fresh
episodes.

The loop runs on a 1-D mesh with axis `data` over the devices of every process (`jax.devices()`; one device is a
mesh of one). Worlds are split over the devices: the collection step runs under `shard_map`, so each device steps,
resets and stores only its own block of worlds (the env sees that block's world count), with its own replay
streams. The train step is jitted with explicit shardings: each device samples windows from its own streams, the
agent state is replicated and XLA inserts the gradient all-reduce. Random streams are per world (the world's key is
folded from the global world index) and the replay batch is the same for any split (`Replay`'s stratified
sampling), so the data a run collects does not depend on the device count. Arrays that leave the compiled calls
come back through `distributed.to_host`; in a job of several processes only process 0 writes files, and
checkpoints are saved by all processes and restored straight into their shardings.

Stored per step (the DreamerV3 convention): the observation at step t, 'reward' received on arriving at it,
'is_first', 'is_last', 'is_terminal', the 'action' the policy took at it, and, with `train.replay_context` 1, the
posterior latent after observing it ('deter', 'stoch' class indices), which supplies the initial carry of windows
that start at the next step. With `replay_context` 0 (SENSEI's replay) no latent is stored: every window starts
from the agent's initial state.

Hooks (for exploration agents that build on this loop), called inside the compiled step with `hook_args`, a
pytree handed to the compiled calls as an argument (e.g. a reward model, whose parameters must not become
constants of the program):
  store_fn(env_state, obs, hook_args) -> {name: [N, ...]}: more per-step arrays to store in replay; they reach the
      agent as batch keys [B, T, ...] (e.g. a reward model's output, targets of extra heads).
  log_fn(env_state, obs, hook_args) -> {name: [N]} numbers summed over the log interval (logged as 'env/<name>')
      and per episode (mean over finished episodes, 'episode/<name>'), e.g. interaction flags.
  record_fn(step, next_env_state, hook_args) -> {name: [N, ...]}: per-step arrays handed back to the host as
      [S, N, ...] (`run(on_collect=...)`, `rollout`), e.g. for per-episode interaction logs; `step` is what was
      stored for this step, `next_env_state` the state the action led to, before the loop resets finished worlds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sensei_jax import progress
from sensei_jax.checkpoint import Checkpointer
from sensei_jax.distributed import is_main_process, replicated, tree_to_host
from sensei_jax.dreamer.agent import Agent, first_nonfinite_loss
from sensei_jax.dreamer.replay import Replay, ReplayState
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.envs.protocol import Env, host_errors
from sensei_jax.metrics import MetricsWriter

StepFn = Callable[[Any, Mapping[str, jax.Array], Any], dict[str, jax.Array]]
LATENT_KEYS = ("deter", "stoch")


def obs_space(env: Env, keys: tuple[str, ...] = ()) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The agent's obs space {key: (shape, dtype)} for env observations `keys` (all when empty), one world."""
    spec = env.observation_spec()
    spec = {k: (tuple(v.shape), np.dtype(v.dtype)) if hasattr(v, "shape") else (tuple(v[0]), np.dtype(v[1]))
            for k, v in spec.items()}
    keys = tuple(keys) or tuple(sorted(spec))
    unknown = [k for k in keys if k not in spec]
    if unknown:
        raise ValueError(f"observation keys {unknown} are not observed by the env (it has {sorted(spec)})")
    return {k: spec[k] for k in keys}


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; the message names it."""


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


def make_mesh(cfg: TrainConfig) -> Mesh:
    """The 1-D `data` mesh of a run: the first `cfg.devices` devices of every process (0: all), which must divide
    the worlds and the batch evenly. A job of several processes always spans all of its devices."""
    devices = jax.devices()
    if cfg.devices:
        if cfg.devices > len(devices):
            raise ValueError(f"train.devices is {cfg.devices}, but only {len(devices)} devices exist")
        if jax.process_count() > 1 and cfg.devices != len(devices):
            raise ValueError(f"train.devices is {cfg.devices}, but a job of {jax.process_count()} processes spans "
                             f"all of its {len(devices)} devices (set train.devices to 0)")
        devices = devices[: cfg.devices]
    if cfg.num_envs % len(devices) or cfg.batch_size % len(devices):
        raise ValueError(f"train.num_envs ({cfg.num_envs}, worlds over all processes) and train.batch_size "
                         f"({cfg.batch_size}) must divide by the number of devices ({len(devices)}), which each step "
                         "an equal block of worlds and sample an equal share of the batch")
    return Mesh(np.asarray(devices), ("data",))


class Trainer:
    """Trains `agent` on a batched functional env (the `sensei_jax.envs.Env` contract).

    Args:
      cfg: the `train` section.
      agent: a constructed `Agent` (its obs space must match the stored observation keys).
      env: the environment; the loop resets finished worlds (with `store_final_obs` False, an env that resets
        itself, `env.auto_reset`, is left to do so).
      logdir: metrics.jsonl, TensorBoard events and `checkpoints/` go here; an existing checkpoint is resumed.
      seed: seeds the agent's parameters, the envs and every sample of the run.
      store_fn, log_fn, record_fn: hooks, see the module docstring; hook_args: their last argument.
    """

    def __init__(self, cfg: TrainConfig, agent: Agent, env: Env, logdir: str | Path, *, seed: int = 0,
                 store_fn: StepFn | None = None, log_fn: StepFn | None = None, record_fn: StepFn | None = None,
                 hook_args: Any = None):
        self.cfg, self.agent, self.env = cfg, agent, env
        self.logdir = Path(logdir)
        self.seed = seed
        self.store_fn, self.log_fn, self.record_fn = store_fn, log_fn, record_fn
        self.num_envs = cfg.num_envs
        self.mesh = make_mesh(cfg)
        self.local_envs = self.num_envs // self.mesh.size  # worlds per device
        self.hook_args = jax.tree.map(lambda x: replicated(self.mesh, np.asarray(x)), hook_args)
        self.host_stepped = bool(getattr(env, "host_stepped", False))
        if self.host_stepped and (cfg.store_final_obs or not getattr(env, "auto_reset", False)):
            raise ValueError(f"{type(env).__name__} steps its worlds on the host and restarts them itself: it needs "
                             "train.store_final_obs false and an env with auto_reset (the loop cannot reset a "
                             "subset of host worlds)")
        self.obs_spec = obs_space(env, cfg.obs_keys)
        self.obs_keys = tuple(self.obs_spec)
        self.replay = self._make_replay()
        self.updates_per_step = cfg.train_ratio / (cfg.batch_size * cfg.batch_length)
        self.train_start = max(cfg.train_start, cfg.sequence_length * self.num_envs)
        self._compile()

    # ------------------------------------------------------------------------------------------------------------
    # Construction

    def _step_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
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
        step = jax.eval_shape(lambda e, o, a, c, h: self._stored_step(e, o, a, c, h), env_state, obs, action,
                              new_carry, self.hook_args)
        return {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for k, v in step.items()}

    def _make_replay(self) -> Replay:
        cfg = self.cfg
        return Replay(self._step_spec(), num_streams=self.num_envs, capacity=cfg.replay_capacity,
                      length=cfg.sequence_length, batch_size=cfg.batch_size, recency=cfg.replay_recency)

    def _stored_step(self, env_state: Any, obs: Mapping[str, jax.Array], action: jax.Array,
                     carry: Mapping[str, jax.Array], hook_args: Any) -> dict[str, jax.Array]:
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
    # The compiled functions

    def _compile(self) -> None:
        cfg, agent, env, replay, mesh = self.cfg, self.agent, self.env, self.replay, self.mesh
        obs_keys = self.obs_keys

        def reset_finished(done: jax.Array, stepped: Any, keys: jax.Array) -> Any:
            # Envs whose state holds buffers shared by all worlds (MJX-Warp contacts) can provide their own select.
            select = getattr(env, "select_worlds", select_worlds)

            def reset(stepped):
                fresh = self._reset_worlds(keys)
                return jax.lax.cond(jnp.all(done), lambda: fresh, lambda: select(done, fresh, stepped))

            return jax.lax.cond(jnp.any(done), reset, lambda s: s, stepped)

        def env_transition(loop: LoopState, action: jax.Array, keys: jax.Array) -> tuple[Any, Any, jax.Array]:
            """(next env state, the stepped state before resets, the worlds whose episode ended)."""
            n = loop.is_first.shape[0]
            stepped = env.step(loop.env, action)
            if cfg.store_final_obs:  # worlds at their final observation restart instead of stepping on
                done = jnp.asarray(loop.env.done, bool).reshape(n)
                return reset_finished(done, stepped, keys), stepped, done
            done = jnp.asarray(stepped.done, bool).reshape(n)
            if getattr(env, "auto_reset", False):
                return stepped, stepped, done
            return reset_finished(done, stepped, keys), stepped, done

        def act(agent_state, carry, obs, key, mode):
            """The policy on one world (its own key), as a batch of one: vmapped over worlds, so that a world's
            action does not depend on which other worlds share its device."""
            one = lambda tree: jax.tree.map(lambda x: x[None], tree)  # noqa: E731
            action, new_carry = agent.policy(agent_state, one(carry), one(obs), jax.random.wrap_key_data(key), mode)
            return action[0], jax.tree.map(lambda x: x[0], new_carry)

        def collect_step(agent_state, hook_args, random, mode, carry_in, _):
            loop, replay_state = carry_in
            n = loop.is_first.shape[0]  # this device's worlds
            keys = jax.vmap(lambda k: jax.random.split(k, 3))(loop.key)  # [n, 3, 2]
            key, k_policy, k_reset = keys[:, 0], keys[:, 1], keys[:, 2]
            obs = {k: loop.env.obs[k] for k in obs_keys}
            obs["is_first"] = loop.is_first
            action, policy_carry = jax.vmap(lambda c, o, k: act(agent_state, c, o, k, mode))(loop.carry, obs, k_policy)
            # `random` is an argument, not a constant, so prefill and policy collection share one program.
            size = action.shape[-1]
            if agent.discrete:  # a uniformly drawn one-hot action, as the discrete actor emits
                uniform = jax.vmap(lambda k: jax.nn.one_hot(jax.random.randint(jax.random.wrap_key_data(k), (), 0,
                                                                               size), size))(k_policy)
            else:
                uniform = jax.vmap(lambda k: jax.random.uniform(jax.random.wrap_key_data(k), (size,), jnp.float32,
                                                                -1.0, 1.0))(k_policy)
            action = jnp.where(random, uniform, action)
            policy_carry = {**policy_carry, "action": action}
            step = self._stored_step(loop.env, obs, action, policy_carry, hook_args)
            if replay_state is not None:
                replay_state = replay.add(replay_state, step)

            logged = self.log_fn(loop.env, obs, hook_args) if self.log_fn is not None else {}
            logged = {k: jnp.asarray(v, jnp.float32).reshape(n) for k, v in logged.items()}
            first = loop.is_first
            episode_log = {k: jnp.where(first, 0.0, loop.episode_log[k]) + v for k, v in logged.items()}
            next_env, stepped, done = env_transition(loop, action, k_reset)
            if cfg.store_final_obs:
                episode_return = jnp.where(first, 0.0, loop.episode_return + step["reward"])
                episode_length = jnp.where(first, 0, loop.episode_length + 1)
            else:  # the episode's last reward arrives with the step that ends it
                reward = jnp.asarray(stepped.reward, jnp.float32).reshape(n)
                episode_return = jnp.where(first, 0.0, loop.episode_return) + reward
                episode_length = jnp.where(first, 0, loop.episode_length) + 1
            outputs = {"is_last": done, "return": episode_return, "length": episode_length,
                       "log": logged, "episode_log": episode_log}
            if self.record_fn is not None:
                outputs["records"] = self.record_fn(step, stepped, hook_args)
            loop = LoopState(env=next_env, carry=policy_carry, is_first=done, episode_return=episode_return,
                             episode_length=episode_length, episode_log=episode_log, key=key)
            return (loop, replay_state), outputs

        def collect_local(agent_state, loop, replay_state, hook_args, random, mode):
            (loop, replay_state), outputs = jax.lax.scan(
                lambda c, x: collect_step(agent_state, hook_args, random, mode, c, x), (loop, replay_state), None,
                length=cfg.collect_steps)
            return loop, replay_state, outputs

        self._loop_specs = jax.tree.map(lambda x: P("data") if x.ndim else P(),
                                        jax.eval_shape(lambda k: self._local_loop(k, 0), jnp.zeros(2, jnp.uint32)))
        replay_specs = self._replay_specs()
        compiled: dict[tuple[str, bool], Callable] = {}

        def collect(agent_state, loop, replay_state, hook_args, random=False, mode=cfg.policy_mode):
            """One collection call on every device's worlds; compiled once per (mode, with replay): whether the
            actions are uniformly random (prefill) is an argument of the program."""
            signature = (mode, replay_state is not None)
            if signature not in compiled:
                specs = (P(), self._loop_specs, replay_specs if replay_state is not None else P(), P(), P())
                out_specs = (self._loop_specs, specs[2], P(None, "data"))  # outputs [S, N, ...]
                fn = jax.shard_map(lambda a, l, r, h, rand: collect_local(a, l, r, h, rand, mode), mesh=mesh,
                                   in_specs=specs, out_specs=out_specs, check_vma=False)
                compiled[signature] = jax.jit(fn, in_shardings=self._shardings(specs),
                                              out_shardings=self._shardings(out_specs), donate_argnums=(1, 2))
            return compiled[signature](agent_state, loop, replay_state, hook_args, np.bool_(random))

        context = cfg.replay_context

        def train_step(agent_state, replay_state, key, step):
            k_sample, k_train = jax.random.split(jax.random.fold_in(key, step))
            windows, (stream, slots) = replay.sample_sharded(replay_state, k_sample, mesh)
            batch = {k: v[:, context:] for k, v in windows.items() if k not in LATENT_KEYS}
            if not context:  # every window starts from the initial state: no latent to read or write back
                agent_state, metrics = agent.train(agent_state, batch, k_train)
                return agent_state, replay_state, metrics
            batch["context"] = {"deter": windows["deter"][:, 0], "stoch": windows["stoch"][:, 0],
                                "action": windows["action"][:, 0]}
            agent_state, metrics, latents = agent.train(agent_state, batch, k_train, return_latents=True)
            # The fresh posteriors become the context of later windows (the reference's replay.update).
            latents = {"deter": latents["deter"], "stoch": latents["stoch"]}
            replay_state = self._update_sharded(replay_state, stream, slots[:, context:], latents)
            return agent_state, replay_state, metrics

        def report(agent_state, replay_state, key):
            k_sample, k_report = jax.random.split(key)
            stream, slots = replay.window_indices(replay_state, k_sample, jnp.arange(cfg.video_sequences),
                                            cfg.video_sequences)
            windows = replay.gather_sharded(replay_state, stream, slots, mesh)
            batch = {k: v[:, context:] for k, v in windows.items() if k not in LATENT_KEYS}
            if context:
                batch["context"] = {"deter": windows["deter"][:, 0], "stoch": windows["stoch"][:, 0],
                                    "action": windows["action"][:, 0]}
            return agent.report(agent_state, batch, k_report)

        replicated_ = self._replicated
        replay_shardings = self._shardings(replay_specs)
        self._collect = collect
        self._train_step = jax.jit(train_step, donate_argnums=(0, 1),
                                   in_shardings=(replicated_, replay_shardings, replicated_, replicated_),
                                   out_shardings=(replicated_, replay_shardings, replicated_))
        self._report = jax.jit(report, in_shardings=(replicated_, replay_shardings, replicated_),
                               out_shardings=replicated_)
        self._init_loop = jax.jit(self._sharded_loop, in_shardings=replicated_,
                                  out_shardings=self._shardings(self._loop_specs))

    def _update_sharded(self, replay_state, stream, slots, latents):
        """Writes latents back into each device's own streams (indices from `sample_sharded` are shard-local)."""

        def local(data, stream, slots, values):
            data = dict(data)
            for k, v in values.items():
                data[k] = data[k].at[stream[:, None], slots].set(v.astype(data[k].dtype))
            return data

        keys = tuple(latents)
        fn = jax.shard_map(local, mesh=self.mesh,
                           in_specs=({k: P("data") for k in keys}, P("data"), P("data"), {k: P("data") for k in keys}),
                           out_specs={k: P("data") for k in keys}, check_vma=False)
        written = fn({k: replay_state.data[k] for k in keys}, stream, slots, latents)
        return replay_state.replace(data={**replay_state.data, **written})

    @property
    def _replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def _shardings(self, specs: Any) -> Any:
        """NamedShardings on the Trainer's mesh for a pytree of PartitionSpecs (or a prefix of one)."""
        return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), specs,
                            is_leaf=lambda x: isinstance(x, P))

    def _replay_specs(self) -> ReplayState:
        return ReplayState(data={k: P("data") for k in self.replay.specs}, position=P(), filled=P())

    def _reset_worlds(self, keys: jax.Array, worlds: jax.Array | None = None) -> Any:
        """Fresh worlds from per-world raw keys [n, 2]: one key per world where the env can (`reset_worlds`), else
        the block's first key for `reset_batch`. A host-stepped env also gets the worlds' global indices `worlds`
        [n], which say which of its host worlds to restart."""
        if self.host_stepped:
            return self.env.reset_worlds(jax.vmap(jax.random.wrap_key_data)(keys), worlds)
        reset_worlds = getattr(self.env, "reset_worlds", None)
        if reset_worlds is not None:
            return reset_worlds(jax.vmap(jax.random.wrap_key_data)(keys))
        return self.env.reset_batch(jax.random.wrap_key_data(keys[0]), keys.shape[0])

    # ------------------------------------------------------------------------------------------------------------
    # State

    def initial_state(self) -> dict[str, Any]:
        """The whole run state at step 0: {'agent', 'replay', 'loop', 'counters'}, laid out over the mesh.

        The agent's parameters are drawn on the host and then replicated over the mesh: compiling the draws of
        every parameter into one program cost XLA 20-30 s on a CPU, for a program that runs once."""
        k_agent, k_loop = self._initial_keys()
        agent_state = jax.tree.map(lambda x: replicated(self.mesh, x), self.agent.init(k_agent))
        replay_state = self.replay.init(NamedSharding(self.mesh, P("data")))
        return {"agent": agent_state, "replay": replay_state, "loop": self._new_loop(k_loop),
                "counters": self._initial_counters()}

    def _new_loop(self, key: np.ndarray) -> LoopState:
        """Fresh worlds from the raw key [2]; a failed host reset raises the env's own error."""
        with host_errors(self.env):
            return jax.block_until_ready(self._init_loop(key))

    def abstract_state(self) -> dict[str, Any]:
        """Shapes, dtypes and shardings of `initial_state()`, computing nothing (e.g. a restore target)."""
        k_agent, k_loop = self._initial_keys()
        agent_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self._replicated),
                                   jax.eval_shape(self.agent.init, k_agent))
        replay_state = jax.tree.map(lambda x, spec: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                         sharding=NamedSharding(self.mesh, spec)),
                                    jax.eval_shape(self.replay.init), self._replay_specs())
        return {"agent": agent_state, "replay": replay_state, "loop": jax.eval_shape(self._init_loop, k_loop),
                "counters": self._initial_counters()}

    def _initial_keys(self) -> tuple[jax.Array, np.ndarray]:
        """The agent's PRNG key and the worlds' raw key [2] uint32, from the run's seed."""
        k_agent, k_loop = jax.random.split(jax.random.PRNGKey(self.seed))
        return k_agent, np.asarray(k_loop, np.uint32)

    @staticmethod
    def _initial_counters() -> dict[str, np.ndarray]:
        return {"env_steps": np.zeros((), np.int64), "train_steps": np.zeros((), np.int64)}

    def _sharded_loop(self, key: jax.Array) -> LoopState:
        """Fresh worlds on every device from the raw key `key` [2] (each device its own block, `_local_loop`)."""
        return jax.shard_map(self._local_loop, mesh=self.mesh, in_specs=P(), out_specs=self._loop_specs,
                             check_vma=False)(key)

    def _local_loop(self, key: jax.Array, first: Any = None) -> LoopState:
        """One device's block of fresh worlds from the raw key `key` [2], its first world's global index `first`
        (default: from the device's place on the `data` axis, inside `shard_map`). World i resets with, and
        collects from, keys folded from its global index i, so its stream does not depend on the device count."""
        n = self.local_envs
        first = jax.lax.axis_index("data") * n if first is None else first
        worlds = first + jnp.arange(n)
        k_env, k_loop = jax.random.split(jax.random.wrap_key_data(key))
        per_world = lambda k: jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(k, i)))(worlds)  # noqa: E731
        env_state = self._reset_worlds(per_world(k_env), worlds)
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

    def fresh_loop(self, key: jax.Array) -> LoopState:
        """A loop state with fresh episodes in every world, from a raw PRNG key (e.g. for evaluation rollouts)."""
        return self._new_loop(np.asarray(jax.device_get(key), np.uint32))

    def rollout(self, agent_state: Any, loop: LoopState, mode: str = "eval") -> tuple[LoopState, dict[str, Any]]:
        """`collect_steps` steps of every world with the policy in `mode`, writing no replay. Returns the new loop
        state and the per-step outputs on the host ('is_last', 'return', 'length' [S, N], 'records' if any)."""
        with host_errors(self.env):
            loop, _, outputs = self._collect(agent_state, loop, None, self.hook_args, mode=mode)
            return loop, tree_to_host(outputs)

    def collect(self, agent_state: Any, loop: LoopState, replay_state: ReplayState | None, *, random: bool = False,
                mode: str | None = None) -> tuple[LoopState, ReplayState | None, dict[str, Any]]:
        """One compiled collection call, as `run` makes it: `collect_steps` steps of every world with the policy in
        `mode` (default cfg.policy_mode; uniform random actions with `random`), the hooks with the Trainer's
        hook_args, each step written into `replay_state` (None: nothing stored). `loop` and `replay_state` are
        donated. Returns (loop, replay_state, per-step outputs [S, N, ...] on the devices)."""
        return self._collect(agent_state, loop, replay_state, self.hook_args, random=random,
                             mode=self.cfg.policy_mode if mode is None else mode)

    def train_step(self, agent_state: Any, replay_state: ReplayState, key: jax.Array,
                   step: int) -> tuple[Any, ReplayState, dict[str, jax.Array]]:
        """One compiled update, as `run` makes it: a batch of windows sampled from `replay_state` with `key` folded
        with `step` (a raw PRNG key [2]), one `agent.train`, the fresh latents written back (replay_context 1).
        `agent_state` and `replay_state` are donated. Returns (agent_state, replay_state, metrics on the devices)."""
        return self._train_step(agent_state, replay_state, key, np.int32(step))

    def save(self, checkpointer: Checkpointer, state: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
        """Saves the run state; every process calls it (each writes its own devices' blocks)."""
        checkpointer.save(int(state["counters"]["env_steps"]), _keys_to_data(state), metrics)

    def restore(self, checkpointer: Checkpointer, like: dict[str, Any], step: int | None = None) -> dict[str, Any]:
        """The run state of checkpoint `step` (default the latest), each array read straight into the sharding of
        its counterpart in `like` (a run state from `initial_state`), never whole onto one device."""
        restored = checkpointer.restore(step, like=_keys_to_data(like))
        state = _data_to_keys(restored, like)
        state["counters"] = {k: np.asarray(v, np.int64) for k, v in state["counters"].items()}
        return state

    # ------------------------------------------------------------------------------------------------------------
    # The loop

    def updates_due(self, env_steps: int) -> int:
        """Train steps that should have run after `env_steps` env steps (the reference's Ratio)."""
        if env_steps < self.train_start:
            return 0
        return int(math.floor((env_steps - self.train_start) * self.updates_per_step)) + 1

    def run(self, steps: int | None = None, writer: MetricsWriter | None = None, *,
            initial: dict[str, Any] | None = None, on_collect: Callable[[dict[str, Any], int], None] | None = None,
            on_save: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Trains until `steps` env steps (default cfg.steps), resuming from logdir/checkpoints if one exists.

        initial: the run state to start from when there is no checkpoint (default `initial_state()`).
        on_collect(outputs, env_steps): host callback after each collection call with its per-step outputs
            ('is_last', 'return', 'length' [S, N], 'records' {name: [S, N, ...]} from record_fn), `env_steps` the
            count before it.
        on_save(env_steps): host callback right after each checkpoint (to save host-side state beside it).

        Returns a summary: env and train steps, the last logged metrics, the mean metrics of the last train steps
        ('train_metrics'), recent episode returns and throughput.
        Raises NonFiniteLossError, naming the loss, when a loss becomes NaN/inf (no checkpoint is written after it).
        """
        cfg = self.cfg
        total = cfg.steps if steps is None else steps
        own_writer = writer is None
        writer = writer or MetricsWriter(self.logdir)
        checkpointer = Checkpointer(self.logdir / "checkpoints", max_to_keep=cfg.keep_checkpoints)
        state = self.initial_state() if initial is None else initial
        resumed_from = checkpointer.latest_step
        if resumed_from is not None:
            state = self.restore(checkpointer, state)
        env_steps, train_steps = int(state["counters"]["env_steps"]), int(state["counters"]["train_steps"])
        if resumed_from is not None and self.host_stepped:
            # Host worlds (NetHack) cannot be saved: the run goes on from fresh episodes, new keys per resume step.
            k_loop = self._initial_keys()[1]
            state["loop"] = self._new_loop(np.asarray(jax.random.fold_in(k_loop, env_steps), np.uint32))
        train_key = np.asarray(jax.random.PRNGKey(self.seed + 1))
        report_key = np.asarray(jax.random.PRNGKey(self.seed + 2))
        step_per_iter = cfg.collect_steps * self.num_envs

        returns: list[float] = []
        lengths: list[float] = []
        episode_logs: dict[str, list[float]] = {}
        interval_logs: dict[str, float] = {}
        pending: list[dict[str, jax.Array]] = []
        metric_sums: dict[str, float] = {}
        metric_count = 0
        last_log = {"env_steps": env_steps, "train_steps": train_steps, "time": time.perf_counter()}
        next_log = (env_steps // cfg.log_every + 1) * cfg.log_every
        next_save = (env_steps // cfg.save_every + 1) * cfg.save_every
        next_video = (env_steps // cfg.video_every + 1) * cfg.video_every if cfg.video_every else None
        summary: dict[str, Any] = {"resumed_from": resumed_from, "recent_returns": [], "train_metrics": {}}
        bar = progress.bar(total=total, desc="train", unit="step", initial=env_steps, disable=not cfg.progress)
        start_time = time.perf_counter()
        start_steps = env_steps
        try:
            while env_steps < total:
                random = env_steps < cfg.random_steps
                with host_errors(self.env):
                    loop, replay_state, outputs = self._collect(state["agent"], state["loop"], state["replay"],
                                                                self.hook_args, random=random)
                    state["loop"], state["replay"] = loop, replay_state
                    outputs = tree_to_host(outputs)
                if on_collect is not None:
                    on_collect(outputs, env_steps)
                env_steps += step_per_iter
                finished = outputs["is_last"]
                returns += outputs["return"][finished].tolist()
                lengths += outputs["length"][finished].tolist()
                for k, v in outputs["episode_log"].items():
                    episode_logs.setdefault(k, []).extend(v[finished].tolist())
                for k, v in outputs["log"].items():
                    interval_logs[k] = interval_logs.get(k, 0.0) + float(v.sum())

                due = self.updates_due(env_steps) - train_steps
                for _ in range(max(due, 0)):
                    state["agent"], state["replay"], metrics = self._train_step(
                        state["agent"], state["replay"], train_key, np.int32(train_steps))
                    pending.append(metrics)
                    train_steps += 1
                if pending:
                    fetched = tree_to_host(pending)
                    pending = []
                    summary["train_metrics"] = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                    for i, metrics in enumerate(fetched):
                        bad = first_nonfinite_loss(metrics)
                        if bad is not None:
                            bad = _root_loss(metrics, bad)
                            step_no = train_steps - len(fetched) + i + 1
                            raise NonFiniteLossError(_nonfinite_message(bad, metrics, step_no, env_steps,
                                                                        checkpointer.latest_step))
                        for k, v in metrics.items():
                            metric_sums[k] = metric_sums.get(k, 0.0) + float(v)
                        metric_count += 1
                state["counters"] = {"env_steps": np.asarray(env_steps, np.int64),
                                     "train_steps": np.asarray(train_steps, np.int64)}
                bar.update(step_per_iter)

                if env_steps >= next_log or env_steps >= total:
                    now = time.perf_counter()
                    row = {k: v / metric_count for k, v in metric_sums.items() if not k.startswith("finite/")}
                    elapsed = max(now - last_log["time"], 1e-9)
                    row["fps/env_steps_per_s"] = (env_steps - last_log["env_steps"]) / elapsed
                    row["fps/train_steps_per_s"] = (train_steps - last_log["train_steps"]) / elapsed
                    row["replay/filled"] = float(self.num_envs * int(tree_to_host(state["replay"].filled)))
                    row["train_steps"] = float(train_steps)
                    if returns:
                        row.update({"episode/return": float(np.mean(returns)), "episode/return_max": max(returns),
                                    "episode/length": float(np.mean(lengths)), "episode/count": len(returns)})
                        summary["recent_returns"] = returns[-32:]
                        bar.set_postfix(ret=f"{np.mean(returns):.3g}", updates=train_steps)
                    row.update({f"episode/{k}": float(np.mean(v)) for k, v in episode_logs.items() if v})
                    row.update({f"env/{k}": v for k, v in interval_logs.items()})
                    writer.scalars(env_steps, row)
                    summary["last_metrics"] = row
                    returns, lengths, episode_logs, interval_logs, metric_sums, metric_count = [], [], {}, {}, {}, 0
                    last_log = {"env_steps": env_steps, "train_steps": train_steps, "time": now}
                    next_log = (env_steps // cfg.log_every + 1) * cfg.log_every

                if next_video is not None and env_steps >= next_video and train_steps > 0:
                    videos = tree_to_host(self._report(state["agent"], state["replay"],
                                                       np.asarray(jax.random.fold_in(report_key, env_steps))))
                    if is_main_process():
                        for name, video in videos.items():
                            write_video(writer, self.logdir / "videos", env_steps, name, np.asarray(video))
                    next_video = (env_steps // cfg.video_every + 1) * cfg.video_every

                if env_steps >= next_save or env_steps >= total:
                    self.save(checkpointer, state)
                    if on_save is not None:
                        on_save(env_steps)
                    next_save = (env_steps // cfg.save_every + 1) * cfg.save_every
        finally:
            bar.close()
            writer.flush()
            if own_writer:
                writer.close()
            checkpointer.close()
        wall = time.perf_counter() - start_time
        summary.update({"env_steps": env_steps, "train_steps": train_steps, "wall_s": wall,
                        "env_steps_per_s": (env_steps - start_steps) / max(wall, 1e-9)})
        self.state = state
        return summary


def write_video(writer: MetricsWriter, directory: Path, step: int, name: str, video: np.ndarray,
                frames: int = 16) -> None:
    """Logs a uint8 video [B, T, H, W, C] three ways: a TensorBoard video (which needs moviepy), a TensorBoard image
    of `frames` evenly spaced frames per sequence (rows: sequences), and an animated GIF in `directory`."""
    from PIL import Image

    writer.video(step, name, video)
    length = video.shape[1]
    picked = video[:, np.linspace(0, length - 1, min(frames, length)).astype(int)]  # [B, F, H, W, C]
    b, f, h, w, c = picked.shape
    grid = picked.transpose(0, 2, 1, 3, 4).reshape(b * h, f * w, c)  # rows: sequences, columns: frames
    writer.image(step, f"{name}_frames", grid)
    directory.mkdir(parents=True, exist_ok=True)
    tiles = np.concatenate(list(video), axis=1)  # [T, B * H, W, C]: the sequences stacked vertically
    images = [Image.fromarray(frame.squeeze(-1) if frame.shape[-1] == 1 else frame) for frame in tiles]
    path = directory / f"{name.replace('/', '_')}_{step}.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


def _root_loss(metrics: Mapping[str, Any], fallback: str) -> str:
    """The non-finite loss most likely to be the cause: world-model terms before their total, and both before the
    actor-critic losses, which are computed from the already-updated world model."""
    bad = [k[len("loss/"):] for k, v in metrics.items()
           if k.startswith("loss/") and not np.isfinite(np.asarray(v)).all()]

    def rank(name: str) -> tuple[int, str]:
        behaviour = name == "actor" or name.startswith("critic")
        return (2 if behaviour else 1 if name == "model" else 0, name)

    return min(bad, key=rank) if bad else fallback


def _nonfinite_message(name: str, metrics: Mapping[str, Any], train_step: int, env_steps: int,
                       last_save: int | None) -> str:
    bad = sorted(k[len("loss/"):] for k, v in metrics.items()
                 if k.startswith("loss/") and not np.isfinite(np.asarray(v)).all())
    value = metrics.get(f"loss/{name}")
    where = f"the last checkpoint (env step {last_save}) is intact" if last_save is not None else "no checkpoint yet"
    return (f"training stopped: loss '{name}' is {value} (not finite) at train step {train_step}, env step "
            f"{env_steps}; non-finite losses: {', '.join(bad) or name}; {where}. Check the inputs (rewards, "
            f"observations) and lower the learning rates.")


def _keys_to_data(tree: Any) -> Any:
    """What orbax can save: typed PRNG keys become their uint32 data, and zero-size arrays (e.g. MJX's `act` of a
    model without activations), which orbax refuses, are left out (restored from the template)."""

    def convert(x):
        if _is_key(x):
            return jax.random.key_data(x)
        if hasattr(x, "size") and x.size == 0:
            return None
        return x

    return jax.tree.map(convert, tree)


def _data_to_keys(tree: Any, like: Any) -> Any:
    def convert(ref, x):
        if x is None:
            return ref
        if _is_key(ref):
            return jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
        return x

    return jax.tree.map(convert, like, tree)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
