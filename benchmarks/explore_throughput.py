"""Exploration throughput: policy steps/s of the explore driver at its train ratio, from its two compiled calls,
with compile time separated. Prints JSON with the hardware.

    python benchmarks/explore_throughput.py --env toy                          # PointReach, tiny agent, CPU-sized
    python benchmarks/explore_throughput.py --env robodesk --config configs/robodesk_sensei.yaml --num-envs 4 16 64
    python benchmarks/explore_throughput.py --smoke                            # toy env, a chunk: that it runs (CI)

The driver (`Explorer.run` on the DreamerV3 `Trainer`) alternates two compiled calls: a collection of
`train.collect_steps` policy steps of every env (policy, env step, the reward model on the scored image, replay
write) and the train steps the train ratio owes (train_ratio / (batch_size x batch_length) per policy step). Both are
timed through the Explorer's own Trainer (`collect`, `train_step`), and

    explore_steps_per_s = 1 / (1 / collect_steps_per_s + updates_per_step * train_step_s)

is the driver's rate without its host bookkeeping (episode log, metrics, checkpoints). A train step does not depend
on the env count (the batch is fixed), so with several counts it is timed at the first and reused ('train_from').
The reward model is Motif's with random weights at the config's reward.image_size: the true cost of scoring every
frame, meaningless values. Robodesk renders the reward view (env.reward_image_size) as the pipeline's explore
stage does. The replay holds only the steps the timed calls write (its capacity does not change the cost of a write
or a sample).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import jax

import common
from sensei_jax import config as config_lib
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.explore.config import ExploreConfig
from sensei_jax.explore.explorer import Explorer
from sensei_jax.reward.config import RewardConfig
from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params

SMOKE = {"env": "toy", "num_envs": [2], "collect_calls": 1, "train_steps": 1}


def random_reward_model(cfg: RewardConfig | None = None, seed: int = 0) -> RewardModel:
    """A Motif reward model with random weights at `cfg`'s sizes (default: RewardConfig())."""
    config = RewardModelConfig.from_config(cfg or RewardConfig())
    return RewardModel(config, init_params(config, seed))


def toy_setup(smoke: bool = False):
    """(env, explore, train, dreamer, reward model, scored image key) of the CPU-sized PointReach exploration."""
    from sensei_jax.envs.toy import PointReach

    env = PointReach(image_size=16, episode_length=32)
    explore = ExploreConfig(ensemble_size=4, ensemble_units=32, ensemble_layers=1, task_heads=("reach",))
    train = TrainConfig(batch_size=8, batch_length=16, train_ratio=64.0, replay_capacity=8192, train_start=0,
                        random_steps=0, collect_steps=32)
    if smoke:
        explore = dataclasses.replace(explore, ensemble_size=2)
        train = dataclasses.replace(train, batch_size=2, batch_length=8, collect_steps=8)
    dreamer = DreamerConfig.tiny(imag_horizon=5 if not smoke else 3, encoder_keys=("position",),
                                 decoder_keys=("position",))
    return env, explore, train, dreamer, random_reward_model(), "image"


# --env -> (config, smoke) -> (setup, default world count, the config file the report names).
SETUPS = {
    "toy": lambda config, smoke: (toy_setup(smoke), 4, None),
    "robodesk": lambda config, smoke: (robodesk_setup(config), config_lib.load(config).env.num_envs, config),
}


def robodesk_setup(config: str):
    """(env, explore, train, dreamer, reward model, scored image key) of a run config, as the explore stage builds
    them."""
    from sensei_jax.envs.robodesk.config import REWARD_IMAGE_KEY
    from sensei_jax.pipeline.envs import make_env

    cfg = config_lib.load(config, ["--train.train_start", "0", "--train.random_steps", "0"])
    env = make_env(cfg, reward_view=True)
    image_key = REWARD_IMAGE_KEY if cfg.env.reward_image_size else "image"
    reward_cfg = dataclasses.replace(cfg.reward, image_size=cfg.env.reward_image_size or cfg.env.image_size)
    return env, cfg.explore, cfg.train, cfg.dreamer, random_reward_model(reward_cfg), image_key


def measure(setup, num_envs: int, behaviour: str = "sensei", collect_calls: int = 2, train_steps: int = 3,
            train_step_s: float | None = None) -> dict:
    """One env count: `setup` = (env, explore, train, dreamer, reward model, image key). Times `collect_calls` collection
    calls after a compiling one, then (unless `train_step_s` is given) `train_steps` train steps after a compiling
    one. Returns the rates, compile times and the composed explore_steps_per_s."""
    env, explore, train, dreamer, reward_model, image_key = setup
    # A replay just big enough for the timed calls: writes and window sampling cost the same in any capacity, and
    # the paper's 1M steps of 64x64 images would be 12 GB of device memory per env count.
    capacity = num_envs * max(train.collect_steps, train.batch_length + 1) * (collect_calls + 4)
    explore = dataclasses.replace(explore, behaviour=behaviour)
    train = dataclasses.replace(train, train_start=0, random_steps=0, log_every=10**9, save_every=10**9,
                                replay_capacity=min(train.replay_capacity, capacity))
    explorer = Explorer(explore, dreamer, env, num_envs, reward_model=reward_model, image_key=image_key, train=train)
    per_call = train.collect_steps * num_envs
    updates_per_step = train.train_ratio / (train.batch_size * train.batch_length)
    result = {"behaviour": behaviour, "num_envs": num_envs, "collect_steps": train.collect_steps,
              "batch": [train.batch_size, train.batch_length], "train_ratio": train.train_ratio,
              "updates_per_step": updates_per_step, "dreamer_preset": dreamer.preset,
              "compute_dtype": dreamer.compute_dtype}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = explorer.make_trainer(Path(tmp))
        state = trainer.initial_state()

        def collect():
            state["loop"], state["replay"], outputs = trainer.collect(state["agent"], state["loop"], state["replay"])
            jax.block_until_ready(outputs)

        result["collect_compile_s"] = common.seconds(collect)
        while int(state["replay"].filled) < trainer.cfg.sequence_length:  # one window per stream for training
            collect()
        begin = time.perf_counter()
        for _ in range(collect_calls):
            collect()
        result["collect_steps_per_s"] = collect_calls * per_call / (time.perf_counter() - begin)
        if train_step_s is None:
            result["train_compile_s"], train_step_s = common.time_train_steps(trainer, state, train_steps)
            result["train_from"] = "measured"
        else:
            result["train_from"] = "reused"
    result["train_step_s"] = train_step_s
    result["explore_steps_per_s"] = 1.0 / (1.0 / result["collect_steps_per_s"] + updates_per_step * train_step_s)
    return result


def measure_counts(setup, num_envs: list[int], behaviour: str = "sensei", collect_calls: int = 2,
                   train_steps: int = 3) -> list[dict]:
    """`measure` at each env count; the train step is timed at the first count only."""
    results: list[dict] = []
    for n in num_envs:
        reuse = results[0]["train_step_s"] if results else None
        results.append(measure(setup, n, behaviour, collect_calls, train_steps, reuse))
        if reuse is not None:
            results[-1]["train_from"] = f"num_envs={results[0]['num_envs']}"
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=("toy", "robodesk"), default="toy")
    parser.add_argument("--config", default="configs/robodesk_sensei_tiny.yaml", help="run config (robodesk)")
    parser.add_argument("--num-envs", type=int, nargs="+", default=None,
                        help="env counts (default: the config's env.num_envs; 4 for toy)")
    parser.add_argument("--collect-calls", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--behaviour", default="sensei", choices=("sensei", "p2x", "motif"))
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.env, args.num_envs = SMOKE["env"], SMOKE["num_envs"]
        args.collect_calls, args.train_steps = SMOKE["collect_calls"], SMOKE["train_steps"]
    setup, default_envs, config = SETUPS[args.env](args.config, args.smoke)
    results = measure_counts(setup, args.num_envs or [default_envs], args.behaviour, args.collect_calls,
                             args.train_steps)
    common.emit(common.report("explore_throughput", results, smoke=args.smoke, env=args.env, config=config))


if __name__ == "__main__":
    main()
