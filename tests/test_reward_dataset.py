"""The pair dataset: on-disk layout, memory mapping, preference files and their validation, batching."""

import json

import numpy as np
import pytest

from sensei_jax.reward.dataset import (DatasetError, PairDataset, iterate_batches, resize_images, split_indices)


def _filled(tmp_path, num_pairs=10, size=8, state_size=4):
    ds = PairDataset.create(tmp_path / "pairs", num_pairs, image_shape=(size, size, 3), state_size=state_size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(num_pairs, 2, size, size, 3), dtype=np.uint8)
    states = rng.normal(size=(num_pairs, 2, state_size)).astype(np.float32)
    ds.images[:4] = images[:4]
    ds.states[:4] = states[:4]
    ds.flush(num_written=4)
    ds.images[4:] = images[4:]
    ds.states[4:] = states[4:]
    ds.flush()
    return ds, images, states


def test_create_write_open_roundtrip(tmp_path):
    ds, images, states = _filled(tmp_path)
    reopened = PairDataset.open(tmp_path / "pairs")
    assert len(reopened) == 10 and reopened.complete
    assert isinstance(reopened.images, np.memmap)  # streamed from disk, not loaded
    assert reopened.images.dtype == np.uint8 and reopened.images.shape == (10, 2, 8, 8, 3)
    assert reopened.states.dtype == np.float32 and reopened.states.shape == (10, 2, 4)
    np.testing.assert_array_equal(reopened.images[3:7], images[3:7])
    np.testing.assert_array_equal(np.asarray(reopened.states), states)
    with pytest.raises(ValueError):  # read-only by default
        reopened.images[0] = 0
    with pytest.raises(FileExistsError):
        PairDataset.create(tmp_path / "pairs", 3)


def test_partial_progress_is_recorded(tmp_path):
    ds = PairDataset.create(tmp_path / "d", 6, image_shape=(4, 4, 3))
    ds.flush(num_written=2)
    again = PairDataset.open(tmp_path / "d", writable=True)
    assert again.num_written == 2 and not again.complete
    with pytest.raises(DatasetError, match="2 of 6"):
        again.require_complete()
    again.images[2:] = 7
    again.flush()
    assert PairDataset.open(tmp_path / "d").complete


def test_preferences_roundtrip_and_names(tmp_path):
    ds, _, _ = _filled(tmp_path)
    labels = np.array([0, 1, 2, 3, 0, 1, 0, 1, 1, 0])
    prob = np.linspace(0, 1, 10)
    ds.save_preferences("ground_truth", labels)
    ds.save_preferences("oracle", labels, prob_first=prob)
    assert ds.preference_names() == ["ground_truth", "oracle"]
    loaded = PairDataset.open(ds.directory).load_preferences("oracle")
    assert loaded.dtype == np.int8
    np.testing.assert_array_equal(loaded, labels)
    np.testing.assert_allclose(ds.load_prob_first("oracle"), prob, rtol=1e-6)
    assert ds.load_prob_first("ground_truth") is None
    assert ds.label_counts("oracle") == {"first": 4, "second": 4, "tie": 1, "unknown": 1}
    # Overwriting without probabilities removes the stale probability file.
    ds.save_preferences("oracle", labels)
    assert ds.load_prob_first("oracle") is None
    # Motif stores labels as float64; integral floats are accepted.
    np.save(ds.directory / "preference" / "preferences_motif.npy", labels.astype(np.float64))
    np.testing.assert_array_equal(ds.load_preferences("motif"), labels)
    assert not list((ds.directory / "preference").glob("*.tmp"))


def test_bad_preferences_raise(tmp_path):
    ds, _, _ = _filled(tmp_path)
    with pytest.raises(ValueError, match="expected 10 labels"):
        ds.save_preferences("x", np.zeros(9, np.int8))
    with pytest.raises(ValueError, match=r"found \[4\]"):
        ds.save_preferences("x", np.array([0, 1, 4, 0, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="prob_first"):
        ds.save_preferences("x", np.zeros(10, np.int8), prob_first=np.full(10, 1.5))
    with pytest.raises(ValueError, match="name"):
        ds.save_preferences("../evil", np.zeros(10, np.int8))
    with pytest.raises(FileNotFoundError, match="missing_name"):
        ds.load_preferences("missing_name")
    folder = ds.directory / "preference"
    np.save(folder / "preferences_short.npy", np.zeros(7, np.int8))
    with pytest.raises(DatasetError, match="preferences_short.npy.*expected 10 labels"):
        ds.load_preferences("short")
    np.save(folder / "preferences_values.npy", np.full(10, 0.5))
    with pytest.raises(DatasetError, match="preferences_values.npy"):
        ds.load_preferences("values")
    (folder / "preferences_corrupt.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DatasetError, match="preferences_corrupt.npy"):
        ds.load_preferences("corrupt")


def test_open_detects_inconsistent_files(tmp_path):
    _filled(tmp_path)
    root = tmp_path / "pairs"
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "num_pairs": 11}))
    with pytest.raises(DatasetError, match="images.npy"):
        PairDataset.open(root)
    (root / "meta.json").write_text(json.dumps(meta))
    np.save(root / "states.npy", np.zeros((9, 2, 4), np.float32))
    with pytest.raises(DatasetError, match="states.npy"):
        PairDataset.open(root)
    raw = (root / "images.npy").read_bytes()
    (root / "images.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="images.npy"):
        PairDataset.open(root)
    (root / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="meta.json"):
        PairDataset.open(root)
    with pytest.raises(DatasetError, match="meta.json"):
        PairDataset.open(tmp_path / "nowhere")


def test_batches_cover_indices_padded_and_resized(tmp_path):
    ds, images, _ = _filled(tmp_path, num_pairs=10, size=8)
    labels = np.arange(10, dtype=np.int8) % 4
    indices = np.array([0, 2, 3, 5, 6, 7, 9])
    batches = list(iterate_batches(ds, indices, labels, batch_size=3, rng=np.random.default_rng(1), image_size=4))
    assert len(batches) == 3
    assert all(b.images.shape == (3, 2, 4, 4, 3) and b.images.dtype == np.uint8 for b in batches)
    seen = np.concatenate([b.indices[b.mask] for b in batches])
    assert sorted(seen.tolist()) == indices.tolist()
    assert batches[-1].mask.tolist() == [True, False, False]
    for b in batches:
        np.testing.assert_array_equal(b.labels, labels[b.indices])
        np.testing.assert_array_equal(b.images, resize_images(images[b.indices], 4))
    # Resizing keeps a constant image constant, at integer and non-integer factors.
    flat = np.full((2, 6, 6, 3), 77, np.uint8)
    assert (resize_images(flat, 3) == 77).all() and (resize_images(flat, 4) == 77).all()
    # Breaking off early stops the reader thread cleanly.
    for _ in iterate_batches(ds, np.arange(10), labels, batch_size=1, prefetch=1):
        break


def test_split_is_seeded_and_disjoint():
    train, val = split_indices(100, 0.05, seed=3)
    train2, val2 = split_indices(100, 0.05, seed=3)
    assert len(val) == 5 and len(train) == 95
    np.testing.assert_array_equal(val, val2)
    assert not set(train) & set(val)
    assert not np.array_equal(split_indices(100, 0.05, seed=4)[1], val)
