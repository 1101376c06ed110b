"""Exploration resumes exactly after a kill, for SENSEI and the Plan2Explore baseline, and a downstream transfer
trains a task policy on the success head of an exploration checkpoint, starting from its world model, ensemble and
replay, and resumes exactly after a kill too (PointReach toy env, tiny agent)."""

import dataclasses

import jax
import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import files
from sensei_jax.checkpoint import Checkpointer
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.loop import LATENT_KEYS
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.envs.toy import PointReach
from sensei_jax.explore import explorer as explorer_lib
from sensei_jax.explore import transfer as transfer_lib
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


# The loop's schedule of every exploration here (the train section's keys).
SCHEDULE = TrainConfig(batch_size=4, batch_length=8, train_ratio=32.0, replay_capacity=2048, train_start=64,
                       random_steps=64, collect_steps=32, log_every=128, save_every=CHECKPOINT_EVERY)


def settings(behaviour: str) -> tuple[ExploreConfig, DreamerConfig]:
    explore = ExploreConfig(behaviour=behaviour, steps=STEPS, ensemble_size=2, ensemble_units=16, ensemble_layers=1,
                            task_heads=("reach",), transfer_steps=128, transfer_eval_episodes=4)
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
    return Explorer(explore_cfg, dreamer, make_env(), NUM_ENVS, reward_model=model, seed=3, train=SCHEDULE).run(
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


def transfer_explorers(directory, task, reward_model, seed):
    """The (source, transfer) Explorers that `explore.transfer.transfer` builds for `directory`'s exploration."""
    spec = transfer_lib.read_spec(directory)
    explore_cfg = config_lib.from_dict(ExploreConfig, spec["explore"], prefix="explore")
    dreamer = config_lib.from_dict(DreamerConfig, spec["dreamer"], prefix="dreamer")
    train = dataclasses.replace(TrainConfig(), **transfer_lib.exploration_schedule(spec, directory))
    common = dict(num_envs=spec["num_envs"], reward_model=reward_model, seed=seed, tasks=tuple(spec["tasks"]),
                  train=train)
    return (Explorer(explore_cfg, dreamer, make_env(), **common),
            Explorer(explore_cfg, dreamer, make_env(), task=task, **{**common, "seed": seed + 1}))


def read_checkpoint(explorer, directory):
    """The run state of the latest checkpoint in `directory`, read as `explorer` lays its state out."""
    trainer = explorer.make_trainer(directory)
    ckpt = Checkpointer(directory / "checkpoints", max_to_keep=None)
    try:
        return ckpt.latest_step, trainer.restore(ckpt, like=trainer.abstract_state())
    finally:
        ckpt.close()


def same_tree(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b))


def test_transfer_starts_from_the_explorations_world_model_ensemble_and_replay(reward_model, uninterrupted):
    root, _ = uninterrupted
    directory = root / "explore" / "sensei"
    source, target = transfer_explorers(directory, "reach", reward_model, seed=3)
    state = transfer_lib.restore_exploration(target, source, directory)

    step, saved = read_checkpoint(source, directory)  # the exploration's last checkpoint, read on its own
    assert step == STEPS
    fresh = target.make_trainer(directory).initial_state()
    for part in ("params", "opt"):
        for name in ("wm", "extras"):  # the world model and the Plan2Explore ensemble, with their optimizer states
            assert same_tree(state["agent"][part][name], saved["agent"][part][name]), (part, name)
            assert not same_tree(state["agent"][part][name], fresh["agent"][part][name]), (part, name)
    assert same_tree(state["replay"], saved["replay"])
    assert int(state["replay"].filled) == STEPS // NUM_ENVS and int(fresh["replay"].filled) == 0
    # The actor and critics are the transfer's own, new ones (one critic, for the task), and counting starts at 0.
    assert set(state["agent"]["params"]) == set(fresh["agent"]["params"])
    for name in set(state["agent"]["params"]) - {"wm", "extras"}:
        assert same_tree(state["agent"]["params"][name], fresh["agent"]["params"][name]), name
    assert int(state["counters"]["env_steps"]) == 0


def test_a_killed_transfer_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, reward_model, uninterrupted):
    root, _ = uninterrupted
    explore_cfg, dreamer = settings("sensei")
    cfg = config_lib.load(overrides={"run": {"seed": 3}})
    cfg = dataclasses.replace(cfg, explore=dataclasses.replace(explore_cfg, transfer_steps=2 * CHECKPOINT_EVERY),
                              dreamer=dreamer)
    run = lambda out: transfer_stage.transfer(cfg, root, "reach", out_dir=out, env=make_env(),  # noqa: E731
                                              reward_model=reward_model, log=lambda _: None)
    whole = run(tmp_path / "whole")

    real_write_json = files.write_json

    def write_then_die(path, data):
        real_write_json(path, data)
        if path.name == "progress.json":
            raise Interrupted(path)

    monkeypatch.setattr(explorer_lib.files, "write_json", write_then_die)
    with pytest.raises(Interrupted):
        run(tmp_path / "killed")
    monkeypatch.undo()
    assert files.read_json(tmp_path / "killed" / "progress.json")["step"] == CHECKPOINT_EVERY
    resumed = run(tmp_path / "killed")

    assert resumed == whole and whole["steps"] == 2 * CHECKPOINT_EVERY
    lines = lambda d: (d / "episodes.jsonl").read_text().splitlines()  # noqa: E731
    assert lines(tmp_path / "killed") == lines(tmp_path / "whole")
    for key in ("interactions", "success", "episodes", "episode_returns"):
        assert files.read_json(tmp_path / "killed" / "summary.json")[key] == \
            files.read_json(tmp_path / "whole" / "summary.json")[key], key

    # The transfer's replay went on from the exploration's: its steps first, then the transfer's own. What was
    # observed stays as it was; the stored latents (the replay context, rewritten by every train step) may not.
    source, target = transfer_explorers(root / "explore" / "sensei", "reach", reward_model, seed=3)
    explored = read_checkpoint(source, root / "explore" / "sensei")[1]["replay"]
    transferred = read_checkpoint(target, tmp_path / "whole")[1]["replay"]
    steps = STEPS // NUM_ENVS  # per replay stream (one per world)
    assert int(transferred.filled) == steps + 2 * CHECKPOINT_EVERY // NUM_ENVS
    assert set(explored.data) - set(LATENT_KEYS) >= {"position", "reward", "is_first"}
    for key in set(explored.data) - set(LATENT_KEYS):
        np.testing.assert_array_equal(np.asarray(transferred.data[key])[:, :steps],
                                      np.asarray(explored.data[key])[:, :steps], err_msg=key)
