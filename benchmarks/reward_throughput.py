"""Reward-model throughput: Bradley-Terry training pairs/s and inference images/s, printed as JSON.

    python benchmarks/reward_throughput.py [--sizes 64 224] [--steps 20] [--batch 32] [--infer-batch 256]
    python benchmarks/reward_throughput.py --smoke   # 64x64, 2 steps of 4 pairs: that it runs (CI)

For each input resolution (64: the agent's, 224: SENSEI's) it times, after compiling once:
  train_pairs_per_s          the jitted train step on batches already in memory (compute only)
  train_pairs_per_s_disk     the same step fed by the memory-mapped PairDataset iterator (disk + compute)
  infer_images_per_s         RewardModel.reward on `--infer-batch` images at the model's resolution
  infer_images_per_s_resize  the same on 224x224 images resized inside the model (64 only)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import common
from sensei_jax.reward.config import RewardConfig
from sensei_jax.reward.dataset import PairDataset, iterate_batches
from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params
from sensei_jax.reward.train import make_steps

SMOKE = {"sizes": [64], "steps": 2, "batch": 4, "infer_batch": 8}


def timed(fn, repeats: int) -> float:
    """Seconds per call of `fn` (which must block until done), after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(size: int, steps: int = 20, batch: int = 32, infer_batch: int = 256, workdir: Path | None = None) -> dict:
    """Training and scoring of the reward model at `size` px (see the module docstring); the disk dataset goes to
    `workdir` (default: a temporary directory)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="reward_bench_") as tmp:
            return measure(size, steps, batch, infer_batch, Path(tmp))
    cfg = RewardConfig(image_size=size, batch_size=batch)
    model_cfg = RewardModelConfig.from_config(cfg)
    optimizer, train_step, _ = make_steps(model_cfg, cfg.learning_rate, cfg.weight_decay)
    params = init_params(model_cfg, 0)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(batch, 2, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=batch).astype(np.int8)
    mask = np.ones(batch, bool)
    state = {"params": params, "opt_state": opt_state}

    def one_step():
        state["params"], state["opt_state"], sums = train_step(state["params"], state["opt_state"], images, labels,
                                                               mask)
        jax.block_until_ready(sums)

    start = time.perf_counter()
    one_step()
    compile_s = time.perf_counter() - start
    step_s = timed(one_step, steps)

    # Disk: a dataset of steps * batch pairs on disk, read through the prefetching iterator.
    num_pairs = steps * batch
    dataset = PairDataset.create(workdir / f"pairs_{size}", num_pairs, image_shape=(size, size, 3))
    for start_row in range(0, num_pairs, batch):
        dataset.images[start_row:start_row + batch] = images
    dataset.flush()
    dataset = PairDataset.open(workdir / f"pairs_{size}")
    all_labels = np.resize(labels, num_pairs)
    start = time.perf_counter()
    for item in iterate_batches(dataset, np.arange(num_pairs), all_labels, batch, rng=np.random.default_rng(1)):
        state["params"], state["opt_state"], sums = train_step(state["params"], state["opt_state"], item.images,
                                                               item.labels, item.mask)
    jax.block_until_ready(sums)
    disk_s = time.perf_counter() - start

    model = RewardModel(model_cfg, state["params"])
    score = jax.jit(lambda m, x: m.reward(x))
    frames = rng.integers(0, 256, size=(infer_batch, size, size, 3), dtype=np.uint8)
    infer_compile_s = common.seconds(lambda: jax.block_until_ready(score(model, frames)))
    infer_s = timed(lambda: jax.block_until_ready(score(model, frames)), max(3, steps // 4))
    result = {
        "image_size": size, "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
        "train_batch": batch, "train_compile_s": round(compile_s, 2), "infer_compile_s": round(infer_compile_s, 2),
        "train_pairs_per_s": round(batch / step_s, 1),
        "train_pairs_per_s_disk": round(num_pairs / disk_s, 1),
        "infer_batch": infer_batch, "infer_images_per_s": round(infer_batch / infer_s, 1),
    }
    if size != 224:
        big = rng.integers(0, 256, size=(infer_batch, 224, 224, 3), dtype=np.uint8)
        resize_s = timed(lambda: jax.block_until_ready(score(model, big)), max(3, steps // 4))
        result["infer_images_per_s_resize_from_224"] = round(infer_batch / resize_s, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--infer-batch", type=int, default=256)
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.steps, args.batch, args.infer_batch = (SMOKE[k] for k in ("sizes", "steps", "batch",
                                                                                    "infer_batch"))
    results = [measure(size, args.steps, args.batch, args.infer_batch) for size in args.sizes]
    common.emit(common.report("reward_throughput", results, smoke=args.smoke))


if __name__ == "__main__":
    main()
