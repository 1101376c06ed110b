"""Exploration throughput: policy steps/s of the explore driver (collect + train at the configured train ratio),
with compile time separated. Prints JSON with the hardware.

    python benchmarks/explore_throughput.py --env toy --steps 1024            # PointReach, tiny agent, CPU-sized
    python benchmarks/explore_throughput.py --env robodesk --config configs/robodesk_sensei_tiny.yaml --steps 512
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from sensei_jax import config as config_lib
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.explore.config import ExploreConfig
from sensei_jax.hardware import describe as describe_hardware
from sensei_jax.envs.robodesk import Robodesk
from sensei_jax.explore.explorer import Explorer
from sensei_jax.reward.config import RewardConfig
from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params


def random_reward_model(seed: int = 0) -> RewardModel:
    """A Motif reward model with random weights at the default config: the true cost of scoring frames in the
    collect step (throughput only; the values are meaningless)."""
    config = RewardModelConfig.from_config(RewardConfig())
    return RewardModel(config, init_params(config, seed))


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
        reward_model = random_reward_model()
    else:
        cfg = config_lib.load(args.config or "configs/robodesk_sensei_tiny.yaml",
                              ["--explore.behaviour", args.behaviour, "--explore.prefill", "0"])
        env, num_envs, explore, dreamer = Robodesk.from_config(cfg.env), cfg.env.num_envs, cfg.explore, cfg.dreamer
        reward_model = random_reward_model()
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
        "steps": summary["steps"],
        "updates_per_step": explore.train_ratio / (explore.batch_size * explore.batch_length),
        # The warm-up call already ran per_call of the steps; the timed call ran the rest.
        "policy_steps_per_s": (summary["steps"] - per_call) / run_s,
        "first_call_s (compile + 1 chunk)": compile_s,
        "hardware": describe_hardware(),
    }, indent=2))


if __name__ == "__main__":
    main()
