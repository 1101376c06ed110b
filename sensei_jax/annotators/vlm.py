"""The VLM annotator, for a model of any family (`vlm/family.py`): a batch of image pairs in, per pair P(first is
more interesting) and a `Label` out.

Two modes (`annotate.mode`). `score` (`LlavaAnnotator` over a `VlmScorer`) scores without generation: one
prefill per ordering, and the log-probabilities of the two answer tokens at the last prompt position give
P(first) for (A, B) and for (B, A); their average cancels position bias. Pairs are two `<image>` placeholders or
one composite image (stacked with a white gap, padded to a square); the prompt is SENSEI's question, or
SENSEI-General's context turn before it. `study` (`StudyAnnotator`) reproduces the follow-up LLaVA study: one
composite, two sampled turns, exact answer matching. `from_config` builds the configured one; `make_annotator`
(`registry`) builds any annotator.
"""

from __future__ import annotations

import dataclasses
import functools
import string
import zlib
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from sensei_jax.annotators.base import check_pairs, label_from_prob
from sensei_jax.annotators.config import AnnotateConfig
from sensei_jax.distributed import replicated, rows_array, to_host
from sensei_jax.reward.labels import Label
from sensei_jax.vlm import family as family_lib
from sensei_jax.vlm.config import VlmConfig
from sensei_jax.vlm.sharding import make_mesh

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# The study's answer words (matched exactly, after lower-casing and removing punctuation) and their labels.
STUDY_ANSWERS = {"top": Label.FIRST, "bottom": Label.SECOND, "tie": Label.TIE}


def composite(pairs: np.ndarray, gap: int, swap: bool = False) -> np.ndarray:
    """uint8 [N, 2, H, W, 3] -> [N, 2H + gap, W, 3]: the first image on top (the second if `swap`), white gap."""
    top, bottom = (pairs[:, 1], pairs[:, 0]) if swap else (pairs[:, 0], pairs[:, 1])
    white = np.full((len(pairs), gap, pairs.shape[3], 3), 255, np.uint8)
    return np.concatenate([top, white, bottom], axis=1)


def parse_study_answer(text: str) -> Label:
    """The study's parser: the stripped answer, lower-cased and without punctuation, must be exactly one of
    `STUDY_ANSWERS`; anything else ("-1", a sentence, "the top one") is unknown."""
    word = text.strip().lower().translate(str.maketrans("", "", string.punctuation))
    return STUDY_ANSWERS.get(word, Label.UNKNOWN)


def _per_prompt(features, images_per_prompt: int, both_orders: bool):
    """Image features (leaves [M, L, ...], the pair's images in order) -> per prompt (leaves [R, ipp * L, ...]);
    with both_orders and two images per prompt the (B, A) prompts follow the (A, B) ones."""

    def regroup(leaf):
        grouped = leaf.reshape(-1, images_per_prompt, *leaf.shape[1:])
        if images_per_prompt == 2 and both_orders:
            grouped = jnp.concatenate([grouped, grouped[:, ::-1]], axis=0)
        return grouped.reshape(grouped.shape[0], -1, *leaf.shape[2:])

    return jax.tree.map(regroup, features)


def _with_context(features, context):
    """Per-prompt features (leaves [R, X, ...]) with the context image's (leaves [C, Lc, ...]) before them."""

    def join(leaf, before):
        before = before.reshape(1, -1, *before.shape[2:])
        return jnp.concatenate([jnp.broadcast_to(before, (leaf.shape[0], *before.shape[1:])), leaf], axis=1)

    return jax.tree.map(join, features, context)


@functools.partial(jax.jit, static_argnames=("images_per_prompt", "both_orders"))
def score_prompts(model, pixels, input_ids, last, candidates, images_per_prompt: int, both_orders: bool,
                  context_pixels=None, positions=None):
    """Log-probabilities of the candidate tokens after each prompt, for a model of any family.

    pixels [M, h, w, 3]: two-image layout, M = 2B (the pair's images in order) and the prompts are (A, B) then,
    with both_orders, (B, A); composite layout, M = prompts, one composite each. context_pixels [C, h', w', 3]:
    images of an earlier turn, the same for every prompt and placed before the pair's. input_ids [T] (the same
    prompt for every row, right-padded), last: index of its last real token, candidates int [2], positions int
    [..., T] (the family's position ids of the prompt; None: 0..T-1).
    Returns float32 [R, 2] candidate log-probabilities and [R] their total probability, R = prompts.
    """
    features = _per_prompt(model.image_features(pixels), images_per_prompt, both_orders)
    if context_pixels is not None:
        features = _with_context(features, model.image_features(context_pixels))
    rows = jax.tree.leaves(features)[0].shape[0]
    ids = jnp.broadcast_to(input_ids, (rows, input_ids.shape[0]))
    mask = jnp.broadcast_to(jnp.arange(input_ids.shape[0]) <= last, ids.shape)
    if positions is not None:  # [..., T] -> [..., R, T]
        positions = jnp.broadcast_to(positions[..., None, :], (*positions.shape[:-1], rows, positions.shape[-1]))
    hidden = model.hidden_states(ids, attention_mask=mask, image_features=features, positions=positions)
    logits = model.head(hidden[:, last])  # only the last position goes through the vocabulary-wide head
    logp = jax.nn.log_softmax(logits, axis=-1)[:, candidates]
    return logp, jnp.exp(jax.nn.logsumexp(logp, axis=-1))


class PairScorer(Protocol):
    """A judge that, for pairs shown in a given order, answers how likely each shown image is the preferred one."""

    def score(self, pairs: np.ndarray, both_orders: bool) -> tuple[np.ndarray, np.ndarray]:
        """pairs uint8 [B, 2, H, W, 3] -> (log-probabilities of the answers naming the image shown first and the
        one shown second, float [R, 2]; their total probability [R]). R = B with the pairs as given; with
        `both_orders`, R = 2B and rows B.. show each pair swapped."""


@dataclasses.dataclass(frozen=True)
class PromptEncoding:
    """One annotation prompt as the model reads it: ids int32 [T] right-padded to a multiple of
    `annotate.seq_bucket`, the real length, and the family's position ids int32 [..., T]."""

    input_ids: np.ndarray
    length: int
    positions: np.ndarray


class VlmScorer:
    """A vision-language model of any family as a `PairScorer`: the prompt and answer tokens of `annotate` (score
    mode), one prefill per order. The family's processor renders the conversation (its chat template), counts the
    image tokens and gives the position ids; with image-size-dependent token counts (Qwen3-VL) the prompt is
    encoded once per pair image size.

    With a `mesh` (`sharding.make_mesh`; the model loaded onto it) each batch's images are split over `data`, so
    batches must hold a multiple of its data size (`pairs_per_call`); the answers come back whole on every host."""

    def __init__(self, model, processor, cfg: AnnotateConfig, mesh: Mesh | None = None):
        self.model, self.processor, self.cfg, self.mesh = model, processor, cfg, mesh
        composite_layout = cfg.layout == "composite"
        self.images_per_prompt = 1 if composite_layout else 2
        images = "<image>\n" * self.images_per_prompt
        self.context_image = self.context_pixels = None
        if cfg.prompt == "general":
            context = "<image>\n" if cfg.context_image else ""
            turns = [(context + cfg.context_question, cfg.context_answer), (images + cfg.general_question, None)]
            answers = cfg.general_answers
            if cfg.context_image:
                self.context_image = _read_rgb(cfg.context_image)
                self.context_pixels = processor.preprocess_images([self.context_image])
        else:
            question = cfg.composite_question if composite_layout else cfg.question
            turns = [(images + question, None)]
            answers = cfg.composite_answers if composite_layout else cfg.answers
        self.prompt = processor.chat_prompt(turns, cfg.system)
        self.shared, candidates = processor.answer_tokens(processor.expand(self.prompt), answers)
        self.candidates = np.array(candidates, np.int32)
        if self.candidates[0] == self.candidates[1]:
            raise ValueError(f"the two answers {answers} map to the same token")
        self._encodings: dict[tuple | None, PromptEncoding] = {}
        if processor.fixed_image_tokens:
            self._select(None)

    def image_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Raw (H, W) of the images one prompt shows, in order, for pair images of height x width."""
        context = [] if self.context_image is None else [tuple(self.context_image.shape[:2])]
        if self.images_per_prompt == 2:
            return context + [(height, width)] * 2
        return context + [(2 * height + self.cfg.composite_gap, width)]

    def _select(self, sizes: list[tuple[int, int]] | None) -> PromptEncoding:
        """The prompt encoded for images of `sizes` (cached), kept as `input_ids`, `length`, `positions`."""
        key = None if self.processor.fixed_image_tokens else tuple(sizes)
        if key not in self._encodings:
            self._encodings[key] = self._encode(sizes)
        encoding = self._encodings[key]
        self.input_ids, self.length, self.positions = encoding.input_ids, encoding.length, encoding.positions
        return encoding

    def _encode(self, sizes) -> PromptEncoding:
        ids = self.processor.tokenize(self.prompt, image_sizes=sizes) + self.shared
        bucket = self.cfg.seq_bucket * -(-len(ids) // self.cfg.seq_bucket)
        limit = self.model.config.text.max_position_embeddings
        if bucket > limit:
            raise ValueError(f"the annotation prompt takes {len(ids)} tokens ({bucket} padded), more than the "
                             f"model's {limit} positions; shorten the annotate prompt or annotate.seq_bucket")
        input_ids = np.zeros(bucket, np.int32)
        input_ids[: len(ids)] = ids
        real = self.processor.positions(ids, sizes)
        positions = np.zeros((*real.shape[:-1], bucket), np.int32)  # padding rows get position 0, as in HF
        positions[..., :len(ids)] = real
        return PromptEncoding(input_ids, len(ids), positions)

    def _images(self, pairs: np.ndarray, both_orders: bool) -> np.ndarray:
        """The uint8 images of one batch, in the order `score_prompts` expects its pixels."""
        if self.images_per_prompt == 2:
            return pairs.reshape(-1, *pairs.shape[2:])
        stacks = [composite(pairs, self.cfg.composite_gap)]
        if both_orders:
            stacks.append(composite(pairs, self.cfg.composite_gap, swap=True))
        return np.concatenate(stacks)

    def _pixels(self, pairs: np.ndarray, both_orders: bool) -> jax.Array:
        """Preprocessed pixels [M, h, w, 3] on the devices; with a mesh each host preprocesses only its rows."""
        images = self._images(pairs, both_orders)
        if self.mesh is None:
            return jnp.asarray(self.processor.preprocess_images(images))
        shape = (len(images), *self.processor.pixel_shape(images.shape[1:3]), 3)
        return rows_array(self.mesh, shape, lambda rows: self.processor.preprocess_images(images[rows]))

    def _constant(self, array: np.ndarray) -> jax.Array:
        return jnp.asarray(array) if self.mesh is None else replicated(self.mesh, array)

    def score(self, pairs, both_orders):
        encoding = self._select(self.image_sizes(*pairs.shape[2:4]))
        context = None if self.context_pixels is None else self._constant(self.context_pixels)
        logp, mass = score_prompts(self.model, self._pixels(pairs, both_orders), self._constant(encoding.input_ids),
                                   encoding.length - 1, self._constant(self.candidates),
                                   images_per_prompt=self.images_per_prompt, both_orders=both_orders,
                                   context_pixels=context, positions=self._constant(encoding.positions))
        return to_host(logp).astype(np.float64), to_host(mass)


LlavaScorer = VlmScorer  # the name the LLaVA-only annotator had


def _read_rgb(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"annotate.context_image: cannot read {path!r} as an image ({error})") from error


def _batches(images: np.ndarray, size: int):
    """(start, real count, chunk) per batch; the last chunk is padded by repeating its last pair, so every call
    has one compiled shape."""
    for start in range(0, len(images), size):
        chunk = images[start:start + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), 0)])
        yield start, min(size, len(images) - start), chunk


def pairs_per_call(cfg: AnnotateConfig, mesh: Mesh | None) -> int:
    """Pairs per compiled call: `annotate.batch_size`, rounded up to a multiple of the mesh's data axis."""
    if mesh is None:
        return cfg.batch_size
    data = mesh.shape["data"]
    return data * -(-cfg.batch_size // data)


class LlavaAnnotator:
    """Score mode: a `PairScorer`'s answer probabilities, averaged over both orders, turned into labels.

    Pairs go to the scorer in calls of `batch_size` (default `annotate.batch_size`) pairs."""

    name = "llava"
    family: str | None = None  # the model family (`vlm/family.py`), set by `from_config`, named in the summary

    def __init__(self, scorer: PairScorer, cfg: AnnotateConfig, batch_size: int | None = None):
        self.scorer, self.cfg = scorer, cfg
        self.batch_size = batch_size or cfg.batch_size
        self.last_diagnostics: dict[str, np.ndarray] = {}

    def annotate(self, images, states=None):
        images = check_pairs(images)
        both = self.cfg.both_orders
        probs, masses, position = [], [], []
        for _, count, chunk in _batches(images, self.batch_size):
            logp, mass = self.scorer.score(chunk, both)
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

    def settings(self) -> dict:
        """What decided the labels, for the stage summary."""
        family = {} if self.family is None else {"family": self.family}
        return {**family, "mode": "score", "prompt": self.cfg.prompt, "layout": self.cfg.layout,
                "both_orders": self.cfg.both_orders}


class StudyAnnotator:
    """Study mode: the follow-up LLaVA study's two sampled turns on one vertical composite, exact answer matching.

    Each pair samples with its own key, from `annotate.seed` and a hash of the pair's pixels, so its answers do not
    depend on batching, partitioning, resumption or the mesh (`mesh`: as `LlavaScorer`'s).
    """

    name = "llava"
    family: str | None = None  # the model family (`vlm/family.py`), set by `from_config`, named in the summary

    def __init__(self, model, processor, cfg: AnnotateConfig, mesh: Mesh | None = None):
        self.model, self.processor, self.cfg, self.mesh = model, processor, cfg, mesh
        self.batch_size = pairs_per_call(cfg, mesh)
        self.first_user = "<image>\n" + cfg.study_query
        eos = processor.tokenizer.token_to_id(processor.eos_token)
        self.eos = -1 if eos is None else eos
        self.last_diagnostics: dict[str, np.ndarray] = {}

    def prompt(self, first_answer: str | None = None) -> str:
        """The first turn's prompt, or (given its answer) the second turn's."""
        if first_answer is None:
            return self.processor.chat_prompt([(self.first_user, None)], self.cfg.study_system)
        followup = self.cfg.study_followup.replace("{answer}", first_answer)
        return self.processor.chat_prompt([(self.first_user, first_answer), (followup, None)],
                                          self.cfg.study_system)

    def _keys(self, chunk: np.ndarray, turn: int) -> np.ndarray:
        base = jax.random.PRNGKey(self.cfg.seed)
        return np.stack([np.asarray(jax.random.fold_in(jax.random.fold_in(base, np.uint32(zlib.crc32(p.tobytes()))),
                                                       turn)) for p in chunk])

    def _generate(self, prompts: list[str], pixels: np.ndarray, chunk: np.ndarray, turn: int) -> list[str]:
        from sensei_jax.vlm.generate import greedy_generate, sample_generate

        sizes = [(2 * chunk.shape[2] + self.cfg.composite_gap, chunk.shape[3])]  # the one composite per prompt
        longest = max(len(self.processor.tokenize(p, image_sizes=sizes)) for p in prompts)
        bucket = self.cfg.seq_bucket * -(-longest // self.cfg.seq_bucket)
        limit = self.model.config.text.max_position_embeddings
        if bucket + self.cfg.max_new_tokens > limit:
            raise ValueError(f"study turn {turn + 1}: a {longest}-token prompt ({bucket} padded) plus "
                             f"annotate.max_new_tokens {self.cfg.max_new_tokens} exceeds the model's {limit} "
                             f"positions; lower annotate.max_new_tokens")
        ids, mask = self.processor.encode(prompts, length=bucket, padding_side="left",
                                          image_sizes=sizes * len(prompts))
        common = dict(max_new_tokens=self.cfg.max_new_tokens, eos_id=self.eos)
        if self.cfg.temperature > 0:
            out = sample_generate(self.model, ids, mask, pixels, keys=self._keys(chunk, turn),
                                  temperature=self.cfg.temperature, top_p=self.cfg.top_p, mesh=self.mesh, **common)
        else:
            out = greedy_generate(self.model, ids, mask, pixels, mesh=self.mesh, **common)
        texts = []
        for row in out:
            row = row.tolist()
            texts.append(self.processor.decode(row[:row.index(self.eos)] if self.eos in row else row).strip())
        return texts

    def annotate(self, images, states=None):
        images = check_pairs(images)
        first_turns, answers = [], []
        for _, count, chunk in _batches(images, self.batch_size):
            pixels = self.processor.preprocess_images(composite(chunk, self.cfg.composite_gap))
            first = self._generate([self.prompt()] * len(chunk), pixels, chunk, turn=0)
            final = self._generate([self.prompt(a) for a in first], pixels, chunk, turn=1)
            first_turns.extend(first[:count])
            answers.extend(final[:count])
        label = np.array([parse_study_answer(a) for a in answers], np.int8)
        prob_first = np.select([label == Label.FIRST, label == Label.SECOND], [1.0, 0.0], 0.5).astype(np.float32)
        # The generated texts, per pair: kept in the stage's partition files for inspection.
        self.last_diagnostics = {"first_turn": np.array(first_turns, dtype=str), "answer": np.array(answers, dtype=str)}
        return prob_first, label

    def settings(self) -> dict:
        family = {} if self.family is None else {"family": self.family}
        return {**family, "mode": "study", "layout": "composite", "both_orders": False,
                "temperature": self.cfg.temperature, "top_p": self.cfg.top_p, "max_new_tokens": self.cfg.max_new_tokens}


def from_config(vlm: VlmConfig, cfg: AnnotateConfig, devices: list | None = None) -> LlavaAnnotator | StudyAnnotator:
    """The VLM annotator of `cfg.mode` with the checkpoint at `vlm.path`, built by its family (`vlm.family`, or the
    one its config.json's model_type names), on the mesh (data = devices / annotate.model_parallel, model =
    annotate.model_parallel) over `devices` (default: every device of every host)."""
    if not vlm.path:
        raise ValueError("the llava annotator needs a checkpoint: set --vlm.path DIR (a Hugging Face "
                         "checkpoint directory with config.json, safetensors, tokenizer.json, of a family in "
                         f"{', '.join(family_lib.names())})")
    family = family_lib.resolve(vlm.path, vlm.family)
    mesh = make_mesh(cfg.model_parallel, devices)
    model = family.model_class().from_pretrained(vlm.path, DTYPES[vlm.dtype], mesh, vlm.attention)
    processor = family.processor_class().from_pretrained(vlm.path, pad_to_square=vlm.pad_to_square)
    if cfg.mode == "study":
        annotator = StudyAnnotator(model, processor, cfg, mesh)
    else:
        annotator = LlavaAnnotator(VlmScorer(model, processor, cfg, mesh), cfg, pairs_per_call(cfg, mesh))
    annotator.family = family.name
    return annotator
