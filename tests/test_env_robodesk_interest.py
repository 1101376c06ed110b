"""SENSEI's interestingness heuristic (envs/robodesk/interest.py) on hand-built scenes and features."""

import jax.numpy as jnp
import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax.envs.robodesk import tasks
from sensei_jax.envs.robodesk.config import InterestConfig
from sensei_jax.envs.robodesk.interest import STACK_OFFSET, TARGETS, compare, features, interest
from sensei_jax.reward.labels import Label


def _frames(distance, interaction=None, drawer=None, stack=None):
    distance = np.asarray(distance, np.float32)
    n = len(distance)
    flags = np.zeros((n, len(tasks.INTERACTIONS)), bool)
    for frame, names in (interaction or {}).items():
        for name in names:
            flags[frame, tasks.INTERACTIONS.index(name)] = True
    return {"distance": distance, "interaction": flags,
            "drawer_qpos": np.asarray(drawer if drawer is not None else np.zeros(n), np.float32),
            "stack_error": np.asarray(stack if stack is not None else np.ones(n), np.float32)}


def test_heuristic_conditions():
    cfg = InterestConfig()
    distance = np.full((5, len(TARGETS)), np.sqrt(3.0), np.float32)  # 1.73 m from every target
    distance[1] = 0.1  # near
    frames = _frames(distance, interaction={2: ["ball"]},  # frame 2: an object moves
                     drawer=[0, 0, 0, -0.3, 0],  # frame 3: drawer open
                     stack=[1, 1, 1, 1, 0.01])  # frame 4: stacked
    labels = interest(frames, cfg)
    interesting, score = labels["interesting"], labels["score"]
    assert interesting.tolist() == [False, True, True, True, True]
    assert score[0] < score[1:].min()
    prob, label = compare(score[[0, 1, 2, 0]], score[[1, 0, 2, 3]], cfg)
    assert label.tolist() == [1, 0, 2, 1] and prob[0] < 0.5 < prob[1] and prob[2] == 0.5


def test_classes_and_score_order():
    # 0 two objects moving, gripper far; 1 one object moving, far; 2 gripper 0.05 m from the ball (very good);
    # 3 drawer open, gripper 0.3 m away; 4 nothing, 0.3 m away; 5 nothing, every target far (very bad).
    distance = [[0.5] * 5, [0.5] * 5, [0.05, 0.5, 0.5, 0.5, 0.5], [0.3] * 5, [0.3] * 5, [0.5, 0.9, 0.9, 0.9, 0.9]]
    frames = _frames(distance, interaction={0: ["ball", "upright_block"], 1: ["ball"]},
                     drawer=[0, 0, 0, -0.3, 0, 0])
    labels = interest(frames, InterestConfig())
    assert labels["interesting"].tolist() == [True, True, True, True, False, False]
    assert labels["good"].tolist() == [False, False, True, False, False, False]
    assert labels["bad"].tolist() == [False, False, False, False, False, True]
    # Interesting first, then the number of objects in motion, then the gripper's proximity.
    assert np.argsort(-labels["score"]).tolist() == [0, 1, 2, 3, 4, 5]
    assert labels["score"].dtype == np.float32


def test_compare_ties_inside_the_margin():
    cfg = InterestConfig(tie_margin=0.05)
    prob, label = compare(np.array([1.0, 1.0, 1.0], np.float32), np.array([1.04, 0.9, 1.2], np.float32), cfg)
    assert label.tolist() == [Label.TIE, Label.FIRST, Label.SECOND]
    assert prob[1] == pytest.approx(1 / (1 + np.exp(-0.1 / cfg.temperature)), rel=1e-5)


def test_features_from_a_scene():
    flat = np.array([0.1, 0.6, 0.76], np.float32)
    objects = np.stack([np.array([0.0, 0.5, 0.8]), flat + np.asarray(STACK_OFFSET), flat]).astype(np.float32)
    scene = tasks.Scene(end_effector=jnp.zeros(3), object_pos=jnp.asarray(objects),
                        initial_object_pos=jnp.asarray(objects), drawer_q=jnp.asarray(-0.2), slide_q=jnp.zeros(()),
                        light_q=jnp.zeros(3), button_pos=jnp.zeros((3, 3)),
                        drawer_handle=jnp.array([0.0, 0.0, 0.3]), slide_handle=jnp.array([0.4, 0.0, 0.0]))
    out = {k: np.asarray(v) for k, v in features(scene).items()}
    expected = np.linalg.norm(np.concatenate([objects, [[0.0, 0.0, 0.3], [0.4, 0.0, 0.0]]]), axis=-1)
    np.testing.assert_allclose(out["distance"], expected, rtol=1e-6)  # TARGETS order
    assert out["stack_error"] == pytest.approx(0.0, abs=1e-6) and out["drawer_qpos"] == pytest.approx(-0.2)
    batched = features(tasks.Scene(*(jnp.stack([field, field]) for field in scene)))  # two worlds
    assert batched["distance"].shape == (2, len(TARGETS)) and batched["stack_error"].shape == (2,)


def test_interest_section_replaces_the_old_keys():
    cfg = config_lib.load(None, ["--interest.near_distance", "0.2"])
    assert cfg.interest.near_distance == 0.2
    with pytest.raises(config_lib.ConfigError, match="interest.near_distance"):
        config_lib.load(None, ["--interest.near_distance", "-1"])
    with pytest.raises(config_lib.ConfigError, match="pairs.near_distance"):
        config_lib.load(None, ["--pairs.near_distance", "0.2"])
