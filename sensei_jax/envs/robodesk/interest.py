"""What makes a Robodesk state interesting: SENSEI's heuristic, defined once.

SENSEI (Sancaktar, Gumbsch et al. 2025, arXiv 2503.01584) calls a Robodesk state interesting when an object
moves, the gripper is near the ball, a block or a handle, the drawer is open, or the blocks are stacked. Pair
sampling refines this into "very good" states (interesting, with the gripper nearer still to a target) and "very
bad" ones (not interesting, every target far away). To rank and compare states the heuristic becomes a score:

    score = 2 * interesting + (number of objects in motion) + exp(-closest target distance / near_distance)

The proximity term lies in (0, 1], so the score orders states by interesting first, then by how many objects move,
then by how close the gripper is to its nearest target. "An object moves" is the env's own interaction flag of
that object (|joint velocity| > `tasks.INTERACTION_VELOCITY`), so a stored collection and a restored state give
the heuristic the same inputs.

Three steps, so that a collection can store the inputs once and the heuristic can run on them later:
  `features`  jittable, from `env.scene()`: distances to the targets, drawer position, stack error
              (`state_features` adds the State's interaction flags);
  `interest`  numpy, features -> the classes `interesting`, `good`, `bad` and the `score`;
  `compare`   numpy, the scores of two frames -> P(first preferred) and a preference `Label`.
Pair sampling, the oracle annotator and the report all call these; thresholds are the `interest` config section.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax.envs.robodesk import tasks
from sensei_jax.envs.robodesk.config import InterestConfig
from sensei_jax.reward.labels import Label

__all__ = ["InterestConfig", "STACK_OFFSET", "TARGETS", "compare", "features", "interest", "state_features"]

# Targets whose proximity to the gripper counts, in the order of the `distance` feature: the three objects (by
# their names in tasks.OBJECTS) and the two handles (by their Scene fields).
TARGETS = ("ball", "upright_block", "flat_block", "drawer_handle", "slide_handle")
# Resting offset of the upright block on the flat block when stacked (the `stack` task's definition).
STACK_OFFSET = tasks.STACK_OFFSET


def _target(scene: tasks.Scene, name: str) -> jax.Array:
    if name in tasks.OBJECTS:
        return scene.object_pos[..., tasks.OBJECTS.index(name), :]
    return getattr(scene, name)


def features(scene: tasks.Scene) -> dict[str, jax.Array]:
    """The heuristic's inputs that the scene determines (any batch dims [...] in front).

    Returns `distance` float32 [..., K] (gripper to each of TARGETS), `drawer_qpos` float32 [...] and
    `stack_error` float32 [...] (distance of the upright block from "stacked on the flat block").
    """
    targets = jnp.stack([_target(scene, name) for name in TARGETS], axis=-2)  # [..., K, 3]
    distance = jnp.linalg.norm(scene.end_effector[..., None, :] - targets, axis=-1)
    stack = _target(scene, "upright_block") - _target(scene, "flat_block")
    stack_error = jnp.linalg.norm(stack - jnp.asarray(STACK_OFFSET), axis=-1)
    return {"distance": distance.astype(jnp.float32), "drawer_qpos": scene.drawer_q.astype(jnp.float32),
            "stack_error": stack_error.astype(jnp.float32)}


def state_features(env, state) -> dict[str, jax.Array]:
    """All of the heuristic's inputs for a batched Robodesk State [N]: `features(env.scene(state))` plus
    `interaction` bool [N, F] (the State's interaction flags, tasks.INTERACTIONS order, as a collection stores
    them)."""
    out = features(env.scene(state))
    flags = state.info["interaction_flags"]
    out["interaction"] = jnp.stack([flags[name] for name in tasks.INTERACTIONS], axis=-1).astype(bool)
    return out


def interest(frame_features: Mapping[str, np.ndarray], cfg: InterestConfig) -> dict[str, np.ndarray]:
    """SENSEI's heuristic on N frames.

    frame_features: `distance` [N, K], `drawer_qpos` [N], `stack_error` [N], `interaction` bool [N, F] (extra keys
    are ignored). Returns bool [N] `interesting`, `good`, `bad` and float32 [N] `score` (see the module docstring).
    """
    distance = np.asarray(frame_features["distance"], np.float32)
    closest = distance.min(axis=-1)
    in_motion = np.asarray(frame_features["interaction"], bool).sum(axis=-1)
    interesting = ((in_motion > 0) | (closest < cfg.near_distance)
                   | (np.asarray(frame_features["drawer_qpos"]) < cfg.drawer_open)
                   | (np.asarray(frame_features["stack_error"]) < cfg.stack_distance))
    good = interesting & (closest < cfg.very_near_distance)
    bad = ~interesting & (distance.mean(axis=-1) > cfg.far_mean_distance) & (closest > cfg.far_min_distance)
    score = 2.0 * interesting + in_motion + np.exp(-closest / cfg.near_distance)
    return {"interesting": interesting, "good": good, "bad": bad, "score": score.astype(np.float32)}


def compare(score_first: np.ndarray, score_second: np.ndarray,
            cfg: InterestConfig) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N] of both frames of N pairs -> (prob_first float32 [N], label int8 [N]: FIRST, SECOND, or TIE
    when the scores differ by less than `cfg.tie_margin`)."""
    diff = np.asarray(score_first, np.float32) - np.asarray(score_second, np.float32)
    prob_first = 1.0 / (1.0 + np.exp(-diff / cfg.temperature))
    label = np.where(np.abs(diff) < cfg.tie_margin, Label.TIE, np.where(diff > 0, Label.FIRST, Label.SECOND))
    return prob_first.astype(np.float32), label.astype(np.int8)


def make_state_decoder(env, batch: int = 64):
    """A function: simulator states float32 [M, S] -> `state_features` as numpy arrays [M, ...], by
    restoring the states in `env` (a Robodesk; build it with render_images=False, the oracle needs no pixels).
    Compiled once for `batch` worlds; longer inputs run in chunks, the last one padded."""
    compiled = jax.jit(lambda physics: state_features(env, env.restore(physics)))

    def decode(physics_states: np.ndarray) -> dict[str, np.ndarray]:
        physics_states = np.asarray(physics_states, np.float32)
        pieces = []
        for start in range(0, len(physics_states), batch):
            chunk = physics_states[start:start + batch]
            count = len(chunk)
            if count < batch:  # one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - count, 0)])
            out = jax.device_get(compiled(jnp.asarray(chunk)))
            pieces.append({k: v[:count] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    return decode
