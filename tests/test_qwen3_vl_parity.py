"""Parity of the JAX Qwen3-VL with transformers' PyTorch Qwen3VLForConditionalGeneration and its processor
(optional `parity` extra), on tiny random checkpoints made here: transformers' own save_pretrained output loaded by
us, and ours loaded by transformers. Logits within 1e-4 of the largest logit (float32) for one image, two images
and a right-padded batch of prompts with images of different sizes."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from sensei_jax.vlm.qwen3_vl.config import Qwen3VLConfig  # noqa: E402
from sensei_jax.vlm.qwen3_vl.model import Qwen3VLModel, random_model  # noqa: E402
from sensei_jax.vlm.qwen3_vl.params import save_pretrained  # noqa: E402
from sensei_jax.vlm.qwen3_vl.processor import Qwen3VLProcessor, flat_patches  # noqa: E402
from sensei_jax.vlm.qwen3_vl.tiny import write_tiny_checkpoint  # noqa: E402

QUESTION = "Which image is more interesting? Answer first or second."
RNG = np.random.default_rng(0)
IMAGES = {"wide": RNG.integers(0, 256, (40, 56, 3), dtype=np.uint8),  # resized to 32 x 64: a 2 x 4 token grid
          "tall": RNG.integers(0, 256, (70, 30, 3), dtype=np.uint8),  # 64 x 32
          "big": RNG.integers(0, 256, (400, 300, 3), dtype=np.uint8),  # above max_pixels: scaled down to fit
          "small": RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)}  # below min_pixels: scaled up


class ImageTextProcessor(transformers.Qwen3VLProcessor):
    """transformers' Qwen3VLProcessor without a video processor (that one needs torchvision); images and text go
    through transformers' own code."""

    def check_argument_for_proper_class(self, name, argument):
        if name != "video_processor":
            return super().check_argument_for_proper_class(name, argument)


def _hf_processor(path):
    settings = json.loads((path / "preprocessor_config.json").read_text())
    image = transformers.Qwen2VLImageProcessorPil(**{k: v for k, v in settings.items()
                                                     if k not in ("image_processor_type", "processor_class")})
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"),
                                                     pad_token="<|endoftext|>")
    return ImageTextProcessor(image_processor=image, tokenizer=tokenizer, video_processor=None)


def _hf_model(path, seed):
    """transformers' model of the config at `path`, random with `seed` at a scale that makes every part count."""
    data = json.loads((path / "config.json").read_text())
    cfg = transformers.Qwen3VLConfig(**{k: v for k, v in data.items() if k not in ("architectures", "dtype")})
    torch.manual_seed(seed)
    model = transformers.Qwen3VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn_like(param)
            param.copy_(1.0 + 0.1 * noise if "norm" in name and param.ndim == 1 and "bias" not in name
                        else 0.1 * noise)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint written by transformers' save_pretrained, with our tokenizer and image settings."""
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_qwen3_vl"), [QUESTION], seed=0)
    hf_model = _hf_model(path, seed=0)
    hf_model.save_pretrained(path)
    return path, hf_model


def _prompt(processor, images: int) -> str:
    return processor.chat_prompt([("<image>\n" * images + QUESTION, None)])


def _hf_logits(hf_model, inputs):
    with torch.no_grad():
        return hf_model(**inputs).logits.numpy()


def _assert_close(ours, theirs):
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("names", [["wide"], ["wide", "tall"]], ids=["one image", "two images"])
def test_logits_match_transformers(checkpoint, names):
    path, hf_model = checkpoint
    model, processor = Qwen3VLModel.from_pretrained(path), Qwen3VLProcessor.from_pretrained(path)
    images = [IMAGES[name] for name in names]
    prompt = _prompt(processor, len(images))
    inputs = _hf_processor(path)(text=[prompt], images=images, return_tensors="pt")
    ids = processor.tokenize(prompt, image_sizes=[image.shape[:2] for image in images])
    np.testing.assert_array_equal(inputs["input_ids"][0].numpy(), ids)
    pixels = [jnp.asarray(processor.preprocess_images([image])) for image in images]  # one array per size
    ours = np.asarray(model(jnp.asarray([ids]), pixels))
    _assert_close(ours, _hf_logits(hf_model, inputs))


def test_a_padded_batch_of_mixed_image_sizes_matches_transformers(checkpoint):
    path, hf_model = checkpoint
    model, processor = Qwen3VLModel.from_pretrained(path), Qwen3VLProcessor.from_pretrained(path)
    prompts = [_prompt(processor, 1), processor.chat_prompt([("<image>\nfirst?", None)])]
    images = [IMAGES["tall"], IMAGES["small"]]
    inputs = _hf_processor(path)(text=prompts, images=images, padding=True, return_tensors="pt")
    ids, mask = processor.encode(prompts, padding_side="right", image_sizes=[i.shape[:2] for i in images])
    np.testing.assert_array_equal(inputs["input_ids"].numpy()[mask.astype(bool)], ids[mask.astype(bool)])
    assert mask.sum(1).tolist()[0] != mask.sum(1).tolist()[1]  # one row is padded
    pixels = [jnp.asarray(processor.preprocess_images([image])) for image in images]
    ours = np.asarray(model(jnp.asarray(ids), pixels, jnp.asarray(mask)))
    real = mask.astype(bool)
    _assert_close(ours[real], _hf_logits(hf_model, inputs)[real])


def test_the_processor_matches_transformers(checkpoint):
    path, _ = checkpoint
    processor, hf = Qwen3VLProcessor.from_pretrained(path), _hf_processor(path)
    for name, image in IMAGES.items():
        prompt = _prompt(processor, 1)
        inputs = hf(text=[prompt], images=[image], return_tensors="np")
        pixels = processor.preprocess_images([image])[0]
        np.testing.assert_allclose(flat_patches(pixels, processor.image_config), inputs["pixel_values"], atol=1e-6,
                                   err_msg=name)
        rows, cols = processor.grid(image.shape[:2])
        assert inputs["image_grid_thw"].tolist() == [[1, 2 * rows, 2 * cols]], name
        np.testing.assert_array_equal(inputs["input_ids"][0], processor.tokenize(prompt, image_sizes=[image.shape[:2]]))
    # The tiny checkpoint's limits are 32 x 32 and 256 x 256 pixels, sides multiples of 16.
    assert processor.pixel_shape(IMAGES["big"].shape[:2]) == (288, 208)  # 400 x 300 scaled by 1 / 1.35
    assert processor.pixel_shape(IMAGES["small"].shape[:2]) == (32, 48)  # 12 x 20 scaled by 2.07


@pytest.mark.parametrize("tied", [False, True], ids=["untied head", "tied head"])
def test_our_checkpoint_loads_in_transformers(tmp_path, tied):
    """Our writer's layout is what transformers reads, tied embeddings (the 2B and 4B models) included."""
    path = write_tiny_checkpoint(tmp_path, [QUESTION], seed=1, std=0.1,
                                 config=Qwen3VLConfig.tiny(tie_word_embeddings=tied, vocab_size=320))
    model, processor = Qwen3VLModel.from_pretrained(path), Qwen3VLProcessor.from_pretrained(path)
    hf_model = transformers.Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    assert hf_model.config.tie_word_embeddings is tied
    images = [IMAGES["wide"], IMAGES["wide"][::-1].copy()]
    prompt = _prompt(processor, 2)
    inputs = _hf_processor(path)(text=[prompt], images=images, return_tensors="pt")
    ids = processor.tokenize(prompt, image_sizes=[image.shape[:2] for image in images])
    ours = np.asarray(model(jnp.asarray([ids]), jnp.asarray(processor.preprocess_images(images))))
    _assert_close(ours, _hf_logits(hf_model, inputs))
    resaved = save_pretrained(random_model(model.config, seed=2), tmp_path / "resaved")
    assert Qwen3VLModel.from_pretrained(resaved).config == model.config


def test_greedy_generation_matches_transformers(checkpoint):
    """Cached decoding (prefill with DeepStack, then one token at a time at MRoPE positions continuing after the
    prompt's largest) gives transformers' greedy tokens."""
    from sensei_jax.vlm.generate import greedy_generate

    path, hf_model = checkpoint
    model, processor = Qwen3VLModel.from_pretrained(path), Qwen3VLProcessor.from_pretrained(path)
    images = [IMAGES["tall"], IMAGES["tall"][:, ::-1].copy()]
    prompt = _prompt(processor, 2)
    inputs = _hf_processor(path)(text=[prompt], images=images, return_tensors="pt")
    new = 8
    with torch.no_grad():
        theirs = hf_model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)[0, inputs["input_ids"].shape[1]:].numpy()
    ids = inputs["input_ids"].numpy()
    tokens = greedy_generate(model, ids, np.ones_like(ids), processor.preprocess_images(images),
                             max_new_tokens=new, eos_id=-1)
    np.testing.assert_array_equal(tokens[0], theirs)
    assert len(set(theirs.tolist())) > 1  # not one token repeated: the positions after the prompt matter
