"""MiniHack throughput: NetHack world-steps/s three ways, printed as JSON.

    python benchmarks/minihack_throughput.py [--task keyroom] [--num-envs 8] [--steps 2000] [--workers 0]
    python benchmarks/minihack_throughput.py --smoke   # 2 worlds, a few steps: that it runs (CI)

  plain_steps_per_s   the task's gymnasium env in this process, one world, uniform random actions: NetHack alone
  pool_steps_per_s    the `WorkerPool` stepping `--num-envs` worlds with numpy actions (the env's host side:
                      worker processes, shared memory, auto-reset, the crop's resize and the flags)
  env_steps_per_s     the `MiniHack` env inside one compiled `lax.scan` of `--chunk` steps (io_callback per step,
                      one-hot actions drawn in the program), as the collect stage and the Trainer call it;
                      `compile_s` apart
All rates count world-steps (worlds x steps).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import common
from sensei_jax.envs.minihack import MiniHack, tasks
from sensei_jax.envs.minihack.pool import WorkerPool

SMOKE = {"num_envs": 2, "steps": 16, "chunk": 8}


def plain_rate(task: str, steps: int) -> float:
    """World-steps/s of one gymnasium env in this process."""
    tasks.import_minihack()
    spec = tasks.TASKS[task]
    env = tasks.make_env(spec, crop=5)
    try:
        rng = np.random.default_rng(0)
        tasks.start_episode(env, spec, 1, 2)
        begin = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(len(spec.actions))))
            if terminated or truncated:
                tasks.start_episode(env, spec, 1, 2)
        return steps / (time.perf_counter() - begin)
    finally:
        env.close()


def pool_rate(task: str, num_envs: int, steps: int, workers: int) -> float:
    worlds = np.arange(num_envs)
    with WorkerPool(task, num_envs, workers=workers) as pool:
        pool.reset(worlds, worlds)
        rng = np.random.default_rng(0)
        actions = rng.integers(0, len(tasks.TASKS[task].actions), (steps, num_envs))
        pool.step(worlds, actions[0])  # warm-up
        begin = time.perf_counter()
        for t in range(steps):
            pool.step(worlds, actions[t])
        return num_envs * steps / (time.perf_counter() - begin)


def env_rate(task: str, num_envs: int, steps: int, chunk: int, workers: int) -> dict[str, float]:
    env = MiniHack(task=task, num_envs=num_envs, workers=workers)
    try:
        def run(state, key):
            def step(state, k):
                index = jax.random.randint(k, (num_envs,), 0, env.action_size)
                state = env.step(state, jax.nn.one_hot(index, env.action_size))
                return state, state.reward

            return jax.lax.scan(step, state, jax.random.split(key, chunk))

        compiled = jax.jit(run)
        state = env.reset_batch(jax.random.key(0), num_envs)
        begin = time.perf_counter()
        state, rewards = jax.block_until_ready(compiled(state, jax.random.key(1)))
        compile_s = time.perf_counter() - begin
        calls = max(1, steps // chunk)
        begin = time.perf_counter()
        for i in range(calls):
            state, rewards = compiled(state, jax.random.key(2 + i))
        jax.block_until_ready(rewards)
        return {"env_steps_per_s": num_envs * chunk * calls / (time.perf_counter() - begin),
                "compile_s": compile_s}
    finally:
        env.close()


def measure(task: str, num_envs: int, steps: int, chunk: int, workers: int) -> dict:
    return {"task": task, "num_envs": num_envs, "steps": steps, "chunk": chunk, "workers": workers or "one per core",
            "plain_steps_per_s": plain_rate(task, steps), "pool_steps_per_s": pool_rate(task, num_envs, steps, workers),
            **env_rate(task, num_envs, steps, chunk, workers)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="keyroom", choices=tasks.TASKS)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000, help="steps per world")
    parser.add_argument("--chunk", type=int, default=64, help="steps per compiled call (env_steps_per_s)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core)")
    common.add_smoke(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_envs, args.steps, args.chunk = SMOKE["num_envs"], SMOKE["steps"], SMOKE["chunk"]
    results = measure(args.task, args.num_envs, args.steps, args.chunk, args.workers)
    common.emit(common.report("minihack_throughput", results, smoke=args.smoke))


if __name__ == "__main__":
    main()
