"""A killed random-walk collection and a killed pair rendering resume to what uninterrupted runs write (Robodesk on
the micro config of tests/test_pipeline.py: 2 worlds, 2 chunks of 4 steps, 32 pairs rendered 8 at a time)."""

import shutil

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax.pipeline import collect, collection, pairs
from sensei_jax.reward.dataset import GROUND_TRUTH, PairDataset

MICRO = {
    "env": {"num_envs": 2, "episode_length": 16},
    "collect": {"steps": 8, "chunk_steps": 4},
    "pairs": {"contrastive": 24, "uniform": 8, "render_batch": 8},
}
NUM_CHUNKS, NUM_PAIRS, RENDER_BATCH = 2, 32, 8


class Interrupted(Exception):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders 'whole' (collected in one go) and 'killed' (killed after writing chunk 1 but before its carry,
    then resumed), with the config."""
    root = tmp_path_factory.mktemp("runs")
    cfg = config_lib.load(overrides={**MICRO, "run": {"root": str(root), "name": "whole"}})
    collect.run_stage(cfg, root / "whole")

    mp = pytest.MonkeyPatch()
    real_write_npz = collect.files.write_npz

    def write_then_die(path, **arrays):
        real_write_npz(path, **arrays)
        if path.name == "chunk_00001.npz":
            raise Interrupted(path)

    mp.setattr(collect.files, "write_npz", write_then_die)
    with pytest.raises(Interrupted):
        collect.run_stage(cfg, root / "killed")
    mp.undo()
    out = root / "killed" / "collect"
    assert (out / "chunk_00001.npz").is_file() and not (out / "carry_00001.npz").exists()
    assert collection.complete_chunks(out) == 1  # chunk 1 has no carry: it is collected again
    (out / "chunk_00001.npz").write_bytes(b"torn")  # and the file it left is not trusted
    collect.run_stage(cfg, root / "killed")
    return cfg, root


def test_a_killed_random_walk_collection_resumes_to_the_uninterrupted_chunks(runs):
    _, root = runs
    whole, killed = root / "whole" / "collect", root / "killed" / "collect"
    assert collection.read_meta(killed)["num_chunks"] == collection.read_meta(whole)["num_chunks"] == NUM_CHUNKS
    for index in range(NUM_CHUNKS):
        a, b = collection.load_chunk(whole, index), collection.load_chunk(killed, index)
        assert set(a) == set(b) == set(collection.CHUNK_KEYS)
        for key in collection.CHUNK_KEYS:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"chunk {index} {key}")
        with np.load(collection.carry_path(whole, index)) as x, np.load(collection.carry_path(killed, index)) as y:
            assert x.files == y.files
            for key in x.files:
                np.testing.assert_array_equal(y[key], x[key], err_msg=f"carry {index} {key}")
    # The walk moved: the chunks differ from each other, so equal chunks are no accident of a frozen world.
    first, second = (collection.load_chunk(whole, i, ("state",))["state"] for i in range(NUM_CHUNKS))
    assert not np.array_equal(first, second)


def test_a_killed_pair_rendering_resumes_to_the_uninterrupted_dataset(runs, monkeypatch):
    cfg, root = runs
    pairs.run_stage(cfg, root / "whole")
    shutil.copytree(root / "whole" / "collect", root / "pairs_killed" / "collect")

    real_flush = PairDataset.flush

    def flush_then_die(self, num_written=None):
        real_flush(self, num_written)
        if num_written == 2 * RENDER_BATCH:
            raise Interrupted(self.directory)

    monkeypatch.setattr(PairDataset, "flush", flush_then_die)
    with pytest.raises(Interrupted):
        pairs.run_stage(cfg, root / "pairs_killed")
    monkeypatch.undo()
    assert PairDataset.open(root / "pairs_killed" / "pairs").num_written == 2 * RENDER_BATCH

    calls = []
    real_compiled_once = pairs.compiled_once

    def counting(env, name, build):
        render = real_compiled_once(env, name, build)
        return lambda physics: calls.append(len(physics)) or render(physics)

    monkeypatch.setattr(pairs, "compiled_once", counting)
    pairs.run_stage(cfg, root / "pairs_killed")
    monkeypatch.undo()

    a, b = PairDataset.open(root / "whole" / "pairs"), PairDataset.open(root / "pairs_killed" / "pairs")
    assert len(a) == len(b) == NUM_PAIRS and b.complete
    np.testing.assert_array_equal(np.asarray(b.images), np.asarray(a.images))
    np.testing.assert_array_equal(np.asarray(b.states), np.asarray(a.states))
    np.testing.assert_array_equal(b.load_preferences(GROUND_TRUTH), a.load_preferences(GROUND_TRUTH))
    for name in ("source_index", "kind"):
        np.testing.assert_array_equal(b.load_array(name), a.load_array(name), err_msg=name)
    # Every pair was rendered: two different frames, none left black by a skipped batch.
    assert (np.asarray(b.images).reshape(NUM_PAIRS, 2, -1).max(-1) > 0).all()
    # The resumed stage rendered only the batches after the last flushed one (it did not start over).
    assert len(calls) == NUM_PAIRS // RENDER_BATCH - 2
