"""Stage `distill`: train the Motif reward model on a pair dataset's preference labels (Bradley-Terry).

    python -m sensei_jax.run distill --dataset runs/x/pairs --preferences oracle [--out DIR] [--reward.epochs 5]

In the pipeline (`run_stage`) the dataset is `<run>/pairs`, the label set is `reward.preferences` (default: the
annotator's name), and everything goes to `<run>/distill` (see `sensei_jax/reward/train.py` for the files). A rerun
resumes after the last finished epoch; a finished run returns its summary at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sensei_jax.config import Config
from sensei_jax.reward.dataset import GROUND_TRUTH, PairDataset
from sensei_jax.reward.train import train


def annotator_name(cfg: Config) -> str | None:
    """The label-set name the annotate stage writes: `annotate.name`, else the annotator's (`annotate.annotator`)."""
    section = getattr(cfg, "annotate", None)
    for key in ("name", "annotator"):
        value = getattr(section, key, None)
        if isinstance(value, str) and value:
            return value
    return None


def resolve_preferences(cfg: Config, dataset: PairDataset, explicit: str | None = None) -> str:
    """Which label set to train on: `explicit`, else `reward.preferences`, else the annotator's, else the only
    label set besides the ground truth. Raises ValueError listing what the dataset has when none fits."""
    available = dataset.preference_names()
    name = explicit or cfg.reward.preferences
    if name:
        if name not in available:
            raise ValueError(f"no preference labels '{name}' in {dataset.directory / 'preference'}; "
                             f"available: {available or 'none'}")
        return name
    annotator = annotator_name(cfg)
    if annotator in available:
        return annotator
    others = [n for n in available if n != GROUND_TRUTH]
    if len(others) == 1:
        return others[0]
    raise ValueError(f"cannot tell which labels in {dataset.directory / 'preference'} to train on (annotator "
                     f"{annotator!r}; available: {available or 'none'}); set --reward.preferences NAME")


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    dataset = PairDataset.open(run_dir / "pairs")
    preferences = resolve_preferences(cfg, dataset)
    return train(dataset, preferences, cfg.reward, run_dir / "distill")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, help="pair dataset folder (default: <run dir>/pairs)")
    parser.add_argument("--preferences", help="label set to train on, preference/preferences_<NAME>.npy "
                                              "(default: reward.preferences, else the annotator's)")
    parser.add_argument("--out", type=Path, help="output folder (default: distill/ beside the dataset folder)")


def main(args: argparse.Namespace, cfg: Config) -> int:
    if args.dataset or args.out or args.preferences:
        dataset_dir = args.dataset or cfg.run_dir / "pairs"
        out = args.out or Path(dataset_dir).parent / "distill"  # beside the pairs, as in a run folder
        dataset = PairDataset.open(dataset_dir)
        preferences = resolve_preferences(cfg, dataset, args.preferences)
        print(f"[distill] {dataset}: training on '{preferences}' -> {out}")
        summary = train(dataset, preferences, cfg.reward, out)
    else:
        from sensei_jax.pipeline import rundir

        out = cfg.run_dir / "distill"
        summary = rundir.run_single_stage("distill", cfg, run_stage, force=args.force)
    print(f"[distill] best epoch {summary['best_epoch']}: validation accuracy {summary['best_val_accuracy']:.3f}, "
          f"loss {summary['best_val_loss']:.4f} on {summary['val_pairs']} pairs; reward mean "
          f"{summary['reward_stats']['mean']:.3f} std {summary['reward_stats']['std']:.3f}; model in {out}")
    return 0
