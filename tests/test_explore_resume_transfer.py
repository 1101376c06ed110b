"""Exploration resumes exactly after a kill, for SENSEI and the Plan2Explore baseline, and a downstream transfer
trains a task policy on the success head of an exploration checkpoint (PointReach toy env, tiny agent)."""

import dataclasses

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import files
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.envs.toy import PointReach
from sensei_jax.explore import explorer as explorer_lib
from sensei_jax.explore.config import ExploreConfig
from sensei_jax.explore.explorer import Explorer
from sensei_jax.pipeline import transfer as transfer_stage
from sensei_jax.reward.config import RewardConfig
from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params

STEPS, CHECKPOINT_EVERY, NUM_ENVS = 256, 128, 4


class Interrupted(Exception):
    pass


def make_env():
    return PointReach(image_size=16, episode_length=32)


def settings(behaviour: str) -> tuple[ExploreConfig, DreamerConfig]:
    explore = ExploreConfig(behaviour=behaviour, steps=STEPS, ensemble_size=2, ensemble_units=16, ensemble_layers=1,
                            batch_size=4, batch_length=8, train_ratio=32.0, replay_capacity=2048, prefill=64,
                            collect_chunk=32, log_every=128, checkpoint_every=CHECKPOINT_EVERY, task_heads=("reach",),
                            transfer_steps=128, transfer_eval_episodes=4)
    dreamer = DreamerConfig.tiny(imag_horizon=4, encoder_keys=("position",), decoder_keys=("position",))
    return explore, dreamer


@pytest.fixture(scope="module")
def reward_model():
    # Random weights: what is under test is the bookkeeping around the reward, not what it prefers.
    config = RewardModelConfig.from_config(RewardConfig(image_size=64, channels=(4, 8, 8), hidden=16))
    return RewardModel(config, init_params(config, 0))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, reward_model):
    """One uninterrupted exploration per behaviour, in a run folder's layout (<run>/explore/<behaviour>)."""
    root = tmp_path_factory.mktemp("run")
    return root, {b: explore(b, root / "explore" / b, reward_model) for b in ("sensei", "p2x")}


def explore(behaviour, out_dir, reward_model):
    explore_cfg, dreamer = settings(behaviour)
    model = reward_model if behaviour != "p2x" else None
    return Explorer(explore_cfg, dreamer, make_env(), NUM_ENVS, reward_model=model, seed=3).run(
        out_dir, log=lambda _: None)


@pytest.mark.parametrize("behaviour", ["sensei", "p2x"])
def test_a_killed_exploration_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, reward_model, behaviour,
                                                                   uninterrupted):
    root, summaries = uninterrupted

    # Killed right after the first checkpoint's progress file reached the disk (mid-run: 128 of 256 steps).
    real_write_json = files.write_json

    def write_then_die(path, data):
        real_write_json(path, data)
        if path.name == "progress.json":
            raise Interrupted(path)

    monkeypatch.setattr(explorer_lib.files, "write_json", write_then_die)
    with pytest.raises(Interrupted):
        explore(behaviour, tmp_path / "killed", reward_model)
    monkeypatch.undo()
    assert files.read_json(tmp_path / "killed" / "progress.json")["step"] == CHECKPOINT_EVERY
    resumed = explore(behaviour, tmp_path / "killed", reward_model)

    assert resumed["steps"] == summaries[behaviour]["steps"] == STEPS
    for key in ("interactions", "success", "episodes", "episode_returns", "semantic_returns"):
        assert resumed[key] == summaries[behaviour][key], key
    lines = lambda d: (d / "episodes.jsonl").read_text().splitlines()  # noqa: E731
    assert lines(tmp_path / "killed") == lines(root / "explore" / behaviour)


def test_transfer_trains_the_task_policy_on_the_success_head_and_writes_its_result(reward_model, uninterrupted):
    root, _ = uninterrupted
    explore_cfg, dreamer = settings("sensei")
    cfg = config_lib.load(overrides={"run": {"seed": 3}})
    cfg = dataclasses.replace(cfg, explore=explore_cfg, dreamer=dreamer)
    result = transfer_stage.transfer(cfg, root, "reach", env=make_env(), reward_model=reward_model,
                                     log=lambda _: None)

    out = root / "transfer" / "sensei_reach"
    assert files.read_json(out / "result.json") == result
    assert result["task"] == "reach" and result["behaviour"] == "sensei" and result["steps"] == 128
    assert result["episodes"] == 4 and 0.0 <= result["success_rate"] <= 1.0
    # The actor-critic optimised the task's success head alone: one critic, for that source.
    metrics = files.read_json(out / "summary.json")["final_metrics"]
    critics = sorted(k for k in metrics if k.startswith("loss/critic"))
    assert critics == ["loss/critic_task_reach"], critics
    assert np.isfinite(metrics["loss/critic_task_reach"])
    # A task the exploration learned no success head for is refused, naming the heads.
    with pytest.raises(ValueError, match="no success head"):
        transfer_stage.transfer(cfg, root, "open_drawer", env=make_env(), reward_model=reward_model)
