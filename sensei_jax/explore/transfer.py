"""Downstream transfer: a task policy trained from an exploration checkpoint, as SENSEI evaluates exploration.

During exploration the world model learned sparse task-success heads on stop-gradient features (one per
`explore.task_heads`). A transfer loads the exploration checkpoint's world model, Plan2Explore ensemble and replay,
builds fresh actor and critic for one reward source (the task's success head), and keeps training (collecting with
the task policy, updating the world model and the actor-critic) for `steps` policy steps. It then runs the policy's
mode action for `eval_episodes` episodes and reports the task's success rate.

`transfer(...)` writes to `out_dir`: checkpoints, metrics, episodes.jsonl, summary.json (training, as
`Explorer.run`) and result.json {task, behaviour, steps, success_rate, mean_return, episodes}.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax

from sensei_jax import sections
from sensei_jax import files
from sensei_jax.distributed import is_main_process
from sensei_jax.checkpoint import Checkpointer
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.train_config import SCHEDULE_KEYS, TrainConfig
from sensei_jax.explore.config import ExploreConfig, upgrade_section
from sensei_jax.explore.explorer import Explorer, load_reward_model

# Where the pipeline keeps explorations: <run>/explore/<behaviour>/.
EXPLORE_FOLDER = "explore"


def find_exploration(source: Path, behaviour: str) -> Path:
    """The exploration folder: `source` itself when it holds checkpoints/, else source/explore/<behaviour>."""
    source = Path(source)
    for candidate in (source, source / EXPLORE_FOLDER / behaviour):
        if (candidate / "checkpoints").is_dir() and (candidate / "spec.json").is_file():
            return candidate
    raise FileNotFoundError(f"no exploration checkpoint for behaviour '{behaviour}' under {source} (looked for "
                            f"checkpoints/ and spec.json in {source} and {source / EXPLORE_FOLDER / behaviour})")


def restore_exploration(explorer: Explorer, source_explorer: Explorer, directory: Path) -> dict[str, Any]:
    """A fresh transfer run state whose world model, ensemble (params and optimizer states) and replay come from
    the exploration checkpoint in `directory`; actor, critics, normalizers, the switch state, envs and counters are
    new."""
    source = source_explorer.make_trainer(directory)
    ckpt = Checkpointer(directory / "checkpoints", max_to_keep=None)
    try:
        restored = source.restore(ckpt, like=source.abstract_state())
    finally:
        ckpt.close()
    state = explorer.make_trainer(directory).initial_state()
    agent = state["agent"]
    params = {**agent["params"], "wm": restored["agent"]["params"]["wm"],
              "extras": restored["agent"]["params"]["extras"]}
    opt = {**agent["opt"], "wm": restored["agent"]["opt"]["wm"], "extras": restored["agent"]["opt"]["extras"]}
    return {**state, "agent": {**agent, "params": params, "opt": opt}, "replay": restored["replay"]}


def read_spec(directory: Path) -> dict[str, Any]:
    """spec.json of an exploration folder (written by `Explorer.run`)."""
    return files.read_json(Path(directory) / "spec.json")


def require_head(spec: dict[str, Any], task: str, directory: Path) -> None:
    """Raises ValueError unless the exploration of `spec` (in `directory`) learned a success head for `task`."""
    tasks = list(spec["tasks"])
    if task not in tasks:
        raise ValueError(f"task '{task}' has no success head in {directory} (heads: {tasks}); add it to "
                         "explore.task_heads before exploring")


def exploration_schedule(spec: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The `train` schedule keys (`SCHEDULE_KEYS`) the exploration of `spec` (in `directory`) ran on."""
    if "train" not in spec:
        raise ValueError(f"{Path(directory) / 'spec.json'} has no 'train' schedule: it was written before "
                         "explorations ran on the train section's schedule; explore again to transfer from it")
    return {k: spec["train"][k] for k in SCHEDULE_KEYS}


def transfer(directory: Path, task: str, env, out_dir: Path, steps: int, eval_episodes: int, seed: int = 0,
             train: TrainConfig | None = None, reward_model=None, log=print) -> dict[str, Any]:
    """Trains and evaluates a policy for `task` from the exploration in `directory` (see the module docstring).

    env: the exploration's env with `task` as its task (its success flags must include `task`). reward_model: the
    one the exploration used (default: loaded from spec.json when the exploration had a semantic reward, since the
    replay holds the semantic reward and collection goes on computing it).
    """
    directory = Path(directory)
    spec = read_spec(directory)
    require_head(spec, task, directory)
    tasks = tuple(spec["tasks"])
    # The agent is rebuilt exactly as it explored, on its replay and schedule; only the budget is new, and no step
    # acts at random or waits for data (the replay is full).
    explore_cfg = sections.from_dict(ExploreConfig, upgrade_section(spec["explore"]), prefix="explore")
    explore_cfg = dataclasses.replace(explore_cfg, steps=steps, transfer_steps=steps,
                                      transfer_eval_episodes=eval_episodes)
    schedule = {**exploration_schedule(spec, directory), "train_start": 0, "random_steps": 0}
    train = dataclasses.replace(train or TrainConfig(), **schedule)
    dreamer = sections.from_dict(DreamerConfig, spec["dreamer"], prefix="dreamer")
    if reward_model is None and spec["semantic"]:
        reward_model = load_reward_model(spec["reward_model"], required=True)
    common = dict(num_envs=spec["num_envs"], reward_model=reward_model, image_key=spec.get("image_key", "image"),
                  seed=seed, tasks=tasks, train=train)
    source_explorer = Explorer(explore_cfg, dreamer, env, **common)
    explorer = Explorer(explore_cfg, dreamer, env, task=task, **{**common, "seed": seed + 1})
    key = jax.random.key(seed + 1)
    state = restore_exploration(explorer, source_explorer, directory)
    log(f"transfer: world model and replay from {directory}, training '{task}' for {explore_cfg.steps} steps")
    training = explorer.run(Path(out_dir), state=state, log=log)
    evaluation = explorer.evaluate(explorer.state["agent"], eval_episodes, jax.random.fold_in(key, 1))
    result = {"task": task, "behaviour": spec["behaviour"], "source": str(directory), "steps": training["steps"],
              "success_rate": evaluation["success_rate"][task], "mean_return": evaluation["mean_return"],
              "episodes": evaluation["episodes"], "train_success_steps": training["success"].get(task, 0)}
    if is_main_process():
        files.write_json(Path(out_dir) / "result.json", result)
    log(f"transfer [{spec['behaviour']} -> {task}]: success rate {result['success_rate']:.2f} over "
        f"{result['episodes']} eval episodes")
    return result
