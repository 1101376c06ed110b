"""The `transfer` stage: a downstream task policy trained from an exploration checkpoint, as SENSEI evaluates.

    python -m sensei_jax.run transfer --from runs/x --task open_drawer [--behaviour sensei] [--steps N]

During exploration the world model learned sparse task-success heads on stop-gradient features (one per
`explore.task_heads`). Transfer loads the exploration checkpoint's world model, Plan2Explore ensemble and replay,
builds fresh actor and critic for one reward source (the task's success head), and keeps training (collecting with
the task policy, updating the world model and the actor-critic) for `explore.transfer_steps` policy steps. It then
runs the policy's mode action for `explore.transfer_eval_episodes` episodes and reports the task's success rate.

Writes `<RUN>/transfer/<behaviour>_<task>/`: checkpoints, metrics, episodes.jsonl, summary.json (training) and
result.json {task, behaviour, steps, success_rate, mean_return, episodes}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import jax

from sensei_jax import config as config_lib
from sensei_jax import io
from sensei_jax.checkpoint import Checkpointer
from sensei_jax.config import Config
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.explore_config import ExploreConfig
from sensei_jax.pipeline import explore as explore_stage

STAGE = "transfer"


def find_exploration(source: Path, behaviour: str) -> Path:
    """The exploration folder: `source` itself when it holds checkpoints/, else source/explore/<behaviour>."""
    source = Path(source)
    for candidate in (source, source / explore_stage.STAGE / behaviour):
        if (candidate / "checkpoints").is_dir() and (candidate / "spec.json").is_file():
            return candidate
    raise FileNotFoundError(f"no exploration checkpoint for behaviour '{behaviour}' under {source} (looked for "
                            f"checkpoints/ and spec.json in {source} and {source / explore_stage.STAGE / behaviour})")


def restore_exploration(explorer: explore_stage.Explorer, source_explorer: explore_stage.Explorer,
                        directory: Path) -> dict[str, Any]:
    """A fresh transfer run state whose world model, ensemble (params and optimizer states) and replay come from
    the exploration checkpoint in `directory`; actor, critics, normalizers, the switch state, envs and counters are
    new."""
    source = source_explorer.make_trainer(directory)
    ckpt = Checkpointer(directory / "checkpoints", max_to_keep=None)
    try:
        restored = source.restore(ckpt, like=jax.eval_shape(source.initial_state))
    finally:
        ckpt.close()
    state = explorer.make_trainer(directory).initial_state()
    agent = state["agent"]
    params = {**agent["params"], "wm": restored["agent"]["params"]["wm"],
              "extras": restored["agent"]["params"]["extras"]}
    opt = {**agent["opt"], "wm": restored["agent"]["opt"]["wm"], "extras": restored["agent"]["opt"]["extras"]}
    return {**state, "agent": {**agent, "params": params, "opt": opt}, "replay": restored["replay"]}


def transfer(cfg: Config, source: Path, task: str, out_dir: Path | None = None, env=None, reward_model=None,
             log=print) -> dict[str, Any]:
    """Trains and evaluates a task policy from the exploration in `source` (see the module docstring). `env` and
    `reward_model` default to the run's Robodesk env (with `task`) and the reward model the exploration used."""
    directory = find_exploration(source, cfg.explore.behaviour)
    spec = io.read_json(directory / "spec.json")
    tasks = tuple(spec["tasks"])
    if task not in tasks:
        raise ValueError(f"task '{task}' has no success head in {directory} (heads: {list(tasks)}); add it to "
                         "explore.task_heads before exploring")
    # The agent is rebuilt exactly as it explored; only the transfer schedule comes from the current config.
    explore_cfg = config_lib.from_dict(ExploreConfig, spec["explore"], prefix="explore")
    explore_cfg = dataclasses.replace(explore_cfg, prefill=0, steps=cfg.explore.transfer_steps,
                                      transfer_steps=cfg.explore.transfer_steps,
                                      transfer_eval_episodes=cfg.explore.transfer_eval_episodes)
    dreamer = config_lib.from_dict(DreamerConfig, spec["dreamer"], prefix="dreamer")
    if reward_model is None and spec["semantic"]:
        # The replay holds the semantic reward, so collection goes on computing it with the same model.
        reward_model = explore_stage.load_reward_model(spec["reward_model"], required=True)
    env = explore_stage.make_env(dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, task=task))) \
        if env is None else env
    common = dict(num_envs=spec["num_envs"], reward_model=reward_model, seed=cfg.run.seed, tasks=tasks,
                  train=cfg.train)
    source_explorer = explore_stage.Explorer(explore_cfg, dreamer, env, **common)
    explorer = explore_stage.Explorer(explore_cfg, dreamer, env, task=task, **{**common, "seed": cfg.run.seed + 1})
    key = jax.random.key(cfg.run.seed + 1)
    out_dir = Path(out_dir) if out_dir else Path(source) / STAGE / f"{spec['behaviour']}_{task}"
    state = restore_exploration(explorer, source_explorer, directory)
    log(f"transfer: world model and replay from {directory}, training '{task}' for {explore_cfg.steps} steps")
    training = explorer.run(out_dir, state=state, log=log)
    evaluation = explorer.evaluate(explorer.state["agent"], explore_cfg.transfer_eval_episodes,
                                   jax.random.fold_in(key, 1))
    result = {"task": task, "behaviour": spec["behaviour"], "source": str(directory), "steps": training["steps"],
              "success_rate": evaluation["success_rate"][task], "mean_return": evaluation["mean_return"],
              "episodes": evaluation["episodes"], "train_success_steps": training["success"].get(task, 0)}
    io.write_json(out_dir / "result.json", result)
    log(f"transfer [{spec['behaviour']} -> {task}]: success rate {result['success_rate']:.2f} over "
        f"{result['episodes']} eval episodes")
    return result


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Pipeline use: transfer from run_dir/explore/<explore.behaviour> to evaluate.transfer_task."""
    task = getattr(getattr(cfg, "evaluate", None), "transfer_task", None) or cfg.env.task
    return transfer(cfg, Path(run_dir), task)


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
    try:
        result = transfer(cfg, Path(args.source), args.task, Path(args.out) if args.out else None)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
