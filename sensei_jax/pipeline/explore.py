"""Stages `explore` and `baseline`: SENSEI exploration (or its Plan2Explore / Motif-only baselines) on the run's
env (Robodesk, or MiniHack with `run.domain: minihack`), with the `sensei_jax.explore.Explorer`.

    python -m sensei_jax.run explore --config configs/robodesk_sensei.yaml --reward-model runs/x/distill
    python -m sensei_jax.run explore --config configs/robodesk_p2x.yaml            # no reward model needed

With `env.reward_image_size` set, the env also renders the reward view (`env.reward_camera` at that size, SENSEI:
the 224x224 'right' render) and the reward model scores it instead of the agent's image; the reward model must
have been trained at that size.

`explore` runs `explore.behaviour` into `run_dir/explore/<behaviour>/`; `baseline` runs the same with the
disagreement-only behaviour (Plan2Explore), the same budget and seed, into `run_dir/explore/p2x/`, so the report
can set SENSEI's interaction counts next to Plan2Explore's. What each writes: see `sensei_jax.explore.explorer`
(spec.json, checkpoints/, metrics, episodes.jsonl, interactions.json, summary.json).

With `--reward-model DIR` or `--out DIR` the command runs outside the run folder's bookkeeping (no status.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from sensei_jax.config import Config
from sensei_jax.pipeline import rundir
from sensei_jax.pipeline.envs import make_env, num_envs
from sensei_jax.pipeline.stages import BASELINE_BEHAVIOUR

FOLDER = "explore"


def explore(cfg: Config, out_dir: Path, reward_model_dir: str | Path | None, env=None, log=print) -> dict[str, Any]:
    """Explores with cfg.explore.behaviour for cfg.explore.steps; writes out_dir (see the module docstring)."""
    from sensei_jax.explore.explorer import Explorer, load_reward_model

    reward_model = load_reward_model(reward_model_dir, required=cfg.explore.needs_reward_model)
    env = make_env(cfg, reward_view=reward_model is not None) if env is None else env
    image_key = scored_image_key(env, reward_model, reward_model_dir)
    explorer = Explorer(cfg.explore, cfg.dreamer, env, num_envs(cfg), reward_model=reward_model,
                        image_key=image_key, seed=cfg.run.seed, train=cfg.train,
                        reward_model_dir=reward_model_dir if reward_model is not None else None)
    summary = explorer.run(Path(out_dir), log=log)
    log(f"explore [{cfg.explore.behaviour}]: {summary['steps']} steps, {summary['episodes']} episodes, "
        f"interactions {summary['interactions']}")
    return summary


def scored_image_key(env, reward_model, reward_model_dir) -> str:
    """The observation the reward model scores: the env's reward view when it renders one, else the agent's image.
    A reward view must have the resolution the model was trained at (no silent resize)."""
    from sensei_jax.dreamer.loop import obs_space
    from sensei_jax.envs.robodesk.config import REWARD_IMAGE_KEY

    spec = obs_space(env)
    if reward_model is None or REWARD_IMAGE_KEY not in spec:
        return "image"
    view, trained = spec[REWARD_IMAGE_KEY][0][0], reward_model.config.image_size
    if view != trained:
        raise ValueError(f"env.reward_image_size is {view}, but the reward model in {reward_model_dir} was trained "
                         f"at reward.image_size {trained}: distill again at {view}, or set env.reward_image_size "
                         f"{trained}")
    return REWARD_IMAGE_KEY


def compact(summary: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The JSON-able stage summary for status.json (the full one is in out_dir/summary.json)."""
    returns = summary["episode_returns"]
    return {"behaviour": summary["behaviour"], "steps": summary["steps"], "episodes": summary["episodes"],
            "interactions": summary["interactions"], "success": summary["success"],
            "mean_return": float(np.mean(returns)) if returns else None, "fps": summary["fps"],
            "dir": str(out_dir)}


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Stage `explore`: reward model from run_dir/distill (unless explore.reward_model is set), outputs in
    run_dir/explore/<behaviour>/."""
    run_dir = Path(run_dir)
    reward_dir = cfg.explore.reward_model or run_dir / "distill"
    out_dir = run_dir / FOLDER / cfg.explore.behaviour
    return compact(explore(cfg, out_dir, reward_dir), out_dir)


def baseline_config(cfg: Config) -> Config:
    """The same run with the disagreement-only exploration behaviour (Plan2Explore), same steps and seed."""
    return dataclasses.replace(cfg, explore=cfg.explore.with_preset(BASELINE_BEHAVIOUR))


def run_baseline(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Stage `baseline`: `run_stage` with `baseline_config`; it writes run_dir/explore/p2x/."""
    if cfg.explore.behaviour == BASELINE_BEHAVIOUR:
        return {"behaviour": BASELINE_BEHAVIOUR, "note": "the explore stage already ran the disagreement-only "
                "behaviour; no separate baseline"}
    return run_stage(baseline_config(cfg), Path(run_dir))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reward-model", metavar="DIR", help="distilled reward model (default: explore.reward_model, "
                        "else <run dir>/distill)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <run dir>/explore/<behaviour>)")


def main(args: argparse.Namespace, cfg: Config) -> int:
    if args.reward_model or args.out:
        reward_dir = args.reward_model or cfg.explore.reward_model or cfg.run_dir / "distill"
        out_dir = Path(args.out) if args.out else cfg.run_dir / FOLDER / cfg.explore.behaviour
        summary = compact(explore(cfg, out_dir, reward_dir), out_dir)
    else:
        summary = rundir.run_single_stage("explore", cfg, run_stage, force=args.force)
    print(json.dumps(summary, indent=2))
    return 0


def main_baseline(args: argparse.Namespace, cfg: Config) -> int:
    summary = rundir.run_single_stage("baseline", cfg, run_baseline, force=args.force)
    print(json.dumps(summary, indent=2))
    return 0
