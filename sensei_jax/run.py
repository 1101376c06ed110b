"""The command line: `python -m sensei_jax.run [COMMAND] [--config FILE] [flags] [--section.key VALUE ...]`.

With no command it runs the whole SENSEI pipeline (collect, pairs, annotate, distill, explore, evaluate, report) on
the embedded default config, or on `--config FILE`. Every pipeline stage is also a command of its own, and a few
tools (`env`, `train`, `transfer`) sit beside them. Config overrides name a section and a key (`--explore.steps
1000`); anything else after the command is that command's own flags.

Each command lives in a module with `add_arguments(parser)` and `main(args, cfg)`; this file only dispatches, and
imports a command's module only when that command runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sensei_jax import config as config_lib

# name -> (module, one-line help). Pipeline stages first, in the order `run` executes them.
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("sensei_jax.pipeline.collect", "roll out the vectorized Robodesk env and store frames and states"),
    "pairs": ("sensei_jax.pipeline.pairs", "sample image pairs and re-render them for the annotator"),
    "annotate": ("sensei_jax.pipeline.annotate", "label image pairs with a VLM (llava), the oracle or at random"),
    "distill": ("sensei_jax.pipeline.distill", "train the Motif reward model on the labelled pairs"),
    "explore": ("sensei_jax.pipeline.explore", "SENSEI exploration: DreamerV3 + Plan2Explore + semantic reward"),
    "evaluate": ("sensei_jax.pipeline.evaluate", "interaction and success counts of the exploration runs"),
    "report": ("sensei_jax.pipeline.report", "write report.md and the plots"),
    "train": ("sensei_jax.pipeline.train", "plain DreamerV3 on a task reward"),
    "transfer": ("sensei_jax.pipeline.transfer", "train a task policy from an exploration checkpoint"),
    "env": ("sensei_jax.pipeline.env_tools", "environment tools: `env info`, `env rollout`"),
}
PIPELINE_MODULE = "sensei_jax.pipeline.runner"


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, allow_abbrev=False, add_help=False)
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

    try:
        cfg = config_lib.load(args.config, overrides)
    except config_lib.ConfigError as error:
        parser.exit(2, f"error: {error}\n")

    if args.command is None:
        module = importlib.import_module(PIPELINE_MODULE)
        return int(module.main(args, cfg) or 0)

    module_name, help_text = COMMANDS[args.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"python -m sensei_jax.run {args.command}", description=help_text,
                                  allow_abbrev=False)
    module.add_arguments(sub)
    sub_args = sub.parse_args(tail)
    for key, value in vars(args).items():
        if not hasattr(sub_args, key):
            setattr(sub_args, key, value)
    return int(module.main(sub_args, cfg) or 0)


if __name__ == "__main__":
    sys.exit(main())
