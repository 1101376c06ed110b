"""SENSEI's contrastive pair heuristic on hand-made frame features (no env needed)."""

import numpy as np

from sensei_jax.envs.robodesk.config import InterestConfig
from sensei_jax.envs.robodesk.interest import compare, interest
from sensei_jax.pipeline.config import PairsConfig
from sensei_jax.pipeline.pairs import CONTRASTIVE, UNIFORM, plan_pairs


def _features():
    # 6 frames: 0 touching the ball (very good), 1 ball moving but gripper 0.13 m away (interesting, not very good),
    # 2 drawer open, gripper far (interesting), 3 and 4 far from everything (very bad), 5 middling distance.
    distance = np.array([[0.05, 0.5, 0.6, 0.7, 0.8],
                         [0.13, 0.5, 0.6, 0.7, 0.8],
                         [0.9, 0.9, 0.9, 0.9, 0.9],
                         [0.7, 0.8, 0.7, 0.6, 0.9],
                         [0.5, 0.9, 0.9, 0.9, 0.9],
                         [0.3, 0.4, 0.4, 0.4, 0.4]], np.float32)
    interaction = np.zeros((6, 8), bool)
    interaction[1, 5] = True
    drawer = np.array([0, 0, -0.3, 0, 0, 0], np.float32)
    return {"distance": distance, "interaction": interaction, "drawer_qpos": drawer,
            "stack_error": np.full(6, 0.3, np.float32)}


def test_heuristic_classes_follow_sensei():
    labels = interest(_features(), InterestConfig())
    assert labels["interesting"].tolist() == [True, True, True, False, False, False]
    assert labels["good"].tolist() == [True, False, False, False, False, False]
    assert labels["bad"].tolist() == [False, False, False, True, True, False]
    assert np.argmax(labels["score"]) in (0, 1) and labels["score"][3] < labels["score"][0]


def test_contrastive_pairs_put_the_good_frame_in_the_labelled_slot():
    cfg = PairsConfig(contrastive=200, uniform=50)
    labels = interest(_features(), InterestConfig())
    plan = plan_pairs(labels, cfg, lambda a, b: compare(a, b, InterestConfig()), np.random.default_rng(0))
    assert not plan["fallback"]
    index, truth, kind = plan["index"], plan["ground_truth"], plan["kind"]
    assert index.shape == (250, 2) and truth.dtype == np.int8
    contrastive = kind == CONTRASTIVE
    assert contrastive.sum() == 200 and (kind == UNIFORM).sum() == 50
    rows = np.arange(len(index))[contrastive]
    preferred, other = index[rows, truth[rows]], index[rows, 1 - truth[rows]]
    assert np.all(preferred == 0) and np.all(np.isin(other, [3, 4]))
    # The interesting frame lands in both slots (no position prior beyond 50/50).
    assert 0.35 < truth[contrastive].mean() < 0.65
    # Uniform pairs: two different frames, label from the score.
    uniform = ~contrastive
    assert np.all(index[uniform, 0] != index[uniform, 1])
    first, second = labels["score"][index[uniform, 0]], labels["score"][index[uniform, 1]]
    assert np.all((truth[uniform] == 0) == (first > second))


def test_fallback_quantiles_when_no_frame_is_strictly_good():
    features = _features()
    features["distance"][0, 0] = 0.2  # nothing within 0.122 m any more
    cfg = PairsConfig(contrastive=50, fallback_quantile=0.2)
    plan = plan_pairs(interest(features, InterestConfig()), cfg, lambda a, b: compare(a, b, InterestConfig()),
                      np.random.default_rng(1))
    assert plan["fallback"]
    rows = np.arange(50)
    preferred = plan["index"][rows, plan["ground_truth"]]
    assert np.all(preferred == 1)  # the single top-scoring frame (ball moving)
