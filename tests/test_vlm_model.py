"""The JAX LLaVA without torch: checkpoint layouts and loading errors, padding, caching, dtypes, processor."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from sensei_jax.vlm.generate import greedy_generate, nucleus_mask, sample_generate, sample_token
from sensei_jax.vlm.llava_config import LlavaConfig
from sensei_jax.vlm.model import LlavaModel, random_model
from sensei_jax.vlm.params import read_safetensors, save_pretrained, write_safetensors
from sensei_jax.vlm.processor import (ImageProcessorConfig, LlavaProcessor, chat_prompt, pad_to_square,
                                      preprocess_image)
from sensei_jax.vlm.tiny import write_tiny_checkpoint

CFG = LlavaConfig.tiny(vocab_size=64, image_token_index=3)
L = CFG.image_seq_length


# One compiled forward for every test (eager op-by-op dispatch is far slower on a busy CPU).
forward = jax.jit(lambda model, ids, pixels, mask=None: model(ids, pixels, mask))


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, seed=0)


@pytest.fixture(scope="module")
def batch():
    ids = np.array([[1, 7] + [3] * L + [9, 10, 11, 12], [1, 8] + [3] * L + [13, 14, 15, 16]], np.int32)
    pixels = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    return ids, pixels


@pytest.fixture(scope="module")
def reference(model, batch):
    ids, pixels = batch
    return np.asarray(forward(model, ids, pixels))


@pytest.mark.parametrize("layout,shard", [("hub", None), ("hub", 30_000), ("in-memory", None),
                                          ("transformers5", None)])
def test_every_layout_loads_to_the_same_model(model, batch, reference, tmp_path, layout, shard):
    save_pretrained(model, tmp_path, layout=layout, max_shard_bytes=shard)
    keys = set()
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == (1 if shard is None else len(files)) and (shard is None or len(files) > 1)
    for file in files:
        keys |= set(read_safetensors(file))
    expected_prefix = {"hub": "language_model.model.", "in-memory": "model.language_model.",
                       "transformers5": "language_model.model."}[layout]
    assert any(k.startswith(expected_prefix) for k in keys)
    if layout == "transformers5":
        assert "vision_tower.embeddings.patch_embedding.weight" in keys
    loaded = LlavaModel.from_pretrained(tmp_path)
    ids, pixels = batch
    np.testing.assert_array_equal(np.asarray(forward(loaded, ids, pixels)), reference)


def test_loading_errors_name_the_tensor_or_path(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        LlavaModel.from_pretrained(tmp_path / "no-such-dir")
    save_pretrained(model, tmp_path, layout="hub")
    tensors = dict(read_safetensors(tmp_path / "model.safetensors"))
    head = tensors.pop("language_model.lm_head.weight")
    write_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(ValueError, match="missing tensor lm_head.weight"):
        LlavaModel.from_pretrained(tmp_path)
    tensors["language_model.lm_head.weight"] = head[:, :-1]
    tensors["language_model.model.extra_thing.weight"] = head
    write_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(ValueError, match=r"(?s)language_model.lm_head.weight .* has shape \(64, 47\).*"
                                         r"unexpected tensor language_model.model.extra_thing.weight"):
        LlavaModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        LlavaModel.from_pretrained(tmp_path)


def test_unused_vision_layers_are_skipped_and_bf16_loads(model, batch, reference, tmp_path):
    rng = np.random.default_rng(0)
    extra = {"vision_tower.vision_model.post_layernorm.weight": rng.normal(size=32).astype(np.float32),
             "vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias": rng.normal(size=64).astype(np.float32)}
    save_pretrained(model, tmp_path, layout="hub", dtype=ml_dtypes.bfloat16, extra=extra)
    head = read_safetensors(tmp_path / "model.safetensors")["language_model.lm_head.weight"]
    assert head.dtype == ml_dtypes.bfloat16
    ids, pixels = batch
    as_fp32 = np.asarray(forward(LlavaModel.from_pretrained(tmp_path, jnp.float32), ids, pixels))
    bf16 = LlavaModel.from_pretrained(tmp_path, jnp.bfloat16)
    assert bf16.dtype == jnp.bfloat16
    as_bf16 = np.asarray(forward(bf16, ids, pixels))
    assert as_bf16.dtype == np.float32
    assert np.abs(as_fp32 - reference).max() < 0.05  # bf16-rounded weights, fp32 compute
    assert np.abs(as_bf16 - as_fp32).max() < 0.05
    assert np.abs(as_bf16 - as_fp32).max() > 0  # really computed in bf16


def test_hf_config_defaults_and_rope_parameters(tmp_path):
    minimal = {"model_type": "llava", "image_token_index": 32000, "pad_token_id": 32001,
               "vision_feature_layer": -2, "text_config": {"model_type": "llama", "vocab_size": 32064,
                                                           "rms_norm_eps": 1e-5},
               "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                                 "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
                                 "patch_size": 14, "projection_dim": 768}}
    cfg = LlavaConfig.from_hf_dict(minimal)
    assert cfg == LlavaConfig.llava_1_5_7b()
    assert cfg.image_seq_length == 576 and cfg.vision_layers_used == 23 and cfg.text.kv_heads == 32
    v5 = json.loads(json.dumps(minimal))
    v5["text_config"]["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "default"}
    assert LlavaConfig.from_hf_dict(v5).text.rope_theta == 5e5
    v5["text_config"]["rope_parameters"]["rope_type"] = "yarn"
    with pytest.raises(ValueError, match="yarn"):
        LlavaConfig.from_hf_dict(v5)
    with pytest.raises(FileNotFoundError, match="config.json"):
        LlavaConfig.from_pretrained(tmp_path)


def test_right_padding_and_image_count(model, batch, reference):
    ids, pixels = batch
    padded = np.concatenate([ids, np.zeros((2, 5), np.int32)], axis=1)
    mask = np.concatenate([np.ones_like(ids), np.zeros((2, 5), np.int32)], axis=1)
    logits = np.asarray(forward(model, padded, pixels, mask))
    np.testing.assert_allclose(logits[:, : ids.shape[1]], reference, atol=1e-5)
    # Each image's features land in its own placeholder run: swapping the images changes both rows.
    swapped = np.asarray(forward(model, ids, pixels[::-1].copy()))
    assert np.abs(swapped - reference).max() > 1e-3
    with pytest.raises(ValueError, match="image placeholder"):
        model(jnp.asarray(ids), jnp.asarray(pixels[:1]))


def test_cached_greedy_generation_equals_full_forward(model, batch):
    ids, pixels = batch
    short = ids[1, :-2]
    left = np.zeros_like(ids)
    left[0], left[1, 2:] = ids[0], short
    mask = (np.arange(ids.shape[1]) >= np.array([[0], [2]])).astype(np.int32)
    out = greedy_generate(model, left, mask, pixels, max_new_tokens=5, eos_id=-1)
    # Reference: uncached forward passes over right-padded [2, T + 5] batches (the shape the padding test compiled).
    width = ids.shape[1] + 5
    seqs = [list(ids[0]), list(short)]
    for _ in range(5):
        padded = np.zeros((2, width), np.int32)
        valid = np.zeros((2, width), np.int32)
        for row, seq in enumerate(seqs):
            padded[row, :len(seq)], valid[row, :len(seq)] = seq, 1
        logits = np.asarray(forward(model, padded, pixels, valid))
        for row, seq in enumerate(seqs):
            seq.append(int(np.argmax(logits[row, len(seq) - 1])))
    assert out[0].tolist() == seqs[0][ids.shape[1]:]
    assert out[1].tolist() == seqs[1][len(short):]
    eos = int(out[0, 0])  # the first generated token as EOS: after it, each row is padding
    stopped = greedy_generate(model, left, mask, pixels, max_new_tokens=5, eos_id=eos, pad_id=-7)
    for row in range(2):
        end = out[row].tolist().index(eos) + 1 if eos in out[row] else 5
        assert stopped[row, :end].tolist() == out[row, :end].tolist() and (stopped[row, end:] == -7).all()
    assert stopped[0, 0] == eos and (stopped[0, 1:] == -7).all()


def test_generate_top_p_keeps_the_smallest_nucleus():
    probs = np.array([1 / 16, 1 / 2, 1 / 8, 1 / 4, 1 / 16], np.float32)  # sorted: 1, 3, 2, then 0 and 4 tied
    logits = jnp.log(jnp.asarray(probs))
    mask = jax.jit(nucleus_mask)
    for top_p, kept in ((0.3, {1}), (0.74, {1, 3}), (0.8, {1, 3, 2}), (0.9, {1, 3, 2, 0}), (0.99, set(range(5))),
                        (1.0, set(range(5)))):
        assert set(np.flatnonzero(np.asarray(mask(logits, top_p))).tolist()) == kept, top_p
    batched = np.asarray(mask(jnp.stack([logits, logits[::-1]]), 0.74))
    assert np.flatnonzero(batched[0]).tolist() == [1, 3] and np.flatnonzero(batched[1]).tolist() == [1, 3]
    # Sampling draws only from the nucleus, renormalised: tokens 1 and 3 at 2:1.
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    draws = np.asarray(jax.jit(jax.vmap(sample_token, in_axes=(0, None, None, None)))(keys, logits, 1.0, 0.74))
    assert set(draws.tolist()) == {1, 3} and abs((draws == 1).mean() - 2 / 3) < 0.04


def test_sample_generate_is_seeded_and_greedy_in_the_cold_limit(model, batch):
    ids, pixels = batch
    left = np.stack([ids[0], ids[0]])
    mask = np.ones_like(left)
    pixels = np.stack([pixels[0], pixels[0]])  # two identical prompts: only their keys differ
    greedy = greedy_generate(model, left, mask, pixels, max_new_tokens=5, eos_id=-1)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(3), 2))
    cold = sample_generate(model, left, mask, pixels, keys=keys, temperature=1e-6, top_p=0.8, max_new_tokens=5,
                           eos_id=-1)
    np.testing.assert_array_equal(cold, greedy)
    hot = sample_generate(model, left, mask, pixels, keys=keys, temperature=2.0, max_new_tokens=5, eos_id=-1)
    np.testing.assert_array_equal(hot, sample_generate(model, left, mask, pixels, keys=keys, temperature=2.0,
                                                       max_new_tokens=5, eos_id=-1))  # same keys, same tokens
    assert (hot[0] != hot[1]).any() and (hot != greedy).any()  # other keys, other tokens
    # A row's tokens follow its own key, not its place in the batch.
    np.testing.assert_array_equal(sample_generate(model, left, mask, pixels, keys=keys[::-1], temperature=2.0,
                                                  max_new_tokens=5, eos_id=-1), hot[::-1])
    with pytest.raises(ValueError, match="keys"):
        sample_generate(model, left, mask, pixels, keys=keys[:1], temperature=1.0, max_new_tokens=5, eos_id=-1)


def test_processor_tokens_and_images(tmp_path):
    directory = write_tiny_checkpoint(tmp_path, ["USER: <image>\n<image>\nwhich one? ASSISTANT:"])
    processor = LlavaProcessor.from_pretrained(directory, pad_to_square=True)
    ids, mask = processor.encode(["USER: <image>\nwhich one? ASSISTANT:",
                                  "USER: <image>\n<image>\nwhich one? ASSISTANT:"], length=64)
    image_id = processor.image_token_index
    assert ids.shape == (2, 64) and (ids[:, 0] == 1).all()  # BOS
    assert (ids == image_id).sum(1).tolist() == [16, 32]
    assert mask.sum(1).tolist() == [16 + 8, 32 + 8] and (ids[mask == 0] == 0).all()
    left, left_mask = processor.encode(["USER: <image>\nwhich one? ASSISTANT:"], length=30, padding_side="left")
    assert left_mask[0, -1] == 1 and left_mask[0, :6].sum() == 0 and left_mask[0, 6:].all()
    first, second = (processor.tokenizer.token_to_id(w) for w in ("first", "second"))
    assert processor.answer_tokens("ASSISTANT:", [" first", " second"]) == ([], [first, second])
    with pytest.raises(ValueError, match="single token"):
        processor.answer_tokens("ASSISTANT:", [" first second", " second"])
    # Llava-1.5's llava_v1 conversation: system, "USER: ... " turns, "ASSISTANT: ...</s>" answers.
    assert chat_prompt([("<image>\nq1", "a1"), ("q2", None)], "SYS") == \
        "SYS USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"
    assert chat_prompt([("q", None)]) == "USER: q ASSISTANT:"  # no system line: llava-hf's chat template

    # Pad-to-square keeps the whole wide image (mean-colour bars); the plain center crop cuts its sides.
    wide = np.zeros((16, 64, 3), np.uint8)
    wide[:, :8] = 255  # a white stripe at the left edge
    cfg = ImageProcessorConfig(shortest_edge=32, crop_height=32, crop_width=32, resample=0)
    cropped, padded = preprocess_image(wide, cfg), processor.preprocess_images([wide])[0]
    white = (1.0 - np.asarray(cfg.image_mean)) / np.asarray(cfg.image_std)
    assert cropped.shape == padded.shape == (32, 32, 3)
    assert not np.isclose(cropped, white, atol=1e-3).all(-1).any()  # the stripe was cropped away
    assert np.isclose(padded, white, atol=1e-3).all(-1).any()
    square = pad_to_square(wide, (1, 2, 3))
    assert square.shape == (64, 64, 3) and (square[0, 0] == [1, 2, 3]).all() and (square[24:40] == wide).all()
    # Normalization: a mid-grey square image maps to (0.5 - mean) / std.
    grey = preprocess_image(np.full((32, 32, 3), 128, np.uint8), cfg)
    np.testing.assert_allclose(grey[0, 0], (128 / 255 - np.asarray(cfg.image_mean)) / np.asarray(cfg.image_std),
                               rtol=1e-5)


def _einsum_attention(q, k, v, mask):
    """The formula the model used before `jax.nn.dot_product_attention`: grouped heads, float32 softmax."""
    batch, length, heads, size = q.shape
    groups = heads // k.shape[2]
    q = q.reshape(batch, length, k.shape[2], groups, size)
    logits = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32) * size**-0.5
    if mask is not None:
        logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", weights, v, preferred_element_type=jnp.float32)
    return out.reshape(batch, length, heads, size).astype(v.dtype)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_attention_kernel_matches_the_einsum_formula(kv_heads):
    from sensei_jax.vlm.layers import attention, attention_implementation
    from sensei_jax.vlm.model import causal_mask

    rng = np.random.default_rng(kv_heads)
    q = jnp.asarray(rng.normal(size=(3, 7, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(3, 7, kv_heads, 8)), jnp.float32) for _ in range(2))
    valid = np.ones((3, 7), bool)
    valid[1, 5:] = False  # right padding
    valid[2, 2:] = False
    mask = causal_mask(jnp.asarray(valid))
    assert attention_implementation(jnp.float32, 8) == "xla"
    for m in (mask, None):
        for kernel in ("auto", "xla"):
            np.testing.assert_allclose(np.asarray(attention(q, k, v, m, kernel)),
                                       np.asarray(_einsum_attention(q, k, v, m)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'flash'"):
        attention(q, k, v, mask, "flash")


def test_attention_kernel_setting_is_checked():
    from sensei_jax import config as config_lib

    assert config_lib.load(None, ["--vlm.attention", "xla"]).vlm.attention == "xla"
    with pytest.raises(ValueError, match="vlm.attention"):
        config_lib.load(None, ["--vlm.attention", "flash"])
    with pytest.raises(ValueError, match="vlm.attention: unknown kernel 'flash'"):
        LlavaModel(CFG, attention_kernel="flash", rngs=None)
