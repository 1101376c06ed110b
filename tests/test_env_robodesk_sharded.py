"""Robodesk collection with the worlds split over 4 virtual CPU devices equals the one-device collection.

Two subprocesses run the random-walk collect stage on the same micro config, one with
`--xla_force_host_platform_device_count=4` (one world per device: its own contact buffers and render context),
one with a single device. Ints and flags must be equal; floats and images agree to the last bits only, because
MJX-Warp's results depend on the number of worlds in one compiled program (one 4-world program against four
1-world programs differ by up to 4e-6 in qvel without any sharding); images are allowed one level of rounding on
a few pixels. The 4-device run also reports the shardings of the env state and of a chunk's records.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax_env import subprocess_env

NUM_ENVS = 4
OVERRIDES = {"env": {"num_envs": NUM_ENVS, "episode_length": 8, "image_size": 32},  # auto-reset at step 4
             "collect": {"steps": 8, "chunk_steps": 4}}


def _worker(out: Path) -> None:
    import jax

    from jax.sharding import PartitionSpec as P

    from sensei_jax import config as config_lib
    from sensei_jax.domains.robodesk import DOMAIN
    from sensei_jax.pipeline import collect
    from sensei_jax.pipeline.envs import make_env

    cfg = config_lib.load(overrides={**OVERRIDES, "run": {"root": str(out), "name": "run"}})
    env = make_env(cfg)
    devices = len(jax.local_devices())
    collect.collect_random(cfg, env, out / f"collect_{devices}")
    result = {"devices": devices}
    if devices > 1:
        mesh = collect.local_mesh(NUM_ENVS)
        key = jax.device_put(jax.random.key(0), jax.sharding.NamedSharding(mesh, P()))
        states = collect.build_reset(env, NUM_ENVS, mesh)(key)
        actions = jax.device_put(np.zeros((NUM_ENVS, env.action_size), np.float32), states.reward.sharding)
        chunk = collect.build_chunk(env, DOMAIN.record, cfg.collect.action_smoothing, cfg.collect.chunk_steps, mesh)
        _, _, records = chunk(states, actions, key)
        contacts = states.data._impl.contact__frame
        result.update(
            qpos_spec=list(states.data.qpos.sharding.spec), image_spec=list(states.obs["image"].sharding.spec),
            qpos_devices=len(states.data.qpos.sharding.device_set),
            contact_rows=contacts.shape[0], contact_rows_per_device=[s.data.shape[0] for s in
                                                                     contacts.addressable_shards],
            record_spec=list(records["image"].sharding.spec), record_shape=list(records["image"].shape),
            record_shard_shape=list(records["image"].sharding.shard_shape(records["image"].shape)))
        try:
            collect.local_mesh(6)
        except ValueError as error:
            result["error"] = str(error)
    (out / f"result_{devices}.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("robodesk_sharded")
    results = {}
    for devices in (4, 1):
        worker = subprocess.run([sys.executable, __file__, str(out)], env=subprocess_env(devices), capture_output=True,
                                text=True, timeout=600)
        assert worker.returncode == 0, (worker.stdout + worker.stderr)[-4000:]
        results[devices] = json.loads((out / f"result_{devices}.json").read_text())
    return out, results


def _chunks(directory: Path) -> list[dict[str, np.ndarray]]:
    from sensei_jax.pipeline.collection import load_chunk

    return [load_chunk(directory, index) for index in range(2)]


def test_four_devices_collect_what_one_device_collects(runs):
    out, results = runs
    assert results[4]["devices"] == 4 and results[1]["devices"] == 1
    for sharded, single in zip(_chunks(out / "collect_4"), _chunks(out / "collect_1")):
        for key in ("interaction", "success", "done", "episode_step"):
            np.testing.assert_array_equal(sharded[key], single[key], err_msg=key)
        assert single["done"].any()  # an auto-reset happened inside the compared steps
        for key in ("state", "reward", "distance", "drawer_qpos", "stack_error"):
            np.testing.assert_allclose(sharded[key], single[key], rtol=0, atol=1e-4, err_msg=key)
        images = sharded["image"].astype(int) - single["image"].astype(int)
        assert np.abs(images).max() <= 1 and np.mean(images != 0) < 1e-3, (np.abs(images).max(),
                                                                            np.mean(images != 0))
        assert single["image"].std() > 10  # rendered scenes, not blank frames
        # The worlds differ from one another, so a device rendering another device's worlds would show.
        assert not np.array_equal(single["image"][:, 0], single["image"][:, 1])


def test_the_state_and_the_records_are_split_over_the_data_axis(runs):
    _, results = runs
    result = results[4]
    assert result["qpos_spec"][0] == "data" and result["image_spec"][0] == "data"
    assert result["qpos_devices"] == 4
    # Each device holds the contact buffer of its own world (64 rows), not one sized for the whole batch.
    assert result["contact_rows"] == 64 * NUM_ENVS and result["contact_rows_per_device"] == [64] * 4
    assert result["record_spec"][:2] == [None, "data"]
    assert result["record_shape"] == [4, NUM_ENVS, 32, 32, 3] and result["record_shard_shape"] == [4, 1, 32, 32, 3]
    assert "env.num_envs=6 cannot be split evenly over the 4 local devices" in result["error"]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
