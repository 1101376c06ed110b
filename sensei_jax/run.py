"""The command line: `python -m sensei_jax.run [COMMAND] [--config FILE] [flags] [--section.key VALUE ...]`.

With no command it runs the whole SENSEI pipeline (collect, pairs, annotate, distill, explore, evaluate, report) on
the embedded default config, or on `--config FILE`. Every pipeline stage is also a command of its own, and a few
tools (`env`, `train`, `transfer`) sit beside them. Config overrides name a section and a key (`--explore.steps
1000`); anything else after the command is that command's own flags.

The commands are the stage registry (`pipeline/stages.py`): each lives in a module with `main(args, cfg)` and
optionally `add_arguments(parser)`. This file dispatches, imports a command's module only when that command runs
(so `--help` stays fast), and turns the errors a user can fix (a bad config, a missing or corrupt input file, a
bad flag value, a path it cannot read or write) into one `error: ...` line on stderr and exit status 2, for every
command alike. Before a pipeline stage's command starts, the preflight (`pipeline/preflight.py`) checks what that
stage needs; the pipeline checks the stages it will run. docs/bad_input.md lists the messages.

Several processes (hosts) run one job when given `--coordinator HOST:PORT --num-processes N --process-id I` before
the command (or SENSEI_COORDINATOR, SENSEI_NUM_PROCESSES, SENSEI_PROCESS_ID), or `--distributed auto`
(SENSEI_DISTRIBUTED=auto) for JAX's own cluster detection (SLURM, TPU pods). The job is joined here, before the
device check or any command touches a device, because JAX fixes its device list when one is first used.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from sensei_jax import config as config_lib
from sensei_jax.pipeline import device, preflight, stages

COMMANDS = stages.STAGES  # name -> Stage, pipeline stages first in run order, then the tools


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug: shown as one line, without a traceback. Their messages name the
    file, key or value. (Imported here, not at the top, so that `--help` imports no stage library.)"""
    from sensei_jax.envs.minihack.pool import MiniHackUnavailable, WorkerCrashed
    from sensei_jax.envs.robodesk.assets import AssetsError
    from sensei_jax.pipeline.rundir import StageError
    from sensei_jax.reward.dataset import DatasetError

    return (config_lib.ConfigError, StageError, DatasetError, AssetsError, MiniHackUnavailable, WorkerCrashed,
            FileNotFoundError, ValueError)


def run_command(fn, *args) -> int:
    """Runs a command's `main`; a user error becomes `error: ...` on stderr and exit status 2. So does a failed
    operation on a file or folder (an OSError naming a path: no permission, a read-only or full disk), which no
    stage caught to name its config key."""
    from sensei_jax import files

    try:
        return int(fn(*args) or 0)
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.filename is None:  # not about a path (a socket, a worker process): a bug to see in full
            raise
        print(f"error: {files.os_error_cause(error)}", file=sys.stderr)
        return 2


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--section.key VALUE` / `--section.key=VALUE` tokens from the rest of the command line."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        if "." in name and not name.startswith("."):
            if "=" in token:
                overrides.append(token)
                i += 1
            else:
                overrides.extend(argv[i : i + 2])
                i += 2
        else:
            rest.append(token)
            i += 1
    return rest, overrides


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="python -m sensei_jax.run",
        description="SENSEI in JAX. No command runs the whole pipeline; `--section.key VALUE` overrides the config.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", help="YAML config file (default: the embedded configs/default.yaml)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="rerun this stage (and the ones after it) even if its outputs are complete")
    parser.add_argument("--stop-after", metavar="STAGE",
                        help="with no command: stop the pipeline after this stage (e.g. distill)")
    job = parser.add_argument_group("several processes (give these before the command)")
    job.add_argument("--coordinator", metavar="HOST:PORT",
                     help="address of process 0's coordinator service (env SENSEI_COORDINATOR)")
    job.add_argument("--num-processes", metavar="N", help="processes in the job (env SENSEI_NUM_PROCESSES)")
    job.add_argument("--process-id", metavar="I", help="this process, 0 .. N-1 (env SENSEI_PROCESS_ID)")
    job.add_argument("--distributed", choices=("auto", "off"),
                     help="auto: let JAX detect the cluster (SLURM, TPU pods; env SENSEI_DISTRIBUTED)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, stage in COMMANDS.items():
        commands.add_parser(name, help=stage.help, allow_abbrev=False, add_help=False)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = split_overrides(argv)
    parser, _ = build_parser()

    # Global flags come before the command; everything after the command is the command's own.
    command_index = next((i for i, t in enumerate(rest) if t in COMMANDS), None)
    head = rest if command_index is None else rest[: command_index + 1]
    tail = [] if command_index is None else rest[command_index + 1 :]
    # `--config FILE` is global but may also follow the command (`run train --config FILE`).
    for i, token in enumerate(tail):
        if token == "--config" and i + 1 < len(tail):
            head, tail = head[:-1] + tail[i : i + 2] + head[-1:], tail[:i] + tail[i + 2 :]
            break
        if token.startswith("--config="):
            head, tail = head[:-1] + [token] + head[-1:], tail[:i] + tail[i + 1 :]
            break
    args = parser.parse_args(head)

    from sensei_jax import compile_cache, distributed  # import jax: after argparse, so that `--help` stays fast

    os.environ["XLA_FLAGS"] = compile_cache.cpu_flags(os.environ.get("XLA_FLAGS", ""))  # before any backend starts
    compile_cache.enable()  # compiled programs persist across stages, commands and reruns (before any compile)

    try:
        job = distributed.job_spec(args.coordinator, args.num_processes, args.process_id, args.distributed)
        cfg = config_lib.load(args.config, overrides)
        distributed.initialize(job)  # before anything uses a device, the device check included
        device.check(cfg, args.command)  # run.device, before anything compiles (`config` and `doctor` are exempt)
        if job.enabled and args.command is not None:  # the pipeline checks each stage it still has to run
            stages.check_process_count(args.command, cfg, distributed.process_count())
        if args.command is not None:  # the pipeline runs its own preflight, over the stages it still has to run
            preflight.check(cfg, preflight.stages_of(args.command))
    except (config_lib.ConfigError, distributed.DistributedError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")

    if args.command is None:
        return run_command(importlib.import_module(stages.RUNNER_MODULE).main, args, cfg)

    stage = COMMANDS[args.command]
    module = stage.load()
    sub = argparse.ArgumentParser(prog=f"python -m sensei_jax.run {args.command}", description=stage.help,
                                  allow_abbrev=False)
    if stage.pipeline:
        sub.add_argument("--force", action="store_true",
                         help="redo this stage even if it is done (later stages of the run are forgotten too)")
    if stage.arguments:
        getattr(module, stage.arguments)(sub)
    sub_args = sub.parse_args(tail)
    for key, value in vars(args).items():
        if not hasattr(sub_args, key):
            setattr(sub_args, key, value)
    return run_command(getattr(module, stage.command), sub_args, cfg)


if __name__ == "__main__":
    sys.exit(main())
