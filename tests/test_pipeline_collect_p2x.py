"""The collect stage with `collect.policy: p2x`: a Plan2Explore agent trains while it collects, and the chunks it
writes have the random walk's format (so `pairs` reads them unchanged) with states that restore to the frames."""

import jax
import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import files
from sensei_jax.explore.sensei import ENSEMBLE
from sensei_jax.metrics import read_jsonl
from sensei_jax.pipeline import collect, collection, pairs
from sensei_jax.pipeline.envs import make_env

NUM_CHUNKS, CHUNK_STEPS, WORLDS = 4, 4, 2
MICRO = {
    "env": {"num_envs": WORLDS, "episode_length": 16},
    "collect": {"policy": "p2x", "steps": NUM_CHUNKS * CHUNK_STEPS, "chunk_steps": CHUNK_STEPS},
    "dreamer": {"preset": "tiny"},
    "explore": {"ensemble_size": 2, "ensemble_units": 16, "ensemble_layers": 1},
    "train": {"train_start": 0, "random_steps": 0, "batch_size": 2, "batch_length": 4, "train_ratio": 8.0,
              "log_every": 8, "replay_capacity": 64},
}


class Interrupted(Exception):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A p2x collection killed right after chunk 1 reached the disk (before the loop checkpointed after it), then
    resumed. Chunk 1 is moved aside so that the resumed agent writes it again: returns it as `redone`."""
    root = tmp_path_factory.mktemp("runs")
    cfg = config_lib.load(overrides={**MICRO, "run": {"root": str(root), "name": "p2x"}})
    out = root / "p2x" / "collect"
    real_write_npz = collect.files.write_npz

    def write_then_die(path, **arrays):
        real_write_npz(path, **arrays)
        if path.name == "chunk_00001.npz":
            raise Interrupted(path)

    mp = pytest.MonkeyPatch()
    mp.setattr(collect.files, "write_npz", write_then_die)
    with pytest.raises(Interrupted):
        collect.run_stage(cfg, root / "p2x")
    mp.undo()
    assert not (out / "meta.json").exists() and not (out / "chunk_00002.npz").exists()
    first_run = collection.load_chunk(out, 1)
    (out / "chunk_00001.npz").rename(out / "first_run_chunk_00001.npz")
    summary = collect.run_stage(cfg, root / "p2x")
    return cfg, out, summary, first_run


def test_p2x_chunks_have_the_random_walk_format(collected):
    cfg, out, summary, _ = collected
    env = make_env(cfg)
    meta = collection.read_meta(out)
    assert meta["policy"] == "p2x" and meta["num_chunks"] == NUM_CHUNKS
    assert summary["transitions"] == NUM_CHUNKS * CHUNK_STEPS * WORLDS
    size, state_size = cfg.env.image_size, env.physics_state(env.reset(jax.random.key(0))).shape[-1]
    expected = {"image": ((size, size, 3), np.uint8), "state": ((state_size,), np.float32),
                "interaction": ((len(collection.INTERACTION_NAMES),), np.bool_),
                "success": ((len(meta["success_names"]),), np.bool_), "reward": ((), np.float32),
                "done": ((), np.bool_), "episode_step": ((), np.int32),
                "distance": ((len(collection.DISTANCE_NAMES),), np.float32), "drawer_qpos": ((), np.float32),
                "stack_error": ((), np.float32)}
    for index in range(NUM_CHUNKS):
        chunk = collection.load_chunk(out, index)
        assert set(chunk) == set(collection.CHUNK_KEYS)
        for key, (shape, dtype) in expected.items():
            assert chunk[key].shape == (CHUNK_STEPS, WORLDS, *shape), (index, key)
            assert chunk[key].dtype == dtype, (index, key)
    assert not list(out.glob("carry_*.npz"))  # p2x resumes from the agent's checkpoint instead
    data = collection.load_collection(out, ("image", "state", "episode_step", "done"))
    assert data["image"].shape[0] == NUM_CHUNKS * CHUNK_STEPS * WORLDS
    # Episodes of 8 policy steps over 16 steps: every (self-resetting) world finishes one and starts another.
    assert data["done"].sum() >= WORLDS and data["episode_step"].min() == 0
    assert data["episode_step"].max() <= cfg.env.episode_length
    assert data["image"].std() > 0 and not np.array_equal(data["image"][0], data["image"][-1])

    # Stored states restore to the stored frames (what `pairs` relies on), sampled across chunks and worlds.
    picks = np.array([0, 9, 17, len(data["state"]) - 1])
    renderer = pairs.build_renderer(make_env(cfg, render_images=False), cfg.env.camera, size)
    frames = np.asarray(renderer(data["state"][picks]))
    np.testing.assert_array_equal(frames, data["image"][picks])


def test_p2x_agent_trained_while_collecting(collected):
    _, out, summary, _ = collected
    meta = files.read_json(out / "meta.json")
    assert summary["train_steps"] == meta["train_steps"] > 0
    assert np.isfinite(meta["train_metrics"][f"loss/{ENSEMBLE}"])  # the Plan2Explore ensemble learned
    rows = read_jsonl(out / "agent" / "metrics.jsonl")
    assert any(f"loss/{ENSEMBLE}" in row and row.get("train_steps", 0) > 0 for row in rows)
    assert (out / "agent" / "checkpoints").is_dir()


def test_a_resumed_p2x_collection_repeats_the_chunk_after_its_checkpoint(collected):
    # Killed after writing chunk 1 but before checkpointing after it: the agent resumed from the checkpoint after
    # chunk 0 and collected chunk 1 again, the same steps (which is why an existing chunk file may be kept).
    _, out, _, first_run = collected
    again = collection.load_chunk(out, 1)
    for key in collection.CHUNK_KEYS:
        np.testing.assert_array_equal(again[key], first_run[key], err_msg=key)
