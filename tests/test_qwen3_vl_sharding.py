"""Qwen3-VL over a (data, model) mesh of 4 virtual CPU devices (in a subprocess, so the device count is set before
jax starts): scores and greedy tokens equal one device's, and the parameters carry the Megatron layout
(`vlm/sharding.py`), the fused vision qkv replicated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax_env import subprocess_env

MESHES = ((1, 1), (4, 1), (2, 2))  # (data, model); the tiny model's 2 KV heads allow model parallel 2 at most


def _worker(out: Path) -> None:
    import jax
    import jax.numpy as jnp

    from sensei_jax.annotators.config import AnnotateConfig
    from sensei_jax.annotators.vlm import LlavaAnnotator, VlmScorer, pairs_per_call
    from sensei_jax.vlm.generate import greedy_generate
    from sensei_jax.vlm.qwen3_vl.model import Qwen3VLModel
    from sensei_jax.vlm.qwen3_vl.processor import Qwen3VLProcessor
    from sensei_jax.vlm.qwen3_vl.tiny import write_tiny_checkpoint
    from sensei_jax.vlm.sharding import make_mesh

    cfg = AnnotateConfig(annotator="llava", batch_size=4, tie_margin=0.01, min_answer_mass=0.0)
    path = write_tiny_checkpoint(out / "ckpt", [cfg.question], seed=5, std=0.15)
    processor = Qwen3VLProcessor.from_pretrained(path)
    pairs = np.random.default_rng(0).integers(0, 256, (6, 2, 32, 32, 3), dtype=np.uint8)
    prompts = [processor.chat_prompt([("<image>\nfirst or second?", None)]),
               processor.chat_prompt([("<image>\ntop", None)])] * 2
    ids, mask = processor.encode(prompts, length=40, padding_side="left", image_sizes=[(32, 32)] * 4)
    pixels = processor.preprocess_images(pairs[:4, 0])
    results = {"devices": len(jax.devices())}
    for data, model_parallel in MESHES:
        mesh = make_mesh(model_parallel, jax.devices()[:data * model_parallel])
        model = Qwen3VLModel.from_pretrained(path, jnp.float32, mesh)
        annotator = LlavaAnnotator(VlmScorer(model, processor, cfg, mesh), cfg, pairs_per_call(cfg, mesh))
        prob, label = annotator.annotate(pairs)
        tokens = greedy_generate(model, ids, mask, pixels, max_new_tokens=5, eos_id=-1, mesh=mesh)
        layer, block = model.language_model.layers[0], model.visual.blocks[0]
        arrays = {"q_proj": layer.self_attn.q_proj.kernel, "o_proj": layer.self_attn.o_proj.kernel,
                  "vision_fc1": block.mlp.linear_fc1.kernel, "vision_fc2": block.mlp.linear_fc2.kernel,
                  "vision_qkv": block.attn.qkv.kernel, "merger_fc1": model.visual.merger.linear_fc1.kernel}
        results[f"{data}x{model_parallel}"] = {
            "prob": prob.tolist(), "label": label.tolist(), "tokens": tokens.tolist(),
            "specs": {name: [a for a in array[...].sharding.spec] for name, array in arrays.items()}}
    (out / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen3_vl_mesh")
    done = subprocess.run([sys.executable, __file__, str(out)], env=subprocess_env(4), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


def test_annotation_and_generation_on_every_mesh_equal_one_device(results):
    assert results["devices"] == 4
    single = results["1x1"]
    assert len(set(single["label"])) > 1 and len({tuple(row) for row in single["tokens"]}) > 1
    for data, model_parallel in MESHES[1:]:
        run = results[f"{data}x{model_parallel}"]
        np.testing.assert_allclose(run["prob"], single["prob"], atol=1e-5)
        assert run["label"] == single["label"] and run["tokens"] == single["tokens"]


def test_parameters_carry_the_megatron_shardings(results):
    expected = {"q_proj": [None, "model"], "o_proj": ["model", None], "vision_fc1": [None, "model"],
                "vision_fc2": ["model", None], "vision_qkv": [None, None], "merger_fc1": [None, "model"]}
    for data, model_parallel in MESHES:
        assert results[f"{data}x{model_parallel}"]["specs"] == expected


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
