"""Annotators (llava scoring, free text, random) and the resumable `annotate` stage, on a tiny random LLaVA."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax.pipeline.annotate import annotate_dataset
from sensei_jax.reward.dataset import PairDataset
from sensei_jax.annotators import make_annotator
from sensei_jax.annotators.base import label_from_prob
from sensei_jax.annotators.chance import RandomAnnotator
from sensei_jax.annotators.config import AnnotateConfig
from sensei_jax.vlm.annotate import LlavaAnnotator, composite
from sensei_jax.vlm.tiny import write_tiny_checkpoint

PAIRS = np.random.default_rng(0).integers(0, 256, (5, 2, 24, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    defaults = AnnotateConfig()
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llava"), [defaults.question,
                                                                          defaults.composite_question], seed=3)


@pytest.fixture(scope="module")
def cfg(checkpoint):
    return config_lib.load(None, ["--annotate.annotator", "llava", "--vlm.path", str(checkpoint), "--vlm.dtype",
                                  "float32", "--annotate.batch_size", "4", "--annotate.min_answer_mass", "0"])


@pytest.fixture(scope="module")
def annotator(cfg):
    return make_annotator(cfg)


def test_order_swap_cancels_position_bias(annotator):
    prob, label = annotator.annotate(PAIRS)
    assert prob.shape == (5,) and prob.dtype == np.float32 and label.dtype == np.int8
    swapped, _ = annotator.annotate(PAIRS[:, ::-1].copy())
    np.testing.assert_allclose(prob + swapped, 1.0, atol=1e-6)  # exactly antisymmetric under swapping

    # Make the model always answer the first answer token: a pure position bias.
    model = annotator.model
    first = int(annotator.candidates[0])
    kernel = np.array(model.lm_head.kernel[...])
    hidden = jax.jit(lambda m, ids, px: m.hidden_states(ids, px))(
        model, annotator.input_ids[None], annotator._pixels(PAIRS[:1], False))
    hidden = np.asarray(hidden[0, annotator.length - 1])
    kernel[:, first] = 40.0 * hidden / np.dot(hidden, hidden)  # logit ~40 for "first" whatever the images
    original = model.lm_head.kernel[...]
    model.lm_head.kernel[...] = jnp.asarray(kernel)
    try:
        prob, label = annotator.annotate(PAIRS)
        # The biased judge picks whatever image is shown first, in both orders ...
        assert (annotator.last_diagnostics["position_first"] > 0.99).all()
        # ... and averaging the two orders cancels it: ties.
        np.testing.assert_allclose(prob, 0.5, atol=0.02)
        assert (label == 2).all()
    finally:
        model.lm_head.kernel[...] = original


def test_composite_layout_and_unknown(annotator, cfg):
    stacked = composite(PAIRS[:2], gap=4)
    assert stacked.shape == (2, 52, 24, 3) and (stacked[:, 24:28] == 255).all()
    assert (composite(PAIRS[:2], 4, swap=True)[:, :24] == PAIRS[:2, 1]).all()
    comp = LlavaAnnotator(annotator.model, annotator.processor,
                          dataclasses.replace(cfg.annotate, layout="composite", min_answer_mass=0.999))
    assert comp.images_per_prompt == 1 and (comp.input_ids == comp.processor.image_token_index).sum() == 16
    prob, label = comp.annotate(PAIRS)
    swapped, _ = comp.annotate(PAIRS[:, ::-1].copy())
    np.testing.assert_allclose(prob + swapped, 1.0, atol=1e-6)
    assert (label == 3).all()  # a random model puts almost no mass on the answers: unknown


def test_answers_must_be_single_tokens(annotator, cfg):
    with pytest.raises(ValueError, match="single token"):
        LlavaAnnotator(annotator.model, annotator.processor,
                       dataclasses.replace(cfg.annotate, answers=(" first one", " second")))


def test_free_text_mode_and_parsing(annotator, cfg):
    free = LlavaAnnotator(annotator.model, annotator.processor,
                          dataclasses.replace(cfg.annotate, mode="free-text", max_new_tokens=3, batch_size=2))
    assert [free.parse(t) for t in ("Top.", " bottom", "-1", "Image 2!", "the top one", "")] == [0, 1, 2, 1, 3, 3]
    prob, label = free.annotate(PAIRS[:3])
    answers = free.last_diagnostics["answers"]
    assert answers.shape == (3, 2) and all(isinstance(a, str) for a in answers.ravel())  # 3 pairs x 2 orders
    assert prob.shape == (3,) and label.dtype == np.int8
    swap = {0: 1, 1: 0, 2: 2, 3: 3}
    for i, (ab, ba) in enumerate(answers):
        votes = [free.parse(ab), swap[free.parse(ba)]]
        first, second = votes.count(0), votes.count(1)
        expected = 0 if first > second else 1 if second > first else 3 if votes == [3, 3] else 2
        assert label[i] == expected, (ab, ba)


def test_label_from_prob_margins():
    prob = np.array([0.9, 0.55, 0.5, 0.45, 0.1, 0.8], np.float32)
    unknown = np.array([0, 0, 0, 0, 0, 1], bool)
    assert label_from_prob(prob, 0.1, unknown).tolist() == [0, 2, 2, 2, 1, 3]


def _dataset(path, num_pairs=23):
    rng = np.random.default_rng(1)
    ds = PairDataset.create(path, num_pairs, image_shape=(24, 24, 3), state_size=4)
    ds.images[:] = rng.integers(0, 256, (num_pairs, 2, 24, 24, 3), dtype=np.uint8)
    ds.states[:] = rng.normal(size=(num_pairs, 2, 4))
    ds.flush(num_written=num_pairs)
    return ds


class CountingAnnotator(RandomAnnotator):
    """The real random annotator, counting the pairs it is asked to label."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.seen = 0

    def annotate(self, images, states=None):
        self.seen += len(images)
        return super().annotate(images, states)


def test_stage_partitions_resume_and_summary(tmp_path):
    cfg = config_lib.load(None, ["--annotate.annotator", "random", "--annotate.partition_size", "5"])
    ds = _dataset(tmp_path / "pairs")
    truth_prob, truth = RandomAnnotator(cfg.annotate).annotate(np.asarray(ds.images))
    ds.save_preferences("ground_truth", truth)
    out = tmp_path / "annotate"
    first = CountingAnnotator(cfg.annotate)
    summary = annotate_dataset(ds, first, cfg, out)
    assert first.seen == 23 and summary["labelled_pairs"] == 23 and summary["resumed_pairs"] == 0
    parts = sorted((out / "partitions" / "random").glob("part_*.npz"))
    assert len(parts) == 5
    labels = ds.load_preferences("random")
    np.testing.assert_array_equal(labels, truth)  # same annotator, same pairs: the same labels
    np.testing.assert_allclose(ds.load_prob_first("random"), truth_prob)
    assert summary["ground_truth"]["agreement"] == 1.0 and summary["ground_truth"]["coverage"] == 1.0
    counts = np.bincount(truth, minlength=4)
    assert summary["counts"] == dict(zip(("first", "second", "tie", "unknown"), counts.tolist()))
    assert summary["first_bias"] == pytest.approx(counts[0] / (counts[0] + counts[1]))
    assert (out / "summary.json").is_file() and (out / "preferences_random.png").stat().st_size > 1000

    # A crash lost partition 2 (and left a torn temp file): only those 5 pairs are redone.
    parts[2].unlink()
    (parts[2].parent / ".part_00002.npz.tmp").write_bytes(b"torn")
    again = CountingAnnotator(cfg.annotate)
    summary = annotate_dataset(ds, again, cfg, out)
    assert again.seen == 5 and summary["resumed_pairs"] == 18
    np.testing.assert_array_equal(ds.load_preferences("random"), truth)

    # A different annotator config invalidates the finished partitions.
    changed = dataclasses.replace(cfg, annotate=dataclasses.replace(cfg.annotate, seed=7))
    third = CountingAnnotator(changed.annotate)
    annotate_dataset(ds, third, changed, out)
    assert third.seen == 23


def test_oracle_partitions_depend_on_the_interest_thresholds():
    from sensei_jax.pipeline.annotate import _fingerprint

    oracle = config_lib.load(None, ["--annotate.annotator", "oracle"])
    stricter = dataclasses.replace(oracle, interest=dataclasses.replace(oracle.interest, near_distance=0.1))
    assert _fingerprint(stricter) != _fingerprint(oracle)  # the oracle's labels follow the heuristic's thresholds
    chance = config_lib.load(None, ["--annotate.annotator", "random"])
    assert _fingerprint(dataclasses.replace(chance, interest=stricter.interest)) == _fingerprint(chance)


def test_cli_llava(checkpoint, tmp_path):
    from sensei_jax.run import main

    ds = _dataset(tmp_path / "pairs", num_pairs=6)
    rc = main(["annotate", "--dataset", str(ds.directory), "--annotator", "llava", "--vlm.path", str(checkpoint),
               "--vlm.dtype", "float32", "--annotate.batch_size", "4", "--annotate.min_answer_mass", "0",
               "--annotate.partition_size", "4", "--annotate.both_orders", "false"])
    assert rc == 0
    reopened = PairDataset.open(ds.directory)
    assert reopened.load_preferences("llava").shape == (6,)
    summary = __import__("json").loads((ds.directory / "annotate" / "summary.json").read_text())
    assert summary["annotator"] == "llava" and summary["pairs"] == 6 and summary["both_orders"] is False
    # One order only: P(first) is the raw P(the first slot wins).
    assert summary["position_first"] == pytest.approx(summary["mean_prob_first"], abs=1e-6)
    assert summary["pairs_per_second"] > 0
    with pytest.raises(ValueError, match="vlm.path"):
        make_annotator(config_lib.load(None, ["--annotate.annotator", "llava"]))
