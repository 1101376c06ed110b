"""The `explore` stage: SENSEI exploration (or its Plan2Explore / Motif-only baselines) with a DreamerV3 agent.

    python -m sensei_jax.run explore --config configs/robodesk_sensei.yaml --reward-model runs/x/distill
    python -m sensei_jax.run explore --config configs/robodesk_p2x.yaml            # no reward model needed

Collection and training are each one compiled call: `collect` scans `collect_chunk` policy steps of all envs
(policy, env step, reward model on the observed image, replay write), `train` scans the number of updates the
train ratio asks for (replay sample, world model + ensemble + actor-critic update). Host work per chunk is only
logging.

Writes to `<out>` (`run_dir/explore/<behaviour>/` for the pipeline):
    spec.json            behaviour, task heads, reward model folder (what `transfer` needs to rebuild the agent)
    checkpoints/         orbax: agent state and replay (resume after a kill from the last one; the envs then start
                         new episodes) with progress.json (counters, interaction sums)
    metrics.jsonl, TensorBoard events   losses, switch fractions, episode stats (`MetricsWriter`)
    episodes.jsonl       one line per finished episode: env, end step, length, return, semantic return,
                         interaction steps per object, success steps per task
    interactions.json    steps with motion per object summed over the run (the numbers SENSEI's paper reports)
    summary.json         {behaviour, steps, interactions, success, episode_returns, curves, fps, ...}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax import io, progress
from sensei_jax.checkpoint import Checkpointer
from sensei_jax.config import Config
from sensei_jax.dreamer import sensei
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.explore_config import ExploreConfig
from sensei_jax.dreamer.replay import Replay
from sensei_jax.metrics import MetricsWriter

STAGE = "explore"


# ----------------------------------------------------------------------------------------------------------------
# Host-side episode bookkeeping.


class InteractionLog:
    """Per-episode interaction, success and return sums over chunks of steps of E envs.

    Counts are steps in which an object moved (|qvel| > 0.02), as SENSEI counts them, summed over every env step
    of the run (`totals`) and per finished episode (`episodes`).
    """

    def __init__(self, interactions: tuple[str, ...], tasks: tuple[str, ...], num_envs: int):
        self.interactions, self.tasks, self.num_envs = tuple(interactions), tuple(tasks), num_envs
        self.totals = np.zeros(len(interactions), np.int64)
        self.success_totals = np.zeros(len(tasks), np.int64)
        self.current = {"interactions": np.zeros((num_envs, len(interactions)), np.int64),
                        "success": np.zeros((num_envs, len(tasks)), np.int64),
                        "return": np.zeros(num_envs, np.float64), "semantic": np.zeros(num_envs, np.float64),
                        "length": np.zeros(num_envs, np.int64)}
        self.episodes: list[dict[str, Any]] = []

    def add(self, chunk: dict[str, np.ndarray], first_step: int) -> list[dict[str, Any]]:
        """chunk: 'interaction' [S, E, K] bool, 'success' [S, E, J] bool, 'reward', 'semantic' [S, E] f32, 'done'
        [S, E] bool, for the policy steps first_step .. first_step + S - 1 (per env). Returns the finished
        episodes."""
        finished = []
        cur = self.current
        for s in range(chunk["done"].shape[0]):
            flags = chunk["interaction"][s].astype(np.int64)
            success = chunk["success"][s].astype(np.int64)
            cur["interactions"] += flags
            cur["success"] += success
            cur["return"] += chunk["reward"][s]
            cur["semantic"] += chunk["semantic"][s]
            cur["length"] += 1
            self.totals += flags.sum(0)
            self.success_totals += success.sum(0)
            for env in np.flatnonzero(chunk["done"][s]):
                episode = {
                    "env": int(env), "step": int(first_step + s + 1), "length": int(cur["length"][env]),
                    "return": float(cur["return"][env]), "semantic_return": float(cur["semantic"][env]),
                    "interactions": dict(zip(self.interactions, map(int, cur["interactions"][env]))),
                    "success": dict(zip(self.tasks, map(int, cur["success"][env]))),
                }
                finished.append(episode)
                for value in cur.values():
                    value[env] = 0
        self.episodes.extend(finished)
        return finished

    def totals_dict(self) -> dict[str, dict[str, int]]:
        return {"interactions": dict(zip(self.interactions, map(int, self.totals))),
                "success": dict(zip(self.tasks, map(int, self.success_totals)))}

    def state_dict(self) -> dict[str, Any]:
        return {"totals": self.totals.tolist(), "success_totals": self.success_totals.tolist(),
                "current": {k: v.tolist() for k, v in self.current.items()}, "episodes": self.episodes}

    def load(self, state: dict[str, Any]) -> None:
        self.totals = np.asarray(state["totals"], np.int64)
        self.success_totals = np.asarray(state["success_totals"], np.int64)
        for value in self.current.values():  # episodes in flight were lost with the envs' state
            value[:] = 0
        self.episodes = list(state["episodes"])


# ----------------------------------------------------------------------------------------------------------------
# The exploration driver.


def observation_space(env) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """One world's observation name -> (shape, dtype), from either `(shape, dtype)` pairs or ShapeDtypeStructs."""
    space = {}
    for name, spec in env.observation_spec().items():
        shape, dtype = (spec.shape, spec.dtype) if hasattr(spec, "shape") else spec
        space[name] = (tuple(int(d) for d in shape), np.dtype(dtype))
    return space


class Explorer:
    """Exploration with `sensei.build_agent` on a functional batched env (Robodesk or a toy env).

    env: `reset_batch(key, E)`, `step(state, actions [E, A])`, `observation_spec()`, `action_size`; info may hold
        `interaction_flags` {name: bool [E]} and `success` {task: bool [E]}. Envs without `auto_reset` are reset here
        when `done`.
    reward_model: anything with a jittable `reward(images uint8 [E, H, W, 3]) -> f32 [E]` (a `RewardModel`), or
        None; its clipped output on the observed image is stored in replay as the semantic head's target.
    """

    def __init__(self, explore: ExploreConfig, dreamer: DreamerConfig, env, num_envs: int, reward_model=None,
                 image_key: str = "image", seed: int = 0, task: str | None = None, tasks: tuple[str, ...] | None = None):
        if "semantic" in explore.sources and reward_model is None:
            raise ValueError(f"explore.behaviour '{explore.behaviour}' needs a reward model (explore.reward_model, "
                             "--reward-model DIR, or the run's distill/ folder)")
        self.cfg, self.dreamer, self.env, self.num_envs = explore, dreamer, env, num_envs
        self.reward_model, self.image_key, self.seed = reward_model, image_key, seed
        self.env_space = observation_space(env)
        if reward_model is not None and image_key not in self.env_space:
            raise ValueError(f"the reward model scores obs['{image_key}'], which the env does not produce "
                             f"({sorted(self.env_space)})")
        probe = jax.eval_shape(lambda k: env.reset_batch(k, num_envs), jax.random.key(0))
        self.interactions = tuple(probe.info.get("interaction_flags", {}))
        available = tuple(probe.info.get("success", {}))
        wanted = explore.task_heads if tasks is None else tasks
        self.tasks = tuple(t for t in wanted if t in available)
        self.success_keys = available if available else ()
        space = dict(self.env_space)
        if reward_model is not None:
            space[sensei.SEMANTIC_KEY] = ((), np.dtype(np.float32))
        for t in self.tasks:
            space[sensei.TASK_KEY.format(t)] = ((), np.dtype(np.float32))
        self.obs_space = space
        self.action_size = int(env.action_size)
        self._env_step = self._batched_step(env, probe, num_envs, self.action_size)
        self.agent = sensei.build_agent(dreamer, explore, space, self.action_size, tasks=self.tasks, task=task)
        specs = {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in space.items()}
        specs.update(action=jax.ShapeDtypeStruct((self.action_size,), np.float32),
                     reward=jax.ShapeDtypeStruct((), np.float32), is_first=jax.ShapeDtypeStruct((), np.bool_),
                     is_terminal=jax.ShapeDtypeStruct((), np.bool_))
        capacity = max(explore.replay_capacity, num_envs * explore.batch_length)
        self.replay = Replay(specs, num_envs, capacity, explore.batch_length, explore.batch_size)
        batch_steps = explore.batch_size * explore.batch_length
        self.updates_per_step = explore.train_ratio / batch_steps  # per policy step of all envs together
        self._collect = jax.jit(self._collect_impl, static_argnames=("steps", "random", "mode"),
                                donate_argnums=(1,))
        self._train = jax.jit(self._train_impl, static_argnames=("updates",), donate_argnums=(0,))

    @staticmethod
    def _batched_step(env, probe, num_envs: int, action_size: int):
        """env.step if it takes a batch of worlds (Robodesk), else jax.vmap(env.step) (single-world envs)."""
        actions = jax.ShapeDtypeStruct((num_envs, action_size), jnp.float32)
        try:
            jax.eval_shape(env.step, probe, actions)
            return env.step
        except (ValueError, TypeError):
            return jax.vmap(env.step)

    # --- compiled pieces ----------------------------------------------------------------------------------------
    def init(self, key: jax.Array) -> dict[str, Any]:
        agent_key, env_key, loop_key = jax.random.split(key, 3)
        return {
            "agent": self.agent.init(agent_key),
            "replay": self.replay.init(),
            "loop": {"env": self.env.reset_batch(env_key, self.num_envs),
                     "carry": self.agent.initial_carry(self.num_envs),
                     "is_first": jnp.ones(self.num_envs, bool), "reward": jnp.zeros(self.num_envs, jnp.float32),
                     "key": loop_key},
        }

    def _semantic(self, reward_model, image: jax.Array) -> jax.Array:
        return sensei.clip_semantic(reward_model.reward(image), self.cfg.semantic_clip)

    def _collect_impl(self, agent_state, replay_state, loop, reward_model, steps: int, random: bool,
                      mode: str = "explore"):
        """`steps` policy steps of all envs; writes replay (unless replay_state is None) and returns per-step
        records for the host log: 'interaction' [S, E, K], 'success' [S, E, J], 'reward', 'semantic', 'done'."""
        env = self.env

        def one(carry, _):
            replay_state, loop = carry
            key, k_policy, k_reset = jax.random.split(loop["key"], 3)
            env_state = loop["env"]
            obs = {k: env_state.obs[k] for k in self.env_space}
            is_first = loop["is_first"]
            action, policy_carry = self.agent.policy(agent_state, loop["carry"], {**obs, "is_first": is_first},
                                                     k_policy, mode=mode)
            if random:
                action = jax.random.uniform(k_policy, action.shape, jnp.float32, -1.0, 1.0)
                policy_carry = {**policy_carry, "action": action}
            step = {**obs, "action": action, "reward": loop["reward"], "is_first": is_first,
                    "is_terminal": jnp.zeros_like(is_first)}
            semantic = jnp.zeros(self.num_envs, jnp.float32)
            if reward_model is not None:
                semantic = self._semantic(reward_model, obs[self.image_key])
                step[sensei.SEMANTIC_KEY] = semantic
            for t in self.tasks:  # success on arriving at this observation; none on a fresh episode
                step[sensei.TASK_KEY.format(t)] = (env_state.info["success"][t] & ~is_first).astype(jnp.float32)
            if replay_state is not None:
                replay_state = self.replay.add(replay_state, step)

            new_env = self._env_step(env_state, action)
            done = new_env.done
            info = new_env.info
            record = {
                "interaction": jnp.stack([info["interaction_flags"][k] for k in self.interactions], -1)
                if self.interactions else jnp.zeros((self.num_envs, 0), bool),
                "success": jnp.stack([info["success"][t] for t in self.tasks], -1)
                if self.tasks else jnp.zeros((self.num_envs, 0), bool),
                "reward": new_env.reward.astype(jnp.float32), "semantic": semantic, "done": done,
            }
            if not getattr(env, "auto_reset", False):
                fresh = env.reset_batch(k_reset, self.num_envs)
                select = lambda a, b: jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
                new_env = jax.tree.map(select, fresh, new_env)
            loop = {"env": new_env, "carry": policy_carry, "is_first": done,
                    "reward": jnp.where(done, 0.0, new_env.reward.astype(jnp.float32)), "key": key}
            return (replay_state, loop), record

        (replay_state, loop), records = jax.lax.scan(one, (replay_state, loop), None, length=steps)
        return replay_state, loop, records

    def _train_impl(self, agent_state, replay_state, key, updates: int):
        def one(agent_state, k):
            k_sample, k_train = jax.random.split(k)
            batch, _ = self.replay.sample(replay_state, k_sample)
            return self.agent.train(agent_state, batch, k_train)

        agent_state, metrics = jax.lax.scan(one, agent_state, jax.random.split(key, updates))
        return agent_state, jax.tree.map(lambda m: m.mean(0), metrics)

    # --- the run ------------------------------------------------------------------------------------------------
    def run(self, out_dir: Path, steps: int | None = None, state: dict[str, Any] | None = None,
            log=print) -> dict[str, Any]:
        """Explores for `steps` policy steps (all envs together; default explore.steps), resuming from the last
        checkpoint in out_dir/checkpoints. Returns the summary (also written to out_dir/summary.json)."""
        cfg, out_dir = self.cfg, Path(out_dir)
        steps = cfg.steps if steps is None else steps
        out_dir.mkdir(parents=True, exist_ok=True)
        spec = {"behaviour": cfg.behaviour, "tasks": list(self.tasks), "semantic": self.reward_model is not None,
                "num_envs": self.num_envs, "reward_model": getattr(self, "reward_model_dir", None),
                "explore": dataclasses.asdict(cfg), "dreamer": dataclasses.asdict(self.dreamer)}
        io.write_json(out_dir / "spec.json", spec)
        chunk = cfg.collect_chunk
        per_call = chunk * self.num_envs
        ckpt = Checkpointer(out_dir / "checkpoints", max_to_keep=1)
        log_ = InteractionLog(self.interactions, self.tasks, self.num_envs)
        key = jax.random.key(self.seed)
        if state is None:
            state = self.init(jax.random.fold_in(key, 0))
        counters = {"step": 0, "updates": 0.0}
        if ckpt.latest_step is not None:
            # The envs restart fresh episodes on resume: the simulator state is not part of the checkpoint.
            restored = ckpt.restore(like={"agent": state["agent"], "replay": state["replay"]})
            state = {**state, **restored}
            state["loop"]["key"] = jax.random.fold_in(state["loop"]["key"], ckpt.latest_step)
            book = io.read_json(out_dir / "progress.json")
            counters = book["counters"]
            log_.load(book["log"])
            log(f"explore: resumed at step {counters['step']} from {ckpt.directory}")
        agent_state, replay_state, loop = state["agent"], state["replay"], state["loop"]
        writer = MetricsWriter(out_dir)
        curves, next_log, next_ckpt = [], counters["step"] + cfg.log_every, counters["step"] + cfg.checkpoint_every
        episodes_file = out_dir / "episodes.jsonl"
        start_time, start_step = time.time(), counters["step"]
        metrics: dict[str, float] = {}
        bar = progress.bar(steps, desc=f"explore [{cfg.behaviour}]", unit="step", initial=counters["step"])
        while counters["step"] < steps:
            random = counters["step"] < cfg.prefill
            replay_state, loop, records = self._collect(agent_state, replay_state, loop, self.reward_model,
                                                        steps=chunk, random=random)
            records = jax.device_get(records)
            finished = log_.add(records, counters["step"] // self.num_envs)
            counters["step"] += per_call
            bar.update(per_call)
            if finished:
                with open(episodes_file, "a") as f:
                    for episode in finished:
                        f.write(json.dumps({**episode, "step": counters["step"]}) + "\n")
                writer.scalars(counters["step"], {
                    "episode/return": np.mean([e["return"] for e in finished]),
                    "episode/semantic_return": np.mean([e["semantic_return"] for e in finished]),
                    **{f"episode/interactions/{k}": np.mean([e["interactions"][k] for e in finished])
                       for k in self.interactions}})
            if counters["step"] >= cfg.prefill and int(jax.device_get(self.replay.can_sample(replay_state))):
                counters["updates"] += per_call * self.updates_per_step
                updates = int(counters["updates"])
                if updates > 0:
                    counters["updates"] -= updates
                    agent_state, train_metrics = self._train(agent_state, replay_state,
                                                             jax.random.fold_in(key, counters["step"]), updates)
                    metrics = {k: float(v) for k, v in jax.device_get(train_metrics).items()}
                    bad = [k for k, v in metrics.items() if k.startswith("loss/") and not np.isfinite(v)]
                    if bad:
                        raise FloatingPointError(f"explore: non-finite loss {bad[0]} at step {counters['step']}")
            if counters["step"] >= next_log or counters["step"] >= steps:
                next_log += cfg.log_every
                fps = (counters["step"] - start_step) / max(time.time() - start_time, 1e-9)
                writer.scalars(counters["step"], {**metrics, "fps": fps,
                                                  **{f"interactions/{k}": v for k, v in
                                                     log_.totals_dict()["interactions"].items()}})
                recent = log_.episodes[-max(self.num_envs, 1):]
                curves.append({"step": counters["step"],
                               "return": float(np.mean([e["return"] for e in recent])) if recent else None,
                               "interactions": log_.totals_dict()["interactions"]})
            if counters["step"] >= next_ckpt or counters["step"] >= steps:
                next_ckpt += cfg.checkpoint_every
                ckpt.save(counters["step"], {"agent": agent_state, "replay": replay_state})
                io.write_json(out_dir / "progress.json", {"counters": counters, "log": log_.state_dict()})
        bar.close()
        writer.close()
        ckpt.close()
        totals = log_.totals_dict()
        elapsed = time.time() - start_time
        summary = {
            "behaviour": cfg.behaviour, "steps": counters["step"], "num_envs": self.num_envs,
            "interactions": totals["interactions"], "success": totals["success"],
            "episodes": len(log_.episodes), "episode_returns": [e["return"] for e in log_.episodes],
            "semantic_returns": [e["semantic_return"] for e in log_.episodes], "curves": curves,
            "fps": (counters["step"] - start_step) / max(elapsed, 1e-9),
            "final_metrics": {k: v for k, v in metrics.items() if k.startswith(("loss/", "weighting/", "rew/", "weight/"))},
            "checkpoint": str(out_dir / "checkpoints"), "tasks": list(self.tasks),
        }
        io.write_json(out_dir / "interactions.json", {"steps": counters["step"], **totals})
        io.write_json(out_dir / "summary.json", summary)
        self.state = {"agent": agent_state, "replay": replay_state, "loop": loop}
        return summary

    def evaluate(self, agent_state, episodes: int, key: jax.Array) -> dict[str, Any]:
        """Runs the policy in `eval` mode (its mode action) until `episodes` episodes have finished, without
        touching the replay. Returns {'episodes', 'success_rate' per task (episodes with success at any step),
        'mean_return', 'interactions' (summed)}."""
        env_key, loop_key = jax.random.split(key)
        loop = {"env": self.env.reset_batch(env_key, self.num_envs), "carry": self.agent.initial_carry(self.num_envs),
                "is_first": jnp.ones(self.num_envs, bool), "reward": jnp.zeros(self.num_envs, jnp.float32),
                "key": loop_key}
        log_ = InteractionLog(self.interactions, self.tasks, self.num_envs)
        step = 0
        while len(log_.episodes) < episodes:
            _, loop, records = self._collect(agent_state, None, loop, self.reward_model, steps=self.cfg.collect_chunk,
                                             random=False, mode="eval")
            log_.add(jax.device_get(records), step)
            step += self.cfg.collect_chunk
        done = log_.episodes[:episodes]
        return {"episodes": len(done),
                "success_rate": {t: float(np.mean([e["success"][t] > 0 for e in done])) for t in self.tasks},
                "mean_return": float(np.mean([e["return"] for e in done])),
                "interactions": {k: int(sum(e["interactions"][k] for e in done)) for k in self.interactions}}


# ----------------------------------------------------------------------------------------------------------------
# Stage and CLI.


def dreamer_config(cfg: Config) -> DreamerConfig:
    """The run's `dreamer` section (DreamerConfig defaults where the config has none)."""
    return cfg.dreamer


def make_env(cfg: Config):
    """The run's Robodesk env, shared with the other stages of this process (built once per env config)."""
    from sensei_jax.pipeline import collect

    return collect.make_env(cfg)


def load_reward_model(directory: str | Path | None, required: bool):
    """The distilled reward model in `directory`, or None when there is none and the behaviour can do without."""
    if directory is not None and Path(directory).exists():
        from sensei_jax.reward.model import RewardModel

        return RewardModel.load(directory)
    if required:
        raise FileNotFoundError(f"no reward model at {directory!r}: SENSEI and Motif exploration need the distilled "
                                "reward model (run the distill stage, or pass --reward-model DIR)")
    return None


def explore(cfg: Config, out_dir: Path, reward_model_dir: str | Path | None, env=None, log=print) -> dict[str, Any]:
    """Explores with cfg.explore.behaviour for cfg.explore.steps; writes out_dir (see the module docstring)."""
    needs_semantic = "semantic" in cfg.explore.sources
    reward_model = load_reward_model(reward_model_dir, required=needs_semantic)
    env = make_env(cfg) if env is None else env
    explorer = Explorer(cfg.explore, dreamer_config(cfg), env, cfg.env.num_envs, reward_model=reward_model,
                        seed=cfg.run.seed)
    if reward_model is not None:
        explorer.reward_model_dir = str(Path(reward_model_dir).resolve())
    summary = explorer.run(Path(out_dir), log=log)
    log(f"explore [{cfg.explore.behaviour}]: {summary['steps']} steps, {summary['episodes']} episodes, "
        f"interactions {summary['interactions']}")
    return summary


def compact(summary: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The JSON-able stage summary for status.json (the full one is in out_dir/summary.json)."""
    returns = summary["episode_returns"]
    return {"behaviour": summary["behaviour"], "steps": summary["steps"], "episodes": summary["episodes"],
            "interactions": summary["interactions"], "success": summary["success"],
            "mean_return": float(np.mean(returns)) if returns else None, "fps": summary["fps"],
            "dir": str(out_dir)}


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Pipeline stage: reward model from run_dir/distill (unless explore.reward_model is set), outputs in
    run_dir/explore/<behaviour>/. The runner calls it again with explore.behaviour p2x for the baseline."""
    run_dir = Path(run_dir)
    reward_dir = cfg.explore.reward_model or run_dir / "distill"
    out_dir = run_dir / STAGE / cfg.explore.behaviour
    return compact(explore(cfg, out_dir, reward_dir), out_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reward-model", metavar="DIR", help="distilled reward model (default: explore.reward_model, "
                        "else <run dir>/distill)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <run dir>/explore/<behaviour>)")


def main(args: argparse.Namespace, cfg: Config) -> int:
    reward_dir = args.reward_model or cfg.explore.reward_model or cfg.run_dir / "distill"
    out_dir = Path(args.out) if args.out else cfg.run_dir / STAGE / cfg.explore.behaviour
    try:
        summary = compact(explore(cfg, out_dir, reward_dir), out_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
