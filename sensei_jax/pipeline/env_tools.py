"""`env` tools: `env info` prints the Robodesk model summary; `env rollout` runs a policy and writes what it saw.

    python -m sensei_jax.run env info
    python -m sensei_jax.run env rollout --task open_drawer --steps 100 --out DIR [--num-envs 1] [--policy random]

`rollout` writes DIR/frames/step_0000.png, step_0001.png, ... (world 0, the env camera), DIR/rollout.gif, and DIR/rollout.json with
per-step rewards, dones, interaction flags and success flags of every world, plus timing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from sensei_jax import files, progress
from sensei_jax import domains


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tools = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)
    tools.add_parser("info", help="print the model summary (sizes, cameras, tasks, budgets)")
    rollout = tools.add_parser("rollout", help="run a policy, write frames (PNG/GIF) and a JSON of rewards/flags")
    rollout.add_argument("--task", help="task (default: config env.task)")
    rollout.add_argument("--steps", type=int, default=100, help="agent steps (default 100)")
    rollout.add_argument("--out", required=True, help="output directory")
    rollout.add_argument("--num-envs", type=int, default=1, help="worlds simulated together (default 1)")
    rollout.add_argument("--policy", choices=("random", "zero"), default="random",
                         help="uniform random actions in [-1, 1], or the zero action (hold still, gripper half open)")
    rollout.add_argument("--camera", help="camera (default: config env.camera)")
    rollout.add_argument("--size", type=int, help="image size (default: config env.image_size)")
    rollout.add_argument("--seed", type=int, help="PRNG seed (default: config run.seed)")


def _make_env(cfg, **overrides):
    from sensei_jax.envs.robodesk import Robodesk

    found = domains.of(cfg)
    if not found.env_tools:
        raise ValueError(f"`env info` and `env rollout` show the Robodesk env; run.domain is {found.name!r} "
                         "(other domains' frames are in the collect stage's chunks and the report's frames.png)")

    return Robodesk.from_config(cfg.env, **overrides)


def info(cfg) -> dict:
    from sensei_jax.envs.robodesk import CAMERAS, TASKS

    env = _make_env(cfg)
    m = env.mj_model
    summary = {
        "assets_dir": str(env.assets_dir),
        "sizes": {"nq": m.nq, "nv": m.nv, "nu": m.nu, "nbody": m.nbody, "njnt": m.njnt, "ngeom": m.ngeom,
                  "nmesh": m.nmesh, "neq": m.neq, "nsite": m.nsite, "ncam": m.ncam, "nlight": m.nlight},
        "timestep": float(m.opt.timestep), "substeps": 10, "control_dt": 10 * float(m.opt.timestep),
        "backend": "mjx impl=warp", "contacts_per_world": env.contacts_per_world,
        "constraints_per_world": env.constraints_per_world, "action_size": env.action_size,
        "action_repeat": env.action_repeat, "episode_length": env.episode_length,
        "physics_state_size": env.physics_state_size, "cameras": list(CAMERAS),
        "camera": env.camera, "image_size": env.image_size, "task": env.task, "reward": env.reward_mode,
        "tasks": list(TASKS),
        "observation_spec": {k: [list(shape), str(dtype)] for k, (shape, dtype) in env.observation_spec().items()},
    }
    return summary


def rollout(cfg, task: str | None, steps: int, out: Path, num_envs: int = 1, policy: str = "random",
            camera: str | None = None, size: int | None = None, seed: int | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    from PIL import Image

    if steps < 1 or num_envs < 1:
        raise ValueError(f"--steps and --num-envs must be >= 1, got {steps} and {num_envs}")
    overrides = {}
    if task is not None:
        overrides["task"] = task
    if camera is not None:
        overrides["camera"] = camera
    if size is not None:
        overrides["image_size"] = size
    env = _make_env(cfg, **overrides)
    key = jax.random.key(cfg.run.seed if seed is None else seed)
    key, reset_key = jax.random.split(key)

    reset = jax.jit(env.reset_batch, static_argnums=1)
    step = jax.jit(env.step)
    start = time.perf_counter()
    state = reset(reset_key, num_envs)
    jax.block_until_ready(state.obs["image"])
    compile_reset_s = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    (out / "frames").mkdir(exist_ok=True)
    frames = [np.asarray(state.obs["image"][0])]
    Image.fromarray(frames[0]).save(out / "frames" / "step_0000.png")
    records = []
    step_times = []
    pbar = progress.bar(steps, desc="env rollout", unit="step")
    for t in range(steps):
        key, action_key = jax.random.split(key)
        if policy == "random":
            action = jax.random.uniform(action_key, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
        else:
            action = jnp.zeros((num_envs, env.action_size))
        begin = time.perf_counter()
        state = step(state, action)
        image = np.asarray(state.obs["image"][0])
        step_times.append(time.perf_counter() - begin)
        env.check_budgets(state)
        frames.append(image)
        Image.fromarray(image).save(out / "frames" / f"step_{t + 1:04d}.png")
        records.append({
            "step": t + 1,
            "reward": np.asarray(state.reward).tolist(),
            "done": np.asarray(state.done).tolist(),
            "interaction_flags": {k: np.asarray(v).tolist() for k, v in state.info["interaction_flags"].items()},
            "success": {k: np.asarray(v).tolist() for k, v in state.info["success"].items()},
        })
        pbar.update(1)
    pbar.close()
    gif = [Image.fromarray(f).resize((max(128, f.shape[1]), max(128, f.shape[0])), Image.NEAREST) for f in frames]
    gif[0].save(out / "rollout.gif", save_all=True, append_images=gif[1:], duration=40, loop=0)
    steady = step_times[1:] if len(step_times) > 1 else step_times
    summary = {
        "task": env.task, "reward_mode": env.reward_mode, "camera": env.camera, "image_size": env.image_size,
        "num_envs": num_envs, "steps": steps, "policy": policy, "action_repeat": env.action_repeat,
        "return": np.sum([r["reward"] for r in records], axis=0).tolist(),
        "interaction_counts": {k: int(np.sum([r["interaction_flags"][k] for r in records]))
                               for k in records[0]["interaction_flags"]},
        "compile_reset_s": compile_reset_s, "first_step_s": step_times[0],
        "env_steps_per_s": num_envs / float(np.mean(steady)),
        "records": records,
    }
    files.write_json(out / "rollout.json", summary)
    return summary


def main(args: argparse.Namespace, cfg) -> int:
    if args.tool == "info":
        summary = info(cfg)
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
        return 0
    summary = rollout(cfg, args.task, args.steps, Path(args.out), args.num_envs, args.policy, args.camera,
                      args.size, args.seed)
    print(f"wrote {args.out}/rollout.json, rollout.gif and {summary['steps'] + 1} frames; return "
          f"{[round(r, 3) for r in summary['return']]}, interactions {summary['interaction_counts']}, "
          f"{summary['env_steps_per_s']:.1f} env steps/s")
    return 0
