"""The Trainer's parts, each on its own: the schedule's arithmetic (hand-worked numbers), collection (what one
compiled call stores per step, on the PointReach toy env) and the update (one compiled train step on replay)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sensei_jax.dreamer.agent import Agent
from sensei_jax.dreamer.collection import Collection
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.loop import obs_space
from sensei_jax.dreamer.mesh import make_mesh
from sensei_jax.dreamer.schedule import Schedule
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.dreamer.update import LATENT_KEYS, Update
from sensei_jax.envs.toy import PointReach

OBS_KEYS = ("position", "target")
EPISODE = 4  # env steps per episode: with the final observation stored, a world's steps repeat every 5


# ------------------------------------------------------------------------------------------------------------------
# The schedule.


def test_updates_due_follow_the_train_ratio_after_train_start():
    # 64 replayed steps per env step over batches of 8 x 16 = 128 steps: one update per 2 env steps, the first at
    # train_start (256, above the 8 worlds x 17-step windows = 136 that the first update needs).
    cfg = TrainConfig(env="point_reach", num_envs=8, train_ratio=64, batch_size=8, batch_length=16,
                      train_start=256, obs_keys=OBS_KEYS)
    schedule = Schedule.from_config(cfg)
    assert schedule.train_start == 256 and schedule.updates_per_step == 0.5
    assert [schedule.updates_due(s) for s in (0, 255, 256, 257, 258, 320, 512)] == [0, 0, 1, 1, 2, 33, 129]
    # train_start below one window per stream waits for the windows: 8 worlds x 17 steps.
    early = Schedule.from_config(dataclasses.replace(cfg, train_start=0))
    assert early.train_start == 136 and early.updates_due(135) == 0 and early.updates_due(136) == 1


def test_random_steps_mark_the_prefill_calls():
    schedule = Schedule(train_start=0, updates_per_step=1.0, random_steps=64, log_every=1, save_every=1,
                        video_every=0)
    assert [schedule.is_random(s) for s in (0, 63, 64, 100)] == [True, True, False, False]


def test_log_save_and_video_points():
    schedule = Schedule(train_start=0, updates_per_step=1.0, random_steps=0, log_every=128, save_every=1000,
                        video_every=96)
    points = schedule.points(0, total=300)
    assert (points.log, points.save, points.video) == (128, 1000, 96)
    assert not points.log_due(127) and points.log_due(128)
    points.done_log(136)  # a call of 16 steps overshot the point: the next one is the next multiple
    assert points.log == 256
    assert points.log_due(300) and points.save_due(300) and not points.save_due(299)  # the run's end
    assert not points.video_due(96, train_steps=0) and points.video_due(96, train_steps=1)  # only after an update
    points.done_video(100)
    assert points.video == 192
    resumed = schedule.points(640, total=2000)  # a resumed run starts from the points after its step
    assert (resumed.log, resumed.save, resumed.video) == (768, 1000, 672)
    assert Schedule(0, 1.0, 0, 1, 1, video_every=0).points(0, 10).video_due(5, 5) is False


# ------------------------------------------------------------------------------------------------------------------
# Collection and the update, on the toy env with the tiny agent.


@pytest.fixture(scope="module")
def parts():
    env = PointReach(image_size=16, episode_length=EPISODE)
    cfg = TrainConfig(env="point_reach", num_envs=2, collect_steps=12, train_ratio=16, batch_size=2,
                      batch_length=4, replay_capacity=2 * 32, obs_keys=OBS_KEYS, progress=False)
    agent = Agent(DreamerConfig.tiny(imag_horizon=4), obs_space(env, OBS_KEYS), env.action_size)
    mesh = make_mesh(cfg)
    collection = Collection(cfg, agent, env, mesh, OBS_KEYS)
    agent_state = agent.init(jax.random.key(0))
    return cfg, agent, collection, agent_state


def fresh(collection, seed=1):
    replay_state = collection.replay.init(NamedSharding(collection.mesh, P("data")))
    return collection.new_loop(np.asarray(jax.random.PRNGKey(seed), np.uint32)), replay_state


def test_collection_stores_every_step_with_its_episode_flags(parts):
    cfg, _, collection, agent_state = parts
    loop, replay_state = fresh(collection)
    loop, replay_state, outputs = collection(agent_state, loop, replay_state, random=True)
    data = jax.device_get(replay_state.data)
    assert int(replay_state.filled) == cfg.collect_steps and int(replay_state.position) == cfg.collect_steps
    t = np.arange(cfg.collect_steps)
    # Steps 0-4 are one episode (4 env steps, the final observation stored with is_last), then the worlds restart.
    expect_first, expect_last = t % (EPISODE + 1) == 0, t % (EPISODE + 1) == EPISODE
    for world in range(cfg.num_envs):
        np.testing.assert_array_equal(data["is_first"][world, t], expect_first)
        np.testing.assert_array_equal(data["is_last"][world, t], expect_last)
        assert (data["reward"][world, t][expect_first] == 0).all()  # a first observation carries no reward
    outputs = jax.device_get(outputs)
    np.testing.assert_array_equal(outputs["is_last"], np.stack([expect_last] * cfg.num_envs, 1))
    np.testing.assert_array_equal(outputs["length"][expect_last], EPISODE)
    assert np.abs(data["action"][:, t]).max() <= 1.0 and np.abs(data["action"][:, t]).std() > 0.1
    assert data["action"].shape[-1] == 2 and {"deter", "stoch", "is_terminal"} <= set(data)
    # The steps continue where the loop state left off: the next call's first step is the middle of an episode.
    _, replay_state, _ = collection(agent_state, loop, replay_state, random=True)
    assert int(replay_state.filled) == 2 * cfg.collect_steps
    later = jax.device_get(replay_state.data["is_first"])[0, cfg.collect_steps:2 * cfg.collect_steps]
    np.testing.assert_array_equal(later, (t + cfg.collect_steps) % (EPISODE + 1) == 0)


def test_collection_without_replay_repeats_under_the_same_key(parts):
    """A rollout (no replay, the eval policy) from the same fresh worlds takes the same steps."""
    _, _, collection, agent_state = parts
    runs = []
    for _ in range(2):
        loop, _ = fresh(collection, seed=5)
        loop, replay_state, outputs = collection(agent_state, loop, None, mode="eval")
        assert replay_state is None
        runs.append(jax.device_get((loop.env.obs["position"], outputs["return"])))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_update_trains_the_agent_and_writes_only_latents_back(parts):
    cfg, agent, collection, agent_state = parts
    loop, replay_state = fresh(collection)
    loop, replay_state, _ = collection(agent_state, loop, replay_state, random=True)
    update = Update(cfg, agent, collection.replay, collection.mesh)
    before_agent = jax.device_get(agent_state)
    before_replay = jax.device_get(replay_state)
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (train_step donates its inputs)
    key = np.asarray(jax.random.PRNGKey(3))
    new_agent, new_replay, metrics = update.train_step(copy(agent_state), copy(replay_state), key, 0)
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(v).all() for k, v in metrics.items() if k.startswith("loss/"))
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max()),
                         before_agent["params"], jax.device_get(new_agent["params"]))
    for part in ("wm", "actor", "critics"):
        assert max(jax.tree.leaves(moved[part])) > 0, part
    after = jax.device_get(new_replay)
    assert int(after.filled) == int(before_replay.filled) and int(after.position) == int(before_replay.position)
    for k in before_replay.data:
        if k in LATENT_KEYS:
            continue
        np.testing.assert_array_equal(after.data[k], before_replay.data[k], err_msg=k)
    assert not np.array_equal(after.data["deter"], before_replay.data["deter"])  # fresh posteriors written back
    # The same key and step give the same update; another step number, another batch.
    again, _, _ = update.train_step(copy(agent_state), copy(replay_state), key, 0)
    for a, b in zip(jax.tree.leaves(jax.device_get(new_agent)), jax.tree.leaves(jax.device_get(again))):
        np.testing.assert_array_equal(a, b)
    other, _, _ = update.train_step(copy(agent_state), copy(replay_state), key, 1)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(new_agent["params"])),
                                                        jax.tree.leaves(jax.device_get(other["params"]))))
