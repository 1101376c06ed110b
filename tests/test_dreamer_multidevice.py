"""The Trainer on 4 virtual CPU devices against 1 device: the same data, the same learning, the expected layout.

One subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 runs, each on the first device alone and on
all four (`train.devices`):
  - a tiny DreamerV3 training on PointReach (8 worlds, batch 8) through the first updates;
  - a tiny SENSEI exploration (Explorer, with a real, freshly initialised Motif reward model scoring the images)
    on the toy env with a random prefill, through its first updates;
and saves replays, parameters and shardings for the tests below.

What must agree, and how closely:
  - Everything collected before the first update, bit for bit: worlds reset and act from per-world keys, and each
    world's policy step is computed on its own, so splitting worlds over devices changes nothing. The one
    exception is the semantic reward, which the reward model computes for a device's block of images at once:
    convolutions over 1 or 4 images round differently (measured 3e-8; allowed 1e-6).
  - The replay batch, bit for bit: sampling is stratified with per-row keys (`Replay.sample_sharded` on 4 devices
    equals `Replay.sample`).
  - After updates, the agent state (parameters and optimizer state) agrees to float32 reduction order: the
    gradient all-reduce sums the per-device partial sums in another order. DreamerV3 (8 updates on data of the
    initial policy): every tensor within 1e-4 of its scale (measured 1.2e-5). SENSEI (65 updates, the last 64 on
    data the updated policy collected, whose positions already differ in the last bit, 6e-8): the median tensor
    within 1e-5 of its scale (measured 1.2e-7), every tensor within 0.5 (measured up to 0.15, in tensors of
    magnitude below 0.005, where Adam's normalisation amplifies the differences); a run on different data would
    differ by order 1 in every tensor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax_env import subprocess_env

TRAIN_STEPS = 320  # 256 env steps before the first update (train_start), then 8 updates
EXPLORE_STEPS = 192  # 128 random prefill steps, then updates


def _train_run(out: Path, devices: int):
    from sensei_jax.dreamer.agent import Agent
    from sensei_jax.dreamer.config import DreamerConfig
    from sensei_jax.dreamer.loop import Trainer, obs_space
    from sensei_jax.dreamer.train_config import TrainConfig
    from sensei_jax.envs.toy import PointReach

    env = PointReach(image_size=16, episode_length=16)
    cfg = TrainConfig(env="point_reach", steps=TRAIN_STEPS, num_envs=8, train_ratio=64, batch_size=8,
                      batch_length=16, replay_capacity=4096, train_start=256, collect_steps=8,
                      obs_keys=("position", "target"), log_every=256, save_every=100_000, progress=False,
                      devices=devices)
    agent = Agent(DreamerConfig.tiny(imag_horizon=8), obs_space(env, cfg.obs_keys), env.action_size)
    trainer = Trainer(cfg, agent, env, out, seed=0)
    summary = trainer.run()
    return trainer, summary


def _explore_run(out: Path, devices: int):
    import jax

    from sensei_jax.dreamer.config import DreamerConfig
    from sensei_jax.dreamer.train_config import TrainConfig
    from sensei_jax.envs.toy import PointReach
    from sensei_jax.explore.config import ExploreConfig
    from sensei_jax.explore.explorer import Explorer
    from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params

    class CornerReach(PointReach):
        def _info(self, position, target, step):
            info = super()._info(position, target, step)
            return {**info, "interaction_flags": {"corner": (position[0] > 0.4) & (position[1] > 0.4)}}

    env = CornerReach(image_size=16, episode_length=32, fixed_target=(-0.5, -0.5))
    model_cfg = RewardModelConfig(image_size=64, channels=(8, 16, 16), hidden=32)
    reward_model = RewardModel(model_cfg, init_params(model_cfg, seed=0))
    cfg = ExploreConfig(behaviour="sensei", steps=EXPLORE_STEPS, ensemble_size=2, ensemble_units=32,
                        ensemble_layers=1, task_heads=("reach",))
    schedule = TrainConfig(batch_size=8, batch_length=16, train_ratio=64.0, replay_capacity=2048, train_start=128,
                           random_steps=128, collect_steps=32, log_every=64, save_every=EXPLORE_STEPS,
                           devices=devices, progress=False)
    dreamer = DreamerConfig.tiny(imag_horizon=5, encoder_keys=("position",), decoder_keys=("position",))
    explorer = Explorer(cfg, dreamer, env, num_envs=4, reward_model=reward_model, seed=0,
                        train=schedule)
    summary = explorer.run(out, log=lambda _: None)
    assert len(jax.tree.leaves(explorer.state["replay"].data)) > 0
    return explorer.trainer, summary


def _layout(state) -> dict:
    """Each array group's shardings as strings: the mesh size and the PartitionSpec of every leaf."""
    import jax

    def describe(tree):
        return sorted({f"{x.sharding.mesh.size}:{tuple(x.sharding.spec)}" for x in jax.tree.leaves(tree)})

    return {"replay": describe(state["replay"].data), "agent": describe(state["agent"]),
            "loop": describe(state["loop"])}


def _worker(out: Path) -> None:
    import jax
    import jax.numpy as jnp

    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from sensei_jax.dreamer.replay import Replay, ReplayState

    assert len(jax.devices()) == 4
    results: dict = {}

    # The sampler alone: 4 devices draw the very batch one device draws.
    replay = Replay({"t": jax.ShapeDtypeStruct((), jnp.int32)}, num_streams=8, capacity=8 * 64, length=9,
                    batch_size=8, recency=0.3)
    state = replay.init()
    for t in range(80):  # wraps around the 64 slots of each stream
        state = replay.add(state, {"t": jnp.arange(8, dtype=jnp.int32) * 1000 + t})
    key = jax.random.key_data(jax.random.key(3))
    one, _ = replay.sample(state, key)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    streams, whole = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    sharded_state = jax.device_put(state, ReplayState(data={"t": streams}, position=whole, filled=whole))
    four, _ = jax.jit(lambda s, k: replay.sample_sharded(s, k, mesh))(sharded_state, key)
    results["sampler_equal"] = bool(np.array_equal(np.asarray(one["t"]), np.asarray(four["t"])))

    for kind, run in (("train", _train_run), ("explore", _explore_run)):
        for devices in (1, 4):
            trainer, summary = run(out / f"{kind}_{devices}", devices)
            state = trainer.state
            arrays = {f"replay/{k}": np.asarray(v) for k, v in state["replay"].data.items()}
            arrays.update({f"agent/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state["agent"]))})
            np.savez(out / f"{kind}_{devices}.npz", **arrays)
            results[f"{kind}_{devices}"] = {
                "layout": _layout(state), "env_steps": summary.get("env_steps", summary.get("steps")),
                "train_steps": summary["train_steps"], "filled": int(state["replay"].filled),
                "mesh": trainer.mesh.size}
    (out / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("multidevice")
    done = subprocess.run([sys.executable, __file__, str(out)], env=subprocess_env(4), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    arrays = {name: dict(np.load(out / f"{name}.npz")) for name in results if name[-2:] in ("_1", "_4")}
    return results, arrays


def test_sharded_sampling_draws_the_single_device_batch(run):
    results, _ = run
    assert results["sampler_equal"]


@pytest.mark.parametrize("kind", ["train", "explore"])
def test_arrays_are_laid_out_over_the_data_axis(run, kind):
    results, _ = run
    one, four = results[f"{kind}_1"], results[f"{kind}_4"]
    assert (one["mesh"], four["mesh"]) == (1, 4)
    assert four["layout"]["replay"] == ["4:('data',)"]  # streams split over the 4 devices
    assert four["layout"]["agent"] == ["4:()"]  # parameters and optimizer state replicated
    assert "4:('data',)" in four["layout"]["loop"]  # worlds split too
    assert one["env_steps"] == four["env_steps"] and one["train_steps"] == four["train_steps"] > 0


@pytest.mark.parametrize("kind,before_updates", [("train", 256 // 8), ("explore", 128 // 4)])
def test_collected_data_before_the_first_update_is_bit_exact(run, kind, before_updates):
    results, arrays = run
    one, four = arrays[f"{kind}_1"], arrays[f"{kind}_4"]
    keys = [k for k in one if k.startswith("replay/")]
    assert keys and set(keys) == {k for k in four if k.startswith("replay/")}
    for key in keys:
        if key in ("replay/deter", "replay/stoch"):  # latents are rewritten by the train steps
            continue
        x, y = four[key][:, :before_updates], one[key][:, :before_updates]
        if key == "replay/semantic_reward":  # a convolution over 1 or 4 images at once (module docstring)
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)
    assert np.abs(one["replay/action"][:, :before_updates]).sum() > 0  # the stretch compared holds real steps


@pytest.mark.parametrize("kind,worst,median", [("train", 1e-4, 1e-5), ("explore", 0.5, 1e-5)])
def test_agent_state_after_updates_agrees_to_float_reduction_order(run, kind, worst, median):
    _, arrays = run
    one, four = arrays[f"{kind}_1"], arrays[f"{kind}_4"]
    tensors = [k for k in one if k.startswith("agent/") and one[k].dtype.kind == "f" and one[k].size > 1]
    assert tensors
    relative = np.array([np.abs(four[k] - one[k]).max() / max(float(np.abs(one[k]).max()), 1e-3) for k in tensors])
    assert relative.max() < worst, dict(zip(tensors, relative))
    assert np.median(relative) < median, np.median(relative)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
