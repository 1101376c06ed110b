"""LLaVA pair-scoring throughput: pairs/s with both orders, i.e. 2 prefills of 2 images each per pair.

    python benchmarks/vlm_throughput.py --model tiny           # times the tiny model (any machine)
    python benchmarks/vlm_throughput.py --model 7b --image-sizes 224 336
                                                               # 7B: shapes, weight memory, FLOPs per pair; timed
                                                               # only on an accelerator (or with --time-on-cpu)
    python benchmarks/vlm_throughput.py --vlm-path DIR         # a local llava-hf checkpoint's weights
    python benchmarks/vlm_throughput.py --smoke                # tiny model, one call: that it runs (CI)

Random weights of the true shapes (no checkpoint needed), initialised on the device by one jitted nnx init (a 7B
model never passes through host memory). LLaVA-1.5's vision tower is CLIP ViT-L/14-336 (24x24 patches, 576 image
tokens per image); `--image-sizes 224` builds the same model from its config with image_size 224 (16x16 patches,
256 tokens), i.e. CLIP ViT-L/14 at 224 px. The timed call is the annotator's own compiled scoring function
(`sensei_jax.vlm.annotate.score_prompts`). Prints one JSON object with the hardware it ran on. Weight count,
memory (whole and per device at model_parallel 1/2/4/8) and per-pair FLOPs come from `nnx.eval_shape` and the
lowered program, without allocating the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import common
from sensei_jax.vlm.annotate import score_prompts
from sensei_jax.vlm.llava_config import LlavaConfig
from sensei_jax.vlm.model import LlavaModel, abstract_model, parameter_bytes, parameter_count
from sensei_jax.vlm.sharding import bytes_per_device, check_model_parallel

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per device
TEXT_TOKENS = 110  # the default Robodesk question and chat template with 2 images, rounded up
PRESETS = {"tiny": LlavaConfig.tiny, "7b": LlavaConfig.llava_1_5_7b, "13b": LlavaConfig.llava_1_5_13b}
SMOKE = {"model": "tiny", "image_sizes": [32], "batch": 2, "iters": 1, "dtype": "float32"}


def with_image_size(cfg: LlavaConfig, image_size: int | None) -> LlavaConfig:
    """`cfg` with its vision tower at `image_size` px (same weights' shapes but the position table, whose length
    follows the patch grid); None keeps the config's own size."""
    if image_size is None or image_size == cfg.vision.image_size:
        return cfg
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_size=int(image_size)))


def device_random_model(cfg: LlavaConfig, dtype, seed: int = 0) -> LlavaModel:
    """A model with the nnx initializers' random weights, created by one jitted init: the arrays are born on the
    default device (nothing of model size on the host); the structure comes from `abstract_model`."""
    graphdef, _ = nnx.split(abstract_model(cfg, dtype))
    init = jax.jit(lambda key: nnx.state(LlavaModel(cfg, dtype, rngs=nnx.Rngs(key))))
    return nnx.merge(graphdef, init(jax.random.key(seed)))


def _divides(cfg: LlavaConfig, model_parallel: int) -> bool:
    try:
        check_model_parallel(cfg, model_parallel)
    except ValueError:
        return False
    return True


def inputs(cfg: LlavaConfig, batch: int, bucket: int):
    """A prompt with two image runs and TEXT_TOKENS of text, padded to a multiple of `bucket`, and random pixels
    of `batch` pairs: (ids [T], real length, pixels float32 [2 * batch, S, S, 3])."""
    image_len = cfg.image_seq_length
    length = 2 + 2 * image_len + TEXT_TOKENS
    padded = bucket * -(-length // bucket)
    ids = np.full(padded, 5, np.int32)
    ids[0] = 1
    ids[2:2 + image_len] = cfg.image_token_index
    ids[3 + image_len:3 + 2 * image_len] = cfg.image_token_index
    size = cfg.vision.image_size
    pixels = np.random.default_rng(0).normal(size=(2 * batch, size, size, 3)).astype(np.float32)
    return ids, length, pixels


def measure(cfg: LlavaConfig, dtype="bfloat16", batch: int = 4, iters: int = 5, bucket: int = 64,
            timed: bool = True, model: LlavaModel | None = None, name: str = "") -> dict:
    """Pair scoring with both orders for the model of `cfg` (random weights unless `model` is given): shapes,
    memory and FLOPs always; with `timed`, 'compile_s' (init excluded, first call) and 'pairs_per_s' over `iters`
    calls of `batch` pairs."""
    dtype = jnp.dtype(dtype)
    abstract = abstract_model(cfg, dtype)
    ids, length, pixels = inputs(cfg, batch, bucket)
    candidates = jnp.asarray([7, 8], jnp.int32)
    lowered = score_prompts.lower(abstract, jax.ShapeDtypeStruct(pixels.shape, jnp.float32),
                                  jax.ShapeDtypeStruct(ids.shape, jnp.int32), length - 1, candidates,
                                  images_per_prompt=2, both_orders=True)
    cost = lowered.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_per_call = float(cost.get("flops", float("nan")))
    result = {
        "model": name, "dtype": dtype.name, "image_size": cfg.vision.image_size,
        "parameters": parameter_count(abstract), "weight_bytes": parameter_bytes(abstract),
        "weight_gib": parameter_bytes(abstract) / 2**30,
        # Tensor parallel (`annotate.model_parallel`): the weights one device holds, by model-axis size.
        "weight_gib_per_device": {str(n): bytes_per_device(abstract, n) / 2**30 for n in (1, 2, 4, 8)
                                  if _divides(cfg, n)},
        "image_tokens_per_image": cfg.image_seq_length,
        "prompt_tokens": length, "padded_tokens": int(len(ids)), "pairs_per_call": batch,
        "prefills_per_pair": 2, "flops_per_pair": flops_per_call / batch,
        "weights": "random" if model is None else "checkpoint",
    }
    if not timed:
        result["timed"] = False
        return result
    begin = time.perf_counter()
    model = device_random_model(cfg, dtype) if model is None else model
    jax.block_until_ready(nnx.state(model))
    result["init_s"] = time.perf_counter() - begin

    def call():
        return score_prompts(model, pixels, ids, length - 1, candidates, images_per_prompt=2, both_orders=True)

    begin = time.perf_counter()
    jax.block_until_ready(call())
    result["compile_s"] = time.perf_counter() - begin
    begin = time.perf_counter()
    for _ in range(iters):
        out = call()
    jax.block_until_ready(out)
    seconds = (time.perf_counter() - begin) / iters
    result.update(timed=True, seconds_per_call=seconds, pairs_per_s=batch / seconds,
                  achieved_tflops=flops_per_call / seconds / 1e12)
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)
    if peak and dtype == jnp.bfloat16:
        result["mfu_vs_bf16_peak"] = flops_per_call / seconds / peak
    return result


def measure_sizes(model: str, image_sizes: list[int | None], dtype="bfloat16", batch: int = 4, iters: int = 5,
                  bucket: int = 64, timed: bool = True, vlm_path: str | None = None) -> list[dict]:
    """`measure` at each image size. With `vlm_path` (a local llava-hf checkpoint) the config is the checkpoint's,
    and at its own image size its weights are loaded and timed; other sizes use random weights of that config."""
    base = LlavaConfig.from_pretrained(vlm_path) if vlm_path else PRESETS[model]()
    name = str(vlm_path) if vlm_path else model
    results = []
    for size in image_sizes:
        cfg = with_image_size(base, size)
        loaded = None
        if vlm_path and timed and cfg.vision.image_size == base.vision.image_size:
            loaded = LlavaModel.from_pretrained(vlm_path, jnp.dtype(dtype))
        results.append(measure(cfg, dtype, batch, iters, bucket, timed, loaded, name))
        loaded = None  # free the weights before the next size
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=tuple(PRESETS), default="tiny")
    parser.add_argument("--vlm-path", help="a local llava-hf checkpoint directory (config.json + safetensors)")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=None,
                        help="vision tower input sizes in px (default: the config's own, 336 for 7B/13B)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    parser.add_argument("--batch", type=int, default=None, help="pairs per call (default: 8 tiny, 4 7b)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--bucket", type=int, default=64)
    parser.add_argument("--time-on-cpu", action="store_true", help="time the 7B/13B model even on a CPU")
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.image_sizes, args.batch = SMOKE["model"], SMOKE["image_sizes"], SMOKE["batch"]
        args.iters, args.dtype = SMOKE["iters"], SMOKE["dtype"]
    batch = args.batch or (8 if args.model == "tiny" else 4)
    big = args.model != "tiny" or args.vlm_path
    timed = not big or jax.default_backend() != "cpu" or args.time_on_cpu
    results = measure_sizes(args.model, args.image_sizes or [None], args.dtype, batch, args.iters, args.bucket,
                            timed, args.vlm_path)
    out = common.report("vlm_throughput", results, smoke=args.smoke)
    if not timed:
        out["timed"] = "no (7B/13B on a CPU; pass --time-on-cpu to force)"
    common.emit(out)


if __name__ == "__main__":
    main()
