"""`python -m sensei_jax.run` with no command: every stage of the SENSEI pipeline, in order, in one run folder.

    collect -> pairs -> annotate -> distill -> explore -> baseline -> evaluate -> report

The stages and their order are the registry in `stages.py`. `baseline` is the `explore` stage again with the
disagreement-only behaviour (`explore.behaviour: p2x`) and the same budget, written to `run_dir/explore/p2x/`
beside SENSEI's `run_dir/explore/sensei/`, so the report can set SENSEI's interaction counts next to
Plan2Explore's. Each stage is skipped when `status.json` records it as done and resumes from its
own folder otherwise (see `rundir.py`); `--force STAGE` redoes that stage and everything after it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from sensei_jax import config as config_lib
from sensei_jax.config import Config
from sensei_jax.pipeline import preflight, rundir, stages
from sensei_jax.reward.dataset import DatasetError


def stage_function(name: str) -> Callable[[Config, Path], dict]:
    """The `(cfg, run_dir) -> summary` function of pipeline stage `name` (imports its module)."""
    return stages.get(name).function()


def stages_to_run(cfg: Config, force: list[str] | tuple[str, ...] = (), stop_after: str | None = None
                  ) -> tuple[str, ...]:
    """The stages an invocation will run: up to `stop_after`, less those status.json records as done (unless
    forced: `--force STAGE` redoes it and every later one)."""
    last = rundir.STAGES.index(stop_after) if stop_after is not None else len(rundir.STAGES) - 1
    forced_from = min((rundir.stage_index(s) for s in force), default=len(rundir.STAGES))
    done = rundir.RunDir(cfg.run_dir).read_status()["stages"] if cfg.run_dir.is_dir() else {}
    return tuple(name for i, name in enumerate(rundir.STAGES[: last + 1])
                 if i >= forced_from or done.get(name, {}).get("state") != "done")


def run_pipeline(cfg: Config, force: list[str] | tuple[str, ...] = (), stop_after: str | None = None,
                 log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Runs (or skips, or resumes) every stage, up to `stop_after` if given; returns each stage's summary."""
    if stop_after is not None and stop_after not in rundir.STAGES:
        raise config_lib.ConfigError(f"--stop-after {stop_after!r} is not a stage; stages: {', '.join(rundir.STAGES)}")
    preflight.check(cfg, stages_to_run(cfg, force, stop_after))
    run = rundir.open_run(cfg, force)
    log(f"run folder {run.path} (config {run.config_path})")
    summaries = {}
    process_count = _process_count()
    for name in rundir.STAGES:
        if not run.done(name):  # forced stages were forgotten by open_run
            stages.check_process_count(name, cfg, process_count)
        fn = stage_function(name)
        try:
            summaries[name] = run.run(name, lambda fn=fn: fn(cfg, run.path), log=log)
        except rundir.StageError:
            raise
        except (DatasetError, FileNotFoundError) as error:  # a missing or corrupt input file, named in the message
            raise rundir.StageError(f"stage '{name}' cannot read its input: {error}") from error
        if name == stop_after:
            break
    return summaries


def _process_count() -> int:
    """The number of processes in this job (1 unless `jax.distributed` was initialised by the CLI)."""
    import jax

    return jax.process_count()


def format_summary(cfg: Config, run: rundir.RunDir, total_seconds: float) -> str:
    """One screen: time per stage and the numbers that matter."""
    status = run.read_status()["stages"]
    lines = [f"SENSEI pipeline: {run.path}  ({total_seconds:.0f} s this invocation)", ""]
    for name in rundir.STAGES:
        entry = status.get(name, {})
        state = f"{entry['seconds']:7.1f} s" if entry.get("state") == "done" else "  not done"
        lines.append(f"  {name:9s} {state}")
    summary = lambda name: (status.get(name) or {}).get("summary") or {}  # noqa: E731
    collected = summary("collect")
    if collected:
        from sensei_jax.pipeline import collect  # jax: only once a stage ran

        lines.append(f"\ncollect   {collected.get('transitions')} transitions, {collect.rate_text(collected)}")
    pairs = summary("pairs")
    if pairs:
        lines.append(f"pairs     {pairs.get('pairs')} pairs at {pairs.get('image_size')}px, ground truth "
                     f"{pairs.get('ground_truth')}")
    for name in ("annotate", "distill"):
        values = {k: v for k, v in summary(name).items() if isinstance(v, (int, float, str)) and len(str(v)) < 40}
        if values:
            lines.append(f"{name:9s} " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in list(values.items())[:6]))
    runs = summary("evaluate").get("runs", {})
    if runs:
        from sensei_jax import domains
        from sensei_jax.pipeline.report import figure_objects

        found = domains.of(cfg)
        objects = figure_objects(runs, found)
        lines.append(f"\ninteractions ({found.counted})")
        lines.append("  " + f"{'method':16s}" + "".join(f"{name:>18s}" for name, _ in objects))
        for method, r in runs.items():
            counts = r.get("interactions", {})
            lines.append("  " + f"{method:16s}" + "".join(f"{sum(counts.get(p, 0) for p in parts):>18d}"
                                                         for _, parts in objects))
        if found.episode_measure:
            lines.append("episodes in which it happened (of finished episodes)")
            for method, r in runs.items():
                with_flag = r.get("episodes_with", {})
                lines.append("  " + f"{method:16s}" + "".join(
                    f"{with_flag.get(parts[0], 0):>11d} of {r.get('episodes', 0):<4d}" for _, parts in objects))
    if (run.path / "report.md").exists():
        lines.append(f"\nreport: {run.path / 'report.md'}")
    return "\n".join(lines)


def main(args: argparse.Namespace, cfg: Config) -> int:
    start = time.time()
    run_pipeline(cfg, force=getattr(args, "force", []) or [], stop_after=getattr(args, "stop_after", None))
    print()
    print(format_summary(cfg, rundir.RunDir(cfg.run_dir), time.time() - start))
    return 0
