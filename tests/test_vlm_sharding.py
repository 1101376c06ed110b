"""LLaVA over a (data, model) mesh on 4 virtual CPU devices: annotation and generation equal one device, the
parameters carry their Megatron shardings, and bad model_parallel values are refused by name.

The mesh runs in a subprocess (this process has initialised jax with one device); it writes its results as JSON.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax_env import subprocess_env

from sensei_jax.annotators.config import AnnotateConfig

MESHES = ((1, 1), (4, 1), (2, 2), (1, 4))  # (data, model); (1, 1) runs on the first device alone


def _worker(out: Path) -> None:
    """Loads the tiny checkpoint onto each mesh, scores pairs, generates greedily, records shardings."""
    import jax
    import jax.numpy as jnp

    from sensei_jax.annotators.vlm import LlavaAnnotator, LlavaScorer, pairs_per_call
    from sensei_jax.vlm.generate import greedy_generate, sample_generate
    from sensei_jax.vlm.llava_config import LlavaConfig
    from sensei_jax.vlm.model import LlavaModel
    from sensei_jax.vlm.processor import LlavaProcessor
    from sensei_jax.vlm.sharding import make_mesh
    from sensei_jax.vlm.tiny import write_tiny_checkpoint

    cfg = AnnotateConfig(annotator="llava", batch_size=4, tie_margin=0.02, min_answer_mass=0.0)
    config = LlavaConfig.tiny(image_token_index=3, num_key_value_heads=4)
    path = write_tiny_checkpoint(out / "ckpt", [cfg.question], seed=5, config=config, std=0.15)
    processor = LlavaProcessor.from_pretrained(path)
    pairs = np.random.default_rng(0).integers(0, 256, (6, 2, 32, 32, 3), dtype=np.uint8)
    ids, mask = processor.encode(["USER: <image>\nfirst or second? ASSISTANT:", "USER: <image>\ntop ASSISTANT:"] * 2,
                                 length=40, padding_side="left")
    pixels = processor.preprocess_images(pairs[:4, 0])
    keys = np.stack([np.asarray(jax.random.PRNGKey(i)) for i in range(4)])
    results = {"devices": len(jax.devices())}
    for data, model_parallel in MESHES:
        mesh = make_mesh(model_parallel, jax.devices()[:data * model_parallel])
        model = LlavaModel.from_pretrained(path, jnp.float32, mesh)
        annotator = LlavaAnnotator(LlavaScorer(model, processor, cfg, mesh), cfg, pairs_per_call(cfg, mesh))
        prob, label = annotator.annotate(pairs)
        tokens = greedy_generate(model, ids, mask, pixels, max_new_tokens=6, eos_id=2, mesh=mesh)
        sampled = sample_generate(model, ids, mask, pixels, keys=keys, temperature=1.0, top_p=0.9,
                                  max_new_tokens=6, eos_id=2, mesh=mesh)
        layer = model.language_model.layers[0]
        arrays = {"q_proj": layer.self_attn.q_proj.kernel, "o_proj": layer.self_attn.o_proj.kernel,
                  "down_proj": layer.mlp.down_proj.kernel, "embed_tokens": model.language_model.embed_tokens.embedding,
                  "lm_head": model.lm_head.kernel, "vision_fc1": model.vision_tower.layers[0].mlp.fc1.kernel,
                  "norm": model.language_model.norm.scale}
        results[f"{data}x{model_parallel}"] = {
            "prob": prob.tolist(), "label": label.tolist(), "tokens": tokens.tolist(), "sampled": sampled.tolist(),
            "specs": {name: [a for a in array[...].sharding.spec] for name, array in arrays.items()},
            "q_proj_shard_shape": list(arrays["q_proj"][...].addressable_shards[0].data.shape),
            "q_proj_shape": list(arrays["q_proj"][...].shape)}
    errors = []
    for bad in (3, 8):
        try:
            make_mesh(bad, jax.devices())
        except ValueError as error:
            errors.append(str(error))
    try:
        LlavaModel.from_pretrained(write_tiny_checkpoint(out / "kv2", [cfg.question]), jnp.float32,
                                   make_mesh(4, jax.devices()))
    except ValueError as error:
        errors.append(str(error))
    results["errors"] = errors
    (out / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("vlm_mesh")
    done = subprocess.run([sys.executable, __file__, str(out)], env=subprocess_env(4), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


def test_annotation_on_every_mesh_equals_one_device(results):
    assert results["devices"] == 4
    single = results["1x1"]
    assert len(set(single["label"])) > 1  # decided labels of both kinds: the comparison can tell meshes apart
    for data, model_parallel in MESHES[1:]:
        run = results[f"{data}x{model_parallel}"]
        np.testing.assert_allclose(run["prob"], single["prob"], atol=1e-5)
        assert run["label"] == single["label"]


@pytest.mark.parametrize("kind", ["tokens", "sampled"])
def test_sharded_generation_equals_one_device(results, kind):
    """Greedy and seeded sampled decoding (KV cache split by heads, rows by data) give one device's tokens."""
    single = results["1x1"][kind]
    assert len({tuple(row) for row in single}) > 1
    for data, model_parallel in MESHES[1:]:
        assert results[f"{data}x{model_parallel}"][kind] == single


def test_parameters_carry_the_megatron_shardings(results):
    expected = {"q_proj": [None, "model"], "o_proj": ["model", None], "down_proj": ["model", None],
                "embed_tokens": ["model", None], "lm_head": [None, "model"], "vision_fc1": [None, "model"],
                "norm": [None]}
    for data, model_parallel in MESHES:
        run = results[f"{data}x{model_parallel}"]
        assert run["specs"] == expected
        rows, columns = run["q_proj_shape"]
        assert run["q_proj_shard_shape"] == [rows, columns // model_parallel]  # each device holds 1/model of it


def test_bad_model_parallel_is_refused_by_name(results):
    three, eight, kv_heads = results["errors"]
    assert "annotate.model_parallel=3" in three and "device count 4" in three
    assert "annotate.model_parallel=8" in eight
    assert "annotate.model_parallel=4" in kv_heads and "num_key_value_heads 2" in kv_heads
    with pytest.raises(ValueError, match="annotate.model_parallel"):
        AnnotateConfig(model_parallel=0)


def test_13b_fits_16gb_devices_at_model_parallel_2():
    """The memory table of docs/vlm.md, from shapes only: all but the norms and small embeddings are split."""
    import jax.numpy as jnp

    from sensei_jax.vlm.llava_config import LlavaConfig
    from sensei_jax.vlm.model import abstract_model, parameter_bytes
    from sensei_jax.vlm.sharding import bytes_per_device

    model = abstract_model(LlavaConfig.llava_1_5_13b(), jnp.bfloat16)
    whole = parameter_bytes(model)
    assert bytes_per_device(model, 1) == whole and 26e9 < whole < 27e9
    for n in (2, 4):
        assert whole / n <= bytes_per_device(model, n) < whole / n * 1.001
    assert bytes_per_device(model, 2) < 16e9 - 2e9  # room for activations and the KV cache


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
