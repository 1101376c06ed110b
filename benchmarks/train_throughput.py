"""Throughput of the DreamerV3 loop: compiled train steps per second and env steps per second of collection.

    python benchmarks/train_throughput.py                      # tiny and medium, 64x64 images, batch 16 x 64
    python benchmarks/train_throughput.py --presets tiny --train-steps 50 --env robodesk
    python benchmarks/train_throughput.py --smoke   # tiny preset, 16x16 images, batch 2 x 8: that it runs (CI)

The agent sees 64x64x3 images (as on Robodesk). `--env point_reach` (default) uses the pure-JAX toy env, whose
stepping is nearly free, so collection measures the batched policy plus the replay write; `--env robodesk` adds
MJX physics and Warp rendering. A train step is one replay sample plus one world-model + actor-critic update on
batch_size x batch_length steps, timed through the Trainer's public `collect` and `train_step` (the calls its `run`
makes). From the two rates it projects the wall time of SENSEI's run (250K env steps, train_ratio 512, batch
16 x 64: 125K updates), `projected_sensei_run_h`.

The reference `dreamerv3` package (PyPI 1.5.0) is not measured: it pins gym==0.19.0, whose setup metadata current
pip/setuptools reject ("'extras_require' must be a dictionary ..."), and needs tensorflow-cpu, tensorflow_probability
and a 2023 jax, which cannot live beside this project's jax; see the "skipped" entry of the JSON.
Prints one JSON object with the hardware.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax

import common
from sensei_jax.dreamer.agent import Agent, count_params
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.loop import Trainer, obs_space
from sensei_jax.dreamer.train_config import TrainConfig

SENSEI_ENV_STEPS, SENSEI_RATIO, SENSEI_BATCH = 250_000, 512, 16 * 64
SMOKE = {"presets": ["tiny"], "image_size": 16, "batch_size": 2, "batch_length": 8, "num_envs": 2,
         "collect_steps": 4, "collect_calls": 1, "train_steps": 1}
SKIPPED = {"reference_dreamerv3": "PyPI dreamerv3 1.5.0 pins gym==0.19.0, which fails to build with current "
           "pip/setuptools (invalid extras_require), and needs tensorflow-cpu + tensorflow_probability + a 2023 jax "
           "that cannot coexist with jax 0.10"}


def sensei_updates() -> float:
    """Train steps of SENSEI's run: 250K env steps x train_ratio 512 / (16 x 64) replayed steps per update."""
    return SENSEI_ENV_STEPS * SENSEI_RATIO / SENSEI_BATCH


def make_env(name: str, image_size: int = 64):
    if name == "point_reach":
        from sensei_jax.envs.toy import PointReach

        return PointReach(image_size=image_size)
    from sensei_jax.envs.robodesk import Robodesk

    return Robodesk(task="open_drawer", image_size=image_size, action_repeat=2, episode_length=500, auto_reset=False)


def measure(preset: str = "medium", env: str = "point_reach", precision: str = "float32", batch_size: int = 16,
            batch_length: int = 64, num_envs: int = 16, collect_steps: int = 8, collect_calls: int = 5,
            train_steps: int = 10, image_size: int = 64) -> dict:
    """One DreamerV3 preset on `env` ({image_size}^2 images): collection env steps/s over `collect_calls` calls
    of `collect_steps` x `num_envs` steps, then seconds per train step over `train_steps` updates of
    batch_size x batch_length; compile times apart. Returns a dict (see the module docstring)."""
    env_ = make_env(env, image_size)
    dreamer = DreamerConfig(preset=preset, compute_dtype=precision)
    agent = Agent(dreamer, obs_space(env_, ("image",)), env_.action_size)
    cfg = TrainConfig(env=env, steps=10**9, num_envs=num_envs, train_ratio=SENSEI_RATIO,
                      batch_size=batch_size, batch_length=batch_length,
                      replay_capacity=num_envs * (batch_length + 1) * 4, train_start=0,
                      collect_steps=collect_steps, obs_keys=("image",), progress=False)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = Trainer(cfg, agent, env_, logdir)
        state = trainer.initial_state()
        result = {"preset": preset, "params": count_params(state["agent"]["params"]),
                  "batch": [cfg.batch_size, cfg.batch_length], "num_envs": cfg.num_envs, "env": env,
                  "image_size": image_size, "precision": precision}

        def collect():
            state["loop"], state["replay"], outputs = trainer.collect(state["agent"], state["loop"], state["replay"])
            jax.block_until_ready(outputs)

        result["collect_compile_s"] = common.seconds(collect)
        while int(state["replay"].filled) < cfg.sequence_length:  # enough steps for one window per stream
            collect()
        begin = time.perf_counter()
        for _ in range(collect_calls):
            collect()
        elapsed = time.perf_counter() - begin
        result["env_steps_per_s"] = collect_calls * cfg.collect_steps * cfg.num_envs / elapsed

        result["train_compile_s"], seconds = common.time_train_steps(trainer, state, train_steps)
        result["train_step_s"] = seconds
        result["train_steps_per_s"] = 1.0 / seconds
        result["replayed_steps_per_s"] = cfg.batch_size * cfg.batch_length / seconds
        # Train steps scale with the replayed steps they cover: a smaller batch stands for proportionally more.
        scale = (cfg.batch_size * cfg.batch_length) / SENSEI_BATCH
        result["projected_sensei_run_h"] = (sensei_updates() * seconds / scale
                                            + SENSEI_ENV_STEPS / result["env_steps_per_s"]) / 3600
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,medium")
    parser.add_argument("--env", choices=("point_reach", "robodesk"), default="point_reach")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-length", type=int, default=64)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--collect-steps", type=int, default=8)
    parser.add_argument("--collect-calls", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    sizes = {k: getattr(args, k) for k in ("image_size", "batch_size", "batch_length", "num_envs", "collect_steps",
                                           "collect_calls", "train_steps")}
    if args.smoke:
        presets = SMOKE["presets"]
        sizes = {k: v for k, v in SMOKE.items() if k != "presets"}
    results = [measure(p, args.env, args.precision, **sizes) for p in presets]
    common.emit(common.report("dreamer_train_throughput", results, smoke=args.smoke, skipped=SKIPPED))


if __name__ == "__main__":
    main()
