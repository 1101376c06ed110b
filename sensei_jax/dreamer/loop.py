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

The parts: `collection.Collection` (the compiled collect calls, world resets, what a step stores),
`update.Update` (the compiled train step and report over replay), `schedule.Schedule` (updates owed, prefill,
log/save/video points), `tally.Tally` (the host sums behind a log row); `Trainer` composes them and owns the run
state, its checkpoints and the loop itself (`run`).

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

import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sensei_jax import progress
from sensei_jax.checkpoint import Checkpointer
from sensei_jax.distributed import is_main_process, replicated, tree_to_host
from sensei_jax.dreamer.agent import Agent
from sensei_jax.dreamer.collection import Collection, LoopState, StepFn, select_worlds
from sensei_jax.dreamer.mesh import make_mesh, replay_specs
from sensei_jax.dreamer.replay import ReplayState
from sensei_jax.dreamer.schedule import Points, Schedule
from sensei_jax.dreamer.tally import NonFiniteLossError, Tally
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.dreamer.update import LATENT_KEYS, Update
from sensei_jax.envs.protocol import Env, host_errors
from sensei_jax.metrics import MetricsWriter

__all__ = ["LATENT_KEYS", "LoopState", "NonFiniteLossError", "StepFn", "Trainer", "make_mesh", "obs_space",
           "select_worlds", "write_video"]


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

    Parts: `collection` (a `Collection`), `update` (an `Update`), `schedule` (a `Schedule`).
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
        self.collection = Collection(cfg, agent, env, self.mesh, self.obs_keys, store_fn=store_fn, log_fn=log_fn,
                                     record_fn=record_fn, hook_args=self.hook_args)
        self.replay = self.collection.replay
        self.update = Update(cfg, agent, self.replay, self.mesh)
        self.schedule = Schedule.from_config(cfg)
        self.updates_per_step = self.schedule.updates_per_step
        self.train_start = self.schedule.train_start

    # ------------------------------------------------------------------------------------------------------------
    # The compiled calls

    def collect(self, agent_state: Any, loop: LoopState, replay_state: ReplayState | None, *, random: bool = False,
                mode: str | None = None) -> tuple[LoopState, ReplayState | None, dict[str, Any]]:
        """One compiled collection call, as `run` makes it: `collect_steps` steps of every world with the policy in
        `mode` (default cfg.policy_mode; uniform random actions with `random`), the hooks with the Trainer's
        hook_args, each step written into `replay_state` (None: nothing stored). `loop` and `replay_state` are
        donated. Returns (loop, replay_state, per-step outputs [S, N, ...] on the devices)."""
        return self.collection(agent_state, loop, replay_state, random=random, mode=mode)

    def rollout(self, agent_state: Any, loop: LoopState, mode: str = "eval") -> tuple[LoopState, dict[str, Any]]:
        """`collect_steps` steps of every world with the policy in `mode`, writing no replay. Returns the new loop
        state and the per-step outputs on the host ('is_last', 'return', 'length' [S, N], 'records' if any)."""
        with host_errors(self.env):
            loop, _, outputs = self.collection(agent_state, loop, None, mode=mode)
            return loop, tree_to_host(outputs)

    def train_step(self, agent_state: Any, replay_state: ReplayState, key: jax.Array,
                   step: int) -> tuple[Any, ReplayState, dict[str, jax.Array]]:
        """One compiled update, as `run` makes it: a batch of windows sampled from `replay_state` with `key` folded
        with `step` (a raw PRNG key [2]), one `agent.train`, the fresh latents written back (replay_context 1).
        `agent_state` and `replay_state` are donated. Returns (agent_state, replay_state, metrics on the devices)."""
        return self.update.train_step(agent_state, replay_state, key, step)

    def updates_due(self, env_steps: int) -> int:
        """Train steps that should have run after `env_steps` env steps (the reference's Ratio)."""
        return self.schedule.updates_due(env_steps)

    # ------------------------------------------------------------------------------------------------------------
    # State

    def initial_state(self) -> dict[str, Any]:
        """The whole run state at step 0: {'agent', 'replay', 'loop', 'counters'}, laid out over the mesh.

        The agent's parameters are drawn on the host and then replicated over the mesh: compiling the draws of
        every parameter into one program cost XLA 20-30 s on a CPU, for a program that runs once."""
        k_agent, k_loop = self._initial_keys()
        agent_state = jax.tree.map(lambda x: replicated(self.mesh, x), self.agent.init(k_agent))
        replay_state = self.replay.init(NamedSharding(self.mesh, P("data")))
        return {"agent": agent_state, "replay": replay_state, "loop": self.collection.new_loop(k_loop),
                "counters": _counters(0, 0)}

    def abstract_state(self) -> dict[str, Any]:
        """Shapes, dtypes and shardings of `initial_state()`, computing nothing (e.g. a restore target)."""
        k_agent, k_loop = self._initial_keys()
        agent_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                  sharding=NamedSharding(self.mesh, P())),
                                   jax.eval_shape(self.agent.init, k_agent))
        replay_state = jax.tree.map(lambda x, spec: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                         sharding=NamedSharding(self.mesh, spec)),
                                    jax.eval_shape(self.replay.init), replay_specs(self.replay))
        return {"agent": agent_state, "replay": replay_state, "loop": self.collection.abstract_loop(k_loop),
                "counters": _counters(0, 0)}

    def _initial_keys(self) -> tuple[jax.Array, np.ndarray]:
        """The agent's PRNG key and the worlds' raw key [2] uint32, from the run's seed."""
        k_agent, k_loop = jax.random.split(jax.random.PRNGKey(self.seed))
        return k_agent, np.asarray(k_loop, np.uint32)

    def fresh_loop(self, key: jax.Array) -> LoopState:
        """A loop state with fresh episodes in every world, from a raw PRNG key (e.g. for evaluation rollouts)."""
        return self.collection.new_loop(np.asarray(jax.device_get(key), np.uint32))

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

    def _start_state(self, checkpointer: Checkpointer, initial: dict[str, Any] | None) -> dict[str, Any]:
        """The state a run starts from: the latest checkpoint if there is one, else `initial` (default
        `initial_state()`). Host worlds (NetHack) cannot be saved: a resumed host-stepped run goes on from fresh
        episodes, with new keys per resume step."""
        state = self.initial_state() if initial is None else initial
        if checkpointer.latest_step is None:
            return state
        state = self.restore(checkpointer, state)
        if self.host_stepped:
            k_loop = self._initial_keys()[1]
            env_steps = int(state["counters"]["env_steps"])
            state["loop"] = self.collection.new_loop(np.asarray(jax.random.fold_in(k_loop, env_steps), np.uint32))
        return state

    # ------------------------------------------------------------------------------------------------------------
    # The loop

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
        total = self.cfg.steps if steps is None else steps
        own_writer = writer is None
        writer = writer or MetricsWriter(self.logdir)
        checkpointer = Checkpointer(self.logdir / "checkpoints", max_to_keep=self.cfg.keep_checkpoints)
        resumed_from = checkpointer.latest_step
        try:
            state = self._start_state(checkpointer, initial)
            run = _Run(self, state, total, writer, checkpointer, on_collect, on_save)
            run.summary["resumed_from"] = resumed_from
            start_time, start_steps = time.perf_counter(), run.env_steps
            try:
                while run.env_steps < total:
                    run.iteration()
            finally:
                run.bar.close()
        finally:
            writer.flush()
            if own_writer:
                writer.close()
            checkpointer.close()
        wall = time.perf_counter() - start_time
        run.summary.update({"env_steps": run.env_steps, "train_steps": run.train_steps, "wall_s": wall,
                            "env_steps_per_s": (run.env_steps - start_steps) / max(wall, 1e-9)})
        self.state = run.state
        return run.summary


class _Run:
    """One call of `Trainer.run`: the run state, its counters, schedule points and tallies, and one iteration of
    the loop (collect, update, then log, video and save where due)."""

    def __init__(self, trainer: Trainer, state: dict[str, Any], total: int, writer: MetricsWriter,
                 checkpointer: Checkpointer, on_collect: Callable | None, on_save: Callable | None):
        self.trainer, self.state, self.total = trainer, state, total
        self.writer, self.checkpointer = writer, checkpointer
        self.on_collect, self.on_save = on_collect, on_save
        self.env_steps = int(state["counters"]["env_steps"])
        self.train_steps = int(state["counters"]["train_steps"])
        self.train_key = np.asarray(jax.random.PRNGKey(trainer.seed + 1))
        self.report_key = np.asarray(jax.random.PRNGKey(trainer.seed + 2))
        self.step_per_iter = trainer.cfg.collect_steps * trainer.num_envs
        self.points: Points = trainer.schedule.points(self.env_steps, total)
        self.tally = Tally(self.env_steps, self.train_steps)
        self.summary: dict[str, Any] = {"resumed_from": None, "recent_returns": [], "train_metrics": {}}
        self.bar = progress.bar(total=total, desc="train", unit="step", initial=self.env_steps,
                                disable=not trainer.cfg.progress)

    def iteration(self) -> None:
        """Collect `collect_steps` steps of every world, run the updates owed, then log, video and save."""
        self.collect()
        self.train()
        self.state["counters"] = _counters(self.env_steps, self.train_steps)
        self.bar.update(self.step_per_iter)
        if self.points.log_due(self.env_steps):
            self.log()
        if self.points.video_due(self.env_steps, self.train_steps):
            self.video()
        if self.points.save_due(self.env_steps):
            self.save()

    def collect(self) -> None:
        """One collection call into replay (uniform random actions in prefill), its episodes tallied."""
        trainer, state = self.trainer, self.state
        with host_errors(trainer.env):
            state["loop"], state["replay"], outputs = trainer.collection(
                state["agent"], state["loop"], state["replay"], random=trainer.schedule.is_random(self.env_steps))
            outputs = tree_to_host(outputs)
        if self.on_collect is not None:
            self.on_collect(outputs, self.env_steps)
        self.env_steps += self.step_per_iter
        self.tally.add_outputs(outputs)

    def train(self) -> None:
        """The train steps the schedule owes after this collection; their metrics fetched once, checked finite."""
        state, pending = self.state, []
        for _ in range(max(self.trainer.schedule.updates_due(self.env_steps) - self.train_steps, 0)):
            state["agent"], state["replay"], metrics = self.trainer.update.train_step(
                state["agent"], state["replay"], self.train_key, self.train_steps)
            pending.append(metrics)
            self.train_steps += 1
        if not pending:
            return
        fetched = tree_to_host(pending)
        self.summary["train_metrics"] = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        self.tally.add_metrics(fetched, self.train_steps, self.env_steps, self.checkpointer.latest_step)

    def log(self) -> None:
        """Writes the interval's row (metrics, throughput, episodes) and starts the next interval."""
        filled = float(self.trainer.num_envs * int(tree_to_host(self.state["replay"].filled)))
        returns = self.tally.returns
        if returns:
            self.summary["recent_returns"] = returns[-32:]
            self.bar.set_postfix(ret=f"{np.mean(returns):.3g}", updates=self.train_steps)
        row = self.tally.row(self.env_steps, self.train_steps, filled)
        self.writer.scalars(self.env_steps, row)
        self.summary["last_metrics"] = row
        self.points.done_log(self.env_steps)

    def video(self) -> None:
        """Open-loop prediction videos on replayed windows (written by process 0)."""
        key = np.asarray(jax.random.fold_in(self.report_key, self.env_steps))
        videos = tree_to_host(self.trainer.update.report(self.state["agent"], self.state["replay"], key))
        if is_main_process():
            for name, video in videos.items():
                write_video(self.writer, self.trainer.logdir / "videos", self.env_steps, name, np.asarray(video))
        self.points.done_video(self.env_steps)

    def save(self) -> None:
        """A checkpoint of the run state, then the `on_save` callback."""
        self.trainer.save(self.checkpointer, self.state)
        if self.on_save is not None:
            self.on_save(self.env_steps)
        self.points.done_save(self.env_steps)


def _counters(env_steps: int, train_steps: int) -> dict[str, np.ndarray]:
    return {"env_steps": np.asarray(env_steps, np.int64), "train_steps": np.asarray(train_steps, np.int64)}


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
