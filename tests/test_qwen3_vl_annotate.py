"""The score-mode annotator on a tiny random Qwen3-VL, built through the family interface: the scores equal the
model's own forward pass, the order swap, the composite layout, a context image of its own size, and pairs of
two sizes (the prompt re-encoded per size)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sensei_jax.annotators.config import AnnotateConfig
from sensei_jax.annotators.vlm import VlmScorer, from_config
from sensei_jax.vlm.config import VlmConfig
from sensei_jax.vlm.qwen3_vl.tiny import write_tiny_checkpoint

PAIRS = np.random.default_rng(0).integers(0, 256, (5, 2, 24, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    defaults = AnnotateConfig()
    texts = [defaults.question, defaults.composite_question, defaults.context_question, defaults.context_answer,
             defaults.general_question]
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_qwen3_vl"), texts, seed=3, std=0.1)


@pytest.fixture(scope="module")
def cfg():
    return AnnotateConfig(annotator="llava", batch_size=4, min_answer_mass=0.0)


@pytest.fixture(scope="module")
def annotator(checkpoint, cfg):
    return from_config(VlmConfig(path=str(checkpoint), family="qwen3_vl", dtype="float32"), cfg)


def _direct_logp(scorer, pairs):
    """log P(candidates) for each pair in (A, B) order by the model's own forward pass, one prompt at a time."""
    model, processor = scorer.model, scorer.processor
    sizes = scorer.image_sizes(*pairs.shape[2:4])
    ids = processor.tokenize(scorer.prompt, image_sizes=sizes) + scorer.shared
    out = []
    for pair in pairs:
        logits = model(jnp.asarray([ids]), jnp.asarray(processor.preprocess_images(pair)))
        out.append(np.asarray(jax.nn.log_softmax(logits[0, -1]))[scorer.candidates])
    return np.stack(out)


def test_scores_are_the_models_own_and_the_swap_cancels_position(annotator):
    scorer = annotator.scorer
    assert type(scorer.model).__name__ == "Qwen3VLModel"
    assert [scorer.processor.tokenizer.id_to_token(int(c)) for c in scorer.candidates] == ["first", "second"]
    logp, _ = scorer.score(PAIRS[:4], both_orders=True)
    assert scorer.positions.shape == (3, len(scorer.input_ids))  # MRoPE ids, encoded for these pairs' size
    np.testing.assert_allclose(logp[:4], _direct_logp(scorer, PAIRS[:4]), atol=1e-5)
    np.testing.assert_allclose(logp[4:], _direct_logp(scorer, PAIRS[:4, ::-1]), atol=1e-5)  # the swapped order
    prob, label = annotator.annotate(PAIRS)
    swapped, _ = annotator.annotate(PAIRS[:, ::-1].copy())
    np.testing.assert_allclose(prob + swapped, 1.0, atol=1e-6)
    assert prob.shape == (5,) and label.dtype == np.int8
    assert np.abs(prob - 0.5).max() > 1e-3  # the random model does prefer some images


def test_pairs_of_another_size_get_their_own_prompt(annotator):
    scorer = annotator.scorer
    scorer.score(PAIRS[:4], both_orders=False)
    short = scorer.length
    big = np.random.default_rng(1).integers(0, 256, (4, 2, 48, 80, 3), dtype=np.uint8)
    logp, _ = scorer.score(big, both_orders=False)
    grid = scorer.processor.grid((48, 80))
    assert scorer.length - short == 2 * (int(np.prod(grid)) - int(np.prod(scorer.processor.grid((24, 24)))))
    np.testing.assert_allclose(logp, _direct_logp(scorer, big), atol=1e-5)


def test_composite_layout_and_a_context_image_of_its_own_size(annotator, cfg, tmp_path):
    model, processor = annotator.scorer.model, annotator.scorer.processor
    composite = VlmScorer(model, processor, dataclasses.replace(cfg, layout="composite"))
    assert composite.images_per_prompt == 1 and composite.image_sizes(24, 24) == [(24 + 28 + 24, 24)]
    logp, _ = composite.score(PAIRS[:4], both_orders=True)
    assert logp.shape == (8, 2) and np.isfinite(logp).all()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    general = dataclasses.replace(cfg, prompt="general", context_image=str(tmp_path / "c.png"))
    shown = VlmScorer(model, processor, general)
    assert shown.image_sizes(24, 24) == [(40, 56), (24, 24), (24, 24)]
    logp, _ = shown.score(PAIRS[:4], both_orders=True)
    np.testing.assert_allclose(logp[:4], _direct_logp_with_context(shown, PAIRS[:4]), atol=1e-5)
    plain = VlmScorer(model, processor, dataclasses.replace(general, context_image=None))
    assert np.abs(plain.score(PAIRS[:4], True)[0] - logp).max() > 1e-4  # the context image reaches the scores


def _direct_logp_with_context(scorer, pairs):
    model, processor = scorer.model, scorer.processor
    ids = processor.tokenize(scorer.prompt, image_sizes=scorer.image_sizes(*pairs.shape[2:4])) + scorer.shared
    context = jnp.asarray(processor.preprocess_images([scorer.context_image]))
    out = []
    for pair in pairs:
        logits = model(jnp.asarray([ids]), [context, jnp.asarray(processor.preprocess_images(pair))])
        out.append(np.asarray(jax.nn.log_softmax(logits[0, -1]))[scorer.candidates])
    return np.stack(out)


def test_study_mode_generates_two_chatml_turns(annotator, cfg):
    from sensei_jax.annotators.vlm import StudyAnnotator, parse_study_answer

    scorer = annotator.scorer
    study_cfg = dataclasses.replace(cfg, mode="study", max_new_tokens=4, batch_size=3, seq_bucket=64)
    study = StudyAnnotator(scorer.model, scorer.processor, study_cfg)
    assert study.prompt().startswith(f"<|im_start|>system\n{study_cfg.study_system}<|im_end|>\n<|im_start|>user\n"
                                     "<|vision_start|><|image_pad|><|vision_end|>")
    assert study.eos == scorer.processor.tokenizer.token_to_id("<|im_end|>")
    prob, label = study.annotate(PAIRS[:3])
    first, answers = study.last_diagnostics["first_turn"], study.last_diagnostics["answer"]
    assert label.tolist() == [parse_study_answer(a) for a in answers] and first.shape == (3,)
    again = StudyAnnotator(scorer.model, scorer.processor, study_cfg)
    again.annotate(PAIRS[2::-1].copy())  # seeded by pair: the same answers in any order
    assert again.last_diagnostics["first_turn"].tolist() == first[::-1].tolist()
