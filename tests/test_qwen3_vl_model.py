"""Qwen3-VL without torch: MRoPE ids, the chat template and token counts, sharded bf16 checkpoints, the
checkpoint errors, and the tiny model's behaviour (image tokens and DeepStack reach the logits)."""

import json
import shutil

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from sensei_jax.vlm import family
from sensei_jax.vlm.checkpoint import check_folder
from sensei_jax.vlm.params import read_safetensors, write_safetensors
from sensei_jax.vlm.qwen3_vl.config import Qwen3VLConfig
from sensei_jax.vlm.qwen3_vl.language import mrope_axes
from sensei_jax.vlm.qwen3_vl.model import Qwen3VLModel, random_model
from sensei_jax.vlm.qwen3_vl.params import save_pretrained
from sensei_jax.vlm.qwen3_vl.positions import batch_positions, prompt_positions
from sensei_jax.vlm.qwen3_vl.processor import Qwen3VLProcessor
from sensei_jax.vlm.qwen3_vl.tiny import write_tiny_checkpoint

QUESTION = "Which image is more interesting? Answer first or second."
IMAGE = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_qwen3_vl"), [QUESTION], seed=0, std=0.1)


def test_mrope_positions_of_text_and_an_image_grid():
    image = 9
    ids = [1, 2, image, image, image, image, image, image, 3, 4]  # text, a 2 x 3 grid, text
    positions = prompt_positions(ids, [(2, 3)], image)
    np.testing.assert_array_equal(positions, [[0, 1, 2, 2, 2, 2, 2, 2, 5, 6],   # time: the image at one step
                                              [0, 1, 2, 2, 2, 3, 3, 3, 5, 6],   # height: its rows
                                              [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]])  # width: its columns; then + 3
    padded = batch_positions(np.array([ids + [0], [1] + ids]), np.array([[1] * 10 + [0], [1] * 11]),
                             [(2, 3), (3, 2)], image)
    np.testing.assert_array_equal(padded[:, 0, :10], positions)
    assert (padded[:, 0, 10] == 0).all()  # padding at position 0
    with pytest.raises(ValueError, match="does not hold the 3 x 3 = 9 tokens of its grid"):
        prompt_positions(ids, [(3, 3)], image)
    with pytest.raises(ValueError, match="2 images given but the prompt holds 1"):
        prompt_positions(ids, [(2, 3), (2, 3)], image)


def test_interleaved_mrope_cycles_time_height_width():
    axes = mrope_axes(128, (24, 20, 20))  # the released models: 64 frequencies
    assert axes[:9].tolist() == [0, 1, 2] * 3 and axes[60:].tolist() == [0] * 4
    assert np.bincount(axes).tolist() == [24, 20, 20]


def test_the_chat_template_and_image_token_counts(checkpoint):
    processor = Qwen3VLProcessor.from_pretrained(checkpoint)
    prompt = processor.chat_prompt([("<image>\nDescribe.", "A cube."), ("<image>\n<image>\nWhich?", None)], "Be brief.")
    block = "<|vision_start|><|image_pad|><|vision_end|>"
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + block + "Describe.<|im_end|>\n"
                      "<|im_start|>assistant\nA cube.<|im_end|>\n<|im_start|>user\n" + block + block +
                      "Which?<|im_end|>\n<|im_start|>assistant\n")
    assert processor.grid((40, 56)) == (2, 4) and processor.grid((300, 30)) == (19, 2)  # 304 x 32 px, 16-px tokens
    ids = processor.tokenize(prompt, image_sizes=[(40, 56), (40, 56), (300, 30)])
    assert ids.count(processor.image_token_index) == 8 + 8 + 38
    shared, candidates = processor.answer_tokens(processor.expand(prompt), (" first", " second"))
    assert shared == [] and [processor.tokenizer.id_to_token(c) for c in candidates] == ["first", "second"]


def test_image_tokens_and_deepstack_reach_the_logits(checkpoint):
    model, processor = Qwen3VLModel.from_pretrained(checkpoint), Qwen3VLProcessor.from_pretrained(checkpoint)
    prompt = processor.chat_prompt([("<image>\n" + QUESTION, None)])
    ids = jnp.asarray([processor.tokenize(prompt, image_sizes=[IMAGE.shape[:2]])])
    pixels = jnp.asarray(processor.preprocess_images([IMAGE]))
    logits = np.asarray(model(ids, pixels))
    other = np.asarray(model(ids, jnp.asarray(processor.preprocess_images([IMAGE[::-1].copy()]))))
    assert np.abs(logits - other).max() > 1e-3  # the image matters
    features = model.image_features(pixels)
    assert features.tokens.shape == (1, 8, 64) and features.deepstack.shape == (1, 8, 2, 64)
    flat = features._replace(deepstack=jnp.zeros_like(features.deepstack))
    without = np.asarray(model.head(model.hidden_states(ids, image_features=flat, positions=model.default_positions(
        ids, None, pixels))))
    assert np.abs(logits - without).max() > 1e-3  # so do the DeepStack features


def test_a_sharded_bfloat16_checkpoint_loads(checkpoint, tmp_path):
    model = Qwen3VLModel.from_pretrained(checkpoint)
    sharded = save_pretrained(model, tmp_path / "bf16", dtype=ml_dtypes.bfloat16, max_shard_bytes=40_000)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").is_file()
    loaded = Qwen3VLModel.from_pretrained(sharded, jnp.bfloat16)
    assert loaded.dtype == jnp.bfloat16
    kernel = loaded.language_model.layers[1].mlp.down_proj.kernel[...]
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(
        model.language_model.layers[1].mlp.down_proj.kernel[...]).astype(ml_dtypes.bfloat16))


def test_checkpoint_errors_name_the_file_and_the_value(checkpoint, tmp_path):
    assert check_folder(checkpoint).vision.patch_size == 8
    assert family.resolve(checkpoint).name == "qwen3_vl"
    with pytest.raises(ValueError, match=rf"vlm.family is 'llava' but {checkpoint}/config.json says model_type "
                                         r"'qwen3_vl'"):
        check_folder(checkpoint, "llava")
    bad = shutil.copytree(checkpoint, tmp_path / "bad")
    tensors = dict(read_safetensors(bad / "model.safetensors"))
    key = "model.language_model.layers.0.self_attn.q_norm.weight"
    tensors[key] = np.ones(7, np.float32)
    tensors["model.visual.extra.weight"] = np.ones(3, np.float32)
    del tensors["model.visual.merger.norm.bias"]
    write_safetensors(bad / "model.safetensors", tensors)
    with pytest.raises(ValueError) as error:
        Qwen3VLModel.from_pretrained(bad)
    message = str(error.value)
    assert f"checkpoint {bad} does not match its config.json" in message
    assert f"tensor {key} (model.safetensors) has shape (7,), expected (32,)" in message
    assert "unexpected tensor model.visual.extra.weight" in message
    assert "missing tensor visual.merger.norm.bias" in message
    (bad / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"no tokenizer.json in {bad}"):
        Qwen3VLProcessor.from_pretrained(bad)
    shutil.copy(checkpoint / "tokenizer.json", bad / "tokenizer.json")
    (bad / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{bad}/preprocessor_config.json is missing"):
        check_folder(bad)
    config = json.loads((checkpoint / "config.json").read_text())
    config["text_config"]["rope_parameters"]["mrope_section"] = [8, 5, 5]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{bad}/config.json: mrope_section \[8, 5, 5\] must sum to head_dim / 2"):
        Qwen3VLConfig.from_pretrained(bad)


def test_presets_have_the_released_sizes():
    from sensei_jax.vlm.model import parameter_count
    from sensei_jax.vlm.qwen3_vl.model import abstract_model

    counts = {name: parameter_count(abstract_model(getattr(Qwen3VLConfig, f"qwen3_vl_{name}")(), jnp.bfloat16))
              for name in ("2b", "4b", "8b")}
    assert 2.0e9 < counts["2b"] < 2.3e9 and 4.3e9 < counts["4b"] < 4.5e9 and 8.7e9 < counts["8b"] < 8.8e9, counts
    assert random_model(Qwen3VLConfig.tiny(tie_word_embeddings=True)).config.text.tie_word_embeddings


def test_cached_greedy_decoding_of_left_padded_prompts_equals_full_forward_passes(checkpoint):
    from sensei_jax.vlm.generate import greedy_generate

    model, processor = Qwen3VLModel.from_pretrained(checkpoint), Qwen3VLProcessor.from_pretrained(checkpoint)
    prompts = [processor.chat_prompt([("<image>\n" + QUESTION, None)]), processor.chat_prompt([("<image>\nfirst?", None)])]
    images = np.stack([IMAGE, IMAGE[::-1]])
    sizes = [IMAGE.shape[:2]] * 2
    ids, mask = processor.encode(prompts, padding_side="left", image_sizes=sizes)
    assert mask[1, 0] == 0  # the second prompt is shorter: left padding
    pixels = processor.preprocess_images(images)
    new = 5
    tokens = greedy_generate(model, ids, mask, pixels, max_new_tokens=new, eos_id=-1)
    for row in range(2):
        sequence = ids[row][mask[row].astype(bool)].tolist()
        for _ in range(new):  # no cache: the whole sequence again for every token
            logits = model(jnp.asarray([sequence]), jnp.asarray(pixels[row:row + 1]))
            sequence.append(int(jnp.argmax(logits[0, -1])))
        assert tokens[row].tolist() == sequence[-new:], row


def test_the_throughput_benchmark_times_qwen3_vl():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import vlm_throughput
    finally:
        sys.path.pop(0)
    row = vlm_throughput.measure(Qwen3VLConfig.tiny(), "float32", batch=1, iters=1, image_size=32, name="tiny")
    assert row["family"] == "qwen3_vl" and row["image_size"] == 32 and row["image_tokens_per_image"] == 4
    assert row["timed"] and row["pairs_per_s"] > 0 and row["flops_per_pair"] > 0
    shapes = vlm_throughput.measure_sizes("8b", [256], timed=False, family="qwen3_vl")[0]
    assert shapes["image_tokens_per_image"] == 64 and 16 < shapes["weight_gib"] < 16.5
