"""Every benchmark in one process, one JSON: the throughput figures the project tracks and the projected paper run.

    python benchmarks/suite.py --profile gpu [--out FILE] [--only env,vlm] [--vlm-path DIR]
    python benchmarks/suite.py --profile cpu      # the same at small sizes, <= 3 min on a 2-core CPU
    python benchmarks/suite.py --profile smoke    # each script's smoke sizes: the suite's plumbing in seconds (CI)

Benchmarks (`--only` picks some, comma-separated), each the `measure` function of its script beside this one:
  env      Robodesk env steps/s with and without images (env_throughput.py)
  vlm      LLaVA and Qwen3-VL pair scoring, pairs/s with both orders, per vision-tower size (vlm_throughput.py)
  reward   Motif reward-model training pairs/s and scoring images/s (reward_throughput.py)
  train    DreamerV3 train step and collection, per precision (train_throughput.py)
  explore  SENSEI exploration steps/s at the train ratio, per env count (explore_throughput.py)
Sizes per profile are in PROFILES below; the gpu profile's are the project's GPU targets: the env at 1,024 and 4,096
worlds (64x64 images on and off), a LLaVA-1.5-7B-shaped model (random bf16 weights, no download; `--vlm-path` times a
local llava-hf checkpoint instead at its own image size) at 224 and 336 px, the reward model at 224, DreamerV3 medium
in float32 and bfloat16, SENSEI on Robodesk (configs/robodesk_sensei.yaml) at 4, 16 and 64 envs.

One progress line per benchmark goes to stderr; the JSON (hardware, per-benchmark results with compile times apart
from the rates, wall times, the budget check, the projected paper run) goes to stdout and to `--out`. The budget is
the profile's wall-time limit (gpu 8 min, cpu 3 min, compilation included); running over it is reported, not fatal. A
benchmark that fails is recorded with its error and the suite exits 1 after writing the JSON.

The projected paper run is SENSEI's Robodesk exploration: 250K env steps at train ratio 512 with batches of 16 x 64,
i.e. 125K updates. Its wall time is the collection at the measured explore collect rate (at the paper's env count,
env.num_envs of the config, or the nearest measured) plus 125K medium DreamerV3 train steps at the measured step
time (per precision), and, as a cross-check that includes SENSEI's own heads and ensemble, the same with the SENSEI
agent's train step from the explore benchmark. Train steps measured on a smaller batch are scaled by the replayed
steps they cover (the cpu and smoke profiles: a plumbing check, not a forecast).

The gpu profile refuses to run on a machine without a GPU (4,096 Robodesk worlds would take hours on a CPU) unless
`--allow-cpu` is given.

`--compile-only` runs nothing: it compiles the profile's programs from abstract shapes on whatever backend is here
(a CPU is enough) and prints XLA's memory analysis of each against the device memory (`--limit-gib`, default 80)
with `--headroom` (default 0.1), one JSON, exit 1 when a program fails to compile or does not fit
(gpu_shapes.py; `--profile gpu` its real shapes in 2-3 min on 2 CPU cores, `--profile smoke` tiny ones;
`--only` picks benchmarks as above).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # the scripts beside this one, imported by name as they import `common`
    sys.path.insert(0, str(HERE))

import common  # noqa: E402
from sensei_jax.hardware import memory_settings  # noqa: E402

BENCHMARKS = ("env", "vlm", "reward", "train", "explore")
GPU_MEM_FRACTION = "0.6"  # of the GPU for XLA's pool in the gpu profile; the rest for Warp
PAPER = {"env_steps": 250_000, "train_ratio": 512, "batch_size": 16, "batch_length": 64, "goal_h": 1.0}

PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {
        "budget_s": 480,
        "env": {"num_envs": [1024, 4096], "steps": 20, "image_size": 64},
        "vlm": {"model": "7b", "image_sizes": [224, 336], "dtype": "bfloat16", "batch": 8, "iters": 3,
                # the second family beside LLaVA: Qwen3-VL 4B and 8B (random bf16 weights) at 256 px
                "families": [{"family": "qwen3_vl", "model": "4b", "image_sizes": [256]},
                             {"family": "qwen3_vl", "model": "8b", "image_sizes": [256]}]},
        "reward": {"sizes": [224], "steps": 20, "batch": 32, "infer_batch": 256},
        "train": {"preset": "medium", "precisions": ["float32", "bfloat16"], "env": "point_reach", "image_size": 64,
                  "batch_size": 16, "batch_length": 64, "num_envs": 16, "collect_steps": 8, "collect_calls": 3,
                  "train_steps": 10},
        "explore": {"env": "robodesk", "config": "configs/robodesk_sensei.yaml", "num_envs": [4, 16, 64],
                    "collect_calls": 2, "train_steps": 5},
    },
    "cpu": {
        "budget_s": 180,
        "env": {"num_envs": [4, 16], "steps": 4, "image_size": 64},
        "vlm": {"model": "tiny", "image_sizes": [32, 48], "dtype": "float32", "batch": 4, "iters": 3,
                "families": [{"family": "qwen3_vl", "model": "tiny", "image_sizes": [64]}]},
        "reward": {"sizes": [224], "steps": 3, "batch": 8, "infer_batch": 32},
        "train": {"preset": "tiny", "precisions": ["float32", "bfloat16"], "env": "point_reach", "image_size": 32,
                  "batch_size": 4, "batch_length": 16, "num_envs": 4, "collect_steps": 8, "collect_calls": 2,
                  "train_steps": 3},
        "explore": {"env": "toy", "num_envs": [2, 4, 8], "collect_calls": 2, "train_steps": 3},
    },
}


def _smoke_profile() -> dict[str, Any]:
    """Each script's own --smoke sizes (so the suite's smoke and the scripts' smoke compile the same programs)."""
    import env_throughput
    import explore_throughput
    import reward_throughput
    import train_throughput
    import vlm_throughput

    t = train_throughput.SMOKE
    return {
        "budget_s": 180,
        "env": env_throughput.SMOKE,
        "vlm": vlm_throughput.SMOKE,
        "reward": reward_throughput.SMOKE,
        "train": {"preset": t["presets"][0], "precisions": ["float32"], "env": "point_reach",
                  **{k: v for k, v in t.items() if k != "presets"}},
        "explore": {**explore_throughput.SMOKE, "smoke": True},
    }


# -- one runner per benchmark: sizes in, a list of result dicts out ----------------------------------------------

def run_env(sizes: dict, args) -> list[dict]:
    import env_throughput

    return [env_throughput.measure(n, images, sizes["steps"], sizes["image_size"])
            for n in sizes["num_envs"] for images in (False, True)]


def run_vlm(sizes: dict, args) -> list[dict]:
    import vlm_throughput

    results = vlm_throughput.measure_sizes(sizes["model"], sizes["image_sizes"], sizes["dtype"], sizes["batch"],
                                           sizes["iters"], timed=True, vlm_path=args.vlm_path)
    if not args.vlm_path:  # a given checkpoint is the one family timed
        for other in sizes.get("families", []):
            results += vlm_throughput.measure_sizes(other["model"], other["image_sizes"], sizes["dtype"],
                                                    sizes["batch"], sizes["iters"], timed=True, family=other["family"])
    return results


def run_reward(sizes: dict, args) -> list[dict]:
    import reward_throughput

    return [reward_throughput.measure(s, sizes["steps"], sizes["batch"], sizes["infer_batch"]) for s in sizes["sizes"]]


def run_train(sizes: dict, args) -> list[dict]:
    import train_throughput

    keys = ("env", "batch_size", "batch_length", "num_envs", "collect_steps", "collect_calls", "train_steps",
            "image_size")
    return [train_throughput.measure(sizes["preset"], precision=p, **{k: sizes[k] for k in keys})
            for p in sizes["precisions"]]


def run_explore(sizes: dict, args) -> list[dict]:
    import explore_throughput

    config = str(REPO / sizes["config"]) if "config" in sizes else None
    setup, _, _ = explore_throughput.SETUPS[sizes["env"]](config, sizes.get("smoke", False))
    return explore_throughput.measure_counts(setup, sizes["num_envs"], "sensei", sizes["collect_calls"],
                                             sizes["train_steps"])


RUNNERS: dict[str, Callable[[dict, Any], list[dict]]] = {
    "env": run_env, "vlm": run_vlm, "reward": run_reward, "train": run_train, "explore": run_explore}


def compile_seconds(results: list[dict]) -> float:
    """Sum of the compile times the results report (every key that ends in 'compile_s')."""
    return sum(v for r in results for k, v in r.items() if k.endswith("compile_s") and isinstance(v, (int, float)))


# -- the projection ---------------------------------------------------------------------------------------------

def project_paper_run(benchmarks: dict[str, dict], paper_envs: int) -> dict[str, Any]:
    """Wall time of SENSEI's Robodesk run (PAPER) from the measured explore collect rate and train step times."""
    updates = PAPER["env_steps"] * PAPER["train_ratio"] / (PAPER["batch_size"] * PAPER["batch_length"])
    out: dict[str, Any] = {**PAPER, "updates": updates}
    explore = [r for r in benchmarks.get("explore", {}).get("results", []) if "collect_steps_per_s" in r]
    train = [r for r in benchmarks.get("train", {}).get("results", []) if "train_step_s" in r]
    missing = [name for name, rows in (("explore", explore), ("train", train)) if not rows]
    if missing:
        out["missing"] = f"not projected: no measured {' and '.join(missing)} results (run them, not --only)"
        return out
    nearest = min(explore, key=lambda r: (abs(r["num_envs"] - paper_envs), r["num_envs"]))
    collect_s = PAPER["env_steps"] / nearest["collect_steps_per_s"]
    out.update(num_envs=nearest["num_envs"], paper_num_envs=paper_envs, collect_h=collect_s / 3600)
    out["train_h"], out["total_h"] = {}, {}
    for row in train:
        # A train step on a smaller batch stands for proportionally fewer replayed steps.
        scale = row["batch"][0] * row["batch"][1] / (PAPER["batch_size"] * PAPER["batch_length"])
        hours = updates * row["train_step_s"] / scale / 3600
        out["train_h"][row["precision"]] = hours
        out["total_h"][row["precision"]] = out["collect_h"] + hours
    out["train_basis"] = {"preset": train[0]["preset"], "batch": train[0]["batch"]}
    # The same with the SENSEI agent's own train step (world model, semantic and task heads, ensemble, critics).
    scale = nearest["batch"][0] * nearest["batch"][1] / (PAPER["batch_size"] * PAPER["batch_length"])
    out["sensei_agent_h"] = out["collect_h"] + updates * nearest["train_step_s"] / scale / 3600
    out["sensei_agent_basis"] = {"preset": nearest["dreamer_preset"], "compute_dtype": nearest["compute_dtype"],
                                 "batch": nearest["batch"]}
    return out


# -- the command ------------------------------------------------------------------------------------------------

def check_device(profile: str, names: list[str], allow_cpu: bool) -> str | None:
    """Why the gpu profile must not run here (None: it may)."""
    if profile != "gpu" or allow_cpu:
        return None
    import jax

    from sensei_jax.hardware import warp_facts

    if jax.default_backend() == "cpu":
        return ("suite.py --profile gpu: JAX has no GPU here (backend 'cpu'); its sizes (4,096 Robodesk worlds, a "
                "7B model) would take hours on a CPU. Install the CUDA build (bash scripts/setup.sh gpu), use "
                "--profile cpu, or pass --allow-cpu to run the gpu sizes anyway.")
    if {"env", "explore"} & set(names) and not warp_facts()["cuda_device_count"]:
        return ("suite.py --profile gpu: JAX has a GPU but Warp finds no CUDA device, so Robodesk (MJX-Warp) would "
                "not run on it; see `python -m sensei_jax.run doctor`, or leave env,explore out with --only.")
    return None


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(BENCHMARKS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise SystemExit(f"suite.py: --only {text!r}: unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]


def compile_only(args, names: list[str]) -> int:
    """`--compile-only`: gpu_shapes.py's check of the profile's programs in the benchmarks `names`."""
    import gpu_shapes

    if args.profile == "cpu":
        raise SystemExit("suite.py --compile-only: for --profile gpu (its real shapes) or smoke; the cpu profile's "
                         "programs simply run")
    smoke = args.profile == "smoke"
    groups = [n for n in names if n in gpu_shapes.GROUPS]
    programs = gpu_shapes.select(",".join(groups), smoke) if groups else []
    report = gpu_shapes.check(programs, args.limit_gib, args.headroom, smoke=smoke,
                              log=lambda line: print(line, file=sys.stderr, flush=True))
    report.update(profile=args.profile, only=names,
                  not_covered=[n for n in names if n not in gpu_shapes.GROUPS])
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return gpu_shapes.exit_code(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("gpu", "cpu", "smoke"), required=True)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--vlm-path", help="a local llava-hf checkpoint: time its weights instead of random ones")
    parser.add_argument("--allow-cpu", action="store_true", help="run the gpu profile on a machine without a GPU")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile the profile's programs from abstract shapes and check their memory, run nothing")
    parser.add_argument("--limit-gib", "--limit-gb", dest="limit_gib", type=float, default=80.0,
                        help="with --compile-only: device memory in GiB to fit in (default 80)")
    parser.add_argument("--headroom", type=float, default=0.1,
                        help="with --compile-only: fraction added to each program's memory before comparing")
    args = parser.parse_args(argv)
    names = parse_only(args.only)
    if args.compile_only:
        return compile_only(args, names)
    if args.vlm_path and not (Path(args.vlm_path) / "config.json").is_file():
        raise SystemExit(f"suite.py: --vlm-path {args.vlm_path}: no config.json there (a llava-hf checkpoint "
                         "directory with config.json and safetensors)")
    if args.profile == "gpu":
        # Before JAX starts: XLA would preallocate 75% of the GPU, and Warp's render context, BVH and contact
        # buffers for 4,096 worlds live outside XLA's pool (docs/scaling.md). A value already set wins.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEM_FRACTION)
    refusal = check_device(args.profile, names, args.allow_cpu)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    sizes = _smoke_profile() if args.profile == "smoke" else PROFILES[args.profile]
    budget = sizes["budget_s"]

    start = time.perf_counter()
    benchmarks: dict[str, dict] = {}
    failed = False
    for i, name in enumerate(names, 1):
        begin = time.perf_counter()
        try:
            results = RUNNERS[name](sizes[name], args)
            entry = {"sizes": sizes[name], "results": results, "compile_s": compile_seconds(results)}
        except Exception as error:  # noqa: BLE001 - one failing benchmark must not lose the others' figures
            failed = True
            entry = {"sizes": sizes[name], "error": f"{type(error).__name__}: {error}"}
        entry["wall_s"] = time.perf_counter() - begin
        benchmarks[name] = entry
        elapsed = time.perf_counter() - start
        status = entry.get("error") or f"{len(entry['results'])} result(s), compile {entry['compile_s']:.1f} s"
        over = "  OVER BUDGET" if elapsed > budget else ""
        print(f"[suite {args.profile}] {i}/{len(names)} {name}: {entry['wall_s']:.1f} s ({status}); "
              f"{elapsed:.0f} of {budget} s budget{over}", file=sys.stderr, flush=True)

    wall = time.perf_counter() - start
    paper_envs = 4
    if args.profile == "gpu":
        from sensei_jax import config as config_lib

        paper_envs = config_lib.load(str(REPO / sizes["explore"]["config"])).env.num_envs
    out = common.report("suite", benchmarks, smoke=args.profile == "smoke", profile=args.profile, only=names,
                        memory_settings=memory_settings(), wall_s=wall,
                        budget={"limit_s": budget, "wall_s": wall, "ok": wall <= budget},
                        projected_paper_run=project_paper_run(benchmarks, paper_envs))
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
