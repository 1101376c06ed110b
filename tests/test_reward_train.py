"""Bradley-Terry distillation end to end on synthetic pairs: learning, ties/unknowns, checkpoints, resume, CLI."""

import csv
import json

import jax
import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import run
from sensei_jax.pipeline import distill
from sensei_jax.reward.config import RewardConfig
from sensei_jax.reward.dataset import PairDataset
from sensei_jax.reward.model import RewardModel
from sensei_jax.reward.train import train

NUM_PAIRS, SIZE, NUM_TIES, NUM_UNKNOWN = 480, 64, 24, 24
TINY = dict(channels=(8, 16, 16), hidden=64, epochs=3, learning_rate=3e-3, weight_decay=1e-4, val_fraction=0.1,
            seed=0, log_every=5)


def _synthetic_pairs(directory):
    """The preferred image carries a bright red square on a dim noisy background; ties have one in both images;
    the unknown pairs are labelled 3 although their square sits in the *second* image while labelled data says
    nothing about them (if they leaked into training as 'first' they would teach the wrong thing)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 110, size=(NUM_PAIRS, 2, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=NUM_PAIRS).astype(np.int8)
    labels[:NUM_TIES] = 2
    labels[NUM_TIES:NUM_TIES + NUM_UNKNOWN] = 3
    for i in range(NUM_PAIRS):
        slots = {0: [0], 1: [1], 2: [0, 1], 3: [1]}[int(labels[i])]
        for slot in slots:
            y, x = rng.integers(0, SIZE - 12, size=2)
            images[i, slot, y:y + 12, x:x + 12] = (255, 30, 30)
    dataset = PairDataset.create(directory, NUM_PAIRS, image_shape=(SIZE, SIZE, 3), state_size=3)
    dataset.images[:] = images
    dataset.flush()
    dataset.save_preferences("oracle", labels)
    dataset.save_preferences("ground_truth", np.where(labels == 3, 1, labels))
    return dataset, images, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    dataset, images, labels = _synthetic_pairs(root / "pairs")
    summary = train(dataset, "oracle", RewardConfig(**TINY), root / "distill", progress=False)
    return root, dataset, images, labels, summary


def test_learns_the_visible_feature(trained):
    root, dataset, images, labels, summary = trained
    assert summary["best_val_accuracy"] > 0.95
    assert summary["dropped_unknown"] == NUM_UNKNOWN
    assert summary["train_pairs"] + summary["val_pairs"] == NUM_PAIRS - NUM_UNKNOWN
    # Independently of the trainer's bookkeeping: the reloaded model ranks held-out decided pairs correctly.
    model = RewardModel.load(root / "distill")
    rewards = np.asarray(jax.jit(model.reward)(images))  # [N, 2]
    decided = labels < 2
    accuracy = np.mean((rewards[decided, 1] > rewards[decided, 0]) == (labels[decided] == 1))
    assert accuracy > 0.95
    # Ties are pulled together: their reward gap is smaller than the decided pairs'.
    gaps = np.abs(rewards[:, 0] - rewards[:, 1])
    assert np.median(gaps[labels == 2]) < np.median(gaps[decided])


def test_outputs_and_reload_identical(trained):
    root, dataset, images, labels, summary = trained
    out = root / "distill"
    for name in ("model.json", "reward_stats.json", "summary.json", "metrics.jsonl", "curve.csv"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents*"))
    rows = list(csv.DictReader((out / "curve.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert summary["best_val_accuracy"] == max(float(r["val_accuracy"]) for r in rows)
    first, second = RewardModel.load(out), RewardModel.load(out)
    score = jax.jit(lambda m, x: m.reward(x))
    np.testing.assert_array_equal(np.asarray(score(first, images[:16])), np.asarray(score(second, images[:16])))
    # The saved statistics were computed with the same (best) parameters in the training process.
    stats = first.stats
    assert stats["epoch"] == summary["best_epoch"] and stats["count"] == 2 * (NUM_PAIRS - summary["val_pairs"]
                                                                              - _val_unknown(summary))
    from sensei_jax.reward.dataset import split_indices

    train_idx, _ = split_indices(NUM_PAIRS, TINY["val_fraction"], TINY["seed"])
    rewards = np.asarray(score(first, images[train_idx]))
    np.testing.assert_allclose(rewards.mean(), stats["mean"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rewards.std(), stats["std"], rtol=1e-4, atol=1e-4)
    normalized = np.asarray(jax.jit(lambda m, x: m.reward(x, normalize=True))(first, images[train_idx]))
    assert abs(normalized.mean()) < 1e-3 and abs(normalized.std() - 1) < 1e-3
    assert stats["quantiles"]["0.05"] < stats["quantiles"]["0.5"] < stats["quantiles"]["0.95"]


def _val_unknown(summary):
    # Pairs in the validation split that are unknown (dropped from val_pairs but still validation images).
    from sensei_jax.reward.dataset import split_indices

    _, val_idx = split_indices(NUM_PAIRS, TINY["val_fraction"], TINY["seed"])
    return int(np.sum((val_idx >= NUM_TIES) & (val_idx < NUM_TIES + NUM_UNKNOWN)))


def test_cli_resumes_after_last_epoch_and_checks_inputs(trained, capsys):
    root, dataset, images, labels, summary = trained
    out = root / "distill"
    before = (out / "curve.csv").read_text().splitlines()
    args = ["distill", "--dataset", str(root / "pairs"), "--preferences", "oracle", "--reward.epochs", "4"]
    args += [f"--reward.{key}={value if not isinstance(value, tuple) else list(value)}"
             for key, value in TINY.items() if key != "epochs"]
    assert run.main(args) == 0
    assert "resuming after epoch 3" in capsys.readouterr().out
    after = (out / "curve.csv").read_text().splitlines()
    assert after[:4] == before and len(after) == 5  # header + epochs 1-3 kept, epoch 4 appended
    # Finished: a rerun returns the summary without training; so does the pipeline's entry point on the run folder.
    assert run.main(args) == 0
    assert "resuming" not in capsys.readouterr().out
    cfg = config_lib.load(overrides={"reward": {**TINY, "epochs": 4, "preferences": "oracle"}})
    stage_summary = distill.run_stage(cfg, root)
    assert stage_summary["epochs"] == 4 and stage_summary["best_val_accuracy"] > 0.95
    assert stage_summary == json.loads((out / "summary.json").read_text())
    # A different label set cannot resume into the same folder; missing labels are named.
    assert run.main([*args[:4], "ground_truth", *args[5:]]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert run.main([*args[:4], "nope", *args[5:]]) == 2
    assert "no preference labels 'nope'" in capsys.readouterr().err


def test_preferences_resolution_and_all_unknown(tmp_path, trained):
    root, dataset, *_ = trained
    cfg = config_lib.load()
    assert distill.resolve_preferences(cfg, dataset) == "oracle"  # the only one besides the ground truth
    explicit = config_lib.merge(cfg, {"reward": {"preferences": "ground_truth"}})
    assert distill.resolve_preferences(explicit, dataset) == "ground_truth"
    small = PairDataset.create(tmp_path / "unknown", 8, image_shape=(64, 64, 3))
    small.flush()
    small.save_preferences("vlm", np.full(8, 3, np.int8))
    small.save_preferences("random", np.zeros(8, np.int8))
    with pytest.raises(ValueError, match="cannot tell which labels"):
        distill.resolve_preferences(cfg, small)
    with pytest.raises(ValueError, match="after dropping unknowns"):
        train(small, "vlm", RewardConfig(**TINY), tmp_path / "out", progress=False)


def test_images_cached_at_model_resolution(tmp_path):
    from sensei_jax.reward.dataset import resize_images
    from sensei_jax.reward.train import model_resolution_images

    dataset = PairDataset.create(tmp_path / "big", 5, image_shape=(96, 96, 3))
    dataset.images[:] = np.random.default_rng(0).integers(0, 256, size=(5, 2, 96, 96, 3), dtype=np.uint8)
    dataset.flush()
    cached = model_resolution_images(dataset, 64, tmp_path / "cache", chunk=4, progress=False)
    assert cached.shape == (5, 2, 64, 64, 3) and cached.dtype == np.uint8
    np.testing.assert_array_equal(cached, resize_images(np.asarray(dataset.images), 64))
    stamp = (tmp_path / "cache" / "images_64.npy").stat().st_mtime_ns
    again = model_resolution_images(dataset, 64, tmp_path / "cache", chunk=4, progress=False)
    assert (tmp_path / "cache" / "images_64.npy").stat().st_mtime_ns == stamp  # reused, not rebuilt
    np.testing.assert_array_equal(again, cached)
    assert model_resolution_images(dataset, 96, tmp_path / "cache") is dataset.images  # already the right size
