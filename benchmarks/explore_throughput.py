"""Exploration throughput: policy steps/s of the explore driver (collect + train at the configured train ratio),
with compile time separated. Prints JSON with the hardware.

    python benchmarks/explore_throughput.py --env toy --steps 1024            # PointReach, tiny agent, CPU-sized
    python benchmarks/explore_throughput.py --env robodesk --config configs/robodesk_sensei_tiny.yaml --steps 512
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from sensei_jax import config as config_lib
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.explore_config import ExploreConfig
from sensei_jax.pipeline.explore import Explorer, make_env


class RedScore:
    """A stand-in image scorer with the reward model's interface (mean red intensity); throughput only."""

    def reward(self, images):
        return images[..., 0].astype(jnp.float32).mean((-1, -2)) / 255.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=("toy", "robodesk"), default="toy")
    parser.add_argument("--config", help="run config (robodesk); default configs/robodesk_sensei_tiny.yaml")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--behaviour", default="sensei", choices=("sensei", "p2x", "motif"))
    args = parser.parse_args()

    if args.env == "toy":
        from sensei_jax.envs.toy import PointReach

        env, num_envs = PointReach(image_size=16, episode_length=32), 4
        explore = ExploreConfig(behaviour=args.behaviour, ensemble_size=4, ensemble_units=32, ensemble_layers=1,
                                batch_size=8, batch_length=16, train_ratio=64.0, replay_capacity=8192, prefill=0,
                                collect_chunk=32, task_heads=("reach",))
        dreamer = DreamerConfig.tiny(imag_horizon=5, encoder_keys=("position",), decoder_keys=("position",))
        reward_model = RedScoreTree()
    else:
        cfg = config_lib.load(args.config or "configs/robodesk_sensei_tiny.yaml",
                              ["--explore.behaviour", args.behaviour, "--explore.prefill", "0"])
        env, num_envs, explore, dreamer = make_env(cfg), cfg.env.num_envs, cfg.explore, cfg.dreamer
        reward_model = RedScoreTree()
    explore = dataclasses.replace(explore, log_every=10**9, checkpoint_every=10**9)
    explorer = Explorer(explore, dreamer, env, num_envs, reward_model=reward_model)
    per_call = explore.collect_chunk * num_envs
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        explorer.run(Path(tmp) / "warm", steps=per_call, log=lambda _: None)  # compiles collect and train
        compile_s = time.time() - start
        start = time.time()
        summary = explorer.run(Path(tmp) / "timed", steps=args.steps, state=explorer.state, log=lambda _: None)
        run_s = time.time() - start
    print(json.dumps({
        "benchmark": "explore_throughput", "env": args.env, "behaviour": args.behaviour, "num_envs": num_envs,
        "steps": summary["steps"], "updates_per_step": explorer.updates_per_step,
        "policy_steps_per_s": summary["steps"] / run_s, "first_call_s (compile + 1 chunk)": compile_s,
        "platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0], "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
    }, indent=2))


@jax.tree_util.register_pytree_node_class
class RedScoreTree(RedScore):
    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls()


if __name__ == "__main__":
    main()
