"""Command `annotate-eval`: which annotator labels better, scored against a pair dataset's ground truth.

    python -m sensei_jax.run annotate-eval --pairs DIR [--annotator oracle --annotator random ...]
        [--truth ground_truth|NAME|FILE.csv] [--out DIR] [--max-pairs N]

Each annotator labels every pair twice, as stored (a, b) and swapped (b, a) (the images and the states behind
them alike), and is scored on both answers:

- accuracy: of the answers on pairs whose truth is decided (first or second), the share equal to the truth (the
  truth swapped for the swapped order); a tie or unknown answer there counts as a miss. `accuracy_decided` is
  the same among the answers that were decided too;
- tie rate (and unknown rate): the share of all answers that are a tie (unknown);
- first-position rate: of the decided answers, the share that pick the image shown first. Both orders are asked,
  so an annotator without position bias gets 0.5 whatever the dataset's balance; 1.0 always picks the first;
- order agreement: of the pairs with a known answer in both orders, the share where the label of (a, b) equals
  the swapped label of (b, a) (a tie agrees with a tie);
- pairs/s: pairs scored per second, both orders included (each pair is asked twice).

Overall, and per group where the pairs carry one: the pair kind the pairs stage stores (`arrays/kind.npy`:
contrastive, uniform), and, for pairs inside a run folder whose collect/ folder holds interaction flags, per
interaction the pairs with that flag on in either frame (through `arrays/source_index.npy`). The truth is the
pairs stage's `ground_truth` label set, another saved label set, or a CSV of human labels (`pair_index,label`
with label first|second|tie; pairs it does not list count as undecided). The table goes to stdout and the results
to `<out>/summary.json` (default: the run's annotate_eval/ when DIR is the run's pairs/, else DIR/annotate_eval/);
the report stage shows the table when the run folder holds that file.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from sensei_jax import files, progress
from sensei_jax.annotators.registry import ANNOTATORS
from sensei_jax.config import Config
from sensei_jax.reward.dataset import GROUND_TRUTH, DatasetError, PairDataset
from sensei_jax.reward.labels import Label

FOLDER = "annotate_eval"  # in the run folder; the report reads <run>/annotate_eval/summary.json
CSV_LABELS = {"first": Label.FIRST, "second": Label.SECOND, "tie": Label.TIE}
KIND_NAMES = ("contrastive", "uniform")  # arrays/kind.npy values (pipeline/pairs.py CONTRASTIVE, UNIFORM)
# The table's columns: (JSON key, header).
COLUMNS = (("accuracy", "accuracy"), ("accuracy_decided", "acc. decided"), ("tie_rate", "tie rate"),
           ("unknown_rate", "unknown"), ("first_position_rate", "first-position"),
           ("order_agreement", "order agreement"), ("pairs_per_second", "pairs/s"))


# ----------------------------------------------------------------------------------------------------------------
# The truth.


def read_truth_csv(path: Path, num_pairs: int) -> np.ndarray:
    """Labels int8 [num_pairs] from a CSV with a header `pair_index,label` (label first|second|tie); pairs it does
    not list are UNKNOWN. Raises DatasetError naming the file and line of anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"--truth {path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    rows = csv.reader(text.splitlines())
    header = [cell.strip() for cell in next(rows, [])]
    if header[:2] != ["pair_index", "label"]:
        raise DatasetError(f"--truth {path}: the first line must be the header 'pair_index,label', got "
                           f"{','.join(header)!r}")
    labels = np.full(num_pairs, Label.UNKNOWN, np.int8)
    seen = np.zeros(num_pairs, bool)
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise DatasetError(f"--truth {path} line {line}: expected pair_index,label, got {','.join(row)!r}")
        index, label = row[0].strip(), row[1].strip().lower()
        if not index.isdigit() or int(index) >= num_pairs:
            raise DatasetError(f"--truth {path} line {line}: pair_index {index!r} is not an integer in "
                               f"[0, {num_pairs})")
        if label not in CSV_LABELS:
            raise DatasetError(f"--truth {path} line {line}: label {row[1].strip()!r} is not one of "
                               f"{'|'.join(CSV_LABELS)}")
        if seen[int(index)]:
            raise DatasetError(f"--truth {path} line {line}: pair {index} is labelled twice")
        seen[int(index)] = True
        labels[int(index)] = CSV_LABELS[label]
    return labels


def load_truth(dataset: PairDataset, truth: str) -> np.ndarray:
    """The truth labels int8 [N]: a CSV file (a path ending in .csv, or any existing file) or a label set of the
    dataset. A missing label set is named with the key and the folder."""
    path = Path(truth)
    if truth.endswith(".csv") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--truth {path}: no such file (expected a CSV with columns pair_index,label)")
        return read_truth_csv(path, len(dataset))
    if truth not in dataset.preference_names():
        made_by = " (the pairs stage writes it)" if truth == GROUND_TRUTH else ""
        raise DatasetError(f"--truth {truth}: {dataset.directory} has no label set '{truth}'{made_by}: expected "
                           f"{dataset.directory / 'preference' / f'preferences_{truth}.npy'}; label sets there: "
                           f"{', '.join(dataset.preference_names()) or 'none'}; or pass --truth FILE.csv "
                           "(pair_index,label)")
    return dataset.load_preferences(truth)


def pair_groups(dataset: PairDataset, run_dir: Path | None) -> dict[str, np.ndarray]:
    """Per-pair groups (bool [N] each) the pairs carry: `kind:<name>` from arrays/kind.npy, and `<interaction>` for
    each interaction flag of `run_dir`/collect on in either frame (via arrays/source_index.npy)."""
    from sensei_jax.pipeline import collection

    arrays = dataset.directory / "arrays"
    groups: dict[str, np.ndarray] = {}
    if (arrays / "kind.npy").is_file():
        kind = dataset.load_array("kind")
        for value, name in enumerate(KIND_NAMES):
            if (kind == value).any():
                groups[f"kind:{name}"] = kind == value
    collect = None if run_dir is None else run_dir / "collect"
    if collect is None or not (collect / "meta.json").is_file() or not (arrays / "source_index.npy").is_file():
        return groups
    meta = collection.read_meta(collect)
    names = meta.get("interaction_names") or []
    if not names:
        return groups
    flags = collection.load_collection(collect, ("interaction",))["interaction"].astype(bool)
    index = dataset.load_array("source_index")
    if index.ndim != 2 or index.shape[1] != 2 or index.max() >= len(flags):
        return groups  # the pairs were made from another collection: no flags to trust
    on = flags[index].any(axis=1)  # [N, interactions]: the flag holds in either frame
    for k, name in enumerate(names):
        groups[f"interaction:{name}"] = on[:, k]
    return groups


# ----------------------------------------------------------------------------------------------------------------
# Scoring.


def swap_labels(label: np.ndarray) -> np.ndarray:
    """The label of the swapped pair: FIRST <-> SECOND; TIE and UNKNOWN stay."""
    label = np.asarray(label, np.int8)
    return np.where(label == Label.FIRST, Label.SECOND,
                    np.where(label == Label.SECOND, Label.FIRST, label)).astype(np.int8)


def _share(part: np.ndarray, whole: np.ndarray) -> float | None:
    count = int(whole.sum())
    return float((part & whole).sum() / count) if count else None


def score(forward: np.ndarray, backward: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Metrics of the answers on the stored order `forward` [N] and the swapped order `backward` [N] (its labels
    refer to the swapped pair) against `truth` [N] (of the stored order). See the module docstring."""
    answers = np.concatenate([forward, backward])  # 2N answers, each about the pair as it was shown
    expected = np.concatenate([truth, swap_labels(truth)])
    truth_decided = expected < Label.TIE
    answer_decided = answers < Label.TIE
    known = (forward != Label.UNKNOWN) & (backward != Label.UNKNOWN)
    correct = answers == expected
    return {
        "pairs": int(len(forward)),
        "truth_decided_pairs": int((truth < Label.TIE).sum()),
        "accuracy": _share(correct, truth_decided),
        "accuracy_decided": _share(correct, truth_decided & answer_decided),
        "tie_rate": _share(answers == Label.TIE, np.ones_like(answers, bool)),
        "unknown_rate": _share(answers == Label.UNKNOWN, np.ones_like(answers, bool)),
        "first_position_rate": _share(answers == Label.FIRST, answer_decided),
        "order_agreement": _share(forward == swap_labels(backward), known),
        "order_pairs_compared": int(known.sum()),
    }


def label_both_orders(annotator, dataset: PairDataset, num_pairs: int, chunk: int,
                      desc: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels of the stored order int8 [N], labels of the swapped order int8 [N], seconds) of the first
    `num_pairs` pairs, read and labelled `chunk` pairs at a time under a progress bar."""
    forward, backward = [], []
    bar = progress.bar(num_pairs, desc=desc, unit="pair")
    seconds = 0.0
    for start in range(0, num_pairs, chunk):
        stop = min(start + chunk, num_pairs)
        images = np.asarray(dataset.images[start:stop])
        states = np.asarray(dataset.states[start:stop])
        begin = time.perf_counter()
        _, first = annotator.annotate(images, states)
        _, second = annotator.annotate(np.ascontiguousarray(images[:, ::-1]), np.ascontiguousarray(states[:, ::-1]))
        seconds += time.perf_counter() - begin
        forward.append(np.asarray(first, np.int8))
        backward.append(np.asarray(second, np.int8))
        bar.update(stop - start)
    bar.close()
    return np.concatenate(forward), np.concatenate(backward), seconds


def evaluate(annotator, dataset: PairDataset, truth: np.ndarray, groups: dict[str, np.ndarray],
             num_pairs: int | None = None, chunk: int = 256, name: str | None = None) -> dict[str, Any]:
    """Scores `annotator` on both orders of the first `num_pairs` (default all) pairs: overall and per group."""
    num_pairs = len(dataset) if num_pairs is None else min(int(num_pairs), len(dataset))
    name = name or display_name(annotator)
    forward, backward, seconds = label_both_orders(annotator, dataset, num_pairs, chunk, f"annotate-eval ({name})")
    truth = truth[:num_pairs]
    result = score(forward, backward, truth)
    result.update(seconds=seconds, pairs_per_second=num_pairs / seconds if seconds > 0 else None)
    result["groups"] = {group: score(forward[mask[:num_pairs]], backward[mask[:num_pairs]], truth[mask[:num_pairs]])
                        for group, mask in groups.items() if mask[:num_pairs].any()}
    return result


def display_name(annotator) -> str:
    """The annotator's name in the table: a VLM by its family (llava, qwen3_vl), others by their own name."""
    return getattr(annotator, "family", None) or annotator.name


# ----------------------------------------------------------------------------------------------------------------
# The table.


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 1000 else f"{value:.0f}"
    return str(value)


def table(summary: dict[str, Any]) -> str:
    """A markdown table: one row per annotator overall, then one per annotator and group."""
    header = ["annotator", "pairs", "group", *[title for _, title in COLUMNS]]
    rows = []
    for name, result in summary["annotators"].items():
        rows.append([name, result["pairs"], "all", *[result.get(key) for key, _ in COLUMNS]])
    for name, result in summary["annotators"].items():
        for group, scores in result["groups"].items():
            rows.append([name, scores["pairs"], group, *[scores.get(key) for key, _ in COLUMNS]])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", help="pair dataset folder (default: the run's pairs/)")
    parser.add_argument("--annotator", action="append", choices=ANNOTATORS,
                        help="annotator to score; repeat for several (default: annotate.annotator)")
    parser.add_argument("--truth", default=GROUND_TRUTH,
                        help="the labels to score against: a label set of the pairs (default: ground_truth, "
                             "written by the pairs stage) or a CSV file with columns pair_index,label "
                             "(first|second|tie)")
    parser.add_argument("--out", help="folder for summary.json (default: the run's annotate_eval/ when --pairs is "
                                      "the run's pairs/, else PAIRS/annotate_eval)")
    parser.add_argument("--max-pairs", type=int, help="score only the first N pairs")


def main(args: argparse.Namespace, cfg: Config) -> int:
    from sensei_jax.annotators import make_annotator

    run_pairs = Path(cfg.run_dir) / "pairs"
    pairs = Path(args.pairs) if args.pairs else run_pairs
    in_run = pairs.resolve() == run_pairs.resolve()
    if args.max_pairs is not None and args.max_pairs < 1:
        raise ValueError(f"--max-pairs must be at least 1, got {args.max_pairs}")
    if not pairs.is_dir():
        raise DatasetError(f"--pairs {pairs}: no such folder (expected a pair dataset written by the pairs stage)")
    try:
        dataset = PairDataset.open(pairs)
    except DatasetError as error:
        raise DatasetError(f"--pairs {pairs}: {error}") from error
    dataset.require_complete()
    truth = load_truth(dataset, args.truth)  # before any annotator is built: a bad truth costs no model load
    groups = pair_groups(dataset, pairs.parent)  # a run folder's collect/ beside the pairs, if there is one
    out = Path(args.out) if args.out else (Path(cfg.run_dir) / FOLDER if in_run else pairs / FOLDER)
    num_pairs = len(dataset) if args.max_pairs is None else min(args.max_pairs, len(dataset))
    summary: dict[str, Any] = {"pairs_dir": str(pairs), "truth": args.truth, "pairs": num_pairs,
                               "truth_counts": {n.name.lower(): int((truth[:num_pairs] == n).sum()) for n in Label},
                               "groups": sorted(groups), "annotators": {}}
    if not groups:
        summary["groups_note"] = "the pairs carry no per-pair groups (arrays/kind.npy, a run's collect/ flags)"
    for kind in args.annotator or [cfg.annotate.annotator]:
        kind_cfg = dataclasses.replace(cfg, annotate=dataclasses.replace(cfg.annotate, annotator=kind))
        annotator = make_annotator(kind_cfg)
        name = display_name(annotator)
        result = evaluate(annotator, dataset, truth, groups, num_pairs, cfg.annotate.partition_size, name)
        result["annotator"] = kind
        if hasattr(annotator, "settings"):
            result["settings"] = annotator.settings()
        summary["annotators"][name if name not in summary["annotators"] else f"{name}_{len(summary['annotators'])}"] \
            = result
    files.write_json(out / "summary.json", summary)
    print(table(summary))
    print(f"wrote {out / 'summary.json'}")
    return 0
