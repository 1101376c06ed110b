"""Stage `evaluate`: interaction and success counts of the exploration runs, next to each other.

SENSEI's paper reports, per object, the number of steps in which the object moved (|qvel| > 0.02), summed over all
steps of an exploration run (see docs/fidelity.md). The `explore` stage counts these for every env step; this stage
gathers them for SENSEI (`run_dir/explore/sensei`), the disagreement-only baseline (`run_dir/explore/p2x`) and, for
scale, the random collection policy (`run_dir/collect`), together with success-step counts per task, episode
returns and the learning curves, and writes `run_dir/evaluate/summary.json`:

    {"runs": {method: {"steps", "interactions": {object: n}, "success": {task: n}, "episode_returns": [...],
                       "curves": {metric: [[step, value], ...]}}},
     "ratios": {object: SENSEI / baseline},
     "transfer": {"task", "results": {behaviour: {success_rate, mean_return, ...}}} | null}

With `evaluate.transfer: true` it also runs SENSEI's downstream evaluation (the `transfer` stage's training of a
task policy from each exploration checkpoint) for `evaluate.transfer_task`, SENSEI and the baseline alike.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from sensei_jax import distributed, files
from sensei_jax.config import Config
from sensei_jax.pipeline import collection, rundir
from sensei_jax.pipeline.transfer import transfer

SUMMARY = "summary.json"


def find_exploration_summaries(folder: Path) -> list[Path]:
    """summary.json files of explore runs under `folder` (the explore stage writes one per behaviour)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(SUMMARY) if "checkpoints" not in p.parts)


def read_exploration(path: Path) -> dict[str, Any]:
    """One explore run's summary, checked for the fields the evaluation needs (the message names the file)."""
    try:
        summary = files.read_json(path)
    except (ValueError, FileNotFoundError) as error:
        raise rundir.StageError(f"cannot read the exploration summary {path}: {error}") from error
    missing = [k for k in ("behaviour", "steps", "interactions") if k not in summary]
    if missing:
        raise rundir.StageError(f"the exploration summary {path} lacks {missing}; rerun its explore stage")
    curves: dict[str, list[tuple[int, float]]] = {}
    for point in summary.get("curves") or []:
        step = int(point["step"])
        if point.get("return") is not None:
            curves.setdefault("episode return", []).append((step, float(point["return"])))
        if point.get("interactions"):
            curves.setdefault("interaction steps (all objects, cumulative)", []).append(
                (step, float(sum(point["interactions"].values()))))
    return {"steps": int(summary["steps"]), "interactions": {k: int(v) for k, v in summary["interactions"].items()},
            "success": {k: int(v) for k, v in (summary.get("success") or {}).items()},
            "episode_returns": [float(r) for r in summary.get("episode_returns") or []],
            "episodes": int(summary.get("episodes", 0)),
            "episodes_with": {k: int(v) for k, v in (summary.get("episodes_with") or {}).items()},
            "curves": curves, "behaviour": summary["behaviour"], "source": str(path)}


def collection_run(collect_dir: Path) -> dict[str, Any]:
    """The random collection policy's counts, for scale (its budget is `collect.steps` x worlds)."""
    meta = collection.read_meta(collect_dir)
    data = collection.load_collection(collect_dir, ("interaction", "success", "reward", "done"))
    names = meta["success_names"]
    rewards, done = data["reward"].reshape(-1, meta["num_envs"]), data["done"].reshape(-1, meta["num_envs"])
    flags = data["interaction"].reshape(len(rewards), meta["num_envs"], -1)
    flag_names = meta["interaction_names"]
    returns, episodes_with = [], dict.fromkeys(flag_names, 0)
    for world in range(meta["num_envs"]):
        ends = np.flatnonzero(done[:, world])
        starts = np.concatenate([[0], ends[:-1] + 1])
        returns += [float(rewards[s:e + 1, world].sum()) for s, e in zip(starts, ends)]
        for s, e in zip(starts, ends):
            for i, name in enumerate(flag_names):
                episodes_with[name] += int(flags[s:e + 1, world, i].any())
    return {"steps": int(len(data["interaction"])),
            "episodes": len(returns), "episodes_with": episodes_with,
            "interactions": {k: int(data["interaction"][:, i].sum()) for i, k in enumerate(flag_names)},
            "success": {k: int(data["success"][:, i].sum()) for i, k in enumerate(names)},
            "episode_returns": returns, "curves": {}, "behaviour": "random", "source": str(collect_dir)}


def downstream_transfer(cfg: Config, run_dir: Path, behaviours: list[str]) -> dict[str, Any]:
    """SENSEI's downstream evaluation: from each exploration checkpoint, train a policy on the success head of
    `evaluate.transfer_task` (explore.transfer_steps) and measure its success rate. A finished transfer is read back
    from its result.json; an unfinished one resumes from its checkpoint."""
    task = cfg.evaluate.transfer_task
    results = {}
    for behaviour in behaviours:
        out = run_dir / "evaluate" / "transfer" / f"{behaviour}_{task}"
        if (out / "result.json").is_file():
            results[behaviour] = files.read_json(out / "result.json")
            continue
        behaviour_cfg = dataclasses.replace(cfg, explore=dataclasses.replace(cfg.explore, behaviour=behaviour))
        results[behaviour] = transfer(behaviour_cfg, run_dir, task, out_dir=out, task_key="evaluate.transfer_task")
    return {"task": task, "results": results}


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    runs: dict[str, dict[str, Any]] = {}
    folder = run_dir / "explore"
    for path in find_exploration_summaries(folder):
        run = read_exploration(path)
        runs[run["behaviour"] if run["behaviour"] not in runs else str(path.parent.relative_to(run_dir))] = run
    order = [cfg.explore.behaviour, "p2x"]  # SENSEI first, then the baseline, then anything else
    runs = dict(sorted(runs.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    wanted = {cfg.explore.behaviour, "p2x"}
    missing = sorted(wanted - set(runs))
    if missing:
        raise rundir.StageError(f"stage 'evaluate' found no exploration summary ({SUMMARY}) of {missing} under "
                                f"{folder}; run the explore and baseline stages first")
    if (run_dir / "collect" / "meta.json").is_file():
        runs["random (collect)"] = collection_run(run_dir / "collect")
    ratios = {}
    sensei_run = runs.get(cfg.explore.behaviour)
    baseline = runs.get("p2x")
    if sensei_run is not None and baseline is not None and sensei_run is not baseline:
        for obj, count in sensei_run["interactions"].items():
            base = baseline["interactions"].get(obj, 0)
            ratios[obj] = float(count / base) if base else None
    transfer = downstream_transfer(cfg, run_dir, list(dict.fromkeys(order))) if cfg.evaluate.transfer else None
    summary = {"runs": runs, "ratios": ratios, "transfer": transfer}
    if distributed.is_main_process():
        files.write_json(run_dir / "evaluate" / SUMMARY, summary)
    return {"runs": {name: {"steps": r["steps"], "interactions": r["interactions"], "success": r["success"],
                            "episodes": r.get("episodes", 0), "episodes_with": r.get("episodes_with", {}),
                            "mean_return": float(np.mean(r["episode_returns"])) if r["episode_returns"] else None}
                     for name, r in runs.items()}, "ratios": ratios,
            "transfer": None if transfer is None else {b: r.get("success_rate")
                                                       for b, r in transfer["results"].items()}}


def main(args: argparse.Namespace, cfg: Config) -> int:
    summary = rundir.run_single_stage("evaluate", cfg, run_stage, force=args.force)
    for name, run in summary["runs"].items():
        print(f"{name:18s} {run['steps']:>8d} steps  interactions {run['interactions']}")
    return 0
