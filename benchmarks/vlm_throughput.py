"""LLaVA pair-scoring throughput: pairs/s with both orders, i.e. 2 prefills of 2 images each per pair.

    python benchmarks/vlm_throughput.py --model tiny           # times the tiny model (any machine)
    python benchmarks/vlm_throughput.py --model 7b             # 7B: shapes, weight memory, FLOPs per pair; timed
                                                               # only on an accelerator (or with --time-on-cpu)

Random weights of the true shapes (no checkpoint needed). Prints one JSON object with the hardware it ran on.
The 7B weight count, memory (whole and per device at model_parallel 1/2/4/8) and per-pair FLOPs come from
`jax.eval_shape` / the lowered program, without allocating the model.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.vlm.annotate import _score
from sensei_jax.vlm.llava_config import LlavaConfig
from sensei_jax.vlm.model import LlavaModel, abstract_model, parameter_bytes, parameter_count, random_model
from sensei_jax.vlm.sharding import bytes_per_device, check_model_parallel
from sensei_jax.hardware import describe as describe_hardware

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per device
TEXT_TOKENS = 110  # the default Robodesk question and chat template with 2 images, rounded up


def device_random_model(cfg: LlavaConfig, dtype, seed: int = 0) -> LlavaModel:
    """Random weights generated on the device, leaf by leaf (a 7B model never passes through host memory)."""
    graphdef, state = nnx.split(abstract_model(cfg, dtype))
    key = jax.random.key(seed)
    leaves = []
    for i, (path, leaf) in enumerate(nnx.to_flat_state(state)):
        fill = jax.jit(lambda k, shape=leaf.shape, dt=leaf.dtype: (0.02 * jax.random.normal(k, shape)).astype(dt))
        value = fill(jax.random.fold_in(key, i))
        if path[-1] == "scale":
            value = value + 1
        leaves.append((path, leaf.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _divides(cfg: LlavaConfig, model_parallel: int) -> bool:
    try:
        check_model_parallel(cfg, model_parallel)
    except ValueError:
        return False
    return True


def inputs(cfg: LlavaConfig, batch: int, bucket: int):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "7b", "13b"), default="tiny")
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    parser.add_argument("--batch", type=int, default=None, help="pairs per call (default: 8 tiny, 4 7b)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--bucket", type=int, default=64)
    parser.add_argument("--time-on-cpu", action="store_true", help="time the 7B/13B model even on a CPU")
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    cfg = {"tiny": LlavaConfig.tiny, "7b": LlavaConfig.llava_1_5_7b, "13b": LlavaConfig.llava_1_5_13b}[args.model]()
    batch = args.batch or (8 if args.model == "tiny" else 4)

    abstract = abstract_model(cfg, dtype)
    ids, length, pixels = inputs(cfg, batch, args.bucket)
    candidates = jnp.asarray([7, 8], jnp.int32)
    score = _score  # the annotator's own compiled scoring function
    lowered = score.lower(abstract, jax.ShapeDtypeStruct(pixels.shape, jnp.float32),
                          jax.ShapeDtypeStruct(ids.shape, jnp.int32), length - 1, candidates,
                          images_per_prompt=2, both_orders=True)
    cost = lowered.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_per_call = float(cost.get("flops", float("nan")))
    result = {
        "benchmark": "vlm_throughput", "model": args.model, "dtype": args.dtype, "hardware": describe_hardware(),
        "parameters": parameter_count(abstract), "weight_bytes": parameter_bytes(abstract),
        "weight_gib": parameter_bytes(abstract) / 2**30,
        # Tensor parallel (`annotate.model_parallel`): the weights one device holds, by model-axis size.
        "weight_gib_per_device": {str(n): bytes_per_device(abstract, n) / 2**30 for n in (1, 2, 4, 8)
                                  if _divides(cfg, n)},
        "image_tokens_per_image": cfg.image_seq_length,
        "prompt_tokens": length, "padded_tokens": int(len(ids)), "pairs_per_call": batch,
        "prefills_per_pair": 2, "flops_per_pair": flops_per_call / batch,
    }
    on_accelerator = jax.default_backend() != "cpu"
    if args.model == "tiny" or on_accelerator or args.time_on_cpu:
        model = random_model(cfg, dtype) if args.model == "tiny" else device_random_model(cfg, dtype)
        begin = time.perf_counter()
        out = score(model, pixels, ids, length - 1, candidates, images_per_prompt=2, both_orders=True)
        jax.block_until_ready(out)
        result["compile_and_first_call_s"] = time.perf_counter() - begin
        begin = time.perf_counter()
        for _ in range(args.iters):
            out = score(model, pixels, ids, length - 1, candidates, images_per_prompt=2, both_orders=True)
        jax.block_until_ready(out)
        seconds = (time.perf_counter() - begin) / args.iters
        result.update(seconds_per_call=seconds, pairs_per_second=batch / seconds,
                      achieved_tflops=flops_per_call / seconds / 1e12)
        kind = jax.devices()[0].device_kind
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)
        if peak and dtype == jnp.bfloat16:
            result["mfu_vs_bf16_peak"] = flops_per_call / seconds / peak
    else:
        result["timed"] = "no (7B/13B on a CPU; pass --time-on-cpu to force)"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
