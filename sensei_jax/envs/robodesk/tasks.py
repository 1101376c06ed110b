"""Robodesk's tasks as plain functions of the simulator state: dense reward, success, interaction flags.

All 18 Robodesk tasks (9 core, 9 extra) plus SENSEI's easier drawer/slide thresholds. Formulas follow Robodesk
1.0.0 with one deliberate fix: the reference stores the objects' reset positions as live views of MuJoCo's data, so
its "did not move" terms are always true, its movement terms always 0 and its lift/off-table height terms 0. Here
the reset positions are recorded at reset (`Scene.initial_object_pos`) and the intended formulas are computed.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sensei_jax.envs.robodesk.config import CORE_TASKS, EXTRA_TASKS, REWARD_MODES, SENSEI_TASKS, TASKS  # noqa: F401

OBJECTS = ("ball", "upright_block", "flat_block")  # order of Scene.object_pos / initial_object_pos
INTERACTIONS = ("drawer", "slide", "red_button", "green_button", "blue_button", "ball", "upright_block",
                "flat_block")
# |joint velocity| (for a free body: any of its x, y, z linear velocities) above which SENSEI counts an interaction
INTERACTION_VELOCITY = 0.02

LIFT_HEIGHT = {"upright_block": 0.86, "ball": 0.81, "flat_block": 0.78}
STACK_OFFSET = (0.0, 0.0, 0.0377804)


class Scene(NamedTuple):
    """What the task functions read, for one world (batch dims allowed in front of every field)."""

    end_effector: jax.Array  # [3] site end_effector
    object_pos: jax.Array  # [3 objects, 3] body xpos, in OBJECTS order
    initial_object_pos: jax.Array  # [3, 3] body xpos recorded at reset
    drawer_q: jax.Array  # [] drawer_joint qpos
    slide_q: jax.Array  # [] slide_joint qpos
    light_q: jax.Array  # [3] red, green, blue light joint qpos
    button_pos: jax.Array  # [3, 3] red, green, blue button body xpos
    drawer_handle: jax.Array  # [3] geom xpos of drawer_handle
    slide_handle: jax.Array  # [3] site slide_handle


def _dist_reward(scene: Scene, point: jax.Array) -> jax.Array:
    return jnp.clip(1.0 - jnp.linalg.norm(scene.end_effector - point, axis=-1), 0.0, 1.0)


def _obj(scene: Scene, name: str) -> jax.Array:
    return scene.object_pos[..., OBJECTS.index(name), :]


def _moved(scene: Scene, name: str) -> jax.Array:
    i = OBJECTS.index(name)
    return jnp.linalg.norm(scene.object_pos[..., i, :] - scene.initial_object_pos[..., i, :], axis=-1)


def _did_not_move(scene: Scene, name: str) -> jax.Array:
    return (_moved(scene, name) < 0.01).astype(jnp.float32)


def _others(name: str) -> tuple[str, str]:
    others = [o for o in ("flat_block", "upright_block", "ball") if o != name]
    return others[0], others[1]


def _slide(threshold: float):
    def fn(s: Scene):
        target = s.slide_handle - jnp.array([0.15, 0.0, 0.0])
        task = 0.75 * s.slide_q / 0.6 + 0.25 * _dist_reward(s, target)
        still = (0.33 * _did_not_move(s, "flat_block") + 0.33 * _did_not_move(s, "upright_block")
                 + 0.34 * _did_not_move(s, "ball"))
        return 0.9 * task + 0.1 * still, s.slide_q > threshold
    return fn


def _drawer(threshold: float):
    def fn(s: Scene):
        return 0.75 * jnp.abs(s.drawer_q) / 0.3 + 0.25 * _dist_reward(s, s.drawer_handle), s.drawer_q < threshold
    return fn


def _button(color: str):
    i = ("red", "green", "blue").index(color)

    def fn(s: Scene):
        pressed = s.light_q[..., i] < -0.00453
        return 0.25 * pressed + 0.75 * _dist_reward(s, s.button_pos[..., i, :]), pressed
    return fn


def _stack(s: Scene):
    offset = jnp.linalg.norm(jnp.array(STACK_OFFSET) - (_obj(s, "upright_block") - _obj(s, "flat_block")), axis=-1)
    return -offset + _dist_reward(s, _obj(s, "upright_block")), offset < 0.04


def _off_table(name: str):
    a, b = _others(name)

    def fn(s: Scene):
        z, z0 = _obj(s, name)[..., 2], s.initial_object_pos[..., OBJECTS.index(name), 2]
        pushed = 1.0 - z / z0
        stay = 0.8 * pushed + 0.1 * (1.0 - _moved(s, a) / 5.0) + 0.1 * (1.0 - _moved(s, b) / 5.0)
        dense = 0.75 * jnp.clip(stay, 0.0, 1.0) + 0.25 * _dist_reward(s, _obj(s, name))
        success = (z < 0.6) & (_moved(s, a) < 0.01) & (_moved(s, b) < 0.01)
        return dense, success
    return fn


def _in_bin(name: str):
    def fn(s: Scene):
        p = _obj(s, name)
        inside = ((p[..., 0] > 0.28) & (p[..., 0] < 0.52) & (p[..., 1] > 0.38) & (p[..., 1] < 0.62)
                  & (p[..., 2] > 0.0) & (p[..., 2] < 0.4))
        return 0.5 * _dist_reward(s, p) + 0.5 * inside, inside
    return fn


def _in_shelf(name: str):
    a, b = _others(name)

    def fn(s: Scene):
        p = _obj(s, name)
        inside = (p[..., 0] > 0.2) & (p[..., 1] > 1.0)
        toward = 1.0 - jnp.linalg.norm(jnp.array([0.4, 1.1]) - p[..., :2], axis=-1)
        shelf = 0.33 * _dist_reward(s, p) + 0.33 * toward + 0.34 * inside
        dense = 0.5 * shelf + 0.25 * (1.0 - _moved(s, a) / 5.0) + 0.25 * (1.0 - _moved(s, b) / 5.0)
        return dense, inside
    return fn


def _lift(name: str):
    def fn(s: Scene):
        z, z0 = _obj(s, name)[..., 2], s.initial_object_pos[..., OBJECTS.index(name), 2]
        dense = 0.85 * jnp.clip(10.0 * (z - z0), 0.0, 1.0) + 0.15 * _dist_reward(s, _obj(s, name))
        return dense, z > LIFT_HEIGHT[name]
    return fn


TASK_FUNCTIONS: dict[str, Callable[[Scene], tuple[jax.Array, jax.Array]]] = {
    "open_slide": _slide(0.55),
    "open_drawer": _drawer(-0.2),
    "push_green": _button("green"),
    "stack": _stack,
    "upright_block_off_table": _off_table("upright_block"),
    "flat_block_in_bin": _in_bin("flat_block"),
    "flat_block_in_shelf": _in_shelf("flat_block"),
    "lift_upright_block": _lift("upright_block"),
    "lift_ball": _lift("ball"),
    "push_blue": _button("blue"),
    "push_red": _button("red"),
    "flat_block_off_table": _off_table("flat_block"),
    "ball_off_table": _off_table("ball"),
    "upright_block_in_bin": _in_bin("upright_block"),
    "ball_in_bin": _in_bin("ball"),
    "upright_block_in_shelf": _in_shelf("upright_block"),
    "ball_in_shelf": _in_shelf("ball"),
    "lift_flat_block": _lift("flat_block"),
    "open_drawer_easy": _drawer(-0.1),
    "open_drawer_medium": _drawer(-0.15),
    "open_slide_easy": _slide(0.45),
}
assert tuple(TASK_FUNCTIONS) == TASKS


def dense_reward(task: str, scene: Scene) -> jax.Array:
    """Robodesk's dense reward of `task`, clipped to [0, 1] as the reference does. float32 [...]."""
    dense, _ = TASK_FUNCTIONS[task](scene)
    return jnp.clip(dense, 0.0, 1.0).astype(jnp.float32)


def success(task: str, scene: Scene) -> jax.Array:
    """Whether `task` is solved in `scene`. bool [...]."""
    return TASK_FUNCTIONS[task](scene)[1].astype(bool)


def all_successes(scene: Scene) -> dict[str, jax.Array]:
    return {task: success(task, scene) for task in TASKS}


def check_task(task: str) -> str:
    if task not in TASK_FUNCTIONS:
        raise ValueError(f"unknown Robodesk task {task!r}; known tasks: {', '.join(TASKS)}")
    return task
