"""Robodesk-on-MJX throughput: env steps/s with and without images across num_envs, as JSON.

    python benchmarks/env_throughput.py [--num-envs 1 4 16] [--steps 10] [--image-size 64]
        [--reference-python PATH]   # a python with robodesk==1.0.0, dm_control, gym, Pillow<10 installed
    python benchmarks/env_throughput.py --smoke   # 2 worlds, 2 steps, 16x16 images: that it runs (CI)

An env step is one agent step with Robodesk's action_repeat 1 (IK + 10 substeps of 2 ms), images from the `right`
camera when enabled. Compilation is timed separately. With --reference-python, the reference `robodesk` package
is timed on the same machine (single process; 64x64 images on and off) and the ratio is printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

import common

SMOKE = {"num_envs": [2], "steps": 2, "image_size": 16}


@functools.lru_cache(maxsize=None)
def _env(images: bool, image_size: int):
    """(env, jitted reset_batch, jitted step), built once per process and setting: world counts share them (each
    count still compiles its own program), and a second measurement of a setting reuses its compiled programs."""
    import jax

    from sensei_jax.envs.robodesk import Robodesk

    env = Robodesk(task="open_drawer", camera="right", image_size=image_size, action_repeat=1,
                   episode_length=10**6, render_images=images)
    return env, jax.jit(env.reset_batch, static_argnums=1), jax.jit(env.step)


def measure(num_envs: int, images: bool, steps: int, image_size: int = 64) -> dict:
    """Robodesk on MJX-Warp: `steps` jitted batched steps of `num_envs` worlds after one compiled first step.
    'compile_s' is the reset plus the first step (compilation, Warp kernels included; near 0 when this process
    has compiled the same setting before), 'env_steps_per_s' the rate after it (num_envs world steps per step)."""
    import jax

    env, reset, step = _env(bool(images), int(image_size))
    key = jax.random.key(0)
    begin = time.perf_counter()
    state = reset(key, num_envs)
    actions = jax.random.uniform(key, (steps + 1, num_envs, env.action_size), minval=-1.0, maxval=1.0)
    state = step(state, actions[0])
    jax.block_until_ready(state.reward)
    compile_s = time.perf_counter() - begin
    begin = time.perf_counter()
    for t in range(steps):
        state = step(state, actions[t + 1])
    jax.block_until_ready(state.obs)
    elapsed = time.perf_counter() - begin
    return {"backend": "mjx-warp", "num_envs": num_envs, "images": images, "image_size": image_size if images else 0,
            "steps": steps, "compile_s": round(compile_s, 2),
            "env_steps_per_s": round(num_envs * steps / elapsed, 2),
            "contact_overflow": bool(jax.numpy.any(state.info["contact_overflow"]))}


_REFERENCE_SCRIPT = r"""
import json, sys, time, numpy as np, robodesk
steps = int(sys.argv[1]); out = {}
for images in (False, True):
    env = robodesk.RoboDesk(task="open_drawer", reward="dense", action_repeat=1, episode_length=10**6)
    if not images:
        env.render = lambda *a, **k: np.zeros((64, 64, 3), np.uint8)
    env.reset(); rng = np.random.default_rng(0)
    env.step(rng.uniform(-1, 1, 5))
    begin = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, 5))
    out["images" if images else "no_images"] = steps / (time.perf_counter() - begin)
print(json.dumps(out))
"""


def measure_reference(python: str, steps: int) -> dict:
    result = subprocess.run([python, "-c", _REFERENCE_SCRIPT, str(steps)], capture_output=True, text=True,
                            env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-600:]}
    return {k: round(v, 2) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--reference-python", help="python of a venv with robodesk==1.0.0 (optional)")
    parser.add_argument("--reference-steps", type=int, default=200)
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_envs, args.steps, args.image_size = SMOKE["num_envs"], SMOKE["steps"], SMOKE["image_size"]

    results = []
    for num_envs in args.num_envs:
        for images in (False, True):
            results.append(measure(num_envs, images, args.steps, args.image_size))
            print(json.dumps(results[-1]), file=sys.stderr)
    out = common.report("robodesk_env_throughput", results, smoke=args.smoke)
    if args.reference_python:
        reference = measure_reference(args.reference_python, args.reference_steps)
        out["reference_robodesk_single_process"] = reference
        if "error" not in reference:
            best = {flag: max(r["env_steps_per_s"] for r in results if r["images"] == flag) for flag in (False, True)}
            out["ratio_best_mjx_over_reference"] = {
                "no_images": round(best[False] / reference["no_images"], 3),
                "images": round(best[True] / reference["images"], 3)}
    else:
        out["reference_robodesk_single_process"] = "not measured (pass --reference-python)"
    common.emit(out)


if __name__ == "__main__":
    main()
