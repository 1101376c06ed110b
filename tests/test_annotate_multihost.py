"""The annotate stage with two processes on localhost (2 virtual CPU devices each, `jax.distributed`): a
(data 2, model 2) mesh over both hosts gives the labels of one device, every process returns the same summary,
and process 0 writes the label set; a model group spanning hosts is refused.
"""

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax_env import subprocess_env

OVERRIDES = ["--annotate.annotator", "llava", "--vlm.dtype", "float32", "--annotate.batch_size", "4",
             "--annotate.partition_size", "4", "--annotate.tie_margin", "0.02", "--annotate.min_answer_mass", "0"]


def _worker(out: Path, process_id: int, port: int) -> None:
    import jax

    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from sensei_jax import config as config_lib
    from sensei_jax.annotators import make_annotator
    from sensei_jax.pipeline.annotate import annotate_dataset
    from sensei_jax.reward.dataset import PairDataset
    from sensei_jax.annotators.vlm import from_config
    from sensei_jax.vlm.sharding import make_mesh

    cfg = config_lib.load(None, OVERRIDES + ["--vlm.path", str(out / "ckpt"), "--annotate.model_parallel", "2"])
    dataset = PairDataset.open(out / "pairs")
    single = dataclasses.replace(cfg.annotate, model_parallel=1)
    prob, label = from_config(cfg.vlm, single, devices=jax.local_devices()[:1]).annotate(np.asarray(dataset.images))
    summary = annotate_dataset(dataset, make_annotator(cfg), cfg, out / "annotate")
    result = {"devices": len(jax.devices()), "local": len(jax.local_devices()), "prob": prob.tolist(),
              "label": label.tolist(), "counts": summary["counts"], "processes": summary["processes"]}
    try:
        make_mesh(4)  # a model group of 4 would span both hosts
    except ValueError as error:
        result["error"] = str(error)
    (out / f"result_{process_id}.json").write_text(json.dumps(result))
    jax.distributed.shutdown()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from sensei_jax.annotators.config import AnnotateConfig
    from sensei_jax.reward.dataset import PairDataset
    from sensei_jax.vlm.llava_config import LlavaConfig
    from sensei_jax.vlm.tiny import write_tiny_checkpoint

    out = tmp_path_factory.mktemp("annotate_multihost")
    write_tiny_checkpoint(out / "ckpt", [AnnotateConfig().question], seed=5, std=0.15,
                          config=LlavaConfig.tiny(image_token_index=3, num_key_value_heads=4))
    dataset = PairDataset.create(out / "pairs", 6, image_shape=(32, 32, 3), state_size=1)
    dataset.images[:] = np.random.default_rng(0).integers(0, 256, (6, 2, 32, 32, 3), dtype=np.uint8)
    dataset.flush()
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    workers = [subprocess.Popen([sys.executable, __file__, str(out), str(i), str(port)], env=subprocess_env(2),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-4000:]
    return out, [json.loads((out / f"result_{i}.json").read_text()) for i in range(2)]


def test_two_processes_label_like_one_device(results):
    from sensei_jax.reward.dataset import PairDataset

    out, (first, second) = results
    assert (first["devices"], first["local"], first["processes"]) == (4, 2, 2)
    assert len(set(first["label"])) > 1  # decided labels of more than one kind
    dataset = PairDataset.open(out / "pairs")
    np.testing.assert_array_equal(dataset.load_preferences("llava"), first["label"])
    np.testing.assert_allclose(dataset.load_prob_first("llava"), first["prob"], atol=1e-5)
    assert second["label"] == first["label"] and second["counts"] == first["counts"]
    assert "annotate.model_parallel=4 must divide the 2 devices of each host" in first["error"]
    assert sorted(p.name for p in (out / "annotate" / "partitions" / "llava").glob("part_*.npz")) == \
        ["part_00000.npz", "part_00001.npz"]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
