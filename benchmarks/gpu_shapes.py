"""Compile-only check of the gpu profile's programs at their real shapes, on any machine (a CPU is enough).

    python benchmarks/gpu_shapes.py                         # every gpu-profile program below (2-3 min on 2 cores)
    python benchmarks/gpu_shapes.py --only llava_7b_336,env_4096_images [--limit-gib 80] [--headroom 0.1]
    python benchmarks/gpu_shapes.py --smoke                 # the same code paths at tiny shapes (seconds, CI)
    python benchmarks/suite.py --profile gpu --compile-only # the same from the suite (`--only` picks its groups)

Each program is built from abstract shapes only (`jax.eval_shape`, `nnx.eval_shape`, `jax.ShapeDtypeStruct`: no 7B
weights, no 12 GB replay is allocated), lowered and compiled with `jax.jit(...).lower(...).compile()` on the default
backend, and XLA's memory analysis of the compiled program is read: argument, output, alias (outputs that reuse
donated arguments), temp and generated-code bytes. Their total, argument + output - alias + temp + code, is what
the program needs on one device at once; it `fits` when total x (1 + headroom) <= the limit (default 80 GiB, an
80 GB card, with 10% headroom for the CUDA context, cuBLAS/cuDNN workspaces and fragmentation). Beside it, exact
figures from the abstract shapes (weights; the agent's parameters and optimizer state; the replay; the env state).

Programs (the default set; `--only` takes names or groups, comma-separated; the groups are the suite's benchmarks):
  explore  sensei_train       the SENSEI agent's train step as the explore stage compiles it
                              (configs/robodesk_sensei.yaml: DreamerV3 medium, batch 16 x 64, semantic head, 12 task
                              heads, Plan2Explore ensemble 8 x 3 x 640, replay of 1M steps on the device)
           sensei_train_bf16  the same with dreamer.compute_dtype bfloat16
  train    dreamer_train      plain DreamerV3 medium on PointReach's 64x64 images, batch 16 x 64 (the suite's
                              `train` benchmark)
  vlm      llava_7b_224, llava_7b_336   LLaVA-1.5-7B-shaped pair scoring, both orders, bf16, 8 pairs per call
           qwen3_vl_8b_256    Qwen3-VL-8B-shaped pair scoring at 256 px, bf16, 8 pairs per call
  reward   reward_train_224   the Motif reward model's train step, 32 pairs of 224 px (the distill stage's)
  env      env_4096_images, env_4096    one Robodesk step of 4,096 worlds, 64x64 images on and off
Smoke (`--smoke`): sensei_train_smoke (toy env, tiny agent), dreamer_train_smoke (tiny preset, 16 px, batch 2 x 8),
llava_tiny (32 px), reward_train_smoke (4 pairs of 64 px), env_2_images (2 worlds, 16 px).

A program that fails to lower or compile is recorded with its error; the exit status is 1 when any program failed
or does not fit. Prints one JSON object with the hardware (benchmarks/common.py).

What the CPU figures are not (docs/performance.md, "Compile-only check of the gpu shapes"): XLA's CPU backend
fuses and schedules differently from its GPU backend, computes bf16 matmuls in float32 (it keeps float32 copies of
bf16 weights in temp: up to twice the weight bytes) and has no cuDNN: on a GPU the VLM's attention is cuDNN's
fused kernel, which never holds the [rows, heads, T, T] scores the CPU's program does. So the VLM's CPU temp is an
over-estimate and the verdict conservative there. MJX-Warp's kernels are FFI custom calls: XLA counts the buffers
they read and write, not Warp's own allocations (the render context, counted apart from its Warp arrays, and
kernel scratch), and compiling does not build Warp's kernels (they build at first launch).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import common
import suite

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GIB = 2**30
DEFAULT_LIMIT_GIB = 80.0
DEFAULT_HEADROOM = 0.10
SENSEI_CONFIG = "configs/robodesk_sensei.yaml"  # the gpu profile's explore config (suite.PROFILES)
VLM = {"batch": 8, "dtype": "bfloat16", "bucket": 64}  # the gpu profile's vlm sizes (suite.PROFILES)
ENV_IMAGE_SIZE = 64
MEMORY_FIELDS = ("argument", "output", "alias", "temp", "generated_code")


@dataclasses.dataclass
class Built:
    """A program lowered from abstract shapes: what it is, its shapes, and figures exact from those shapes."""

    lowered: Any  # jax.stages.Lowered
    shapes: dict[str, Any]
    dtype: str
    exact_gib: dict[str, float]
    notes: list[str] = dataclasses.field(default_factory=list)


def tree_bytes(tree: Any) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of `tree`."""
    import jax
    import numpy as np

    return int(sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
                   if hasattr(x, "shape") and hasattr(x, "dtype") and not jax.dtypes.issubdtype(x.dtype,
                                                                                           jax.dtypes.prng_key)))


# -- the programs: each builds its inputs abstractly and returns the lowered program -------------------------------

def build_sensei_train(config: str | None = SENSEI_CONFIG, compute_dtype: str | None = None,
                       smoke: bool = False) -> Built:
    """The SENSEI agent's train step (`Update.train_step` of the explore stage's Trainer) for a run config's
    explore, dreamer and train sections, with the config's replay capacity on the device; `smoke`: the toy
    setup of explore_throughput.py."""
    import explore_throughput
    from sensei_jax.explore.explorer import Explorer

    if smoke:
        setup = explore_throughput.toy_setup(smoke=True)
        num_envs = 2
    else:
        from sensei_jax import config as config_lib

        setup = explore_throughput.robodesk_setup(str(REPO / config))
        num_envs = config_lib.load(str(REPO / config)).env.num_envs
    env, explore, train, dreamer, reward_model, image_key = setup
    if compute_dtype:
        dreamer = dataclasses.replace(dreamer, compute_dtype=compute_dtype)
    explorer = Explorer(explore, dreamer, env, num_envs, reward_model=reward_model, image_key=image_key, train=train)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = explorer.make_trainer(Path(logdir))
        state = trainer.abstract_state()  # shapes and shardings only: the 1M-step replay is not allocated
        lowered = trainer.update.lower_train_step(state["agent"], state["replay"])
    cfg = trainer.cfg
    agent_gib = tree_bytes(state["agent"]) / GIB
    replay_gib = tree_bytes(state["replay"]) / GIB
    shapes = {"preset": dreamer.preset, "batch": [cfg.batch_size, cfg.batch_length], "num_envs": num_envs,
              "replay_capacity": cfg.replay_capacity, "obs": {k: list(v[0]) for k, v in explorer.obs_space.items()},
              "task_heads": len(explorer.tasks), "ensemble": [explore.ensemble_size, explore.ensemble_layers,
                                                               explore.ensemble_units],
              "config": None if smoke else config}
    return Built(lowered, shapes, dreamer.compute_dtype,
                 {"agent_state": agent_gib, "replay": replay_gib, "state_total": agent_gib + replay_gib},
                 ["agent_state: parameters and optimizer state of every module (float32); both it and the replay "
                  "are donated, so the outputs reuse them (alias)"])


def build_dreamer_train(preset: str = "medium", compute_dtype: str = "float32", batch_size: int = 16,
                        batch_length: int = 64, num_envs: int = 16, image_size: int = 64) -> Built:
    """The plain DreamerV3 train step of the gpu profile's `train` benchmark (train_throughput.py: PointReach,
    {image_size}^2 images, a replay of 4 windows per world), inputs abstract."""
    from sensei_jax.dreamer.agent import Agent
    from sensei_jax.dreamer.config import DreamerConfig
    from sensei_jax.dreamer.loop import Trainer, obs_space
    from sensei_jax.dreamer.train_config import TrainConfig

    import train_throughput

    env = train_throughput.make_env("point_reach", image_size)
    dreamer = DreamerConfig(preset=preset, compute_dtype=compute_dtype)
    agent = Agent(dreamer, obs_space(env, ("image",)), env.action_size)
    cfg = TrainConfig(env="point_reach", num_envs=num_envs, batch_size=batch_size, batch_length=batch_length,
                      replay_capacity=num_envs * (batch_length + 1) * 4, train_start=0, obs_keys=("image",),
                      progress=False)
    with tempfile.TemporaryDirectory() as logdir:
        trainer = Trainer(cfg, agent, env, logdir)
        state = trainer.abstract_state()
        lowered = trainer.update.lower_train_step(state["agent"], state["replay"])
    agent_gib, replay_gib = tree_bytes(state["agent"]) / GIB, tree_bytes(state["replay"]) / GIB
    shapes = {"preset": preset, "batch": [batch_size, batch_length], "num_envs": num_envs,
              "replay_capacity": cfg.replay_capacity, "image_size": image_size, "env": "point_reach"}
    return Built(lowered, shapes, compute_dtype,
                 {"agent_state": agent_gib, "replay": replay_gib, "state_total": agent_gib + replay_gib})


def build_vlm_scoring(family: str, model: str, image_size: int | None, batch: int = VLM["batch"],
                      dtype: str = VLM["dtype"]) -> Built:
    """Pair scoring with both orders (`score_prompts`) of a `family` preset at `image_size` px, weights abstract."""
    import jax.numpy as jnp

    import vlm_throughput as vt

    cfg = vt.with_image_size(vt.FAMILY_PRESETS[family][model](), image_size)
    abstract = vt.abstract_model(cfg, jnp.dtype(dtype))
    ids, length, positions, pixels = vt.inputs(cfg, batch, VLM["bucket"], image_size)
    lowered = vt.lower_scoring(abstract, ids, length, positions, pixels.shape)
    weights = vt.parameter_bytes(abstract) / GIB
    shapes = {"family": family, "model": model, "image_size": vt.image_size_of(cfg, image_size),
              "pairs_per_call": batch, "prompts_per_call": 2 * batch, "pixels": list(pixels.shape),
              "padded_tokens": int(len(ids)), "parameters": vt.parameter_count(abstract)}
    notes = []
    if jnp.dtype(dtype) != jnp.float32:
        notes.append(f"the CPU computes {dtype} matmuls in float32 and keeps float32 copies of the weights in temp "
                     f"(up to {2 * weights:.1f} GiB), which a GPU does not; on a GPU the attention is cuDNN's fused "
                     "kernel, without the [rows, heads, T, T] scores the CPU program holds")
    return Built(lowered, shapes, jnp.dtype(dtype).name, {"weights": weights}, notes)


def build_reward_train(image_size: int = 224, batch: int = 32) -> Built:
    """The Motif reward model's train step (`reward.train.make_steps`, what the distill stage compiles) on
    `batch` pairs of `image_size` px, parameters, optimizer state and batch abstract."""
    import jax
    import jax.numpy as jnp

    from sensei_jax.reward.config import RewardConfig
    from sensei_jax.reward.model import RewardModelConfig, init_params
    from sensei_jax.reward.train import make_steps

    cfg = RewardConfig(image_size=image_size, batch_size=batch)
    model_cfg = RewardModelConfig.from_config(cfg)
    optimizer, train_step, _ = make_steps(model_cfg, cfg.learning_rate, cfg.weight_decay)
    # The parameters' shapes (drawn with numpy on the host: a fraction of a second for this model).
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), init_params(model_cfg, 0))
    opt_state = jax.eval_shape(optimizer.init, params)
    images = jax.ShapeDtypeStruct((batch, 2, image_size, image_size, 3), jnp.uint8)
    lowered = train_step.lower(params, opt_state, images, jax.ShapeDtypeStruct((batch,), jnp.int8),
                               jax.ShapeDtypeStruct((batch,), jnp.bool_))
    state_gib = (tree_bytes(params) + tree_bytes(opt_state)) / GIB
    shapes = {"image_size": image_size, "batch_pairs": batch, "parameters": int(sum(x.size for x in
                                                                                      jax.tree.leaves(params)))}
    return Built(lowered, shapes, "float32", {"params_and_optimizer": state_gib})


def _warp_array_bytes(obj: Any, depth: int = 0, seen: set | None = None) -> int:
    """Bytes of the Warp arrays reachable from `obj`'s attributes (a Warp render context: allocated by Warp,
    outside XLA's buffers)."""
    import warp as wp

    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return 0
    seen.add(id(obj))
    if isinstance(obj, wp.array):
        return int(obj.size) * int(wp.types.type_size_in_bytes(obj.dtype))
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = list(vars(obj).values())
    else:
        return 0
    return sum(_warp_array_bytes(child, depth + 1, seen) for child in children)


def build_env_step(num_envs: int, images: bool, image_size: int = ENV_IMAGE_SIZE) -> Built:
    """One batched Robodesk step (env_throughput.py's jitted `env.step`) of `num_envs` worlds, state abstract."""
    import jax
    import jax.numpy as jnp

    import env_throughput

    env, _, step = env_throughput._env(bool(images), int(image_size))
    state = jax.eval_shape(lambda key: env.reset_batch(key, num_envs), jax.random.key(0))
    lowered = step.lower(state, jax.ShapeDtypeStruct((num_envs, env.action_size), jnp.float32))
    exact = {"env_state": tree_bytes(state) / GIB}
    notes = ["MJX-Warp's physics and renderer are FFI custom calls: XLA counts the buffers they read and write, "
             "not Warp's kernel scratch; compiling does not build Warp's kernels (they build at first launch)"]
    contexts = [ctx for key, ctx in env._render_contexts.items() if key[0] == num_envs]
    if images and contexts:
        exact["warp_render_context"] = sum(_warp_array_bytes(c) for c in contexts) / GIB
        notes.append("warp_render_context: the Warp arrays of the render context (BVH, meshes, rays), "
                     "allocated by Warp outside XLA's pool, not in XLA's total")
    shapes = {"num_envs": num_envs, "images": images, "image_size": image_size if images else 0,
              "action": [num_envs, int(env.action_size)], "contacts_per_world": env.contacts_per_world}
    return Built(lowered, shapes, "float32", exact, notes)


# name -> (group, what it is, builder)
PROGRAMS: dict[str, tuple[str, str, Callable[[], Built]]] = {
    "sensei_train": ("explore", "SENSEI agent train step, DreamerV3 medium, robodesk_sensei.yaml",
                     lambda: build_sensei_train()),
    "sensei_train_bf16": ("explore", "the same, dreamer.compute_dtype bfloat16",
                          lambda: build_sensei_train(compute_dtype="bfloat16")),
    "dreamer_train": ("train", "DreamerV3 medium train step, batch 16 x 64 (the suite's train benchmark)",
                      lambda: build_dreamer_train()),
    "llava_7b_224": ("vlm", "LLaVA-1.5-7B-shaped pair scoring at 224 px",
                     lambda: build_vlm_scoring("llava", "7b", 224)),
    "llava_7b_336": ("vlm", "LLaVA-1.5-7B-shaped pair scoring at 336 px",
                     lambda: build_vlm_scoring("llava", "7b", 336)),
    "qwen3_vl_8b_256": ("vlm", "Qwen3-VL-8B-shaped pair scoring at 256 px",
                        lambda: build_vlm_scoring("qwen3_vl", "8b", 256)),
    "reward_train_224": ("reward", "Motif reward model train step, 32 pairs of 224 px",
                         lambda: build_reward_train(224, 32)),
    "env_4096_images": ("env", "Robodesk step, 4,096 worlds, 64x64 images", lambda: build_env_step(4096, True)),
    "env_4096": ("env", "Robodesk step, 4,096 worlds, no images", lambda: build_env_step(4096, False)),
    # Smoke: the same builders at tiny shapes.
    "sensei_train_smoke": ("explore", "SENSEI agent train step, toy env, tiny agent (smoke)",
                           lambda: build_sensei_train(smoke=True)),
    "dreamer_train_smoke": ("train", "DreamerV3 tiny train step, 16x16 images, batch 2 x 8 (smoke)",
                            lambda: build_dreamer_train("tiny", batch_size=2, batch_length=8, num_envs=2,
                                                        image_size=16)),
    "llava_tiny": ("vlm", "tiny LLaVA pair scoring at 32 px (smoke)",
                   lambda: build_vlm_scoring("llava", "tiny", 32, batch=2, dtype="float32")),
    "reward_train_smoke": ("reward", "Motif reward model train step, 4 pairs of 64 px (smoke)",
                           lambda: build_reward_train(64, 4)),
    "env_2_images": ("env", "Robodesk step, 2 worlds, 16x16 images (smoke)", lambda: build_env_step(2, True, 16)),
}
GPU_PROGRAMS = ("sensei_train", "sensei_train_bf16", "dreamer_train", "llava_7b_224", "llava_7b_336",
                "qwen3_vl_8b_256", "reward_train_224", "env_4096_images", "env_4096")
SMOKE_PROGRAMS = ("sensei_train_smoke", "dreamer_train_smoke", "llava_tiny", "reward_train_smoke", "env_2_images")
GROUPS = ("explore", "train", "vlm", "reward", "env")  # the suite's benchmark names


def select(only: str | None, smoke: bool = False) -> list[str]:
    """Program names from `--only` (names or groups, comma-separated; groups pick from the default set)."""
    default = SMOKE_PROGRAMS if smoke else GPU_PROGRAMS
    if not only:
        return list(default)
    names: list[str] = []
    for item in (x.strip() for x in only.split(",") if x.strip()):
        if item in GROUPS:
            names += [n for n in default if PROGRAMS[n][0] == item]
        elif item in PROGRAMS:
            names.append(item)
        else:
            raise SystemExit(f"gpu_shapes.py: --only {item!r}: not a program or group; programs: "
                             f"{', '.join(PROGRAMS)}; groups: {', '.join(GROUPS)}")
    return list(dict.fromkeys(names))


# -- compiling and judging ------------------------------------------------------------------------------------------

def memory_gib(compiled: Any) -> dict[str, float]:
    """XLA's memory analysis of a compiled program in GiB, with total = argument + output - alias + temp + code."""
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError("the backend gives no memory analysis of the compiled program")
    out = {f: getattr(stats, f"{f}_size_in_bytes") / GIB for f in MEMORY_FIELDS}
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["generated_code"]
    host = {f: getattr(stats, f"host_{f}_size_in_bytes", 0) / GIB for f in MEMORY_FIELDS}
    if any(host.values()):
        out["host"] = host
    return out


def check_program(name: str, limit_gib: float, headroom: float) -> dict[str, Any]:
    """Builds, lowers and compiles program `name`; its shapes, times, memory figures and verdict (or its error)."""
    group, what, build = PROGRAMS[name]
    row: dict[str, Any] = {"program": name, "group": group, "what": what}
    begin = time.perf_counter()
    try:
        built = build()
        row.update(shapes=built.shapes, dtype=built.dtype)
        row["lower_s"] = time.perf_counter() - begin  # building the abstract inputs, tracing, lowering
        begin = time.perf_counter()
        compiled = built.lowered.compile()
        row["compile_s"] = time.perf_counter() - begin
        row["memory_gib"] = memory_gib(compiled)
        row["exact_gib"] = built.exact_gib
        row["notes"] = built.notes
        row["needed_gib"] = row["memory_gib"]["total"] * (1 + headroom)
        row["fits"] = row["needed_gib"] <= limit_gib
        # The suite's gpu profile gives XLA this share of the card (the rest for Warp): informational.
        row["fits_suite_xla_pool"] = row["needed_gib"] <= limit_gib * float(suite.GPU_MEM_FRACTION)
        del compiled, built
    except Exception as error:  # noqa: BLE001 - a program that does not lower or compile is the finding
        row["error"] = f"{type(error).__name__}: {error}"[:4000]
        row["fits"] = False
    gc.collect()
    return row


def check(names: list[str], limit_gib: float = DEFAULT_LIMIT_GIB, headroom: float = DEFAULT_HEADROOM,
          smoke: bool = False, log=None) -> dict[str, Any]:
    """The report (common.report) of compiling `names`: per program its row, and the overall verdict."""
    import jax

    previous = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # compile times and memory of a fresh compilation
    rows, start = [], time.perf_counter()
    try:
        for i, name in enumerate(names, 1):
            rows.append(check_program(name, limit_gib, headroom))
            if log is not None:
                r = rows[-1]
                status = (r["error"][:200] if "error" in r else
                          f"total {r['memory_gib']['total']:.3g} GiB, compile {r['compile_s']:.1f} s, "
                          f"{'fits' if r['fits'] else 'DOES NOT FIT'}")
                log(f"[gpu_shapes] {i}/{len(names)} {name}: {status}")
    finally:
        jax.config.update("jax_enable_compilation_cache", previous)
    failed = [r["program"] for r in rows if "error" in r]
    too_big = [r["program"] for r in rows if "error" not in r and not r["fits"]]
    verdict = {"ok": not failed and not too_big, "compiled": len(rows) - len(failed), "failed": failed,
               "too_big": too_big, "largest_gib": max((r["memory_gib"]["total"] for r in rows if "memory_gib" in r),
                                                       default=0.0)}
    return common.report("gpu_shapes", rows, smoke=smoke, backend=jax.default_backend(), limit_gib=limit_gib,
                         headroom=headroom, fits_rule="memory_gib.total x (1 + headroom) <= limit_gib",
                         suite_xla_pool_fraction=float(suite.GPU_MEM_FRACTION),
                         verdict=verdict, wall_s=time.perf_counter() - start)


def exit_code(report: dict[str, Any]) -> int:
    return 0 if report["verdict"]["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated programs or groups ({', '.join(GROUPS)})")
    parser.add_argument("--limit-gib", "--limit-gb", dest="limit_gib", type=float, default=DEFAULT_LIMIT_GIB,
                        help="device memory to fit in, GiB (default 80: an 80 GB card)")
    parser.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                        help="fraction added to each total before comparing (default 0.1)")
    parser.add_argument("--out", help="also write the JSON here")
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    if args.limit_gib <= 0 or args.headroom < 0:
        parser.error(f"--limit-gib must be > 0 and --headroom >= 0 (got {args.limit_gib}, {args.headroom})")
    names = select(args.only, args.smoke)
    report = check(names, args.limit_gib, args.headroom, smoke=args.smoke,
                   log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        import json

        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    common.emit(report)
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
