"""A killed random-walk collection resumes to what an uninterrupted one writes (Robodesk on the micro config of
tests/test_pipeline.py: 2 worlds, 2 chunks of 4 steps)."""

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax.pipeline import collect, collection

MICRO = {
    "env": {"num_envs": 2, "episode_length": 16},
    "collect": {"steps": 8, "chunk_steps": 4},
}
NUM_CHUNKS = 2


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

