"""SENSEI against Plan2Explore on MiniHack over seeds: runs the pipeline once per seed and prints the counts as JSON.

    python benchmarks/minihack_seeds.py [--config configs/minihack_default.yaml] [--seeds 0 1 2 3]
                                        [--root runs/minihack_seeds] [--no-run] [--section.key VALUE ...]
    python benchmarks/minihack_seeds.py --smoke   # one seed of configs/minihack_micro.yaml in a temporary folder (CI)

Each seed is `python -m sensei_jax.run --config CONFIG --run.root ROOT --run.name seed<N> --run.seed N` (a finished
run is skipped, an interrupted one resumes); `--no-run` only reads the run folders. Per seed and method (sensei, p2x,
and the random collection policy) it reports the finished episodes and in how many of them each flag held at least
once (the key picked up, the door open, at the locked door, ...), and over the seeds: the summed counts, each
method's rate per seed, its mean and standard deviation, and in how many seeds SENSEI's rate beats Plan2Explore's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common

ROOT = Path(__file__).resolve().parents[1]
# --smoke runs the micro config of tests/test_pipeline_minihack.py: the same programs, compiled once for both.
SMOKE_CONFIG = "configs/minihack_micro.yaml"


def run_seed(config: str, root: Path, seed: int, overrides: list[str]) -> float:
    """Runs (or finishes) the pipeline of one seed; returns its wall seconds."""
    begin = time.perf_counter()
    command = [sys.executable, "-m", "sensei_jax.run", "--config", config, "--run.root", str(root),
               "--run.name", f"seed{seed}", "--run.seed", str(seed), *overrides]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"seed {seed} failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - begin


def read_seed(run_dir: Path) -> dict:
    path = run_dir / "evaluate" / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the pipeline for {run_dir} first (drop --no-run)")
    runs = json.loads(path.read_text())["runs"]
    return {method: {"steps": r["steps"], "episodes": r.get("episodes", 0), "episodes_with": r.get("episodes_with", {})}
            for method, r in runs.items()}


def aggregate(per_seed: dict[int, dict]) -> dict:
    """Summed counts, per-seed rates with mean and std, and SENSEI-beats-P2X seed counts, per method and flag."""
    methods = list(next(iter(per_seed.values())))
    flags = list(next(iter(per_seed.values()))[methods[0]]["episodes_with"])
    out = {}
    for method in methods:
        rows = [seed[method] for seed in per_seed.values() if method in seed]
        episodes = sum(r["episodes"] for r in rows)
        rates = {flag: [r["episodes_with"].get(flag, 0) / max(r["episodes"], 1) for r in rows] for flag in flags}
        out[method] = {"episodes": episodes,
                       "episodes_with": {f: sum(r["episodes_with"].get(f, 0) for r in rows) for f in flags},
                       "rate_per_seed": rates, "rate_mean": {f: float(np.mean(v)) for f, v in rates.items()},
                       "rate_std": {f: float(np.std(v)) for f, v in rates.items()}}
    if "sensei" in out and "p2x" in out:
        out["sensei_above_p2x_seeds"] = {
            f: int(sum(a > b for a, b in zip(out["sensei"]["rate_per_seed"][f], out["p2x"]["rate_per_seed"][f])))
            for f in flags}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/minihack_default.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--root", default="runs/minihack_seeds")
    parser.add_argument("--no-run", action="store_true", help="only read the run folders")
    common.add_smoke(parser)
    args, overrides = parser.parse_known_args(argv)
    scratch = None
    if args.smoke:
        scratch = tempfile.TemporaryDirectory()
        args.config, args.seeds, args.root = SMOKE_CONFIG, [0], scratch.name
    root = Path(args.root)
    wall = {}
    try:
        for seed in args.seeds:
            if not args.no_run:
                wall[seed] = run_seed(args.config, root, seed, overrides)
        per_seed = {seed: read_seed(root / f"seed{seed}") for seed in args.seeds}
    finally:
        if scratch is not None:
            scratch.cleanup()
    common.emit(common.report("minihack_seeds", {"per_seed": per_seed, "over_seeds": aggregate(per_seed)},
                              smoke=args.smoke, config=args.config, seeds=args.seeds, overrides=overrides,
                              wall_s=wall))


if __name__ == "__main__":
    main()
