"""The `transfer` command: a downstream task policy trained from an exploration checkpoint, as SENSEI evaluates.

    python -m sensei_jax.run transfer --from runs/x --task open_drawer [--behaviour sensei] [--steps N]

The training itself is `sensei_jax.explore.transfer`. Writes `<RUN>/transfer/<behaviour>_<task>/`: checkpoints,
metrics, episodes.jsonl, summary.json (training) and result.json {task, behaviour, steps, success_rate,
mean_return, episodes}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from sensei_jax.config import Config
from sensei_jax.pipeline.envs import make_env
from sensei_jax.pipeline.preflight import check_task_name

FOLDER = "transfer"


def transfer(cfg: Config, source: Path, task: str, out_dir: Path | None = None, env=None, reward_model=None,
             log=print, task_key: str = "--task") -> dict[str, Any]:
    """Trains and evaluates a task policy from the exploration of `cfg.explore.behaviour` in `source` (a run folder
    or an exploration folder) for `cfg.explore.transfer_steps`. `env` defaults to the run's Robodesk env with
    `task`; `reward_model` to the one the exploration used. `task` (given as `task_key`) is checked against the
    run's domain (unless `env` is given) and the exploration's heads before the env is built."""
    from sensei_jax.explore import transfer as transfer_lib

    if env is None:
        check_task_name(cfg, task_key, task)
    directory = transfer_lib.find_exploration(source, cfg.explore.behaviour)
    spec = transfer_lib.read_spec(directory)
    transfer_lib.require_head(spec, task, directory)
    if env is None:
        # The reward model goes on scoring what it scored while exploring: the reward view, if that was it.
        env = make_env(dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, task=task)),
                       reward_view=spec.get("image_key", "image") != "image")
    behaviour = spec["behaviour"]
    out_dir = Path(out_dir) if out_dir else Path(source) / FOLDER / f"{behaviour}_{task}"
    return transfer_lib.transfer(directory, task, env, out_dir, steps=cfg.explore.transfer_steps,
                                 eval_episodes=cfg.explore.transfer_eval_episodes, seed=cfg.run.seed,
                                 train=cfg.train, reward_model=reward_model, log=log)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="RUN",
                        help="run folder (uses RUN/explore/<behaviour>) or an exploration output folder")
    parser.add_argument("--task", required=True, help="downstream task, one of the exploration's task heads")
    parser.add_argument("--behaviour", help="which exploration of RUN to start from (default explore.behaviour)")
    parser.add_argument("--steps", type=int, help="training steps (default explore.transfer_steps)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default RUN/transfer/<behaviour>_<task>)")


def main(args: argparse.Namespace, cfg: Config) -> int:
    explore_cfg = cfg.explore
    if args.behaviour:
        explore_cfg = dataclasses.replace(explore_cfg, behaviour=args.behaviour)
    if args.steps is not None:
        explore_cfg = dataclasses.replace(explore_cfg, transfer_steps=args.steps)
    cfg = dataclasses.replace(cfg, explore=explore_cfg)
    result = transfer(cfg, Path(args.source), args.task, Path(args.out) if args.out else None)
    print(json.dumps(result, indent=2))
    return 0
