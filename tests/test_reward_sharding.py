"""Reward distillation data parallel on 4 virtual CPU devices equals one device: the same per-epoch losses and
accuracies, the same reward statistics, in one process and in two localhost processes (`jax.distributed`, 2 devices
each, process 0 writing); a batch that does not split over the devices is refused by name.

The meshes run in subprocesses (this process has initialised jax with one device); they write results as JSON.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax_env import subprocess_env

TINY = dict(channels=(4, 8, 8), hidden=16, image_size=56, epochs=2, batch_size=16, learning_rate=3e-3,
            weight_decay=1e-4, val_fraction=0.2, seed=0, log_every=2, prefetch=0)


def _worker(out: Path) -> None:
    import jax

    from sensei_jax.reward.config import RewardConfig
    from sensei_jax.reward.dataset import PairDataset
    from sensei_jax.reward.train import train

    rng = np.random.default_rng(0)
    dataset = PairDataset.create(out / "pairs", 72, image_shape=(56, 56, 3), state_size=1)
    labels = rng.integers(0, 3, size=72).astype(np.int8)
    images = rng.integers(0, 120, size=(72, 2, 56, 56, 3), dtype=np.uint8)
    images[np.arange(72), (labels == 1).astype(int), :8, :8] = 255  # the preferred image has a bright corner
    dataset.images[:] = images
    dataset.flush()
    dataset.save_preferences("oracle", labels)
    results = {}
    for count in (1, 4):
        summary = train(dataset, "oracle", RewardConfig(**TINY), out / f"distill_{count}", progress=False,
                        devices=jax.devices()[:count])
        curve = (out / f"distill_{count}" / "curve.csv").read_text().splitlines()
        results[count] = {"devices": summary["devices"], "curve": curve, "stats": summary["reward_stats"]}
    try:
        train(dataset, "oracle", RewardConfig(**dict(TINY, batch_size=6)), out / "bad", progress=False)
    except ValueError as error:
        results["error"] = str(error)
    (out / "results.json").write_text(json.dumps(results))


def _process_worker(out: Path, process_id: int, port: int) -> None:
    """One of two processes training on the dataset `_worker` wrote, over the 4 devices of both."""
    import jax

    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from sensei_jax.reward.config import RewardConfig
    from sensei_jax.reward.dataset import PairDataset
    from sensei_jax.reward.train import train

    summary = train(PairDataset.open(out / "pairs"), "oracle", RewardConfig(**TINY), out / "distill_2x2",
                    progress=False)
    (out / f"process_{process_id}.json").write_text(json.dumps({"devices": summary["devices"],
                                                               "final": summary["final"]}))
    jax.distributed.shutdown()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("reward_mesh")
    # At the default XLA level: the tolerances below were measured there (tests/jax_env.py).
    done = subprocess.run([sys.executable, __file__, str(out)], env=subprocess_env(4, optimized=True),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def _columns(curve: list[str]) -> dict[str, np.ndarray]:
    header, *rows = curve
    values = np.array([[float(v) for v in row.split(",")] for row in rows])
    return dict(zip(header.split(","), values.T))


def test_four_devices_match_one_device(results):
    one, four = results["1"], results["4"]
    assert (one["devices"], four["devices"]) == (1, 4)
    a, b = _columns(one["curve"]), _columns(four["curve"])
    assert len(a["epoch"]) == 2
    # float32 sums in another order (per-device partial sums, then the all-reduce): losses agree to 1e-4
    # relative; Adam divides by the gradient's own scale, so near-zero gradients move the weights by slightly
    # different amounts and the rewards after training agree to 1 % of their spread.
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, err_msg=key)
    for key in ("train_accuracy", "val_accuracy"):
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    spread = one["stats"]["std"]
    assert spread > 0
    for key in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(four["stats"][key], one["stats"][key], atol=0.01 * spread, err_msg=key)


def test_batch_that_does_not_split_is_refused(results):
    assert "reward.batch_size=6" in results["error"] and "4 devices" in results["error"]


def test_two_processes_match_one_device_and_only_process_0_writes(run_dir, results):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    workers = [subprocess.Popen([sys.executable, __file__, str(run_dir), str(i), str(port)],
                                env=subprocess_env(2, optimized=True), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-4000:]
    one = _columns(results["1"]["curve"])
    for i in range(2):
        summary = json.loads((run_dir / f"process_{i}.json").read_text())
        assert summary["devices"] == 4
        np.testing.assert_allclose(summary["final"]["train_loss"], one["train_loss"][-1], rtol=1e-4)
        np.testing.assert_allclose(summary["final"]["val_loss"], one["val_loss"][-1], rtol=1e-4)
    out = run_dir / "distill_2x2"
    written = _columns((out / "curve.csv").read_text().splitlines())
    np.testing.assert_allclose(written["val_loss"], one["val_loss"], rtol=1e-4)
    # One writer: one TensorBoard file and one metrics line per logging step, as with one process.
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((run_dir / "distill_1" / "metrics.jsonl").read_text().splitlines())


if __name__ == "__main__":
    if len(sys.argv) == 4:
        _process_worker(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    else:
        _worker(Path(sys.argv[1]))
