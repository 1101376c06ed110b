"""The LLaVA annotator: a batch of image pairs in, per pair P(first is more interesting) and a `Label` out.

It scores without generation: one prefill per ordering, and the log-probabilities of the two answer tokens at the
last prompt position give P(first) for (A, B) and for (B, A); their average cancels position bias. Pairs are two
`<image>` placeholders or one composite image (stacked with a white gap, padded to a square). A free-text mode
(greedy generation + exact answer parsing) reproduces the reference study for comparison. The other annotators
and `make_annotator` are `sensei_jax.annotators`.
"""

from __future__ import annotations

import functools
import re
import string

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax.annotators.base import check_pairs, label_from_prob
from sensei_jax.annotators.config import AnnotateConfig
from sensei_jax.reward.labels import Label
from sensei_jax.vlm.config import VlmConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def composite(pairs: np.ndarray, gap: int, swap: bool = False) -> np.ndarray:
    """uint8 [N, 2, H, W, 3] -> [N, 2H + gap, W, 3]: the first image on top (the second if `swap`), white gap."""
    top, bottom = (pairs[:, 1], pairs[:, 0]) if swap else (pairs[:, 0], pairs[:, 1])
    white = np.full((len(pairs), gap, pairs.shape[3], 3), 255, np.uint8)
    return np.concatenate([top, white, bottom], axis=1)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation.replace("-", "")))
    return re.sub(r"\s+", " ", text).strip()


@functools.partial(jax.jit, static_argnames=("images_per_prompt", "both_orders"))
def _score(model, pixels, input_ids, last, candidates, images_per_prompt: int, both_orders: bool):
    """Log-probabilities of the candidate tokens after each prompt.

    pixels [M, h, w, 3]: two-image layout, M = 2B (the pair's images in order) and the prompts are (A, B) then,
    with both_orders, (B, A); composite layout, M = prompts, one composite each. input_ids [T] (the same prompt
    for every row, right-padded), last: index of its last real token, candidates int [2].
    Returns float32 [R, 2] candidate log-probabilities and [R] their total probability, R = prompts.
    """
    features = model.image_features(pixels)  # [M, L, D]
    if images_per_prompt == 2:
        pairs = features.reshape(-1, 2, *features.shape[1:])
        if both_orders:
            pairs = jnp.concatenate([pairs, pairs[:, ::-1]], axis=0)
        features = pairs.reshape(-1, *features.shape[1:])
    rows = features.shape[0] // images_per_prompt
    ids = jnp.broadcast_to(input_ids, (rows, input_ids.shape[0]))
    mask = jnp.broadcast_to(jnp.arange(input_ids.shape[0]) <= last, ids.shape)
    hidden = model.hidden_states(ids, attention_mask=mask, image_features=features)
    logits = model.head(hidden[:, last])  # only the last position goes through the vocabulary-wide head
    logp = jax.nn.log_softmax(logits, axis=-1)[:, candidates]
    return logp, jnp.exp(jax.nn.logsumexp(logp, axis=-1))


class LlavaAnnotator:
    """LLaVA as a judge of image pairs (see the module docstring)."""

    name = "llava"

    def __init__(self, model, processor, cfg: AnnotateConfig):
        self.model, self.processor, self.cfg = model, processor, cfg
        composite_layout = cfg.layout == "composite"
        self.images_per_prompt = 1 if composite_layout else 2
        question = cfg.composite_question if composite_layout else cfg.question
        self.prompt = cfg.template.format(images="<image>\n" * self.images_per_prompt, question=question)
        answers = cfg.composite_answers if composite_layout else cfg.answers
        text = processor.expand(self.prompt)
        self.candidates = np.array([processor.single_token(text, a) for a in answers], np.int32)
        if self.candidates[0] == self.candidates[1]:
            raise ValueError(f"the two answers {answers} map to the same token")
        ids = processor.tokenize(self.prompt)
        self.length = len(ids)
        bucket = cfg.seq_bucket * -(-len(ids) // cfg.seq_bucket)
        limit = model.config.text.max_position_embeddings
        if bucket > limit:
            raise ValueError(f"the annotation prompt takes {len(ids)} tokens ({bucket} padded), more than the "
                             f"model's {limit} positions; shorten annotate.question or annotate.seq_bucket")
        self.input_ids = np.zeros(bucket, np.int32)
        self.input_ids[: len(ids)] = ids
        self.last_diagnostics: dict[str, np.ndarray] = {}

    @classmethod
    def from_config(cls, vlm: VlmConfig, cfg: AnnotateConfig) -> LlavaAnnotator:
        from sensei_jax.vlm.model import LlavaModel
        from sensei_jax.vlm.processor import LlavaProcessor

        if not vlm.path:
            raise ValueError("the llava annotator needs a checkpoint: set --vlm.path DIR (a Hugging Face "
                             "llava-1.5 directory with config.json, safetensors, tokenizer.json)")
        model = LlavaModel.from_pretrained(vlm.path, DTYPES[vlm.dtype])
        processor = LlavaProcessor.from_pretrained(vlm.path, pad_to_square=vlm.pad_to_square)
        return cls(model, processor, cfg)

    # -- inputs --------------------------------------------------------------------------------------------------

    def _pixels(self, pairs: np.ndarray, both_orders: bool) -> np.ndarray:
        """Preprocessed images for one batch, in the order `_score` expects."""
        if self.images_per_prompt == 2:
            return self.processor.preprocess_images(pairs.reshape(-1, *pairs.shape[2:]))
        stacks = [composite(pairs, self.cfg.composite_gap)]
        if both_orders:
            stacks.append(composite(pairs, self.cfg.composite_gap, swap=True))
        return self.processor.preprocess_images(np.concatenate(stacks))

    def _batches(self, images: np.ndarray):
        size = self.cfg.batch_size
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            if len(chunk) < size:  # pad the last batch: one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), 0)])
            yield start, min(size, len(images) - start), chunk

    # -- scoring -------------------------------------------------------------------------------------------------

    def annotate(self, images, states=None):
        images = check_pairs(images)
        if self.cfg.mode == "free-text":
            return self.annotate_free_text(images)
        both = self.cfg.both_orders
        probs, masses, position = [], [], []
        for _, count, chunk in self._batches(images):
            logp, mass = _score(self.model, jnp.asarray(self._pixels(chunk, both)), jnp.asarray(self.input_ids),
                                self.length - 1, jnp.asarray(self.candidates),
                                images_per_prompt=self.images_per_prompt, both_orders=both)
            logp, mass = np.asarray(logp, np.float64), np.asarray(mass)
            # P(the image shown first is preferred), restricted to the two answers, per prompt.
            p_shown_first = 1.0 / (1.0 + np.exp(logp[:, 1] - logp[:, 0]))
            size = len(chunk)
            if both:
                prob = 0.5 * (p_shown_first[:size] + 1.0 - p_shown_first[size:])
                mass = 0.5 * (mass[:size] + mass[size:])
                pos = 0.5 * (p_shown_first[:size] + p_shown_first[size:])
            else:
                prob, pos = p_shown_first, p_shown_first
            probs.append(prob[:count])
            masses.append(mass[:count])
            position.append(pos[:count])
        prob_first = np.concatenate(probs).astype(np.float32)
        mass = np.concatenate(masses).astype(np.float32)
        # position_first: P(the image in the first slot wins) averaged over orders; 0.5 = no position bias.
        self.last_diagnostics = {"answer_mass": mass, "position_first": np.concatenate(position).astype(np.float32)}
        return prob_first, label_from_prob(prob_first, self.cfg.tie_margin, mass < self.cfg.min_answer_mass)

    # -- free text -----------------------------------------------------------------------------------------------

    def parse(self, text: str) -> int:
        answer = normalize_answer(text)
        for label, words in ((Label.FIRST, self.cfg.free_text_first), (Label.SECOND, self.cfg.free_text_second),
                             (Label.TIE, self.cfg.free_text_tie)):
            if answer in {normalize_answer(w) for w in words}:
                return label
        return Label.UNKNOWN

    def annotate_free_text(self, images: np.ndarray):
        from sensei_jax.vlm.generate import greedy_generate

        both = self.cfg.both_orders
        ids = np.asarray(self.processor.tokenize(self.prompt), np.int32)
        eos = self.processor.tokenizer.token_to_id("</s>")
        eos = -1 if eos is None else eos
        labels, texts = [], []
        for _, count, chunk in self._batches(images):
            per_order, answers = [], []
            for swap in ([False, True] if both else [False]):
                pairs = chunk[:, ::-1] if swap else chunk
                rows = len(chunk)
                out = greedy_generate(self.model, np.broadcast_to(ids, (rows, len(ids))), np.ones((rows, len(ids))),
                                      self._pixels(pairs, both_orders=False),
                                      max_new_tokens=self.cfg.max_new_tokens, eos_id=eos)
                decoded = [self.processor.decode(row) for row in out[:count]]
                parsed = np.array([self.parse(t) for t in decoded])
                if swap:  # the answer names a slot; map it back to the original order
                    parsed = np.where(parsed == Label.FIRST, Label.SECOND,
                                      np.where(parsed == Label.SECOND, Label.FIRST, parsed))
                per_order.append(parsed)
                answers.append(decoded)
            labels.append(np.stack(per_order, axis=1))
            texts.extend(zip(*answers))
        votes = np.concatenate(labels)  # [N, orders] in {0, 1, 2, 3}, in the original order
        decided = votes < Label.TIE
        first = (votes == Label.FIRST).sum(axis=1)
        second = (votes == Label.SECOND).sum(axis=1)
        prob_first = np.where(decided.any(axis=1), first / np.maximum(first + second, 1), 0.5).astype(np.float32)
        label = np.where(first > second, Label.FIRST, np.where(second > first, Label.SECOND,
                         np.where((votes == Label.UNKNOWN).all(axis=1), Label.UNKNOWN, Label.TIE))).astype(np.int8)
        # answers [N, orders]: the generated text for (A, B) and, with both orders, for (B, A).
        self.last_diagnostics = {"answers": np.array(texts, dtype=object).reshape(len(votes), -1)}
        return prob_first, label
