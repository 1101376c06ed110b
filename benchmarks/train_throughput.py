"""Throughput of the DreamerV3 loop: compiled train steps per second and env steps per second of collection.

    python benchmarks/train_throughput.py                      # tiny and medium, 64x64 images, batch 16 x 64
    python benchmarks/train_throughput.py --presets tiny --train-steps 50 --env robodesk

The agent sees 64x64x3 images (as on Robodesk). `--env point_reach` (default) uses the pure-JAX toy env, whose
stepping is nearly free, so collection measures the batched policy plus the replay write; `--env robodesk` adds
MJX physics and Warp rendering. A train step is one replay sample plus one world-model + actor-critic update on
batch_size x batch_length steps. From the two rates it projects the wall time of SENSEI's run (250K env steps,
train_ratio 512, batch 16 x 64: 125K updates).

The reference `dreamerv3` package (PyPI 1.5.0) is not measured: it pins gym==0.19.0, whose setup metadata current
pip/setuptools reject ("'extras_require' must be a dictionary ..."), and needs tensorflow-cpu, tensorflow_probability
and a 2023 jax, which cannot live beside this project's jax; see the "skipped" entry of the JSON.
Prints one JSON object with the hardware.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import numpy as np

from sensei_jax.dreamer.agent import Agent, count_params
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.loop import Trainer, obs_space
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.hardware import describe as describe_hardware

SENSEI_ENV_STEPS, SENSEI_RATIO, SENSEI_BATCH = 250_000, 512, 16 * 64


def make_env(name: str):
    if name == "point_reach":
        from sensei_jax.envs.toy import PointReach

        return PointReach(image_size=64)
    from sensei_jax.envs.robodesk import Robodesk

    return Robodesk(task="open_drawer", image_size=64, action_repeat=2, episode_length=500, auto_reset=False)


def measure(preset: str, args) -> dict:
    env = make_env(args.env)
    dreamer = DreamerConfig(preset=preset, compute_dtype=args.precision)
    agent = Agent(dreamer, obs_space(env, ("image",)), env.action_size)
    cfg = TrainConfig(env=args.env, steps=10**9, num_envs=args.num_envs, train_ratio=SENSEI_RATIO,
                      batch_size=args.batch_size, batch_length=args.batch_length,
                      replay_capacity=args.num_envs * (args.batch_length + 1) * 4, train_start=0,
                      collect_steps=args.collect_steps, obs_keys=("image",), progress=False)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = Trainer(cfg, agent, env, logdir)
        state = trainer.initial_state()
        result = {"preset": preset, "params": count_params(state["agent"]["params"]),
                  "batch": [cfg.batch_size, cfg.batch_length], "num_envs": cfg.num_envs, "env": args.env,
                  "precision": args.precision}

        def collect():
            loop, replay, outputs = trainer._collect(state["agent"], state["loop"], state["replay"])
            state["loop"], state["replay"] = loop, replay
            jax.block_until_ready(outputs)

        t = time.perf_counter()
        collect()
        result["collect_compile_s"] = time.perf_counter() - t
        while int(state["replay"].filled) < cfg.sequence_length:
            collect()
        t = time.perf_counter()
        for _ in range(args.collect_calls):
            collect()
        elapsed = time.perf_counter() - t
        result["env_steps_per_s"] = args.collect_calls * cfg.collect_steps * cfg.num_envs / elapsed

        key = jax.random.PRNGKey(1)

        def train(i):
            agent_state, replay, metrics = trainer._train_step(state["agent"], state["replay"], key, np.int32(i))
            state["agent"], state["replay"] = agent_state, replay
            return metrics

        t = time.perf_counter()
        jax.block_until_ready(train(0))
        result["train_compile_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(args.train_steps):
            metrics = train(i + 1)
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - t) / args.train_steps
        result["train_step_s"] = seconds
        result["train_steps_per_s"] = 1.0 / seconds
        result["replayed_steps_per_s"] = cfg.batch_size * cfg.batch_length / seconds
        updates = SENSEI_ENV_STEPS * SENSEI_RATIO / SENSEI_BATCH
        scale = (cfg.batch_size * cfg.batch_length) / SENSEI_BATCH
        result["projected_sensei_run_h"] = (updates * seconds / scale
                                            + SENSEI_ENV_STEPS / result["env_steps_per_s"]) / 3600
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,medium")
    parser.add_argument("--env", choices=("point_reach", "robodesk"), default="point_reach")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-length", type=int, default=64)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--collect-steps", type=int, default=8)
    parser.add_argument("--collect-calls", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()
    results = [measure(p, args) for p in args.presets.split(",")]
    print(json.dumps({
        "benchmark": "dreamer_train_throughput", "hardware": describe_hardware(), "results": results,
        "skipped": {"reference_dreamerv3": "PyPI dreamerv3 1.5.0 pins gym==0.19.0, which fails to build with current "
                    "pip/setuptools (invalid extras_require), and needs tensorflow-cpu + tensorflow_probability + "
                    "a 2023 jax that cannot coexist with jax 0.10"},
    }, indent=2))


if __name__ == "__main__":
    main()
