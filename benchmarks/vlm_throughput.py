"""VLM pair-scoring throughput, any model family: pairs/s with both orders, i.e. 2 prefills of 2 images each per pair.

    python benchmarks/vlm_throughput.py --model tiny           # times the tiny LLaVA (any machine)
    python benchmarks/vlm_throughput.py --model 7b --image-sizes 224 336
                                                               # 7B: shapes, weight memory, FLOPs per pair; timed
                                                               # only on an accelerator (or with --time-on-cpu)
    python benchmarks/vlm_throughput.py --family qwen3_vl --model 4b 8b --image-sizes 256 448
                                                               # Qwen3-VL at its released shapes
    python benchmarks/vlm_throughput.py --vlm-path DIR         # a local checkpoint's weights (family from its config)
    python benchmarks/vlm_throughput.py --smoke                # tiny LLaVA, one call: that it runs (CI)

Random weights of the true shapes (no checkpoint needed), initialised on the device by one jitted nnx init (a 7B
model never passes through host memory). LLaVA-1.5's vision tower is CLIP ViT-L/14-336 (24x24 patches, 576 image
tokens per image); `--image-sizes 224` builds the same model from its config with image_size 224 (16x16 patches,
256 tokens), i.e. CLIP ViT-L/14 at 224 px. Qwen3-VL reads any size: an image of S x S px (S a multiple of 32,
what its processor resizes to) takes (S / 32)^2 tokens; the default 256 is what SENSEI's 224 px pairs become
under the released min_pixels of 256 x 256. The timed call is the annotator's own compiled scoring function
(`sensei_jax.annotators.vlm.score_prompts`) with the family's position ids. Prints one JSON object with the
hardware it ran on. Weight count, memory (whole and per device at model_parallel 1/2/4/8) and per-pair FLOPs
come from `nnx.eval_shape` and the lowered program, without allocating the model.
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
from sensei_jax.vlm import family as family_lib
from sensei_jax.annotators.vlm import score_prompts
from sensei_jax.vlm.llava_config import LlavaConfig
from sensei_jax.vlm.model import parameter_bytes, parameter_count
from sensei_jax.vlm.qwen3_vl.config import Qwen3VLConfig
from sensei_jax.vlm.qwen3_vl.positions import prompt_positions
from sensei_jax.vlm.sharding import bytes_per_device, check_model_parallel

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per device
TEXT_TOKENS = 110  # the default Robodesk question and chat template with 2 images, rounded up
PRESETS = {"tiny": LlavaConfig.tiny, "7b": LlavaConfig.llava_1_5_7b, "13b": LlavaConfig.llava_1_5_13b}
QWEN3_VL_PRESETS = {"tiny": Qwen3VLConfig.tiny, "2b": Qwen3VLConfig.qwen3_vl_2b, "4b": Qwen3VLConfig.qwen3_vl_4b,
                    "8b": Qwen3VLConfig.qwen3_vl_8b}
FAMILY_PRESETS = {"llava": PRESETS, "qwen3_vl": QWEN3_VL_PRESETS}
QWEN3_VL_IMAGE_SIZE = 256  # 224 px pairs resized to the released min_pixels (256 x 256): 8 x 8 = 64 tokens
SMOKE = {"model": "tiny", "image_sizes": [32], "batch": 2, "iters": 1, "dtype": "float32"}


def family_of(cfg) -> str:
    """The model family of a config object (`vlm/family.py`)."""
    return next(name for name, f in family_lib.FAMILIES.items() if isinstance(cfg, f.config_class()))


def with_image_size(cfg, image_size: int | None):
    """`cfg` with LLaVA's vision tower at `image_size` px (same weights' shapes but the position table, whose
    length follows the patch grid); None keeps the config's own size. Qwen3-VL configs do not change: that
    family reads any image size."""
    if image_size is None or family_of(cfg) != "llava" or image_size == cfg.vision.image_size:
        return cfg
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_size=int(image_size)))


def image_size_of(cfg, image_size: int | None) -> int:
    """The square pixel size the benchmark feeds: LLaVA's tower size; for Qwen3-VL `image_size` (default 256)
    rounded to a multiple of patch * merge, as its processor would resize it."""
    if family_of(cfg) == "llava":
        return cfg.vision.image_size
    factor = cfg.vision.patch_size * cfg.vision.spatial_merge_size
    return max(factor, factor * round((image_size or QWEN3_VL_IMAGE_SIZE) / factor))


def abstract_model(cfg, dtype):
    """The family's model of `cfg`, shapes only (`nnx.eval_shape`)."""
    model_class = family_lib.get(family_of(cfg)).model_class()
    return nnx.eval_shape(lambda: model_class(cfg, dtype, rngs=nnx.Rngs(0)))


def device_random_model(cfg, dtype, seed: int = 0):
    """A model with the nnx initializers' random weights, created by one jitted init: the arrays are born on the
    default device (nothing of model size on the host); the structure comes from `abstract_model`."""
    model_class = family_lib.get(family_of(cfg)).model_class()
    graphdef, _ = nnx.split(abstract_model(cfg, dtype))
    init = jax.jit(lambda key: nnx.state(model_class(cfg, dtype, rngs=nnx.Rngs(key))))
    return nnx.merge(graphdef, init(jax.random.key(seed)))


def _divides(cfg, model_parallel: int) -> bool:
    try:
        check_model_parallel(cfg, model_parallel)
    except ValueError:
        return False
    return True


def inputs(cfg, batch: int, bucket: int, image_size: int | None = None):
    """A prompt with two image runs and TEXT_TOKENS of text, padded to a multiple of `bucket`, its position ids and
    random pixels of `batch` pairs: (ids [T], real length, positions [..., T], pixels float32 [2 * batch, S, S,
    3]). Qwen3-VL's image runs sit between its vision start and end tokens."""
    size = image_size_of(cfg, image_size)
    if family_of(cfg) == "llava":
        image_len, image_id, grid = cfg.image_seq_length, cfg.image_token_index, None
    else:
        side = size // (cfg.vision.patch_size * cfg.vision.spatial_merge_size)
        image_len, image_id, grid = side * side, cfg.image_token_id, (side, side)
    length = 2 + 2 * image_len + TEXT_TOKENS
    padded = bucket * -(-length // bucket)
    ids = np.full(padded, 5 if image_id != 5 else 7, np.int32)
    ids[0] = 1
    ids[2:2 + image_len] = image_id
    ids[3 + image_len:3 + 2 * image_len] = image_id
    if grid is None:
        positions = np.arange(padded, dtype=np.int32)
    else:
        positions = np.zeros((3, padded), np.int32)
        positions[:, :length] = prompt_positions(ids[:length], [grid, grid], image_id)
    pixels = np.random.default_rng(0).normal(size=(2 * batch, size, size, 3)).astype(np.float32)
    return ids, length, positions, pixels


def lower_scoring(abstract, ids: np.ndarray, length: int, positions: np.ndarray, pixels_shape: tuple[int, ...]):
    """The annotator's compiled scoring function (`score_prompts`, both orders, 2 images per prompt) lowered for
    the model `abstract` (shapes only is enough) and the prompt of `inputs`, without running it."""
    return score_prompts.lower(abstract, jax.ShapeDtypeStruct(pixels_shape, jnp.float32),
                               jax.ShapeDtypeStruct(ids.shape, jnp.int32), length - 1, jnp.asarray([7, 8], jnp.int32),
                               images_per_prompt=2, both_orders=True,
                               positions=jax.ShapeDtypeStruct(positions.shape, jnp.int32))


def measure(cfg, dtype="bfloat16", batch: int = 4, iters: int = 5, bucket: int = 64,
            timed: bool = True, model=None, name: str = "", image_size: int | None = None) -> dict:
    """Pair scoring with both orders for the model of `cfg`, any family (random weights unless `model` is given):
    shapes, memory and FLOPs always; with `timed`, 'compile_s' (init excluded, first call) and 'pairs_per_s' over
    `iters` calls of `batch` pairs. `image_size`: Qwen3-VL's pixel size (LLaVA's comes from `cfg`)."""
    dtype = jnp.dtype(dtype)
    abstract = abstract_model(cfg, dtype)
    ids, length, positions, pixels = inputs(cfg, batch, bucket, image_size)
    candidates = jnp.asarray([7, 8], jnp.int32)
    lowered = lower_scoring(abstract, ids, length, positions, pixels.shape)
    cost = lowered.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_per_call = float(cost.get("flops", float("nan")))
    result = {
        "model": name, "family": family_of(cfg), "dtype": dtype.name, "image_size": image_size_of(cfg, image_size),
        "parameters": parameter_count(abstract), "weight_bytes": parameter_bytes(abstract),
        "weight_gib": parameter_bytes(abstract) / 2**30,
        # Tensor parallel (`annotate.model_parallel`): the weights one device holds, by model-axis size.
        "weight_gib_per_device": {str(n): bytes_per_device(abstract, n) / 2**30 for n in (1, 2, 4, 8)
                                  if _divides(cfg, n)},
        "image_tokens_per_image": (length - 2 - TEXT_TOKENS) // 2,
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
        return score_prompts(model, pixels, ids, length - 1, candidates, images_per_prompt=2, both_orders=True,
                             positions=positions)

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
                  bucket: int = 64, timed: bool = True, vlm_path: str | None = None,
                  family: str = "llava") -> list[dict]:
    """`measure` at each image size for preset `model` of `family`. With `vlm_path` (a local checkpoint of any
    family) the config is the checkpoint's, and at its own image size its weights are loaded and timed; other
    sizes use random weights of that config."""
    if vlm_path:
        kind = family_lib.resolve(vlm_path)
        base, name = kind.config_class().from_pretrained(vlm_path), str(vlm_path)
    else:
        if model not in FAMILY_PRESETS[family]:
            raise ValueError(f"--model {model!r} is not a {family} preset; presets: "
                             f"{', '.join(FAMILY_PRESETS[family])}")
        kind, base, name = family_lib.get(family), FAMILY_PRESETS[family][model](), model
    results = []
    for size in image_sizes:
        cfg = with_image_size(base, size)
        own_size = family_of(cfg) != "llava" or cfg.vision.image_size == base.vision.image_size
        loaded = None
        if vlm_path and timed and own_size:
            loaded = kind.model_class().from_pretrained(vlm_path, jnp.dtype(dtype))
        results.append(measure(cfg, dtype, batch, iters, bucket, timed, loaded, name, image_size=size))
        loaded = None  # free the weights before the next size
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=tuple(FAMILY_PRESETS), default="llava")
    parser.add_argument("--model", nargs="+", default=["tiny"],
                        help="presets of the family: llava tiny, 7b, 13b; qwen3_vl tiny, 2b, 4b, 8b")
    parser.add_argument("--vlm-path", help="a local checkpoint directory (config.json + safetensors), any family")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=None,
                        help="input sizes in px (default: LLaVA's tower size, 336 for 7B/13B; Qwen3-VL 256)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    parser.add_argument("--batch", type=int, default=None, help="pairs per call (default: 8 tiny, 4 7b)")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--bucket", type=int, default=64)
    parser.add_argument("--time-on-cpu", action="store_true", help="time the 7B/13B model even on a CPU")
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.family, args.model, args.image_sizes = "llava", [SMOKE["model"]], SMOKE["image_sizes"]
        args.batch, args.iters, args.dtype = SMOKE["batch"], SMOKE["iters"], SMOKE["dtype"]
    unknown = [m for m in args.model if m not in FAMILY_PRESETS[args.family]]
    if unknown and not args.vlm_path:
        parser.error(f"--model {' '.join(unknown)}: not a {args.family} preset; presets: "
                     f"{', '.join(FAMILY_PRESETS[args.family])}")
    models = args.model[:1] if args.vlm_path else args.model
    results = []
    timed_all = True
    for model in models:
        batch = args.batch or (8 if model == "tiny" else 4)
        big = model != "tiny" or args.vlm_path
        timed = not big or jax.default_backend() != "cpu" or args.time_on_cpu
        timed_all &= timed
        results += measure_sizes(model, args.image_sizes or [None], args.dtype, batch, args.iters, args.bucket,
                                 timed, args.vlm_path, args.family)
    out = common.report("vlm_throughput", results, smoke=args.smoke)
    if not timed_all:
        out["timed"] = "no (full-size models on a CPU; pass --time-on-cpu to force)"
    common.emit(out)


if __name__ == "__main__":
    main()
