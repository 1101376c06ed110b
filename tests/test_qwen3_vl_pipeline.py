"""The annotate stage with `vlm.family: qwen3_vl`: the `annotate` command labels a pair dataset with a tiny random
Qwen3-VL checkpoint, names the family in its summary, and a run killed after its first partition resumes to the
labels of an uninterrupted one. (The whole collect -> pairs -> annotate pipeline with this family is the same
stage after the Robodesk stages; on the micro config it takes about 100 s on a 2-core CPU, too long for here.)"""

import numpy as np
import pytest

from sensei_jax import files
from sensei_jax.pipeline import annotate as annotate_stage
from sensei_jax.reward.dataset import PairDataset

NUM_PAIRS = 10


class Interrupted(Exception):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from sensei_jax.annotators.config import AnnotateConfig
    from sensei_jax.vlm.qwen3_vl.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("qwen3_vl"), [AnnotateConfig().question], seed=3, std=0.1)


def _pairs(path):
    rng = np.random.default_rng(0)
    dataset = PairDataset.create(path, NUM_PAIRS, image_shape=(32, 48, 3), state_size=4)
    dataset.images[:] = rng.integers(0, 256, (NUM_PAIRS, 2, 32, 48, 3), dtype=np.uint8)
    dataset.states[:] = rng.normal(size=(NUM_PAIRS, 2, 4))
    dataset.flush(num_written=NUM_PAIRS)
    return path


def _annotate(pairs, out, checkpoint, name):
    from sensei_jax.run import main

    return main(["annotate", "--dataset", str(pairs), "--out", str(out), "--annotate.name", name,
                 "--annotate.annotator", "llava", "--vlm.path", str(checkpoint), "--vlm.family", "qwen3_vl",
                 "--vlm.dtype", "float32", "--annotate.batch_size", "4", "--annotate.partition_size", "4",
                 "--annotate.min_answer_mass", "0"])


def test_the_annotate_command_labels_pairs_with_qwen3_vl_and_resumes(checkpoint, tmp_path):
    pairs = _pairs(tmp_path / "pairs")
    assert _annotate(pairs, tmp_path / "whole", checkpoint, "whole") == 0
    labels = PairDataset.open(pairs).load_preferences("whole")
    prob = PairDataset.open(pairs).load_prob_first("whole")
    assert labels.shape == (NUM_PAIRS,) and set(labels.tolist()) <= {0, 1, 2, 3}
    assert np.abs(prob - 0.5).max() > 1e-3
    summary = files.read_json(tmp_path / "whole" / "summary.json")
    assert summary["family"] == "qwen3_vl" and summary["pairs"] == NUM_PAIRS and summary["mode"] == "score"

    real_write_npz = annotate_stage.files.write_npz

    def write_then_die(path, **arrays):
        real_write_npz(path, **arrays)
        if path.name == "part_00000.npz":
            raise Interrupted(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(annotate_stage.files, "write_npz", write_then_die)
        with pytest.raises(Interrupted):
            _annotate(pairs, tmp_path / "killed", checkpoint, "killed")
    assert _annotate(pairs, tmp_path / "killed", checkpoint, "killed") == 0
    np.testing.assert_array_equal(PairDataset.open(pairs).load_preferences("killed"), labels)
    np.testing.assert_allclose(PairDataset.open(pairs).load_prob_first("killed"), prob, atol=1e-6)
