"""The reward view: the reward model scores a dedicated render of each state at its own resolution, inside the
compiled collection step, and neither the world model nor the replay holds that render.

On PointReach with a 64 px `reward_image` beside the agent's 16 px `image` (seconds), then on the tiny Robodesk
config through the explore stage, whose env renders the 'right' reward view with the Warp batch renderer.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sensei_jax import config as config_lib
from sensei_jax.dreamer.agent import Agent
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.dreamer.loop import obs_space
from sensei_jax.dreamer.world_model import WorldModel
from sensei_jax.envs.robodesk.config import REWARD_IMAGE_KEY
from sensei_jax.envs.toy import PointReach
from sensei_jax.explore.config import ExploreConfig
from sensei_jax.explore.explorer import Explorer
from sensei_jax.explore.sensei import SEMANTIC_KEY, clip_semantic
from sensei_jax.pipeline import explore as explore_stage
from sensei_jax.pipeline.envs import make_env
from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params

VIEW = 64  # the reward model's input size (its conv stack needs at least 52 px)
STEPS = 32  # policy steps over all envs: collection only (prefill covers them, no update runs)


class ViewedReach(PointReach):
    """PointReach that also renders each state at the reward model's resolution, as obs['reward_image']."""

    def _obs(self, position, target):
        return {**super()._obs(position, target), REWARD_IMAGE_KEY: self._render(position, target, VIEW)}


def reward_model(size: int = VIEW) -> RewardModel:
    cfg = RewardModelConfig(image_size=size, channels=(4, 8, 8), hidden=16)
    return RewardModel(cfg, init_params(cfg, seed=3))


def explore_config(**kwargs) -> ExploreConfig:
    return ExploreConfig(behaviour="sensei", steps=STEPS, ensemble_size=2, ensemble_units=16, ensemble_layers=1,
                         task_heads=(), **kwargs)


# The loop's schedule: every step of the run is a random prefill step, so no update runs.
SCHEDULE = TrainConfig(batch_size=2, batch_length=4, train_ratio=8.0, replay_capacity=256, train_start=4 * STEPS,
                       random_steps=4 * STEPS, collect_steps=8, log_every=STEPS, save_every=STEPS)


def test_toy_reward_view_is_scored_but_never_stored(tmp_path):
    env = ViewedReach(image_size=16, episode_length=8)
    model = reward_model()
    dreamer = DreamerConfig.tiny(encoder_keys=("image",), decoder_keys=("image",))
    explorer = Explorer(explore_config(), dreamer, env, num_envs=2, reward_model=model, image_key=REWARD_IMAGE_KEY,
                        train=SCHEDULE)
    assert REWARD_IMAGE_KEY not in explorer.obs_space and "image" in explorer.obs_space
    explorer.run(tmp_path, log=lambda _: None)
    replay = jax.device_get(explorer.state["replay"])
    assert REWARD_IMAGE_KEY not in replay.data
    filled = int(replay.filled)
    assert filled == STEPS // 2
    stored = replay.data[SEMANTIC_KEY][:, :filled]
    positions, targets = replay.data["position"][:, :filled], replay.data["target"][:, :filled]
    render = jax.jit(jax.vmap(jax.vmap(lambda p, t: PointReach._render(p, t, VIEW))))
    expected = clip_semantic(model.reward(render(positions, targets)), 200.0)
    np.testing.assert_allclose(stored, np.asarray(expected), rtol=1e-5, atol=1e-5)
    # Scoring the agent's 16 px frame (resized to 64 inside the model) would have given other rewards.
    agent_view = np.asarray(model.reward(jnp.asarray(replay.data["image"][:, :filled])))
    assert np.abs(agent_view - stored).max() > 1e-3 * max(np.abs(stored).max(), 1e-6)


def test_a_reward_view_the_world_model_reads_is_stored():
    env = ViewedReach(image_size=16, episode_length=8)
    dreamer = DreamerConfig.tiny(encoder_keys=("image", REWARD_IMAGE_KEY), decoder_keys=("image",))
    explorer = Explorer(explore_config(), dreamer, env, num_envs=2, reward_model=reward_model(),
                        image_key=REWARD_IMAGE_KEY, train=SCHEDULE)
    assert REWARD_IMAGE_KEY in explorer.obs_space and REWARD_IMAGE_KEY in explorer.train_cfg.obs_keys


def test_reward_view_and_reward_model_sizes_must_agree():
    with pytest.raises(config_lib.ConfigError, match=r"env.reward_image_size \(224\).*reward.image_size \(64\)"):
        config_lib.load(config_lib.CONFIG_DIR / "robodesk_sensei.yaml", ["--reward.image_size", "64"])
    env = ViewedReach(image_size=16)
    with pytest.raises(ValueError, match="env.reward_image_size is 64.*reward.image_size 96"):
        explore_stage.scored_image_key(env, reward_model(96), "distill/")
    assert explore_stage.scored_image_key(env, reward_model(), "distill/") == REWARD_IMAGE_KEY
    assert explore_stage.scored_image_key(PointReach(), reward_model(), "distill/") == "image"
    assert explore_stage.scored_image_key(env, None, None) == "image"


def world_model_keys(cfg: config_lib.Config, explores: bool) -> tuple[list[str], ...]:
    """(encoded images, encoded vectors, decoded images, decoded vectors) of the agent `cfg` builds on Robodesk."""
    if explores:  # the exploring agent, beside the reward view the config renders for the reward model
        env = make_env(cfg, reward_view=True)
        assert (REWARD_IMAGE_KEY in obs_space(env)) == (cfg.env.reward_image_size is not None)
        model = reward_model(cfg.reward.image_size)
        image_key = explore_stage.scored_image_key(env, model, "distill/")
        agent = Explorer(cfg.explore, cfg.dreamer, env, cfg.env.num_envs, reward_model=model,
                         image_key=image_key).agent
    else:  # plain DreamerV3 (`train`): the agent of the stored train.obs_keys
        agent = Agent(cfg.dreamer, obs_space(make_env(cfg), cfg.train.obs_keys), 5)
    assert agent.obs_space["image"][0] == (cfg.env.image_size, cfg.env.image_size, 3)
    wm = nnx.eval_shape(lambda: WorldModel(agent.cfg, agent.obs_space, agent.action_size, agent.extra_heads,
                                           rngs=nnx.Rngs(0)))
    return wm.enc_images, wm.enc_vectors, wm.dec_images, wm.dec_vectors


def test_every_robodesk_agent_encodes_and_decodes_the_image_only():
    paths = sorted(config_lib.CONFIG_DIR.glob("robodesk_*.yaml"))
    assert {"robodesk_sensei.yaml", "robodesk_sensei_tiny.yaml", "robodesk_dreamer.yaml"} <= {p.name for p in paths}
    built = {}  # configs that differ only in the behaviour share one agent layout: build it once
    for path in paths:
        cfg = config_lib.load(path)
        explores = "dreamer" not in path.stem
        group = json.dumps([config_lib.to_dict(cfg.env), config_lib.to_dict(cfg.dreamer), explores,
                            list(cfg.train.obs_keys), cfg.reward.image_size], sort_keys=True)
        if group not in built:
            built[group] = world_model_keys(cfg, explores)
        assert built[group] == (["image"], [], ["image"], []), path.name


def test_robodesk_semantic_reward_scores_the_reward_view(tmp_path):
    """The explore stage on the tiny SENSEI config with a 16 px agent image: the semantic reward in replay is the
    reward model on a fresh 64 px 'right' render of each stored state, not on the agent's image."""
    overrides = {"env": {"num_envs": 2, "image_size": 16, "episode_length": 16},
                 "explore": {"steps": 16, "ensemble_size": 2, "ensemble_units": 16, "ensemble_layers": 1,
                             "task_heads": []},
                 "train": {"train_start": 64, "random_steps": 64, "collect_steps": 8, "log_every": 16,
                           "save_every": 16, "batch_size": 2, "batch_length": 4, "replay_capacity": 64}}
    cfg = config_lib.load(config_lib.CONFIG_DIR / "robodesk_sensei_tiny.yaml", overrides)
    assert (cfg.env.reward_camera, cfg.env.reward_image_size, cfg.reward.image_size) == ("right", VIEW, VIEW)
    model = reward_model()
    env = make_env(cfg, reward_view=True)
    explorer = Explorer(cfg.explore, cfg.dreamer, env, 2, reward_model=model, train=cfg.train,
                        image_key=explore_stage.scored_image_key(env, model, "distill/"))
    explorer.run(tmp_path, log=lambda _: None)
    replay = jax.device_get(explorer.state["replay"])
    assert REWARD_IMAGE_KEY not in replay.data and replay.data["image"].shape[-3:] == (16, 16, 3)
    filled = int(replay.filled)
    stored = replay.data[SEMANTIC_KEY][:, :filled].reshape(-1)
    qpos = np.concatenate([replay.data["qpos_robot"], replay.data["qpos_objects"]], -1)[:, :filled]
    qpos = qpos.reshape(-1, qpos.shape[-1])
    physics = np.zeros((len(qpos), env.physics_state_size), np.float32)
    physics[:, :qpos.shape[1]] = qpos  # rendering reads positions only
    rendered = jax.jit(env.restore)(jnp.asarray(physics)).obs[REWARD_IMAGE_KEY]
    expected = np.asarray(clip_semantic(model.reward(rendered), cfg.explore.semantic_clip))
    np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-4)
    agent_view = np.asarray(model.reward(jnp.asarray(replay.data["image"][:, :filled].reshape(-1, 16, 16, 3))))
    assert np.abs(agent_view - stored).max() > 1e-3 * max(np.abs(stored).max(), 1e-6)
