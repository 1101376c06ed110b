"""The Explorer: SENSEI exploration (or its Plan2Explore / Motif-only baselines) on the DreamerV3 `Trainer`.

Collection is one compiled call that scans `train.collect_steps` policy steps of all envs (policy, env step, the
reward model on the observed image `image_key`, replay write), followed by the updates the train ratio owes. The
schedule is the `train` section's, the one the `train` command runs on (`train_config`); the Trainer brings
data-parallel sharding over devices, the non-finite loss stop and exact checkpoint/resume. This module adds
SENSEI's agent (`sensei.build_agent`), the replay fields it learns from (semantic reward, task success) and the
per-episode interaction log.

`Explorer.run(out_dir)` writes:
    spec.json            behaviour, task heads, reward model folder and the observation it scores (what a transfer
                         needs to rebuild the agent)
    checkpoints/         orbax: the loop's whole state (agent, replay, envs, counters; a killed run resumes from
                         the last one) with progress.json (interaction log and curves at that step)
    metrics.jsonl, TensorBoard events   losses, switch fractions, episode stats (`MetricsWriter`)
    episodes.jsonl       one line per finished episode: env, end step, length, return, semantic return,
                         interaction steps per object, success steps per task
    interactions.json    steps with motion per object summed over the run (the numbers SENSEI's paper reports)
    summary.json         {behaviour, steps, interactions, success, episode_returns, curves, fps, ...}
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax import files
from sensei_jax.distributed import is_main_process
from sensei_jax.dreamer import loop as loop_lib
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.dreamer.world_model import split_obs_keys
from sensei_jax.envs.protocol import Env
from sensei_jax.explore import sensei
from sensei_jax.explore.config import ExploreConfig
from sensei_jax.explore.interactions import InteractionLog
from sensei_jax.metrics import MetricsWriter


def train_config(explore: ExploreConfig, num_envs: int, train: TrainConfig | None = None,
                 obs_keys: tuple[str, ...] = ()) -> TrainConfig:
    """The loop settings of an exploration: the schedule, devices and precision of `train` (the section the
    `train` command reads too), and what exploring fixes: `explore.steps`, `num_envs` worlds, the stored env
    observations `obs_keys` (empty: all), the exploring policy, no stored final observation (the envs reset
    themselves), no videos, one kept checkpoint, and a replay that holds at least one window per world."""
    train = TrainConfig() if train is None else train
    capacity = max(train.replay_capacity, num_envs * train.sequence_length)
    return dataclasses.replace(
        train, steps=max(explore.steps, 1), num_envs=num_envs, replay_capacity=capacity, obs_keys=tuple(obs_keys),
        policy_mode="explore", store_final_obs=False, video_every=0, keep_checkpoints=1)


class Explorer:
    """Exploration with `sensei.build_agent` on a functional batched env (`sensei_jax.envs.Env`: Robodesk or a toy
    env), run by the DreamerV3 `Trainer` (so it shares its sharding over devices, non-finite loss stop and
    checkpoint/resume).

    env: info may hold `interaction_flags` {name: bool [E]} and `success` {task: bool [E]}; an episode's final
        observation is not stored.
    reward_model: anything with a jittable `reward(images uint8 [E, H, W, 3]) -> f32 [E]` (a `RewardModel`), or
        None; its clipped output on the observed image is stored in replay as the semantic head's target. It is
        an argument of the compiled collection, not a constant in it.
    image_key: the observation the reward model scores. When the world model does not read it (it is not among
        the keys dreamer.encoder_keys/decoder_keys select from the env's observations, e.g. Robodesk's 224x224
        `reward_image` next to an agent that sees `image`), it is read from the env state at collection time
        only: neither the agent's observation space nor the replay holds it.
    reward_model_dir: where `reward_model` was loaded from, recorded in spec.json for a later transfer.
    train: the `train` section: the schedule (batch, train ratio, replay, prefill, intervals), devices and
        precision (default: its defaults); see `train_config`.

    The hooks `store_fields` and `record_step` run inside the compiled collection step; a caller with its own
    record (the collect stage) passes its `record_fn` to `make_trainer`.
    """

    def __init__(self, explore: ExploreConfig, dreamer: DreamerConfig, env: Env, num_envs: int, reward_model=None,
                 image_key: str = "image", seed: int = 0, task: str | None = None, tasks: tuple[str, ...] | None = None,
                 train: TrainConfig | None = None, reward_model_dir: str | Path | None = None):
        if explore.needs_reward_model and reward_model is None:
            raise ValueError(f"explore.behaviour '{explore.behaviour}' needs a reward model (explore.reward_model, "
                             "--reward-model DIR, or the run's distill/ folder)")
        self.cfg, self.dreamer, self.env, self.num_envs = explore, dreamer, env, num_envs
        self.reward_model, self.image_key, self.seed = reward_model, image_key, seed
        self.reward_model_dir = None if reward_model_dir is None else str(Path(reward_model_dir).resolve())
        env_space = loop_lib.obs_space(env)
        if reward_model is not None and image_key not in env_space:
            raise ValueError(f"the reward model scores obs['{image_key}'], which the env does not produce "
                             f"({sorted(env_space)})")
        model_keys = set()
        for selected in (dreamer.encoder_keys, dreamer.decoder_keys):
            model_keys.update(*split_obs_keys(env_space, selected))
        # The scored image is stored only if training reads it: a 224x224 view in a 1M-step replay is 150 GB.
        self.env_space = {k: v for k, v in env_space.items() if k != image_key or k in model_keys}
        self.obs_keys = tuple(self.env_space)
        probe = jax.eval_shape(lambda k: env.reset_batch(k, num_envs), jax.random.key(0))
        self.interactions = tuple(probe.info.get("interaction_flags", {}))
        available = tuple(probe.info.get("success", {}))
        wanted = explore.task_heads if tasks is None else tasks
        unknown = [t for t in wanted if t not in available]
        if unknown:
            raise ValueError(f"explore.task_heads: {unknown} are not success flags of this env; it has "
                             f"{list(available)}")
        self.tasks = tuple(wanted)
        space = dict(self.env_space)
        if reward_model is not None:
            space[sensei.SEMANTIC_KEY] = ((), np.dtype(np.float32))
        for t in self.tasks:
            space[sensei.TASK_KEY.format(t)] = ((), np.dtype(np.float32))
        self.obs_space = space
        self.action_size = int(env.action_size)
        self.agent = sensei.build_agent(dreamer, explore, space, self.action_size, tasks=self.tasks, task=task,
                                        discrete=bool(getattr(env, "discrete_actions", False)))
        self.train_cfg = train_config(explore, num_envs, train, self.obs_keys)
        self.trainer: loop_lib.Trainer | None = None

    def make_trainer(self, out_dir: Path, record_fn=None) -> loop_lib.Trainer:
        """The loop writing to `out_dir` (metrics, checkpoints/); also kept as `self.trainer`. `record_fn`
        (default `record_step`) is what each compiled collection step hands back to the host."""
        self.trainer = loop_lib.Trainer(self.train_cfg, self.agent, self.env, out_dir, seed=self.seed,
                                        store_fn=self.store_fields, record_fn=record_fn or self.record_step,
                                        hook_args=self.reward_model)
        return self.trainer

    # --- hooks, called inside the compiled collection step --------------------------------------------------------
    def store_fields(self, env_state, obs, reward_model) -> dict[str, jax.Array]:
        """Replay fields beyond the observation: the clipped semantic reward of the observed image and, per task
        head, success on arriving at this observation (none on a fresh episode)."""
        extra = {}
        if reward_model is not None:
            # From the env state: `obs` holds the stored keys only, which may leave the scored image out.
            image = env_state.obs[self.image_key]
            extra[sensei.SEMANTIC_KEY] = sensei.clip_semantic(reward_model.reward(image), self.cfg.semantic_clip)
        for t in self.tasks:
            extra[sensei.TASK_KEY.format(t)] = (env_state.info["success"][t] & ~obs["is_first"]).astype(jnp.float32)
        return extra

    def record_step(self, step, next_env, reward_model) -> dict[str, jax.Array]:
        """What the interaction log needs per step: 'interaction' [E, K], 'success' [E, J] bool, 'reward',
        'semantic' [E] f32, 'done' [E] bool, all of the transition this step made."""
        info, n = next_env.info, step["is_first"].shape[0]  # this device's worlds
        return {
            "interaction": jnp.stack([info["interaction_flags"][k] for k in self.interactions], -1)
            if self.interactions else jnp.zeros((n, 0), bool),
            "success": jnp.stack([info["success"][t] for t in self.tasks], -1)
            if self.tasks else jnp.zeros((n, 0), bool),
            "reward": jnp.asarray(next_env.reward, jnp.float32).reshape(n),
            "semantic": step.get(sensei.SEMANTIC_KEY, jnp.zeros(n, jnp.float32)),
            "done": jnp.asarray(next_env.done, bool).reshape(n),
        }

    # --- the run ------------------------------------------------------------------------------------------------
    def run(self, out_dir: Path, steps: int | None = None, state: dict[str, Any] | None = None,
            log=print) -> dict[str, Any]:
        """Explores for `steps` policy steps (all envs together; default explore.steps), resuming from the last
        checkpoint in out_dir/checkpoints, else starting from `state` (a `Trainer` run state) or a fresh one.
        Returns the summary (also written to out_dir/summary.json)."""
        cfg, out_dir = self.cfg, Path(out_dir)
        steps = cfg.steps if steps is None else steps
        writes = is_main_process()  # process 0 writes the files below; every process explores
        out_dir.mkdir(parents=True, exist_ok=True)
        spec = {"behaviour": cfg.behaviour, "tasks": list(self.tasks), "semantic": self.reward_model is not None,
                "image_key": self.image_key, "num_envs": self.num_envs, "reward_model": self.reward_model_dir,
                "explore": dataclasses.asdict(cfg), "dreamer": dataclasses.asdict(self.dreamer),
                "train": dataclasses.asdict(self.train_cfg)}
        if writes:
            files.write_json(out_dir / "spec.json", spec)
        trainer = self.make_trainer(out_dir)
        log_ = InteractionLog(self.interactions, self.tasks, self.num_envs)
        episodes_file = out_dir / "episodes.jsonl"
        progress_file = out_dir / "progress.json"
        curves: list[dict[str, Any]] = []
        resumed = (out_dir / "checkpoints").is_dir() and progress_file.is_file()
        if resumed:
            book = files.read_json(progress_file)
            log_.load(book["log"])
            if getattr(self.env, "host_stepped", False):  # host worlds restart on resume: no episode is in flight
                log_.reset_current()
            curves = book.get("curves", [])
            # Episodes written after the checkpoint are collected again.
            if writes:
                files.write_text(episodes_file, "".join(json.dumps(e) + "\n" for e in log_.episodes))
            log(f"explore: resuming at step {book['step']} from {out_dir / 'checkpoints'}")
        writer = MetricsWriter(out_dir)
        log_every = self.train_cfg.log_every
        next_log: int | None = None

        def on_collect(outputs: dict[str, Any], first_step: int) -> None:
            nonlocal next_log
            records = outputs["records"]
            chunk_end = first_step + records["done"].shape[0] * self.num_envs
            finished = log_.add(records, first_step // self.num_envs)
            for episode in finished:
                episode["step"] = chunk_end
            if finished and writes:
                with open(episodes_file, "a") as f:
                    f.writelines(json.dumps(episode) + "\n" for episode in finished)
                writer.scalars(chunk_end, {
                    "episode/return": np.mean([e["return"] for e in finished]),
                    "episode/semantic_return": np.mean([e["semantic_return"] for e in finished]),
                    **{f"episode/interactions/{k}": np.mean([e["interactions"][k] for e in finished])
                       for k in self.interactions}})
            if next_log is None:
                next_log = (first_step // log_every + 1) * log_every
            if chunk_end >= next_log or chunk_end >= steps:
                next_log = (chunk_end // log_every + 1) * log_every
                totals = log_.totals_dict()["interactions"]
                # The share of this interval's steps with each flag: how the visits change as the agent learns.
                last = curves[-1] if curves else {"step": 0, "interactions": {}}
                span = max(chunk_end - last["step"], 1)
                rates = {k: (v - last["interactions"].get(k, 0)) / span for k, v in totals.items()}
                writer.scalars(chunk_end, {**{f"interactions/{k}": v for k, v in totals.items()},
                                           **{f"interaction_rate/{k}": v for k, v in rates.items()}})
                recent = log_.episodes[-max(self.num_envs, 1):]
                curves.append({"step": chunk_end,
                               "return": float(np.mean([e["return"] for e in recent])) if recent else None,
                               "interactions": totals, "interaction_rate": rates})

        def on_save(step: int) -> None:
            if writes:
                files.write_json(progress_file, {"step": step, "log": log_.state_dict(), "curves": curves})

        try:
            result = trainer.run(steps, writer, initial=state, on_collect=on_collect, on_save=on_save)
        finally:
            writer.close()
        totals = log_.totals_dict()
        metrics = result["train_metrics"]
        summary = {
            "behaviour": cfg.behaviour, "steps": result["env_steps"], "num_envs": self.num_envs,
            "interactions": totals["interactions"], "success": totals["success"],
            "episodes": len(log_.episodes), "episode_returns": [e["return"] for e in log_.episodes],
            # Finished episodes in which each flag was set at least once (MiniHack's measure: key picked up, door
            # opened, ...), and each task succeeded.
            "episodes_with": {k: sum(e["interactions"][k] > 0 for e in log_.episodes) for k in self.interactions},
            "episodes_succeeded": {t: sum(e["success"][t] > 0 for e in log_.episodes) for t in self.tasks},
            "semantic_returns": [e["semantic_return"] for e in log_.episodes], "curves": curves,
            "fps": result["env_steps_per_s"], "train_steps": result["train_steps"],
            "final_metrics": {k: v for k, v in metrics.items()
                              if k.startswith(("loss/", "weighting/", "rew/", "weight/", "fit/", "actor/", "ret/"))},
            "checkpoint": str(out_dir / "checkpoints"), "tasks": list(self.tasks),
        }
        if writes:
            files.write_json(out_dir / "interactions.json", {"steps": result["env_steps"], **totals})
            files.write_json(out_dir / "summary.json", summary)
        self.state = trainer.state
        return summary

    def evaluate(self, agent_state, episodes: int, key: jax.Array) -> dict[str, Any]:
        """Runs the policy in `eval` mode (its mode action) until `episodes` episodes have finished, without
        touching the replay. Returns {'episodes', 'success_rate' per task (episodes with success at any step),
        'mean_return', 'interactions' (summed)}. `key`: a raw uint32 [2] key."""
        trainer = self.trainer if self.trainer is not None else self.make_trainer(Path("."))
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        loop = trainer.fresh_loop(key)
        log_ = InteractionLog(self.interactions, self.tasks, self.num_envs)
        step = 0
        while len(log_.episodes) < episodes:
            loop, outputs = trainer.rollout(agent_state, loop, mode="eval")
            log_.add(outputs["records"], step)
            step += self.train_cfg.collect_steps
        done = log_.episodes[:episodes]
        return {"episodes": len(done),
                "success_rate": {t: float(np.mean([e["success"][t] > 0 for e in done])) for t in self.tasks},
                "mean_return": float(np.mean([e["return"] for e in done])),
                "interactions": {k: int(sum(e["interactions"][k] for e in done)) for k in self.interactions}}




def load_reward_model(directory: str | Path | None, required: bool):
    """The distilled reward model in `directory`, or None when there is none and the behaviour can do without."""
    if directory is not None and Path(directory).exists():
        from sensei_jax.reward.model import RewardModel

        return RewardModel.load(directory)
    if required:
        raise FileNotFoundError(f"no reward model at {directory!r}: SENSEI and Motif exploration need the distilled "
                                "reward model (run the distill stage, or pass --reward-model DIR)")
    return None
