"""SENSEI's effect over seeds: SENSEI, the disagreement-only baseline and random actions, per seed, on any domain.

    python benchmarks/sensei_effect.py --config configs/default.yaml --seeds 0 1 2 3 [--root DIR] [--section.key V ...]
    python benchmarks/sensei_effect.py --toy --seeds 0 1 2 3 4 5 6 7 [--steps 4096] [--root DIR]
    python benchmarks/sensei_effect.py --smoke     # CI: the toy (2 seeds, 384 steps) and configs/minihack_micro.yaml

A pipeline config (Robodesk or MiniHack) runs `python -m sensei_jax.run --config FILE --run.name seed<N> --run.seed N`
once per seed, each in its own run folder under --root: a finished run is read back, an interrupted one resumes. The
methods are its `explore` (SENSEI), `baseline` (Plan2Explore) and the random collection policy. `--toy` runs the toy
domain in this process: `CornerReach` (sensei_jax.envs.toy), a Motif reward model distilled from oracle labels that
prefer the agent nearer the top-right corner, then SENSEI, the same agent with semantic weight 0 (disagreement only)
and uniform random actions, each for --steps policy steps; its extra ablation `semantic` (semantic reward in both
modes) is added with `--methods`.

Per seed and method it counts each target feature of the domain: Robodesk's and the toy's share of steps with the
flag (the paper's interaction counts divided by the steps), MiniHack's share of finished episodes in which it held at
least once. Over the seeds, per method and feature: the mean with a 95% bootstrap interval over seeds; SENSEI against
each other method: the per-seed differences, an exact one-sided paired sign-flip permutation test (H0: no difference;
p = share of the 2^n sign assignments whose mean difference is at least the observed one), and `sensei_beats_p2x` /
`sensei_beats_random` (seeds where SENSEI's count is higher). One JSON is printed, and <root>/sensei_effect.png
draws per-seed points with the means and intervals.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import common

ROOT = Path(__file__).resolve().parents[1]
TOY_FEATURE = "corner"
SMOKE_CONFIG = "configs/minihack_micro.yaml"


# ---------------------------------------------------------------------------------------------------------------
# Statistics over seeds.


def bootstrap_interval(values: list[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (seeds resampled with replacement)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired_permutation_p(differences: list[float]) -> float:
    """Exact one-sided p-value of a paired sign-flip test that the mean difference is > 0 (all 2^n sign
    assignments; n is the number of seeds, a handful)."""
    d = np.asarray(differences, np.float64)
    if len(d) == 0:
        return 1.0
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = (signs * np.abs(d)).mean(1)
    return float(np.mean(means >= d.mean() - 1e-12))


def compare(per_seed: dict[int, dict[str, dict[str, float]]], reference: str = "sensei") -> dict[str, Any]:
    """per_seed {seed: {method: {feature: value}}} -> per method and feature the values, mean and interval, and the
    reference method against each other: differences, p-value and the seeds where it is higher."""
    seeds = sorted(per_seed)
    methods = list(per_seed[seeds[0]])
    features = list(per_seed[seeds[0]][methods[0]])
    summary: dict[str, Any] = {"methods": {}, "versus": {}}
    for method in methods:
        summary["methods"][method] = {}
        for feature in features:
            values = [per_seed[s][method][feature] for s in seeds]
            low, high = bootstrap_interval(values)
            summary["methods"][method][feature] = {"per_seed": values, "mean": float(np.mean(values)),
                                                   "ci95": [low, high]}
    for other in (m for m in methods if m != reference):
        summary["versus"][other] = {}
        for feature in features:
            ours = np.array([per_seed[s][reference][feature] for s in seeds])
            theirs = np.array([per_seed[s][other][feature] for s in seeds])
            diff = ours - theirs
            summary["versus"][other][feature] = {
                "differences": diff.tolist(), "mean_difference": float(diff.mean()),
                "ci95": list(bootstrap_interval(diff.tolist())), "p_one_sided": paired_permutation_p(diff.tolist()),
                "seeds_higher": int((diff > 0).sum()), "seeds": len(seeds)}
    for other, key in (("p2x", "sensei_beats_p2x"), ("random", "sensei_beats_random")):
        if other in summary["versus"]:
            summary[key] = {f: v["seeds_higher"] for f, v in summary["versus"][other].items()}
    return summary


def plot(per_seed: dict[int, dict[str, dict[str, float]]], summary: dict[str, Any], path: Path, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary["methods"])
    features = list(summary["methods"][methods[0]])
    fig, axes = plt.subplots(1, len(features), figsize=(max(4.2, 1.2 * len(methods)) * len(features), 3.6),
                             squeeze=False)
    rng = np.random.default_rng(0)
    for ax, feature in zip(axes[0], features):
        for i, method in enumerate(methods):
            row = summary["methods"][method][feature]
            jitter = rng.uniform(-0.12, 0.12, len(row["per_seed"]))
            ax.scatter(i + jitter, row["per_seed"], s=14, alpha=0.6, color=f"C{i}")
            low, high = row["ci95"]
            ax.errorbar(i + 0.28, row["mean"], yerr=[[row["mean"] - low], [high - row["mean"]]], fmt="o",
                        color="black", capsize=3, markersize=4)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_title(feature, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{len(per_seed)} seeds: each seed (dots), the mean with its 95% bootstrap interval (bars)",
                 fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The toy domain, in this process.

# The exploration settings of the toy domain (tiny agent, 4 worlds, 32-step episodes); steps is set per run.
TOY_EXPLORE = dict(ensemble_size=4, ensemble_units=32, ensemble_layers=1, task_heads=("reach",))
# Its loop schedule (the train section's keys); the log and save intervals are set per run.
TOY_SCHEDULE = dict(batch_size=8, batch_length=16, train_ratio=64.0, replay_capacity=16384, train_start=256,
                    random_steps=256, collect_steps=32)
TOY_METHODS = {  # method -> ExploreConfig keys over TOY_EXPLORE; None: random actions
    "sensei": {},
    # SENSEI's agent and program with semantic weight 0 in both modes: disagreement only, as behaviour p2x.
    "p2x": {"weights": {mode: {"semantic": 0.0, "disagreement": 1.0} for mode in ("go", "explore")}},
    # ablation: semantic in both modes
    "semantic": {"weights": {mode: {"semantic": 1.0, "disagreement": 0.0} for mode in ("go", "explore")}},
    "sensei_next": {"mode_reward": "next"},  # ablation: the switch compares r_{t+1} (docs/exploration.md)
    "random": None,
}


def toy_env():
    from sensei_jax.envs.toy import CornerReach

    return CornerReach(image_size=16, episode_length=32, random_target=False, fixed_target=(-0.5, -0.5))


def toy_pairs(num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions [N, 2, 2] of frame pairs over the whole reachable square, walls included (the env clips the
    position to [-1, 1], so a wall is where much of a random walk sits), and their oracle labels: the frame
    nearer the top-right corner (larger x + y) is preferred, a tie within 0.05."""
    from sensei_jax.reward.labels import Label

    rng = np.random.default_rng(seed)
    positions = np.clip(rng.uniform(-1.15, 1.15, (num_pairs, 2, 2)), -1.0, 1.0).astype(np.float32)
    score = positions.sum(-1)
    gap = score[:, 0] - score[:, 1]
    labels = np.where(np.abs(gap) < 0.05, Label.TIE, np.where(gap > 0, Label.FIRST, Label.SECOND))
    return positions, labels.astype(np.int8)


def toy_reward_model(out_dir: Path, num_pairs: int = 2048, epochs: int = 16, seed: int = 0):
    """Distils (or loads, when already trained in out_dir) the toy's Motif reward model from oracle-labelled pairs
    of 16 px CornerReach frames; returns (RewardModel, distill summary with `grid_spearman`: the rank correlation of
    its reward with the oracle's score x + y on an 11 x 11 grid of positions, walls included).

    The size matters: from 512 pairs over [-0.9, 0.9]^2 and 8 epochs (validation accuracy 0.96) the reward peaked
    at about (0.6, 0.4), off the corner region, and fell at the walls, where a clipped random walk spends much of
    its time; an agent that maximized it left the corner (docs/exploration.md). 2,048 pairs with walls, 16 epochs:
    rank correlation 0.99, highest along the top-right walls."""
    import jax
    import jax.numpy as jnp

    from sensei_jax.reward import train as reward_train
    from sensei_jax.reward.config import RewardConfig
    from sensei_jax.reward.dataset import PairDataset
    from sensei_jax.reward.model import RewardModel

    env = toy_env()
    positions, labels = toy_pairs(num_pairs, seed)
    render = jax.jit(jax.vmap(lambda p: env._render(p, env.fixed_target, env.image_size)))
    images = np.asarray(render(jnp.asarray(positions.reshape(-1, 2)))).reshape(num_pairs, 2, *(env.image_size,) * 2, 3)
    pairs_dir = out_dir / "pairs"
    if (pairs_dir / "meta.json").is_file():
        dataset = PairDataset.open(pairs_dir)
    else:
        dataset = PairDataset.create(pairs_dir, num_pairs, image_shape=images.shape[2:], state_size=2)
        dataset.images[:] = images
        dataset.states[:] = positions
        dataset.flush()
        dataset.save_preferences("oracle", labels)
    cfg = RewardConfig(image_size=64, channels=(8, 16, 16), hidden=64, epochs=epochs, batch_size=32,
                       learning_rate=1e-3)
    summary = reward_train.train(dataset, "oracle", cfg, out_dir / "distill", progress=False)
    model = RewardModel.load(out_dir / "distill")
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 11), np.linspace(-1, 1, 11)), -1).reshape(-1, 2)
    reward = np.asarray(model.reward(render(jnp.asarray(grid, jnp.float32))))
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    return model, {**summary, "grid_spearman": float(np.corrcoef(rank(grid.sum(-1)), rank(reward))[0, 1])}


def toy_explore(method: str, seed: int, out_dir: Path, steps: int, reward_model) -> dict[str, Any]:
    """One toy exploration run (resumable: the Explorer checkpoints at the end); returns its summary.json."""
    from sensei_jax import files
    from sensei_jax.dreamer.config import DreamerConfig
    from sensei_jax.dreamer.train_config import TrainConfig
    from sensei_jax.explore.config import ExploreConfig
    from sensei_jax.explore.explorer import Explorer

    if (out_dir / "summary.json").is_file():
        return files.read_json(out_dir / "summary.json")
    cfg = ExploreConfig(behaviour="sensei", steps=steps, **TOY_EXPLORE, **TOY_METHODS[method])
    train = TrainConfig(log_every=max(steps // 8, 32), save_every=steps, **TOY_SCHEDULE)
    dreamer = DreamerConfig.tiny(imag_horizon=5, encoder_keys=("position",), decoder_keys=("position",),
                                 model_lr=1e-3, actor_lr=1e-3, critic_lr=1e-3)
    explorer = Explorer(cfg, dreamer, toy_env(), num_envs=4, reward_model=reward_model, seed=seed, train=train)
    return explorer.run(out_dir, log=lambda _: None)


def toy_random(seed: int, steps: int) -> dict[str, Any]:
    """Uniform random actions in [-1, 1] on the same 4 worlds for `steps` policy steps: steps with the flag."""
    import jax
    import jax.numpy as jnp

    env = toy_env()
    num_envs = 4

    def step(state, key):
        action = jax.random.uniform(key, (num_envs, env.action_size), jnp.float32, -1.0, 1.0)
        state = env.step(state, action)
        flag = state.info["interaction_flags"][TOY_FEATURE]
        fresh = env.reset_batch(jax.random.fold_in(key, 1), num_envs)
        state = jax.tree.map(lambda f, s: jnp.where(state.done.reshape((-1,) + (1,) * (s.ndim - 1)), f, s),
                             fresh, state)
        return state, flag

    @jax.jit
    def rollout(key):
        k_reset, k_steps = jax.random.split(key)
        _, flags = jax.lax.scan(step, env.reset_batch(k_reset, num_envs),
                                jax.random.split(k_steps, steps // num_envs))
        return flags.sum()

    return {"steps": steps // num_envs * num_envs,
            "interactions": {TOY_FEATURE: int(rollout(jax.random.key(seed)))}}


def run_toy(seeds: list[int], root: Path, steps: int, methods: list[str]) -> tuple[dict, dict, dict]:
    """-> (per_seed {seed: {method: {corner: share of steps}}}, raw counts, wall seconds per run)."""
    reward_model, distill = toy_reward_model(root / "reward_model")
    per_seed, raw, wall = {}, {}, {}
    for seed in seeds:
        per_seed[seed], raw[seed] = {}, {}
        for method in methods:
            begin = time.perf_counter()
            if TOY_METHODS[method] is None:
                summary = toy_random(seed, steps)
            else:
                summary = toy_explore(method, seed, root / f"seed{seed}" / method, steps, reward_model)
            wall[f"seed{seed}/{method}"] = round(time.perf_counter() - begin, 1)
            count = summary["interactions"][TOY_FEATURE]
            raw[seed][method] = {"steps": summary["steps"], "count": count}
            per_seed[seed][method] = {TOY_FEATURE: count / summary["steps"]}
            print(f"seed {seed} {method}: {count} of {summary['steps']} steps in the corner "
                  f"({wall[f'seed{seed}/{method}']} s)", file=sys.stderr, flush=True)
    return per_seed, {"counts": raw, "reward_model": {"val_accuracy": distill.get("best_val_accuracy"),
                                                      "grid_spearman": distill["grid_spearman"]}}, wall


# ---------------------------------------------------------------------------------------------------------------
# Pipeline domains (Robodesk, MiniHack), one run folder per seed.


def run_pipeline_seed(config: str, root: Path, seed: int, overrides: list[str]) -> float:
    begin = time.perf_counter()
    command = [sys.executable, "-m", "sensei_jax.run", "--config", config, "--run.root", str(root),
               "--run.name", f"seed{seed}", "--run.seed", str(seed), *overrides]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"seed {seed} failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - begin


PIPELINE_METHODS = {"sensei": "sensei", "p2x": "p2x", "random": "random (collect)"}


def read_pipeline_seed(run_dir: Path) -> tuple[dict[str, dict[str, float]], dict[str, Any], str]:
    """-> ({method: {feature: share}}, raw counts, measure) from a seed's evaluate/summary.json. MiniHack's features
    are shares of episodes with the flag; Robodesk's shares of steps with the object moving."""
    path = run_dir / "evaluate" / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the pipeline for {run_dir} first (drop --no-run)")
    runs = json.loads(path.read_text())["runs"]
    import yaml

    from sensei_jax import domains

    domain = domains.get((yaml.safe_load((run_dir / "config.yaml").read_text()).get("run") or {})
                         .get("domain", "robodesk"))
    episodic = domain.episode_measure  # MiniHack counts episodes with the flag, the others steps
    shares, raw = {}, {}
    for method, name in PIPELINE_METHODS.items():
        if name not in runs:
            continue
        r = runs[name]
        if episodic:
            shares[method] = {k: v / max(r["episodes"], 1) for k, v in r["episodes_with"].items()}
            raw[method] = {"episodes": r["episodes"], "episodes_with": r["episodes_with"]}
        else:
            shares[method] = {k: v / max(r["steps"], 1) for k, v in r["interactions"].items()}
            raw[method] = {"steps": r["steps"], "interactions": r["interactions"]}
    return shares, raw, "share of episodes with the flag" if episodic else f"share of {domain.counted}"


# ---------------------------------------------------------------------------------------------------------------


def run_domain(toy: bool, config: str | None, seeds: list[int], root: Path, steps: int, methods: list[str],
               overrides: list[str], no_run: bool) -> dict[str, Any]:
    """Runs (or reads) one domain over seeds and compares the methods; returns the report's results."""
    if toy:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
            per_seed, raw, wall = run_toy(seeds, root, steps, methods)
        measure = "share of steps in the top-right corner"
    else:
        wall = {}
        for seed in seeds:
            if not no_run:
                wall[f"seed{seed}"] = round(run_pipeline_seed(config, root, seed, overrides), 1)
        per_seed, raw = {}, {"counts": {}}
        for seed in seeds:
            per_seed[seed], raw["counts"][seed], measure = read_pipeline_seed(root / f"seed{seed}")
    summary = compare(per_seed)
    plot(per_seed, summary, root / "sensei_effect.png", measure)
    return {"domain": "toy" if toy else Path(config).stem, "measure": measure, "per_seed": per_seed, **raw,
            **summary, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a pipeline config (Robodesk or MiniHack)")
    parser.add_argument("--toy", action="store_true", help="the toy domain (CornerReach), in this process")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--root", help="one run folder per seed under it (default runs/sensei_effect/<domain>)")
    parser.add_argument("--steps", type=int, default=4096, help="toy: policy steps per run")
    parser.add_argument("--methods", nargs="+", default=["sensei", "p2x", "random"],
                        help=f"toy: which of {list(TOY_METHODS)}")
    parser.add_argument("--no-run", action="store_true", help="pipeline: only read the run folders")
    common.add_smoke(parser)
    args, overrides = parser.parse_known_args(argv)
    if not args.smoke and bool(args.toy) == bool(args.config):
        parser.error("pass exactly one of --config FILE and --toy")
    unknown = [m for m in args.methods if m not in TOY_METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown} (known: {list(TOY_METHODS)})")
    begin = time.perf_counter()
    if args.smoke:
        # The toy domain at a few hundred steps, and the pipeline path on the MiniHack micro config of
        # tests/test_pipeline_minihack.py (the same programs, compiled once for both).
        with tempfile.TemporaryDirectory() as scratch:
            results = run_domain(True, None, [0, 1], Path(scratch) / "toy", 384, ["sensei", "p2x", "random"], [],
                                 False)
            results["pipeline_smoke"] = run_domain(False, SMOKE_CONFIG, [0], Path(scratch) / "pipeline", 0, [], [],
                                                   False)
        common.emit(common.report("sensei_effect", results, smoke=True, total_s=round(time.perf_counter() - begin, 1)))
        return 0
    domain = "toy" if args.toy else Path(args.config).stem
    root = Path(args.root or ROOT / "runs" / "sensei_effect" / domain)
    results = run_domain(args.toy, args.config, args.seeds, root, args.steps, args.methods, overrides, args.no_run)
    common.emit(common.report("sensei_effect", results, smoke=False, config=args.config, seeds=args.seeds,
                              overrides=overrides, steps=args.steps if args.toy else None,
                              total_s=round(time.perf_counter() - begin, 1), plot=str(root / "sensei_effect.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
