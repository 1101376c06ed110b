"""Stage `annotate`: label every pair of a pair dataset with the configured annotator (llava, oracle or random).

    python -m sensei_jax.run annotate --dataset DIR --annotator llava --vlm.path CKPT

Work is split into partitions of `annotate.partition_size` pairs, each written atomically as soon as it is done
(`<out>/partitions/<name>/part_00003.npz`), so a restart skips finished partitions and never loses one. A
manifest records what the partitions were made with; a different annotator config starts over. When all are
done the labels go into the dataset (`preference/preferences_<name>.npy` and `prob_first_<name>.npy`), and the
output folder gets `summary.json` (label counts, first/second bias, agreement with the ground truth, throughput)
and a bar plot of the label distribution.

In the pipeline (`run_stage`) the dataset is run_dir/pairs and the output folder run_dir/annotate; on the command
line `--dataset DIR` names the dataset and `--out` the folder (default DIR/annotate). With `pairs.second_camera`
the second view (run_dir/pairs/views/<camera>) is labelled too (partitions and summary in
run_dir/annotate/views/<camera>/), and the run's label set `<name>` keeps a label only where both views agree
(unknown elsewhere), as SENSEI's GPT-4 set kept the pairs whose left- and right-view labels agreed; the single-view
labels stay as `<name>_<camera>` for each camera.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sensei_jax import config as config_lib
from sensei_jax import domains, files, progress
from sensei_jax.annotators.registry import ANNOTATORS
from sensei_jax.config import Config
from sensei_jax.distributed import barrier, from_main_process, is_main_process
from sensei_jax.reward.dataset import GROUND_TRUTH, PairDataset
from sensei_jax.reward.labels import LABEL_NAMES, Label

MANIFEST = "manifest.json"


def _fingerprint(cfg: Config) -> str:
    """What decides the labels: the annotate section, and the vlm section for llava, what the domain's heuristic
    reads for the oracle (Robodesk: the interest section)."""
    parts = {"annotate": config_lib.to_dict(cfg.annotate)}
    for key in ("batch_size", "partition_size", "model_parallel"):  # batching and sharding do not change results
        parts["annotate"].pop(key)
    if cfg.annotate.annotator == "llava":
        parts["vlm"] = config_lib.to_dict(cfg.vlm)
    if cfg.annotate.annotator == "oracle":
        parts["interest"] = domains.of(cfg).oracle_fingerprint(cfg)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _partition_dir(out: Path, name: str, num_pairs: int, cfg: Config) -> Path:
    """The partition folder for label set `name`, emptied (by process 0) if its manifest belongs to another config
    or dataset."""
    folder = out / "partitions" / name
    if not is_main_process():
        return folder
    manifest = {"num_pairs": num_pairs, "partition_size": cfg.annotate.partition_size,
                "fingerprint": _fingerprint(cfg)}
    path = folder / MANIFEST
    if path.is_file():
        try:
            if files.read_json(path) == manifest:
                return folder
        except ValueError:
            pass
        shutil.rmtree(folder)
    files.write_json(path, manifest)
    return folder


def _load_partition(path: Path, size: int) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            part = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        return None  # unreadable (cannot happen with atomic writes, but never trust a file): redo it
    if part.get("label") is None or part["label"].shape != (size,):
        return None
    return part


def annotate_dataset(dataset: PairDataset, annotator, cfg: Config, out: Path) -> dict[str, Any]:
    """Labels all pairs of `dataset` into label set `cfg.annotate.label_name`, resumably. Returns the summary.

    With several processes every one runs this on the same (shared) run folder: all annotate the same partitions
    (the annotator splits each batch over every host's devices and returns the whole result to each), the
    partitions to resume are those process 0 finds, and process 0 alone writes."""
    out = Path(out)
    name = cfg.annotate.label_name
    num_pairs, size = len(dataset), cfg.annotate.partition_size
    folder = _partition_dir(out, name, num_pairs, cfg)
    barrier(f"annotate {folder}")
    starts = list(range(0, num_pairs, size))
    paths = [folder / f"part_{i:05d}.npz" for i in range(len(starts))]
    parts: dict[int, dict[str, np.ndarray]] = {}
    for i, (start, path) in enumerate(zip(starts, paths)):
        if path.is_file():
            part = _load_partition(path, min(size, num_pairs - start))
            if part is not None:
                parts[i] = part
    resumable = from_main_process(np.array([i in parts for i in range(len(starts))], bool))
    parts = {i: part for i, part in parts.items() if resumable[i]}
    for i in np.flatnonzero(resumable):  # found by process 0, unreadable here: a shared run folder is required
        if int(i) not in parts:
            raise FileNotFoundError(f"{paths[i]} (written by process 0) is not readable by process "
                                    f"{jax.process_index()}; annotate with several hosts needs a shared run folder")
    resumed = sum(len(p["label"]) for p in parts.values())
    bar = progress.bar(num_pairs, desc=f"annotate ({annotator.name})", unit="pair", initial=resumed)
    begin, labelled = time.perf_counter(), 0
    for i, (start, path) in enumerate(zip(starts, paths)):
        if i in parts:
            continue
        stop = min(start + size, num_pairs)
        images = np.asarray(dataset.images[start:stop])
        states = np.asarray(dataset.states[start:stop])
        prob_first, label = annotator.annotate(images, states)
        part = {"prob_first": np.asarray(prob_first, np.float32), "label": np.asarray(label, np.int8)}
        for key, value in getattr(annotator, "last_diagnostics", {}).items():
            if np.asarray(value).dtype != object:
                part[key] = np.asarray(value)
        if is_main_process():
            files.write_npz(path, **part)
        parts[i] = part
        labelled += stop - start
        bar.update(stop - start)
    bar.close()
    seconds = time.perf_counter() - begin
    merged = {k: np.concatenate([parts[i][k] for i in range(len(starts))])
              for k in parts[0] if all(k in parts[i] for i in range(len(starts)))}
    if is_main_process():
        dataset.save_preferences(name, merged["label"], merged["prob_first"])
    summary = summarize(dataset, name, merged)
    summary.update(annotator=annotator.name, resumed_pairs=resumed, labelled_pairs=labelled, seconds=seconds,
                   pairs_per_second=labelled / seconds if labelled and seconds > 0 else None)
    if cfg.annotate.annotator == "llava":
        summary.update(annotator.settings(), checkpoint=cfg.vlm.path, dtype=cfg.vlm.dtype,
                       model_parallel=cfg.annotate.model_parallel, processes=jax.process_count())
    if is_main_process():
        files.write_json(out / "summary.json", summary)
        plot_preferences(dataset, name, out / f"preferences_{name}.png")
    barrier(f"annotate {folder} written")
    return summary


def summarize(dataset: PairDataset, name: str, parts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Label counts, first/second bias, agreement with the ground truth when the dataset has one."""
    label = parts["label"]
    counts = np.bincount(label, minlength=len(Label))
    decided = counts[Label.FIRST] + counts[Label.SECOND]
    summary: dict[str, Any] = {
        "name": name, "pairs": int(len(label)),
        "counts": {n: int(c) for n, c in zip(LABEL_NAMES, counts)},
        "fractions": {n: float(c / max(len(label), 1)) for n, c in zip(LABEL_NAMES, counts)},
        # Of the decided labels, how many chose the first image (0.5 on random-order pairs = no bias).
        "first_bias": float(counts[Label.FIRST] / decided) if decided else None,
        "mean_prob_first": float(np.nanmean(parts["prob_first"])),
    }
    if "position_first" in parts:  # llava: P(the image in the first slot wins), 0.5 = no position bias
        summary["position_first"] = float(np.mean(parts["position_first"]))
    if "answer_mass" in parts:
        summary["mean_answer_mass"] = float(np.mean(parts["answer_mass"]))
    if name != GROUND_TRUTH and GROUND_TRUTH in dataset.preference_names():
        truth = dataset.load_preferences(GROUND_TRUTH)
        both = (truth < Label.TIE) & (label < Label.TIE)  # decided: first or second
        summary["ground_truth"] = {
            "pairs_compared": int(both.sum()),
            "agreement": float((truth[both] == label[both]).mean()) if both.any() else None,
            "coverage": float(both.sum() / max((truth < Label.TIE).sum(), 1)),  # decided labels among decided truths
        }
    return summary


def plot_preferences(dataset: PairDataset, name: str, path: Path) -> Path:
    """Bar plot of the label distribution of `name` (and of the ground truth beside it, when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [name] + ([GROUND_TRUTH] if name != GROUND_TRUTH and GROUND_TRUTH in dataset.preference_names() else [])
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=110)
    width = 0.8 / len(sets)
    x = np.arange(len(Label))
    for k, label_set in enumerate(sets):
        counts = np.bincount(dataset.load_preferences(label_set), minlength=len(Label))
        ax.bar(x + (k - (len(sets) - 1) / 2) * width, counts / max(counts.sum(), 1), width, label=label_set)
    ax.set_xticks(x, LABEL_NAMES)
    ax.set_ylabel("fraction of pairs")
    ax.set_ylim(0, 1)
    ax.set_title(f"preferences '{name}' ({len(dataset)} pairs)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Pipeline stage: labels run_dir/pairs, writes run_dir/annotate."""
    from sensei_jax.annotators import make_annotator
    from sensei_jax.pipeline.pairs import open_dataset

    from sensei_jax.pipeline.pairs import render_settings

    run_dir = Path(run_dir)
    dataset = open_dataset(run_dir)
    annotator = make_annotator(cfg)
    summary = annotate_dataset(dataset, annotator, cfg, run_dir / "annotate")
    second = cfg.pairs.second_camera
    if not second:
        return summary
    view = open_dataset(run_dir, second)
    view_summary = annotate_dataset(view, annotator, cfg, run_dir / "annotate" / "views" / second)
    return intersect_views(dataset, {render_settings(cfg)[1]: dataset, second: view}, cfg.annotate.label_name,
                           summary, view_summary, run_dir / "annotate")


def intersect_views(dataset: PairDataset, views: dict[str, PairDataset], name: str, summary: dict[str, Any],
                    view_summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """Label set `name` of `dataset` := the labels of both views where they agree, unknown elsewhere; each view's
    own labels are kept as `<name>_<camera>`. Rewrites summary.json and the plot in `out` (process 0 writes)."""
    labels = {camera: view.load_preferences(name) for camera, view in views.items()}
    probs = {camera: view.load_prob_first(name) for camera, view in views.items()}
    writes = is_main_process()
    for camera in views:
        if writes:
            dataset.save_preferences(f"{name}_{camera}", labels[camera], probs[camera])
    first, second = labels.values()
    agree = first == second
    combined = np.where(agree, first, Label.UNKNOWN).astype(np.int8)
    prob_first = np.mean(np.stack(list(probs.values())), axis=0).astype(np.float32) \
        if all(p is not None for p in probs.values()) else np.full(len(combined), np.nan, np.float32)
    if writes:
        dataset.save_preferences(name, combined, prob_first)
    merged = summarize(dataset, name, {"label": combined, "prob_first": prob_first})
    merged.update({k: summary[k] for k in ("annotator", "seconds", "pairs_per_second") if k in summary})
    merged["views"] = {"cameras": list(views), "agreement": float(agree.mean()) if len(agree) else None,
                       "kept": int((combined != Label.UNKNOWN).sum()),
                       "per_view": {camera: s["counts"] for camera, s in zip(views, (summary, view_summary))}}
    if writes:
        files.write_json(out / "summary.json", merged)
        plot_preferences(dataset, name, out / f"preferences_{name}.png")
    barrier(f"annotate views {out} written")
    return merged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="pair dataset folder (default: the run's pairs/)")
    parser.add_argument("--out", help="where summary.json, the plot and partitions go (default: DATASET/annotate)")
    parser.add_argument("--annotator", choices=ANNOTATORS,
                        help="shorthand for --annotate.annotator")
    parser.add_argument("--name", help="label set name (shorthand for --annotate.name)")


def main(args: argparse.Namespace, cfg: Config) -> int:
    updates = {k: v for k, v in (("annotator", args.annotator), ("name", args.name)) if v}
    if updates:
        cfg = dataclasses.replace(cfg, annotate=dataclasses.replace(cfg.annotate, **updates))
    if args.dataset:
        from sensei_jax.annotators import make_annotator

        dataset = PairDataset.open(args.dataset)
        dataset.require_complete()
        out = Path(args.out) if args.out else Path(args.dataset) / "annotate"
        summary = annotate_dataset(dataset, make_annotator(cfg), cfg, out)
    else:
        from sensei_jax.pipeline import rundir

        summary = rundir.run_single_stage("annotate", cfg, run_stage, force=args.force)
    rate = summary.get("pairs_per_second")
    print(f"annotated {summary['pairs']} pairs as '{summary['name']}' with {summary['annotator']}: "
          f"{summary['counts']}" + (f", {rate:.2f} pairs/s" if rate else "")
          + (f", agreement with ground truth {summary['ground_truth']['agreement']}" if "ground_truth" in summary
             else ""))
    return 0
