"""Annotators (llava scoring and the study protocol, random) and the resumable `annotate` stage, on a tiny random
LLaVA, and the order swap against hand-built judges."""

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
from sensei_jax.reward.labels import Label
from sensei_jax.annotators.vlm import (LlavaAnnotator, LlavaScorer, StudyAnnotator, composite,
                                     parse_study_answer)
from sensei_jax.vlm.tiny import write_tiny_checkpoint

PAIRS = np.random.default_rng(0).integers(0, 256, (5, 2, 24, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    defaults = AnnotateConfig()
    texts = [defaults.question, defaults.composite_question, defaults.study_system, defaults.study_query,
             defaults.study_followup, defaults.context_question, defaults.context_answer, defaults.general_question]
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llava"), texts, seed=3)


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
    scorer = annotator.scorer
    model = scorer.model
    first = int(scorer.candidates[0])
    kernel = np.array(model.lm_head.kernel[...])
    hidden = jax.jit(lambda m, ids, px: m.hidden_states(ids, px))(
        model, scorer.input_ids[None], scorer._pixels(PAIRS[:1], False))
    hidden = np.asarray(hidden[0, scorer.length - 1])
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
    scorer = LlavaScorer(annotator.scorer.model, annotator.scorer.processor,
                         dataclasses.replace(cfg.annotate, layout="composite", min_answer_mass=0.999))
    assert scorer.images_per_prompt == 1 and (scorer.input_ids == scorer.processor.image_token_index).sum() == 16
    comp = LlavaAnnotator(scorer, scorer.cfg)
    prob, label = comp.annotate(PAIRS)
    swapped, _ = comp.annotate(PAIRS[:, ::-1].copy())
    np.testing.assert_allclose(prob + swapped, 1.0, atol=1e-6)
    assert (label == 3).all()  # a random model puts almost no mass on the answers: unknown


def test_answers_must_be_single_tokens(annotator, cfg):
    with pytest.raises(ValueError, match="single token"):
        LlavaScorer(annotator.scorer.model, annotator.scorer.processor,
                    dataclasses.replace(cfg.annotate, answers=(" first one", " second")))


def test_composite_is_the_studys_vertical_layout():
    pairs = np.random.default_rng(2).integers(0, 200, (3, 2, 10, 6, 3), dtype=np.uint8)
    stacked = composite(pairs, gap=28)
    assert stacked.shape == (3, 2 * 10 + 28, 6, 3) and stacked.dtype == np.uint8
    np.testing.assert_array_equal(stacked[:, :10], pairs[:, 0])  # image 1 on top
    assert (stacked[:, 10:38] == 255).all()  # 28 white rows
    np.testing.assert_array_equal(stacked[:, 38:], pairs[:, 1])
    np.testing.assert_array_equal(composite(pairs, 28, swap=True)[:, :10], pairs[:, 1])


def test_study_parser_matches_exactly():
    table = {"top": Label.FIRST, "Top.": Label.FIRST, " BOTTOM!\n": Label.SECOND, "tie": Label.TIE,
             "Tie.": Label.TIE, "-1": Label.UNKNOWN, "1": Label.UNKNOWN, "same": Label.UNKNOWN,
             "image 1": Label.UNKNOWN, "the top one": Label.UNKNOWN, "top bottom": Label.UNKNOWN,
             "top image": Label.UNKNOWN, "": Label.UNKNOWN}
    assert {text: parse_study_answer(text) for text in table} == table


class RecordingStudy(StudyAnnotator):
    """The real study annotator, keeping the prompts of each turn it generates for."""

    def __init__(self, *args):
        super().__init__(*args)
        self.turn_prompts = {0: [], 1: []}

    def _generate(self, prompts, pixels, chunk, turn):
        self.turn_prompts[turn].extend(prompts)
        return super()._generate(prompts, pixels, chunk, turn)


def test_study_mode_two_turns_end_to_end(annotator, cfg):
    scorer = annotator.scorer
    # One prompt bucket for both turns: one compiled decoder.
    study_cfg = dataclasses.replace(cfg.annotate, mode="study", max_new_tokens=4, batch_size=3, seq_bucket=384)
    study = RecordingStudy(scorer.model, scorer.processor, study_cfg)
    prob, label = study.annotate(PAIRS[:3])
    first, answers = study.last_diagnostics["first_turn"], study.last_diagnostics["answer"]
    assert first.shape == answers.shape == (3,) and all(len(a.split()) <= 4 for a in first)
    assert label.dtype == np.int8 and label.tolist() == [parse_study_answer(a) for a in answers]
    assert prob.tolist() == [{0: 1.0, 1: 0.0}.get(int(k), 0.5) for k in label]
    system, query = study_cfg.study_system, study_cfg.study_query
    assert study.turn_prompts[0][0] == f"{system} USER: <image>\n{query} ASSISTANT:"
    # Turn 2 quotes turn 1's answer, as the assistant's turn and inside the question (llava_v1: "</s>" after it).
    assert len(study.turn_prompts[1]) == 3
    for prompt, answer in zip(study.turn_prompts[1], first):
        followup = study_cfg.study_followup.replace("{answer}", answer)
        assert prompt == f"{system} USER: <image>\n{query} ASSISTANT: {answer}</s>USER: {followup} ASSISTANT:"
        assert f"You answered: {answer} Is the top" in prompt
    # Seeded by pair: the same pairs give the same answers, in any order; another seed samples others.
    again = StudyAnnotator(scorer.model, scorer.processor, study_cfg)
    again.annotate(PAIRS[2::-1].copy())
    assert again.last_diagnostics["first_turn"].tolist() == first[::-1].tolist()
    assert again.last_diagnostics["answer"].tolist() == answers[::-1].tolist()
    other = StudyAnnotator(scorer.model, scorer.processor, dataclasses.replace(study_cfg, seed=1))
    other.annotate(PAIRS[:3])
    assert other.last_diagnostics["first_turn"].tolist() != first.tolist()


def test_general_prompt_scores_after_the_context_turn(annotator, cfg, tmp_path):
    from PIL import Image

    model, processor = annotator.scorer.model, annotator.scorer.processor
    general = dataclasses.replace(cfg.annotate, prompt="general")
    scorer = LlavaScorer(model, processor, general)
    assert scorer.prompt == (f"USER: {general.context_question} ASSISTANT: {general.context_answer}</s>"
                             f"USER: <image>\n<image>\n{general.general_question} ASSISTANT:")
    assert [processor.tokenizer.id_to_token(int(c)) for c in scorer.candidates] == ["0", "1"]
    Image.fromarray(PAIRS[4, 0]).save(tmp_path / "context.png")
    shown = LlavaScorer(model, processor, dataclasses.replace(general, context_image=str(tmp_path / "context.png")))
    assert shown.prompt.startswith("USER: <image>\n" + general.context_question)
    assert (shown.input_ids == processor.image_token_index).sum() == 3 * 16  # context image + the pair
    prob, _ = LlavaAnnotator(shown, general).annotate(PAIRS[:4])
    swapped, _ = LlavaAnnotator(shown, general).annotate(PAIRS[:4, ::-1].copy())
    np.testing.assert_allclose(prob + swapped, 1.0, atol=1e-6)
    # The context image reaches the scores: another image, another answer distribution.
    Image.fromarray(PAIRS[4, 1]).save(tmp_path / "other.png")
    other = LlavaScorer(model, processor, dataclasses.replace(general, context_image=str(tmp_path / "other.png")))
    assert np.abs(shown.score(PAIRS[:4], True)[0] - other.score(PAIRS[:4], True)[0]).max() > 1e-6
    with pytest.raises(ValueError, match="context_image"):
        LlavaScorer(model, processor, dataclasses.replace(general, context_image=str(tmp_path / "missing.png")))
    with pytest.raises(ValueError, match="annotate.prompt"):
        dataclasses.replace(general, mode="study")


def test_answers_sharing_a_first_token_are_scored_after_it(annotator, cfg):
    model, processor = annotator.scorer.model, annotator.scorer.processor
    scorer = LlavaScorer(model, processor, dataclasses.replace(cfg.annotate, answers=(" the first", " the second")))
    plain = annotator.scorer
    assert scorer.length == plain.length + 1  # "the" joins the prompt ...
    assert scorer.input_ids[scorer.length - 1] == processor.tokenizer.token_to_id("the")
    np.testing.assert_array_equal(scorer.candidates, plain.candidates)  # ... and first/second are scored after it


def _bright_dark_pairs(num=7):
    """Pairs of a bright and a dark frame, the bright one in a random slot; returns (pairs, the bright slot)."""
    rng = np.random.default_rng(5)
    bright_slot = rng.integers(0, 2, num)
    pairs = np.full((num, 2, 8, 8, 3), 30, np.uint8)
    pairs[np.arange(num), bright_slot] = 220
    return pairs + rng.integers(0, 20, pairs.shape).astype(np.uint8), bright_slot


class ContentJudge:
    """Prefers the brighter of the two images shown, wherever it is shown."""

    def score(self, pairs, both_orders):
        shown = np.concatenate([pairs, pairs[:, ::-1]]) if both_orders else pairs
        brightness = shown.reshape(len(shown), 2, -1).mean(-1)
        p_first = 1.0 / (1.0 + np.exp(-(brightness[:, 0] - brightness[:, 1]) / 20.0))
        return np.log(np.stack([p_first, 1.0 - p_first], axis=1)), np.ones(len(shown))


class SlotJudge:
    """Prefers whichever image is shown first, whatever the images."""

    def score(self, pairs, both_orders):
        rows = len(pairs) * (2 if both_orders else 1)
        return np.log(np.tile([0.9, 0.1], (rows, 1))), np.ones(rows)


def test_order_swap_keeps_content_preferences_and_cancels_slot_preferences():
    cfg = AnnotateConfig(annotator="llava", batch_size=3, min_answer_mass=0.0)  # 7 pairs: a padded last batch
    pairs, bright = _bright_dark_pairs()
    content = LlavaAnnotator(ContentJudge(), cfg)
    _, label = content.annotate(pairs)
    np.testing.assert_array_equal(label, bright)  # label = the slot of the brighter frame ...
    _, label = content.annotate(pairs[:, ::-1].copy())
    np.testing.assert_array_equal(label, 1 - bright)  # ... in either order
    slot = LlavaAnnotator(SlotJudge(), cfg)
    prob, label = slot.annotate(pairs)
    np.testing.assert_allclose(prob, 0.5, atol=1e-6)
    assert (label == Label.TIE).all()  # a pure position preference says nothing about the images
    np.testing.assert_allclose(slot.last_diagnostics["position_first"], 0.9, atol=1e-6)


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


def test_two_views_keep_only_the_labels_both_agree_on(tmp_path):
    """configs/robodesk_sensei.yaml's `pairs.second_camera`: the annotate stage labels the pairs of both cameras and
    the run's label set keeps a label where the two views agree, unknown elsewhere (SENSEI's GPT-4 set)."""
    from sensei_jax import files
    from sensei_jax.pipeline import annotate as annotate_stage
    from sensei_jax.pipeline.pairs import view_dir

    cfg = config_lib.load(None, ["--annotate.annotator", "random", "--annotate.partition_size", "8",
                                 "--pairs.camera", "right", "--pairs.second_camera", "left"])
    num_pairs = 40
    right = _dataset(tmp_path / "pairs", num_pairs)
    left = _dataset(view_dir(tmp_path, "left"), num_pairs)
    same = np.arange(num_pairs) % 3 == 0  # these pairs look the same from both cameras: their labels must agree
    left.images[same] = right.images[same]
    left.images[~same] = np.random.default_rng(5).integers(0, 256, left.images[~same].shape, dtype=np.uint8)
    left.flush(num_written=num_pairs)
    # Each view's labels, by the same annotator on that view's images alone.
    prob_right, label_right = RandomAnnotator(cfg.annotate).annotate(np.asarray(right.images))
    prob_left, label_left = RandomAnnotator(cfg.annotate).annotate(np.asarray(left.images))
    agree = label_right == label_left
    assert agree[same].all() and 0 < agree[~same].sum() < (~same).sum()  # both cases occur

    summary = annotate_stage.run_stage(cfg, tmp_path)

    dataset = PairDataset.open(tmp_path / "pairs")
    combined = dataset.load_preferences("random")
    np.testing.assert_array_equal(combined[agree], label_right[agree])
    assert (combined[~agree] == Label.UNKNOWN).all()
    np.testing.assert_array_equal(dataset.load_preferences("random_right"), label_right)
    np.testing.assert_array_equal(dataset.load_preferences("random_left"), label_left)
    np.testing.assert_allclose(dataset.load_prob_first("random"), (prob_right + prob_left) / 2, rtol=1e-6)
    assert summary["views"]["cameras"] == ["right", "left"]
    assert summary["views"]["kept"] == agree.sum() and summary["views"]["agreement"] == pytest.approx(agree.mean())
    assert summary["counts"]["unknown"] == (~agree).sum()
    # The view's own dataset holds its own labels, and the written summary is the intersected one.
    np.testing.assert_array_equal(PairDataset.open(view_dir(tmp_path, "left")).load_preferences("random"), label_left)
    assert files.read_json(tmp_path / "annotate" / "summary.json")["views"]["kept"] == agree.sum()
