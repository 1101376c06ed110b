"""The checks made before the first stage runs: what later stages will need from the user, so that a typo or a
half-downloaded checkpoint stops the run in a second instead of after hours of collection.

The pipeline (`runner.run_pipeline`) checks the stages it still has to run; the CLI checks a stage command's own
stage before it starts; a tool (`train`, `transfer`, ...) checks its own flags.

- task names: every `explore.task_heads` entry, and `evaluate.transfer_task` (with `evaluate.transfer`), is a task
  whose success the domain's env reports (Robodesk's task table, or the MiniHack task's), and the transfer task is
  one of the task heads (a transfer trains on its head);
- the annotator's inputs (`annotate.annotator: llava`): `vlm.path` is a LLaVA-1.5 checkpoint folder with every file
  the loader reads, of the model family it supports (`vlm/checkpoint.py`), and `annotate.context_image` a file;
- `explore.reward_model`, when given: a distill folder with model.json and a checkpoint;
- disk space: the datasets the stages write at the configured sizes (collected frames, pair images, exploration
  replay) against the free space under `run.root`: a warning, never an error (sizes are estimates).

Before these, the run folder: `run.root` must let this user create and write `<run.root>/<run.name>`
(`rundir.check_run_root`, which leaves nothing behind). Each error is a ConfigError naming the config key, the value
and what is wrong; the CLI shows it as one `error: ...` line.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable

from sensei_jax.config import Config, ConfigError
from sensei_jax.pipeline import stages as stage_registry
from sensei_jax.pipeline.envs import domain, num_envs, success_names


def stages_of(command: str | None) -> tuple[str, ...]:
    """The pipeline stages `command` runs: all of them with no command, the stage itself, or none for a tool."""
    if command is None:
        return stage_registry.PIPELINE
    return (command,) if stage_registry.get_command(command).pipeline else ()


def check(cfg: Config, stages: Iterable[str] = stage_registry.PIPELINE,
          warn: Callable[[str], None] | None = None) -> None:
    """Raises ConfigError on the first input `stages` would fail on; warns (default: on stderr) of a disk too small."""
    from sensei_jax.pipeline import rundir  # imports jax: not at the top, so that the CLI's `--help` stays fast

    stages = tuple(stages)
    if stages:
        rundir.check_run_root(cfg)
    check_task_names(cfg, stages)
    if "annotate" in stages:
        check_annotator_inputs(cfg)
    if "explore" in stages and cfg.explore.reward_model:
        check_reward_model(cfg.explore.reward_model)
    warn_disk_space(cfg, stages, warn or _to_stderr)


# ----------------------------------------------------------------------------------------------------------------
# Task names


def domain_name(cfg: Config) -> str:
    return domain(cfg).describe(cfg)


def check_task_name(cfg: Config, key: str, name: str) -> None:
    """Raises ConfigError unless `name` (the value of `key`) is a task whose success the domain's env reports."""
    known = success_names(cfg)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {name!r} is not a {domain_name(cfg)} task{hint}; known: {', '.join(known)}")


def check_task_names(cfg: Config, stages: tuple[str, ...]) -> None:
    if {"explore", "baseline"} & set(stages):
        for name in cfg.explore.task_heads:
            check_task_name(cfg, "explore.task_heads", name)
    if "evaluate" in stages and cfg.evaluate.transfer:
        task = cfg.evaluate.transfer_task
        check_task_name(cfg, "evaluate.transfer_task", task)
        if task not in cfg.explore.task_heads:
            raise ConfigError(f"evaluate.transfer_task: {task!r} is not among explore.task_heads "
                              f"({list(cfg.explore.task_heads)}), so exploration learns no success head to transfer "
                              "from; add it there")


# ----------------------------------------------------------------------------------------------------------------
# Input folders


def check_annotator_inputs(cfg: Config) -> None:
    """The VLM annotator's checkpoint folder (any family: LLaVA-1.5, Qwen3-VL) and context image (nothing to check
    for the other annotators)."""
    annotate = cfg.annotate
    if annotate.annotator != "llava":
        return
    if not cfg.vlm.path:
        raise ConfigError(
            "annotate.annotator is 'llava' but no checkpoint is given: pass --vlm.path DIR, a local VLM "
            "checkpoint in Hugging Face format (config.json, *.safetensors, tokenizer.json, "
            "preprocessor_config.json; e.g. a download of llava-hf/llava-1.5-7b-hf or Qwen/Qwen3-VL-8B-Instruct), or "
            "use --annotate.annotator oracle to run without a VLM")
    if not Path(cfg.vlm.path).is_dir():
        raise ConfigError(f"--vlm.path {cfg.vlm.path} is not a directory (expected a local VLM checkpoint in "
                          "Hugging Face format: LLaVA-1.5 or Qwen3-VL)")
    check_vlm_folder(cfg.vlm.path)
    image = annotate.context_image
    if annotate.mode == "score" and annotate.prompt == "general" and image and not Path(image).is_file():
        raise ConfigError(f"annotate.context_image {image} is not a file (a PNG shown with "
                          "SENSEI-General's context turn; unset it for a text-only context turn)")


def check_vlm_folder(path: str) -> None:
    from sensei_jax.vlm.checkpoint import check_folder

    _as_config_error("vlm.path", path, lambda: check_folder(path))


def check_reward_model(path: str) -> None:
    from sensei_jax.reward.model import check_folder

    _as_config_error("explore.reward_model", path, lambda: check_folder(path))


def _as_config_error(key: str, value: str, check_fn: Callable[[], object]) -> None:
    """Runs `check_fn`; a missing, unreadable or malformed file becomes a ConfigError naming `key` and `value`."""
    from sensei_jax import files

    try:
        check_fn()
    except OSError as error:
        cause = str(error) if error.filename is None else files.os_error_cause(error)
        raise ConfigError(f"{key} {value}: {cause}") from error
    except ValueError as error:
        raise ConfigError(f"{key} {value}: {error}") from error


# ----------------------------------------------------------------------------------------------------------------
# Disk space

GB = 1e9


def dataset_bytes(cfg: Config, stages: Iterable[str] = stage_registry.PIPELINE) -> dict[str, int]:
    """About how many bytes `stages` write at the configured sizes, images only (the bulk): collected frames,
    pair images (both views) and the exploration replay each exploration checkpoints (SENSEI's and the baseline's)."""
    stages = set(stages)
    found = domain(cfg)
    agent_frame = 3 * found.agent_image_size(cfg) ** 2
    sizes = {}
    if "collect" in stages:
        collected_frame = 3 * found.frame_size(cfg) ** 2
        sizes["collect"] = cfg.collect.steps * num_envs(cfg) * collected_frame
    if "pairs" in stages:
        views = 2 if found.restorable and cfg.pairs.second_camera is not None else 1
        sizes["pairs"] = (cfg.pairs.contrastive + cfg.pairs.uniform) * 2 * views * 3 * _pair_size(cfg) ** 2
    explorations = int("explore" in stages) + int("baseline" in stages and cfg.explore.behaviour != "p2x")
    if explorations:
        sizes["explore"] = explorations * min(cfg.train.replay_capacity, cfg.explore.steps) * agent_frame
    return sizes


def _pair_size(cfg: Config) -> int:
    """The pair images' resolution: what the pairs stage renders at, or the stored frames' where it copies them."""
    if not domain(cfg).restorable:
        return domain(cfg).frame_size(cfg)
    from sensei_jax.pipeline.pairs import render_settings

    return render_settings(cfg)[0]


def warn_disk_space(cfg: Config, stages: Iterable[str], warn: Callable[[str], None]) -> None:
    from sensei_jax import files

    sizes = dataset_bytes(cfg, stages)
    total = sum(sizes.values())
    free = shutil.disk_usage(files.existing_ancestor(cfg.run_dir)).free
    if total > free:
        parts = ", ".join(f"{name} {size / GB:.1f} GB" for name, size in sizes.items())
        warn(f"warning: run.root {cfg.run.root} has {free / GB:.1f} GB free, and the datasets of this run at the "
             f"configured sizes take about {total / GB:.1f} GB ({parts}); the run stops where the disk fills up")


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)

