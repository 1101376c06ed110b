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
        book = ExplorationBook(out_dir, InteractionLog(self.interactions, self.tasks, self.num_envs), self.num_envs,
                               self.train_cfg.log_every, steps, writes)
        book.resume(host_stepped=getattr(self.env, "host_stepped", False), log=log)
        try:
            result = trainer.run(steps, book.writer, initial=state, on_collect=book.on_collect, on_save=book.on_save)
        finally:
            book.writer.close()
        summary = self._summary(result, book, out_dir)
        if writes:
            files.write_json(out_dir / "interactions.json", {"steps": result["env_steps"], **book.log.totals_dict()})
            files.write_json(out_dir / "summary.json", summary)
        self.state = trainer.state
        return summary

    def _summary(self, result: dict[str, Any], book: "ExplorationBook", out_dir: Path) -> dict[str, Any]:
        """summary.json of a finished run: what was visited, the episodes, the curves and the final metrics."""
        totals, episodes = book.log.totals_dict(), book.log.episodes
        metrics = result["train_metrics"]
        return {
            "behaviour": self.cfg.behaviour, "steps": result["env_steps"], "num_envs": self.num_envs,
            "interactions": totals["interactions"], "success": totals["success"],
            "episodes": len(episodes), "episode_returns": [e["return"] for e in episodes],
            # Finished episodes in which each flag was set at least once (MiniHack's measure: key picked up, door
            # opened, ...), and each task succeeded.
            "episodes_with": {k: sum(e["interactions"][k] > 0 for e in episodes) for k in self.interactions},
            "episodes_succeeded": {t: sum(e["success"][t] > 0 for e in episodes) for t in self.tasks},
            "semantic_returns": [e["semantic_return"] for e in episodes], "curves": book.curves,
            "fps": result["env_steps_per_s"], "train_steps": result["train_steps"],
            "final_metrics": {k: v for k, v in metrics.items()
                              if k.startswith(("loss/", "weighting/", "rew/", "weight/", "fit/", "actor/", "ret/"))},
            "checkpoint": str(out_dir / "checkpoints"), "tasks": list(self.tasks),
        }

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




class ExplorationBook:
    """What an exploration run records besides the loop's own metrics, and what of it survives a resume: the
    interaction log (per episode and in total), episodes.jsonl, the interaction curves, and progress.json written at
    each checkpoint. `on_collect` and `on_save` are the loop's hooks; only the main process (`writes`) writes."""

    def __init__(self, out_dir: Path, interaction_log: InteractionLog, num_envs: int, log_every: int, steps: int,
                 writes: bool):
        self.log, self.num_envs, self.log_every, self.steps, self.writes = (interaction_log, num_envs, log_every,
                                                                            steps, writes)
        self.episodes_file, self.progress_file = out_dir / "episodes.jsonl", out_dir / "progress.json"
        self.checkpoints = out_dir / "checkpoints"
        self.curves: list[dict[str, Any]] = []
        self.next_log: int | None = None
        self.writer = MetricsWriter(out_dir)

    def resume(self, host_stepped: bool, log=print) -> None:
        """Takes back the log and curves of the last checkpoint, when there is one; episodes written after it are
        dropped from episodes.jsonl (the loop collects them again)."""
        if not (self.checkpoints.is_dir() and self.progress_file.is_file()):
            return
        book = files.read_json(self.progress_file)
        self.log.load(book["log"])
        if host_stepped:  # host worlds restart on resume: no episode is in flight
            self.log.reset_current()
        self.curves = book.get("curves", [])
        if self.writes:
            files.write_text(self.episodes_file, "".join(json.dumps(e) + "\n" for e in self.log.episodes))
        log(f"explore: resuming at step {book['step']} from {self.checkpoints}")

    def on_collect(self, outputs: dict[str, Any], first_step: int) -> None:
        """Folds one collection call's records into the log; writes finished episodes and, every log interval, the
        interaction totals and rates."""
        records = outputs["records"]
        chunk_end = first_step + records["done"].shape[0] * self.num_envs
        finished = self.log.add(records, first_step // self.num_envs)
        for episode in finished:
            episode["step"] = chunk_end
        if finished and self.writes:
            with open(self.episodes_file, "a") as f:
                f.writelines(json.dumps(episode) + "\n" for episode in finished)
            self.writer.scalars(chunk_end, {
                "episode/return": np.mean([e["return"] for e in finished]),
                "episode/semantic_return": np.mean([e["semantic_return"] for e in finished]),
                **{f"episode/interactions/{k}": np.mean([e["interactions"][k] for e in finished])
                   for k in self.log.interactions}})
        if self.next_log is None:
            self.next_log = (first_step // self.log_every + 1) * self.log_every
        if chunk_end >= self.next_log or chunk_end >= self.steps:
            self.next_log = (chunk_end // self.log_every + 1) * self.log_every
            self._log_curve(chunk_end)

    def _log_curve(self, step: int) -> None:
        totals = self.log.totals_dict()["interactions"]
        # The share of this interval's steps with each flag: how the visits change as the agent learns.
        last = self.curves[-1] if self.curves else {"step": 0, "interactions": {}}
        span = max(step - last["step"], 1)
        rates = {k: (v - last["interactions"].get(k, 0)) / span for k, v in totals.items()}
        self.writer.scalars(step, {**{f"interactions/{k}": v for k, v in totals.items()},
                                   **{f"interaction_rate/{k}": v for k, v in rates.items()}})
        recent = self.log.episodes[-max(self.num_envs, 1):]
        self.curves.append({"step": step, "return": float(np.mean([e["return"] for e in recent])) if recent else None,
                            "interactions": totals, "interaction_rate": rates})

    def on_save(self, step: int) -> None:
        if self.writes:
            files.write_json(self.progress_file, {"step": step, "log": self.log.state_dict(), "curves": self.curves})


def load_reward_model(directory: str | Path | None, required: bool):
    """The distilled reward model in `directory`, or None when there is none and the behaviour can do without."""
    if directory is not None and Path(directory).exists():
        from sensei_jax.reward.model import RewardModel

        return RewardModel.load(directory)
    if required:
        raise FileNotFoundError(f"no reward model at {directory!r}: SENSEI and Motif exploration need the distilled "
                                "reward model (run the distill stage, or pass --reward-model DIR)")
    return None
