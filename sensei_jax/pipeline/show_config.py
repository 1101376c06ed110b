"""The `config` command: the resolved config, as YAML, section by section under the stage that first reads it.

    python -m sensei_jax.run config --config configs/robodesk_sensei.yaml --vlm.path /data/llava

What a user checks before a long run: every key after `base:` files and command-line overrides are applied. The
output is itself a valid config file (comments aside), equal to the `config.yaml` the run folder will hold.
"""

from __future__ import annotations

import argparse

import yaml

from sensei_jax import config as config_lib
from sensei_jax.config import Config
from sensei_jax.pipeline import stages


def render(cfg: Config, source: str | None = None) -> str:
    """YAML of `cfg`, its sections grouped under a comment naming the stage that first reads them."""
    tree = config_lib.to_dict(cfg)
    by_stage: dict[str, list[str]] = {name: [] for name in stages.PIPELINE}
    for section in tree:
        by_stage[stages.section_stage(section)].append(section)
    lines = [f"# resolved config of {source or 'the embedded default (configs/default.yaml)'}"]
    for name, sections in by_stage.items():
        if not sections:
            continue
        lines.append(f"\n# --- read first by stage '{name}' ---")
        lines.append(yaml.safe_dump({s: tree[s] for s in sections}, sort_keys=False).rstrip())
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, cfg: Config) -> int:
    print(render(cfg, args.config), end="")
    return 0
