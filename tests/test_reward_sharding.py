"""Reward distillation data parallel on 4 virtual CPU devices equals one device: the same per-epoch losses and
accuracies, the same reward statistics; a batch that does not split over the devices is refused by name.

The mesh runs in a subprocess (this process has initialised jax with one device); it writes its results as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("reward_mesh")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


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


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
