"""The privileged-state oracle: SENSEI's heuristic for what makes a Robodesk frame interesting.

A frame is interesting when an object moves, the gripper is near the ball, a block or a handle, the drawer is
open, or the blocks are stacked (sensei_motif.md §1). For comparing two frames the heuristic becomes a continuous
score (interesting first, then how many of the conditions hold, then how close the gripper is to the nearest
target), and the pair label follows the score difference, with ties inside a margin.

`interest` is a pure function of decoded quantities; `make_state_decoder` decodes them from simulator states by
restoring them in the Robodesk environment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax.vlm.config import OracleConfig

# Targets whose proximity counts, and the resting offset of the upright block on the flat block when stacked.
TARGETS = ("ball", "upright_block", "flat_block", "drawer_handle", "slide_handle")
STACK_OFFSET = (0.0, 0.0, 0.0377804)


def interest(end_effector, targets, object_speed, drawer_qpos, stack_error, cfg: OracleConfig,
             interaction=None) -> tuple[np.ndarray, np.ndarray]:
    """SENSEI's heuristic on N frames.

    end_effector [N, 3], targets [N, K, 3] (positions of TARGETS), object_speed [N] (largest |object joint
    velocity|), drawer_qpos [N], stack_error [N] (distance from "stacked"), interaction bool [N, F] or None
    (the env's interaction flags) -> (interesting bool [N], score float32 [N], higher = more interesting).
    """
    end_effector, targets = np.asarray(end_effector, np.float32), np.asarray(targets, np.float32)
    closest = np.linalg.norm(targets - end_effector[:, None], axis=-1).min(axis=-1)
    moving = np.asarray(object_speed) > cfg.moving_speed
    near = closest < cfg.near_distance
    drawer = np.asarray(drawer_qpos) < cfg.drawer_open
    stacked = np.asarray(stack_error) < cfg.stack_distance
    touching = np.zeros_like(moving) if interaction is None else np.asarray(interaction, bool).any(axis=-1)
    conditions = np.stack([moving, near, drawer, stacked, touching], axis=-1)
    interesting = conditions.any(axis=-1)
    score = 2.0 * interesting + conditions.sum(axis=-1) / conditions.shape[-1] + np.exp(-closest / cfg.near_distance)
    return interesting, score.astype(np.float32)


def compare(score_first: np.ndarray, score_second: np.ndarray, tie_margin: float,
            temperature: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N] of both frames -> (prob_first float32 [N], label int8 [N]: 0 first, 1 second, 2 tie)."""
    diff = np.asarray(score_first, np.float32) - np.asarray(score_second, np.float32)
    prob_first = 1.0 / (1.0 + np.exp(-diff / temperature))
    label = np.where(np.abs(diff) < tie_margin, 2, np.where(diff > 0, 0, 1)).astype(np.int8)
    return prob_first.astype(np.float32), label


def scene_quantities(env, state) -> dict[str, jax.Array]:
    """The heuristic's inputs from a batched Robodesk State (world axis first), read from its MJX data.

    Returns end_effector [N, 3], targets [N, K, 3] (TARGETS order), object_speed [N], drawer_qpos [N],
    stack_error [N], interaction bool [N, F] (the env's interaction flags, sorted by name).
    """
    data = state.data
    objects = data.xpos[:, env.object_body]  # [N, 3, 3] in the env's object order (ball, upright, flat block)
    targets = jnp.concatenate([objects, data.geom_xpos[:, env.drawer_handle_geom][:, None],
                               data.site_xpos[:, env.slide_site][:, None]], axis=1)
    stack = targets[:, TARGETS.index("upright_block")] - targets[:, TARGETS.index("flat_block")]
    flags = state.info["interaction_flags"]
    return {
        "end_effector": state.obs["end_effector"].astype(jnp.float32),
        "targets": targets.astype(jnp.float32),
        "object_speed": jnp.abs(state.obs["qvel_objects"]).max(axis=-1).astype(jnp.float32),
        "drawer_qpos": data.qpos[:, env.drawer_qadr].astype(jnp.float32),
        "stack_error": jnp.linalg.norm(stack - jnp.asarray(STACK_OFFSET), axis=-1).astype(jnp.float32),
        "interaction": jnp.stack([jnp.asarray(flags[name], bool) for name in sorted(flags)], axis=-1),
    }


def make_state_decoder(env, batch: int = 64):
    """A function: simulator states float32 [M, S] -> `scene_quantities` as numpy, by restoring the states in
    `env` (a Robodesk; build it with render_images=False, the oracle needs no pixels). Compiled once for
    `batch` worlds; longer inputs run in chunks, the last one padded."""
    compiled = jax.jit(lambda physics: scene_quantities(env, env.restore(physics)))

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
