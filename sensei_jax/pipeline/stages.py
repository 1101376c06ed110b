"""The stage registry: every command of `python -m sensei_jax.run`, read by the CLI, the runner and the run folder.

A `Stage` names the module that implements it, the config sections it is the first to read (a change there
invalidates it and every later stage of a finished run), the folder it writes in the run folder, and what the
`run.device` check (pipeline/device.py) needs to know: whether it steps or renders the MJX-Warp env, and whether it
is checked at all. Pipeline stages run in the order listed here; tools (`train`, `transfer`, `annotate-eval`, `env`,
`config`, `doctor`) are commands beside the pipeline.

A stage module defines `run_stage(cfg, run_dir) -> summary` (pipeline stages; the JSON-able summary goes to
status.json) and `main(args, cfg)` for its command, plus `add_arguments(parser)` for flags of its own (other
function names can be given in the entry, as the baseline does). Pipeline
stage commands get `--force` from the CLI. Adding a stage is one entry here and its module.

This module imports no stage: modules are named, and imported only when their stage runs.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, Callable

# The exploration baseline: the explore stage again, disagreement only, written beside SENSEI's exploration.
BASELINE_BEHAVIOUR = "p2x"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    module: str  # implements the stage (`run_stage`) and its command (`main`, optional `add_arguments`)
    help: str  # one line for `--help`
    sections: tuple[str, ...] = ()  # config sections this stage is the first to read
    folder: str | None = None  # where it writes, relative to the run folder (default: its name)
    entry: str = "run_stage"  # the module's function that runs the stage
    command: str = "main"  # the module's function behind the command
    arguments: str | None = None  # the module's function adding the command's own flags, if it has any
    pipeline: bool = True  # part of `run` with no command (False: a tool)
    # Steps or renders the MJX-Warp Robodesk env (which runs on a CUDA GPU or the CPU only), or a function of the
    # config saying whether it does.
    steps_env: bool | Callable[[Any], bool] = False
    checks_device: bool = True  # the CLI applies the run.device check before the command (False: it reads no device)
    # Runs as one job over several processes (`jax.distributed`), or a function of the config saying whether it
    # does. False: the stage runs in one process (one node, all its devices); a multi-process job refuses it.
    multi_process: bool | Callable[[Any], bool] = True

    @property
    def output_folder(self) -> str:
        return self.folder or self.name

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def uses_env(self, cfg: Any) -> bool:
        """Whether this command steps or renders an MJX-Warp env under config `cfg` (Robodesk's; never MiniHack's
        NetHack worlds, which step on the host's CPU cores, nor the pure-JAX toy)."""
        from sensei_jax import domains

        if not domains.get(getattr(getattr(cfg, "run", None), "domain", "robodesk")).uses_warp:
            return False
        return self.steps_env(cfg) if callable(self.steps_env) else self.steps_env

    def runs_multi_process(self, cfg: Any) -> bool:
        """Whether this command runs as one job over several processes under config `cfg`."""
        return self.multi_process(cfg) if callable(self.multi_process) else self.multi_process

    def function(self) -> Callable[[Any, Any], dict]:
        """The stage's `(cfg, run_dir) -> summary` function (imports its module)."""
        return getattr(self.load(), self.entry)


REGISTRY: tuple[Stage, ...] = (
    Stage("collect", "sensei_jax.pipeline.collect",
          "roll out the vectorized env (Robodesk or MiniHack) and store frames and states",
          sections=("run", "env", "minihack", "toy", "collect"),
          steps_env=True, multi_process=False),
    Stage("pairs", "sensei_jax.pipeline.pairs", "sample image pairs and re-render them for the annotator",
          # pairs re-render at the annotator's resolution, so the `vlm` section counts from here on
          sections=("pairs", "interest", "vlm"), steps_env=True, multi_process=False),
    Stage("annotate", "sensei_jax.pipeline.annotate", "label image pairs with a VLM (llava), the oracle or at random",
          sections=("annotate",), arguments="add_arguments"),
    Stage("distill", "sensei_jax.pipeline.distill", "train the Motif reward model on the labelled pairs",
          sections=("reward",), arguments="add_arguments"),
    Stage("explore", "sensei_jax.pipeline.explore", "SENSEI exploration: DreamerV3 + Plan2Explore + semantic reward",
          sections=("dreamer", "train", "explore"), arguments="add_arguments", steps_env=True),
    Stage("baseline", "sensei_jax.pipeline.explore",
          "the explore stage with the disagreement-only behaviour (Plan2Explore), same budget and seed",
          folder=f"explore/{BASELINE_BEHAVIOUR}", entry="run_baseline", command="main_baseline", steps_env=True),
    Stage("evaluate", "sensei_jax.pipeline.evaluate", "interaction and success counts of the exploration runs",
          sections=("evaluate",), steps_env=lambda cfg: cfg.evaluate.transfer,  # transfer trains in the env
          multi_process=lambda cfg: not cfg.evaluate.transfer),
    Stage("report", "sensei_jax.pipeline.report", "write report.md and the plots", sections=("report",)),
    Stage("train", "sensei_jax.pipeline.train", "plain DreamerV3 on a task reward", pipeline=False,
          arguments="add_arguments", steps_env=lambda cfg: cfg.train.env != "point_reach"),  # MJX Robodesk, not the toy env
    Stage("transfer", "sensei_jax.pipeline.transfer", "train a task policy from an exploration checkpoint",
          pipeline=False, arguments="add_arguments", steps_env=True, multi_process=False),
    Stage("annotate-eval", "sensei_jax.pipeline.annotate_eval",
          "score annotators against a pair dataset's ground truth on both orders of each pair (accuracy, ties, "
          "position bias, order agreement, pairs/s)", folder="annotate_eval", pipeline=False,
          arguments="add_arguments", multi_process=False),
    Stage("env", "sensei_jax.pipeline.env_tools", "environment tools: `env info`, `env rollout`", pipeline=False,
          arguments="add_arguments", steps_env=True, multi_process=False),
    Stage("config", "sensei_jax.pipeline.show_config", "print the resolved config (after base: files and overrides)",
          pipeline=False, checks_device=False),
    Stage("doctor", "sensei_jax.pipeline.doctor",
          "what this machine runs on: JAX and Warp devices, CUDA, versions, memory, and a verdict",
          pipeline=False, arguments="add_arguments", checks_device=False),
)
STAGES: dict[str, Stage] = {stage.name: stage for stage in REGISTRY}
# The pipeline's stages in the order `run` executes them.
PIPELINE: tuple[str, ...] = tuple(stage.name for stage in REGISTRY if stage.pipeline)
# The module run with no command.
RUNNER_MODULE = "sensei_jax.pipeline.runner"


def get(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(PIPELINE)}")
    return STAGES[name]


def pipeline_index(name: str) -> int:
    """Position of pipeline stage `name` in the run order."""
    if name not in PIPELINE:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(PIPELINE)}")
    return PIPELINE.index(name)


def check_process_count(name: str, cfg: Any, process_count: int) -> None:
    """Refuses, in a job of several processes, a command that runs in one process only, naming what to do."""
    if process_count > 1 and not get_command(name).runs_multi_process(cfg):
        raise ValueError(
            f"'{name}' runs in one process (one node, all its devices), but this job has {process_count} processes; "
            f"run it alone first (`python -m sensei_jax.run {name} --config ...` on one node), then start the "
            "multi-process job, which skips finished stages")


def get_command(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown command {name!r}; commands are {', '.join(STAGES)}")
    return STAGES[name]


def section_stage(section: str) -> str:
    """The first pipeline stage that reads config section `section`. A section no stage claims counts as read by
    the first stage: a change there is never silently ignored."""
    for name in PIPELINE:
        if section in STAGES[name].sections:
            return name
    return PIPELINE[0]
