"""Parity of the JAX LLaVA with transformers' PyTorch LlavaForConditionalGeneration (optional `parity` extra)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from sensei_jax.vlm.generate import greedy_generate  # noqa: E402
from sensei_jax.vlm.llava_config import LlavaConfig  # noqa: E402
from sensei_jax.vlm.model import LlavaModel, random_model  # noqa: E402
from sensei_jax.vlm.params import save_pretrained  # noqa: E402

CFG = LlavaConfig.tiny(vocab_size=64, image_token_index=3)
L = CFG.image_seq_length


def _batch():
    rng = np.random.default_rng(0)
    row0 = [1, 7] + [3] * L + [9, 10, 11] + [3] * L + [12, 13]
    row1 = [1, 8] + [3] * L + [14, 15, 16, 17]
    length = len(row0)
    ids = np.zeros((2, length), np.int64)
    mask = np.zeros((2, length), np.int64)
    ids[0], mask[0] = row0, 1
    ids[1, :len(row1)], mask[1, :len(row1)] = row1, 1
    pixels = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)  # NHWC, 2 images for row 0 and 1 for row 1
    return ids, mask, pixels


def _hf_logits(hf_model, ids, mask, pixels):
    with torch.no_grad():
        out = hf_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                       pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
    return out.logits.numpy()


def _unused_tensors(rng):
    """A real hub checkpoint also holds the CLIP layers after the selected one and post_layernorm."""
    v = CFG.vision
    extra = {"vision_tower.vision_model.post_layernorm.weight": rng.normal(size=v.hidden_size).astype(np.float32),
             "vision_tower.vision_model.post_layernorm.bias": rng.normal(size=v.hidden_size).astype(np.float32)}
    prefix = f"vision_tower.vision_model.encoder.layers.{CFG.vision_layers_used}."
    shapes = {"self_attn.q_proj": (v.hidden_size, v.hidden_size), "self_attn.k_proj": (v.hidden_size, v.hidden_size),
              "self_attn.v_proj": (v.hidden_size, v.hidden_size), "self_attn.out_proj": (v.hidden_size,) * 2,
              "mlp.fc1": (v.intermediate_size, v.hidden_size), "mlp.fc2": (v.hidden_size, v.intermediate_size),
              "layer_norm1": (v.hidden_size,), "layer_norm2": (v.hidden_size,)}
    for name, shape in shapes.items():
        extra[prefix + name + ".weight"] = rng.normal(size=shape).astype(np.float32) * 0.02
        extra[prefix + name + ".bias"] = rng.normal(size=shape[:1]).astype(np.float32) * 0.02
    return extra


def test_hub_checkpoint_matches_transformers(tmp_path):
    """Our model saved in the hub layout and loaded by transformers gives the same logits and greedy tokens."""
    model = random_model(CFG, seed=1, std=0.15)  # large weights: well-separated logits, no argmax near-ties
    save_pretrained(model, tmp_path, layout="hub", extra=_unused_tensors(np.random.default_rng(1)))
    hf_model = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids, mask, pixels = _batch()
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(pixels), jnp.asarray(mask)))
    theirs = _hf_logits(hf_model, ids, mask, pixels)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)

    # Greedy decoding of row 0 (a full row, two images): same tokens as transformers' generate.
    new = 8
    with torch.no_grad():
        hf_tokens = hf_model.generate(input_ids=torch.from_numpy(ids[:1]), attention_mask=torch.from_numpy(mask[:1]),
                                      pixel_values=torch.from_numpy(pixels[:2].transpose(0, 3, 1, 2).copy()),
                                      max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None,
                                      pad_token_id=0)[0, ids.shape[1]:].numpy()
    tokens = greedy_generate(model, ids[:1], mask[:1], pixels[:2], max_new_tokens=new, eos_id=-1)
    np.testing.assert_array_equal(tokens[0], hf_tokens)


def test_transformers_save_pretrained_loads(tmp_path):
    """A checkpoint written by transformers' own save_pretrained (its version's layout) loads and matches."""
    hf_cfg = transformers.LlavaConfig(**{k: v for k, v in CFG.to_hf_dict().items() if k != "architectures"})
    torch.manual_seed(0)
    hf_model = transformers.LlavaForConditionalGeneration(hf_cfg).eval()
    hf_model.save_pretrained(tmp_path)
    model = LlavaModel.from_pretrained(tmp_path)
    ids, mask, pixels = _batch()
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(pixels), jnp.asarray(mask)))
    theirs = _hf_logits(hf_model, ids, mask, pixels)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)


def test_image_preprocessing_matches_clip_image_processor():
    """Our numpy/PIL preprocessing equals transformers' PIL CLIPImageProcessor on llava-1.5 settings."""
    from sensei_jax.vlm.processor import ImageProcessorConfig, preprocess_image

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    cfg = ImageProcessorConfig()
    hf = cls(**{k: v for k, v in cfg.to_hf_dict().items() if k != "image_processor_type"})
    rng = np.random.default_rng(0)
    for shape in [(50, 70, 3), (224, 224, 3), (400, 300, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        theirs = hf(images=[image], return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        np.testing.assert_allclose(preprocess_image(image, cfg), theirs, atol=1e-5)
