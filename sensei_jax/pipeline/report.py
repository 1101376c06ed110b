"""Stage `report`: `report.md` and PNG figures at the top of the run folder.

Figures (each written only when its inputs exist, and the report says which are missing and why):

    preferences.png     label distribution per annotator (first / second / tie / unknown), as the reference study's
                        position-bias plot; agreement with the ground-truth labels of the pair sampler
    reward_model.png    the reward model's validation accuracy and loss per epoch
    interactions.png    interaction counts per object, SENSEI vs the disagreement-only baseline (and the random
                        collection policy), in the format of the paper's Robodesk figure (MiniHack: per flag, and
                        the report's table of episodes in which each flag held)
    success.png         success-step counts per task
    learning_curves.png episode return and interactions per episode over exploration steps
    exploration_diagnostics.png  the mechanism of each exploration run over time (from its metrics.jsonl): the
                        semantic head's fit, the go/explore split and threshold, per-mode semantic return, the
                        actor's entropy, the share of steps with a flag
    frames.png          strips of frames from the most interesting collected episodes (SENSEI's heuristic)

When the run folder holds annotate_eval/summary.json (the `annotate-eval` command), report.md shows its table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from sensei_jax import distributed, domains, files
from sensei_jax.config import Config
from sensei_jax.domains import Domain
from sensei_jax.metrics import read_jsonl
from sensei_jax.pipeline import collect, collection, rundir
from sensei_jax.reward.dataset import GROUND_TRUTH, DatasetError, PairDataset
from sensei_jax.reward.labels import LABEL_NAMES, Label

# The paper's Robodesk figure groups the three buttons into one bar.
METHOD_COLORS = {"sensei": "#d1495b", "p2x": "#00798c", "random": "#8d8d8d"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Figures.


def preference_figure(dataset: PairDataset, path: Path, dpi: int) -> dict[str, Any]:
    """Bar chart of label fractions per annotator; returns counts and agreement with the ground truth."""
    names = dataset.preference_names()
    if not names:
        return {}
    truth = dataset.load_preferences(GROUND_TRUTH) if GROUND_TRUTH in names else None
    stats: dict[str, Any] = {}
    for name in names:
        labels = dataset.load_preferences(name)
        counts = np.bincount(labels, minlength=len(Label))
        entry: dict[str, Any] = {"counts": dict(zip(LABEL_NAMES, counts.tolist()))}
        if truth is not None and name != GROUND_TRUTH:
            entry["agreement"] = float(np.mean(labels == truth))
            decided = labels < Label.TIE
            entry["agreement_decided"] = float(np.mean(labels[decided] == truth[decided])) if decided.any() else None
        stats[name] = entry
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    width = 0.8 / 4
    x = np.arange(len(names))
    for k, label in enumerate(LABEL_NAMES):
        fractions = [stats[n]["counts"][label] / max(1, len(dataset)) for n in names]
        ax.bar(x + (k - 1.5) * width, fractions, width, label=label)
    ax.set_xticks(x, [n + (f"\nagree {stats[n]['agreement']:.0%}" if "agreement" in stats[n] else "") for n in names])
    ax.set_ylabel("fraction of pairs")
    ax.set_ylim(0, 1)
    ax.set_title(f"Preference labels on {len(dataset)} pairs")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    _save(fig, path, dpi)
    return stats


def distill_history(distill_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Validation (and train) curves from the distill stage's metrics.jsonl: name -> [(step, value)]."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(distill_dir).rglob("metrics.jsonl")):
        for row in read_jsonl(path):
            for key, value in row.items():
                if key in ("step", "time") or value is None:
                    continue
                lowered = key.lower()
                if ("val" in lowered or "train" in lowered) and ("acc" in lowered or "loss" in lowered):
                    curves.setdefault(key, []).append((int(row["step"]), float(value)))
    return curves


def reward_figure(curves: dict[str, list[tuple[int, float]]], path: Path, dpi: int) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, kind in zip(axes, ("acc", "loss")):
        for key, points in sorted(curves.items()):
            if kind in key.lower():
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 30 else None, ms=3, label=key)
        ax.set_xlabel("step")
        ax.set_title("accuracy (non-tie pairs)" if kind == "acc" else "Bradley-Terry loss")
        ax.legend(fontsize=7)
    _save(fig, path, dpi)


def figure_objects(runs: dict[str, dict[str, Any]], found: Domain) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The bars of the interaction figure: the domain's grouping (Robodesk's objects as the paper groups them), or
    one bar per flag the runs report."""
    if found.figure_objects is not None:
        return found.figure_objects
    names = dict.fromkeys(name for run in runs.values() for name in run["interactions"])
    return tuple((name.replace("_", " "), (name,)) for name in names)


def interaction_figure(runs: dict[str, dict[str, Any]], path: Path, dpi: int,
                       objects: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    """Grouped bars: one group per object (buttons summed), one bar per method, as in SENSEI's Robodesk figure."""
    plt = _pyplot()
    methods = list(runs)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(objects))
    for m, method in enumerate(methods):
        counts = runs[method]["interactions"]
        values = [sum(counts.get(part, 0) for part in parts) for _, parts in objects]
        label = f"{method} ({runs[method].get('steps', '?')} steps)"
        ax.bar(x + (m - (len(methods) - 1) / 2) * width, values, width, label=label,
               color=METHOD_COLORS.get(method.split()[0]))
    ax.set_xticks(x, [name for name, _ in objects])
    ax.set_ylabel("steps with interaction")
    ax.set_title("Interactions per object during exploration")
    ax.legend(fontsize=8)
    _save(fig, path, dpi)


def success_figure(runs: dict[str, dict[str, Any]], path: Path, dpi: int) -> None:
    plt = _pyplot()
    tasks = sorted({t for run in runs.values() for t in run.get("success", {})})
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks) + 2), 3.2))
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(tasks))
    for m, (method, run) in enumerate(runs.items()):
        values = [run.get("success", {}).get(t, 0) for t in tasks]
        ax.bar(x + (m - (len(runs) - 1) / 2) * width, values, width, label=method,
               color=METHOD_COLORS.get(method.split()[0]))
    ax.set_xticks(x, tasks, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("steps in success state")
    ax.set_title("Task success during exploration")
    ax.legend(fontsize=8)
    _save(fig, path, dpi)


def learning_figure(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path, dpi: int) -> None:
    """curves: method -> metric -> [(step, value)]."""
    plt = _pyplot()
    metrics = sorted({k for c in curves.values() for k in c})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for method, per_metric in curves.items():
            if metric in per_metric and per_metric[metric]:
                steps, values = zip(*per_metric[metric])
                ax.plot(steps, values, label=method, color=METHOD_COLORS.get(method.split()[0]))
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("policy step")
        ax.legend(fontsize=7)
    _save(fig, path, dpi)


# What the exploration diagnostics figure draws: (title, [(metrics.jsonl key, label)]); `interaction_rate/*` is
# summed over the flags.
DIAGNOSTICS = (
    ("semantic head vs reward model (corr., replay)", [("fit/semantic/corr", "")]),
    ("explore-mode share of imagined states", [("weighting/sensei/explore_fraction", "")]),
    ("threshold vs imagined semantic reward", [("weighting/sensei/threshold", "threshold"),
                                               ("weighting/sensei/semantic_reward_p50", "p50"),
                                               ("weighting/sensei/semantic_reward_p95", "p95")]),
    ("semantic return in imagination, by mode", [("weighting/sensei/semantic_return_go", "go"),
                                                 ("weighting/sensei/semantic_return_explore", "explore")]),
    ("actor entropy", [("actor/entropy", "")]),
    ("share of steps with a flag (all flags)", [("interaction_rate/*", "")]),
)


def diagnostic_series(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """[(step, value)] of one metrics.jsonl key over a run (`prefix/*`: the sum of the keys under prefix)."""
    series = []
    for row in rows:
        if key.endswith("/*"):
            values = [v for k, v in row.items() if k.startswith(key[:-1])]
            if values:
                series.append((int(row["step"]), float(sum(values))))
        elif key in row:
            series.append((int(row["step"]), float(row[key])))
    return series


def diagnostics_figure(metrics: dict[str, list[dict[str, Any]]], path: Path, dpi: int) -> list[str]:
    """metrics: method -> its metrics.jsonl rows. Draws the panels of DIAGNOSTICS that have data; returns their
    titles."""
    panels = [(title, lines) for title, lines in DIAGNOSTICS
              if any(diagnostic_series(rows, key) for rows in metrics.values() for key, _ in lines)]
    if not panels:
        return []
    plt = _pyplot()
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 2.8 * rows_n), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for method, rows in metrics.items():
            for i, (key, label) in enumerate(lines):
                series = diagnostic_series(rows, key)
                if series:
                    steps, values = zip(*series)
                    ax.plot(steps, values, color=METHOD_COLORS.get(method.split()[0]), alpha=1.0 - 0.3 * i,
                            linestyle=("-", "--", ":")[i % 3], marker="o", markersize=2.5,
                            label=f"{method} {label}".strip())
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("policy step", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path, dpi)
    return [title for title, _ in panels]


def interesting_episodes(collect_dir: Path, num_episodes: int, num_frames: int, cfg: Config) -> list[dict[str, Any]]:
    """The collected episodes with the most interesting steps (the domain's heuristic as pair sampling applies
    it: its `good` frames; Robodesk: SENSEI's `interesting`), each with `num_frames` evenly spaced frames
    (uint8 [F, H, W, 3]), taken among its interesting steps when it has enough of them."""
    meta = collection.read_meta(collect_dir)
    worlds = meta["num_envs"]
    found = domains.of(cfg)
    flat = collection.load_collection(collect_dir, (*found.interest_keys, "episode_step"))
    labels = found.frame_labels(flat, cfg)
    active = labels.get("interesting", labels["good"]).reshape(-1, worlds)  # [T, B]
    episode_step = flat["episode_step"].reshape(-1, worlds)
    episodes: list[dict[str, Any]] = []
    for world in range(worlds):
        starts = np.flatnonzero(np.diff(episode_step[:, world]) < 0) + 1  # the step counter goes back to 0
        bounds = np.concatenate([[0], starts, [len(active)]])
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi - lo >= num_frames:
                episodes.append({"world": world, "start": int(lo), "stop": int(hi),
                                 "interesting_steps": int(active[lo:hi, world].sum())})
    episodes.sort(key=lambda e: -e["interesting_steps"])
    chosen = episodes[:num_episodes]
    chunk_steps, cache = meta["chunk_steps"], {}
    for episode in chosen:
        lo, hi, world = episode["start"], episode["stop"], episode["world"]
        chosen_steps = np.flatnonzero(active[lo:hi, world]) + lo
        pool = chosen_steps if len(chosen_steps) >= num_frames else np.arange(lo, hi)
        picks = pool[np.linspace(0, len(pool) - 1, num_frames).round().astype(int)]
        frames = []
        for t in picks:
            chunk = int(t) // chunk_steps
            if chunk not in cache:
                cache[chunk] = collection.load_chunk(collect_dir, chunk, ("image",))["image"]
            frames.append(cache[chunk][int(t) % chunk_steps, world])
        episode["steps"] = picks.tolist()
        episode["frames"] = np.stack(frames)
    return chosen


def frames_figure(episodes: list[dict[str, Any]], path: Path, dpi: int) -> None:
    plt = _pyplot()
    rows, cols = len(episodes), len(episodes[0]["frames"])
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
    for r, episode in enumerate(episodes):
        for c, frame in enumerate(episode["frames"]):
            ax = axes[r][c]
            ax.imshow(frame)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{episode['interesting_steps']} interesting", fontsize=7)
            ax.set_title(f"t={episode['steps'][c]}", fontsize=6)
    fig.suptitle("Most interesting collected episodes (steps SENSEI's heuristic calls interesting)", fontsize=9)
    _save(fig, path, dpi)


# ----------------------------------------------------------------------------------------------------------------
# The stage.


def _share(count: int, total: int) -> str:
    return f"{count} ({count / total:.0%})" if total else "-"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def annotator_evaluation(run_dir: Path, missing: list[str]) -> list[str]:
    """The report's lines for <run>/annotate_eval/summary.json (`annotate-eval`): its table; none without the file,
    and a note in `missing` when it cannot be read."""
    from sensei_jax.pipeline import annotate_eval

    path = run_dir / annotate_eval.FOLDER / "summary.json"
    if not path.is_file():
        return []
    try:
        summary = files.read_json(path)
        text = annotate_eval.table(summary)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        missing.append(f"annotator evaluation: {path} is unreadable ({error}); rerun annotate-eval")
        return []
    return ["## Which annotator labels better", "",
            f"`annotate-eval` on {summary.get('pairs')} pairs against `{summary.get('truth')}`, both orders of each "
            "pair (docs/vlm.md defines the columns).", "", text, ""]


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not distributed.is_main_process():  # the report is host work on files: process 0 alone makes it
        return {"report": str(run_dir / "report.md"), "figures": [], "missing": [], "made_by": "process 0"}
    run = rundir.RunDir(run_dir)
    status = run.read_status()["stages"]
    dpi = cfg.report.dpi
    (run_dir / "report").mkdir(exist_ok=True)
    written: list[str] = []
    missing: list[str] = []
    md = [f"# SENSEI run `{run_dir.name}`", "",
          f"Config: `{run_dir / 'config.yaml'}`. Stages: "
          + ", ".join(f"{s} {'done' if status.get(s, {}).get('state') == 'done' else 'not done'}"
                      + (f" ({status[s]['seconds']:.0f} s)" if s in status else "") for s in rundir.STAGES[:-1])
          + ".", ""]

    # Collection.
    collect_summary = (status.get("collect") or {}).get("summary") or {}
    if collect_summary:
        md += ["## Collection", "",
               f"{collect_summary.get('transitions')} transitions with the `{cfg.collect.policy}` policy "
               f"({collect.rate_text(collect_summary)}).", ""]

    # Preferences.
    try:
        dataset = PairDataset.open(run_dir / "pairs")
    except DatasetError as error:
        dataset = None
        missing.append(f"preferences.png: no pair dataset ({error})")
    if dataset is not None:
        stats = preference_figure(dataset, run_dir / "preferences.png", dpi)
        if stats:
            written.append("preferences.png")
            rows = [[name, *[s["counts"][label] for label in LABEL_NAMES],
                     f"{s['agreement']:.1%}" if "agreement" in s else "-",
                     f"{s['agreement_decided']:.1%}" if s.get("agreement_decided") is not None else "-"]
                    for name, s in stats.items()]
            contrastive = ((status.get("pairs") or {}).get("summary") or {}).get("contrastive", "?")
            md += ["## Preference labels", "", f"{len(dataset)} pairs ({contrastive} contrastive). Agreement = same "
                   "label as the pair sampler's ground truth; on decided = among the pairs the annotator did not "
                   "call a tie or unknown.",
                   "", _table(["annotator", *LABEL_NAMES, "agreement", "on decided"], rows), "", "![](preferences.png)", ""]

    # Annotator evaluation (the `annotate-eval` command), when it was run on this run's pairs.
    md += annotator_evaluation(run_dir, missing)

    # Reward model.
    curves = distill_history(run_dir / "distill")
    if curves:
        reward_figure(curves, run_dir / "reward_model.png", dpi)
        written.append("reward_model.png")
        finals = {k: v[-1][1] for k, v in curves.items()}
        md += ["## Reward model", "", "Final values: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(finals.items())),
               "", "![](reward_model.png)", ""]
    else:
        missing.append("reward_model.png: no metrics.jsonl with validation accuracy/loss under distill/")

    # Evaluation.
    evaluation = None
    if (run_dir / "evaluate" / "summary.json").is_file():
        evaluation = files.read_json(run_dir / "evaluate" / "summary.json")
    runs = (evaluation or {}).get("runs", {})
    if runs:
        found = domains.of(cfg)
        objects = figure_objects(runs, found)
        interaction_figure(runs, run_dir / "interactions.png", dpi, objects)
        written.append("interactions.png")
        header = ["method", "steps", *[name for name, _ in objects], "mean return"]
        rows = []
        for method, r in runs.items():
            counts = r["interactions"]
            returns = r.get("episode_returns") or []
            rows.append([method, r.get("steps", "?"), *[sum(counts.get(p, 0) for p in parts)
                                                       for _, parts in objects],
                         float(np.mean(returns)) if returns else "-"])
        md += ["## Exploration", "", f"{found.describe(cfg, markdown=True)}. {found.exploration_text}", "", _table(header, rows), ""]
        if found.episode_measure:
            md += ["Finished episodes in which each flag held at least once (the paper's MiniHack measure):", "",
                   _table(["method", "episodes", *[name for name, _ in objects]],
                          [[method, r.get("episodes", 0),
                            *[_share(r.get("episodes_with", {}).get(parts[0], 0), r.get("episodes", 0))
                              for _, parts in objects]] for method, r in runs.items()]), ""]
        md += ["![](interactions.png)", ""]
        if any(r.get("success") for r in runs.values()):
            success_figure(runs, run_dir / "success.png", dpi)
            written.append("success.png")
            md += ["![](success.png)", ""]
        learning = {m: r["curves"] for m, r in runs.items() if r.get("curves")}
        if learning:
            learning_figure(learning, run_dir / "learning_curves.png", dpi)
            written.append("learning_curves.png")
            md += ["![](learning_curves.png)", ""]
        metrics = {m: read_jsonl(Path(r["source"]).parent / "metrics.jsonl") for m, r in runs.items()
                   if r.get("source", "").endswith("summary.json")}
        metrics = {m: rows for m, rows in metrics.items() if rows}
        if metrics and diagnostics_figure(metrics, run_dir / "exploration_diagnostics.png", dpi):
            written.append("exploration_diagnostics.png")
            last = {m: {k: v for row in rows for k, v in row.items()} for m, rows in metrics.items()}
            keys = [key for _, lines in DIAGNOSTICS for key, _ in lines if not key.endswith("/*")]
            shown = [k for k in keys if any(k in values for values in last.values())]
            md += ["### Diagnostics", "", "How the exploration worked (docs/exploration.md reads them): the semantic "
                   "head's fit to the reward model on replay, the go/explore split of imagined states and its "
                   "threshold, the semantic return each mode reaches in imagination, the actor's entropy, and the "
                   "share of steps with a flag over time. Last logged values:", "",
                   _table(["metric", *last], [[k, *[last[m].get(k, "-") for m in last]] for k in shown]), "",
                   "![](exploration_diagnostics.png)", ""]
        transfer = (evaluation or {}).get("transfer")
        if transfer:
            rows = [[b, r.get("steps"), r.get("success_rate"), r.get("mean_return"), r.get("episodes")]
                    for b, r in transfer["results"].items()]
            md += ["## Downstream transfer", "", f"Task `{transfer['task']}`: a task policy trained from each "
                   "exploration checkpoint on the world model's success head, then run for evaluation episodes.", "",
                   _table(["exploration", "training steps", "success rate", "mean return", "episodes"], rows), ""]
    else:
        missing.append("interactions.png: no evaluate/summary.json with exploration runs")

    # Frames.
    if (run_dir / "collect" / "meta.json").is_file():
        episodes = interesting_episodes(run_dir / "collect", cfg.report.strip_episodes, cfg.report.strip_frames, cfg)
        if episodes:
            frames_figure(episodes, run_dir / "frames.png", dpi)
            written.append("frames.png")
            md += ["## Frames", "", "![](frames.png)", ""]
    if missing:
        md += ["## Not shown", ""] + [f"- {m}" for m in missing] + [""]
    files.write_text(run_dir / "report.md", "\n".join(md))
    files.write_json(run_dir / "report" / "summary.json", {"figures": written, "missing": missing})
    return {"report": str(run_dir / "report.md"), "figures": written, "missing": missing}


def main(args: argparse.Namespace, cfg: Config) -> int:
    summary = rundir.run_single_stage("report", cfg, run_stage, force=args.force)
    print(f"wrote {summary['report']} with {', '.join(summary['figures']) or 'no figures'}")
    return 0
