"""Command `train`: plain DreamerV3 on a task reward (Robodesk, or the toy PointReach env for sanity runs).

    python -m sensei_jax.run train --config configs/robodesk_dreamer.yaml --task open_drawer
    python -m sensei_jax.run train --config configs/dreamer_tiny_cpu.yaml          # the toy env, minutes on a CPU

Writes `run_dir/train/`:

    config.yaml         the resolved config
    metrics.jsonl       one row per train.log_every env steps: losses, returns, episode stats, fps
    events.out.tfevents.*  the same scalars, plus open-loop prediction videos every train.video_every steps
    checkpoints/<env step>/  orbax: agent state, replay, env state, policy carry, counters, PRNG keys
    summary.json        env and train steps, the last metrics, throughput

Rerunning the same command resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from sensei_jax import config as config_lib
from sensei_jax import distributed, files
from sensei_jax.config import Config


def make_env(cfg: Config) -> Any:
    """The env of `cfg.train.env`, built so that it never resets itself (the loop resets finished worlds)."""
    if cfg.train.env == "point_reach":
        from sensei_jax.envs.toy import PointReach

        return PointReach(image_size=cfg.env.image_size)
    from sensei_jax.envs.robodesk import Robodesk

    # Without the reward view: plain DreamerV3 scores no image.
    return Robodesk.from_config(cfg.env, auto_reset=False, reward_image_size=None)


def build(cfg: Config, logdir: Path):
    """The env, agent and trainer of a `train` run."""
    from sensei_jax.dreamer.agent import Agent
    from sensei_jax.dreamer.loop import Trainer, obs_space

    try:
        cfg.train.check_replay()
    except ValueError as error:
        raise config_lib.ConfigError(str(error)) from error
    env = make_env(cfg)
    dreamer = cfg.dreamer
    if cfg.train.precision is not None:
        dreamer = dataclasses.replace(dreamer, compute_dtype=cfg.train.precision)
    agent = Agent(dreamer, obs_space(env, cfg.train.obs_keys), env.action_size)
    return env, agent, Trainer(cfg.train, agent, env, logdir, seed=cfg.run.seed)


def train_into(cfg: Config, logdir: Path) -> dict[str, Any]:
    """Trains (or resumes) the run of `cfg` in `logdir` and writes its summary.json."""
    logdir = Path(logdir)
    if distributed.is_main_process():  # process 0 writes; every process trains
        logdir.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, logdir / "config.yaml")
    _, _, trainer = build(cfg, logdir)
    summary = trainer.run()
    summary["task"] = "point_reach" if cfg.train.env == "point_reach" else cfg.env.task
    if distributed.is_main_process():
        files.write_json(logdir / "summary.json", summary)
    return summary


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    return train_into(cfg, Path(run_dir) / "train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="Robodesk task whose reward is trained on (default: env.task)")
    parser.add_argument("--steps", type=int, help="env steps in total (default: train.steps)")
    parser.add_argument("--logdir", type=Path, help="output folder (default: <run dir>/train)")


def main(args: argparse.Namespace, cfg: Config) -> int:
    overrides: dict[str, Any] = {}
    if args.task:
        overrides["env"] = {"task": args.task}
    if args.steps:
        overrides["train"] = {"steps": args.steps}
    cfg = config_lib.merge(cfg, overrides) if overrides else cfg
    logdir = args.logdir or cfg.run_dir / "train"
    summary = train_into(cfg, logdir)
    ret = summary.get("last_metrics", {}).get("episode/return")
    print(f"[train] {summary['env_steps']} env steps, {summary['train_steps']} updates in {summary['wall_s']:.0f} s "
          f"({summary['env_steps_per_s']:.1f} env steps/s); last return "
          f"{'n/a' if ret is None else f'{ret:.3f}'} -> {logdir}")
    return 0
