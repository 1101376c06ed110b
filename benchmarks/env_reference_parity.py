"""Trajectory parity of our Robodesk against the reference `robodesk==1.0.0` package, as JSON.

    python benchmarks/env_reference_parity.py --reference-python PATH [--steps 25] [--task open_drawer]
    python benchmarks/env_reference_parity.py --smoke   # our side only, 2 steps (CI)

PATH is a python with robodesk==1.0.0, dm_control, gym and Pillow<10 (e.g. a throwaway venv; never the project's).
Both simulators start from the same state (our reset for key 0), take the same random actions with action_repeat 1,
and the end-effector positions, robot joint positions and dense rewards are compared step by step. Images are not
compared (different renderers).

`--smoke` checks only the arguments and our side (restore from the reference's starting state, a few steps of the
same policy code), since CI has no reference venv: it says nothing about parity.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import common

SMOKE = {"steps": 2}

_PRESS = r"""
def press_action(ee, button):
    # Closed loop: above the button, then straight down onto it with the gripper closed.
    import numpy as np
    above = np.linalg.norm(ee[:2] - button[:2]) > 0.01
    target = button + (np.array([0.0, 0.0, 0.12]) if above else np.zeros(3))
    return np.concatenate([np.clip((target - ee) / 0.01, -1, 1), [0.0, -1.0]]).astype(np.float32)
"""

_REFERENCE = _PRESS + r"""
import sys, numpy as np, robodesk
z = np.load(sys.argv[1])
env = robodesk.RoboDesk(task=str(z["task"]), reward="dense", action_repeat=1, episode_length=10**6)
env.render = lambda *a, **k: np.zeros((64, 64, 3), np.uint8)
env.reset()
p = env.physics
names = [p.model.id2name(i, "joint") for i in range(p.model.njnt)]
assert names == list(z["names"]), ("joint order differs", names, list(z["names"]))
p.data.qpos[:] = z["qpos"]; p.data.qvel[:] = 0; p.forward()
env.physics_copy.data.qpos[:] = p.data.qpos[:]
for b in ("ball", "upright_block", "flat_block"):
    env.original_pos[b] = p.named.data.xpos[b].copy()  # a copy: the reference's own reset stores live views
ee, qpos, reward = [], [], []
obs = {"end_effector": p.named.data.site_xpos["end_effector"].copy()}
for a in z["actions"]:
    if int(z["press"]):
        a = press_action(obs["end_effector"], z["button"])
    obs, r, _, _ = env.step(a)
    ee.append(obs["end_effector"].copy()); qpos.append(p.data.qpos.copy()); reward.append(r)
np.savez(sys.argv[2], ee=np.array(ee), qpos=np.array(qpos), reward=np.array(reward))
"""


def run_reference(python: str, qpos0: np.ndarray, actions: np.ndarray, task: str, policy: str, button: np.ndarray,
                  joint_names: list[str]) -> dict[str, np.ndarray]:
    """The reference robodesk's trajectory from `qpos0` in a subprocess of `python`: 'ee', 'qpos', 'reward'."""
    with tempfile.TemporaryDirectory() as tmp:
        init, out = Path(tmp) / "init.npz", Path(tmp) / "reference.npz"
        np.savez(init, qpos=qpos0, actions=actions, task=task, press=policy == "press_green", button=button,
                 names=np.array(joint_names))
        result = subprocess.run([python, "-c", _REFERENCE, str(init), str(out)], capture_output=True,
                                text=True, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
        if result.returncode != 0:
            sys.exit(f"reference run failed: {result.stderr.strip()[-1500:]}")
        return dict(np.load(out))


def measure(reference_python: str | None, steps: int = 25, task: str = "open_drawer", seed: int = 0,
            policy: str = "random") -> dict:
    """Our Robodesk from our reset for `seed`, stepped `steps` times by `policy`, against the reference's run from
    the same state (skipped without `reference_python`: then only our side's path is reported)."""
    import jax
    import jax.numpy as jnp

    from sensei_jax.envs.robodesk import Robodesk

    env = Robodesk(task=task, reward="dense", render_images=False, action_repeat=1, episode_length=10**6)
    m = env.mj_model
    start = jax.jit(env.reset)(jax.random.key(seed))
    qpos0 = np.asarray(start.data.qpos[0])
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, 5)).astype(np.float32)
    button = np.asarray(start.data.xpos[0, env.button_body[1]])
    reference = None
    if reference_python:
        reference = run_reference(reference_python, qpos0, actions, task, policy, button,
                                  [m.joint(i).name for i in range(m.njnt)])

    physics = np.zeros(env.physics_state_size, np.float32)
    physics[: m.nq] = qpos0
    physics[m.nq + m.nv : m.nq + m.nv + m.nu] = qpos0[: m.nu]
    state = jax.jit(env.restore)(jnp.asarray(physics))
    state = state.replace(info={**state.info, "initial_object_pos": start.info["initial_object_pos"]})
    step = jax.jit(env.step)
    namespace: dict = {}
    exec(_PRESS, namespace)  # the same policy code as the reference run
    ee, qpos, reward = [], [], []
    for action in actions:
        if policy == "press_green":
            action = namespace["press_action"](np.asarray(state.obs["end_effector"]), button)
        state = step(state, jnp.asarray(action))
        ee.append(np.asarray(state.obs["end_effector"]))
        qpos.append(np.asarray(state.data.qpos[0]))
        reward.append(float(state.reward))
    path_mm = lambda points: round(float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum() * 1000), 3)  # noqa
    light = env.light_qadr[1]
    result = {"task": task, "steps": steps, "seed": seed, "policy": policy,
              "end_effector_path_mm": {"ours": path_mm(ee)},
              "green_light_qpos_final": {"ours": round(float(qpos[-1][light]), 6)}}
    if reference is None:
        result["reference"] = "not run (no --reference-python)"
        return result
    ee_err = np.linalg.norm(np.array(ee) - reference["ee"], axis=1)
    result["end_effector_path_mm"]["reference"] = path_mm(reference["ee"])
    result["green_light_qpos_final"]["reference"] = round(float(reference["qpos"][-1][light]), 6)
    result.update({
        "end_effector_error_mm": {"max": round(float(ee_err.max() * 1000), 4),
                                  "final": round(float(ee_err[-1] * 1000), 4)},
        "robot_qpos_max_abs_diff_rad": round(float(np.abs(np.array(qpos)[:, :9] - reference["qpos"][:, :9]).max()), 6),
        "object_qpos_max_abs_diff": round(float(np.abs(np.array(qpos)[:, 9:] - reference["qpos"][:, 9:]).max()), 6),
        "dense_reward_max_abs_diff": round(float(np.abs(np.array(reward) - reference["reward"]).max()), 6),
    })
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-python", help="python of a venv with robodesk==1.0.0 (required but with --smoke)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--task", default="open_drawer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", choices=("random", "press_green"), default="random",
                        help="random actions, or a closed-loop reach-and-press of the green button (contacts)")
    parser.add_argument("--smoke", action="store_true",
                        help="our side only, 2 steps, no reference run (CI has no reference venv): that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps = SMOKE["steps"]
    elif not args.reference_python:
        parser.error("--reference-python PATH is required (a python with robodesk==1.0.0); --smoke runs our side only")
    if args.steps < 2:
        parser.error(f"--steps must be at least 2, got {args.steps}")
    result = measure(args.reference_python, args.steps, args.task, args.seed, args.policy)
    common.emit(common.report("robodesk_reference_parity", result, smoke=args.smoke))


if __name__ == "__main__":
    main()
