"""Position inverse kinematics of the Panda's `end_effector` site, in JAX.

Robodesk moves the end effector with dm_control's `qpos_from_site_pose` (position only, joints 1-6, damped least
squares). This is the same solve written for batches inside jit: forward kinematics of the arm chain from the
compiled model's body frames, the site Jacobian by forward-mode autodiff, and a fixed number of damped Gauss-Newton
iterations (dm_control converges in 3-4 on Robodesk's 1 cm steps; 6 leave sub-micrometre error).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np


def _rot_z(angle: jax.Array) -> jax.Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    zero, one = jnp.zeros_like(angle), jnp.ones_like(angle)
    return jnp.array([[c, -s, zero], [s, c, zero], [zero, zero, one]])


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument of jitted solves
class ArmKinematics:
    """The arm's kinematic chain (link0 .. link7 and the site), read from a compiled model.

    Every arm joint is a hinge about its body's local z axis at the body origin; `from_model` checks this.
    """

    base_pos: np.ndarray  # [3] world position of link0
    base_rot: np.ndarray  # [3, 3]
    link_pos: np.ndarray  # [7, 3] link i+1 origin in link i
    link_rot: np.ndarray  # [7, 3, 3]
    site_pos: np.ndarray  # [3] site in link7
    qpos_adr: np.ndarray  # [7] qpos addresses of joints 1..7

    @classmethod
    def from_model(cls, model: mujoco.MjModel, site: str = "end_effector") -> "ArmKinematics":
        body = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        links = [body(f"panda0_link{i}") for i in range(8)]
        if model.body_parentid[links[0]] != 0:
            raise ValueError("panda0_link0 must be a child of the world body")
        def rot(quat):
            mat = np.zeros(9)
            mujoco.mju_quat2Mat(mat, np.asarray(quat, np.float64))
            return mat.reshape(3, 3)

        adr = []
        for i in range(1, 8):
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"panda0_joint{i}")
            if (model.jnt_bodyid[joint] != links[i] or model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_HINGE
                    or not np.allclose(model.jnt_axis[joint], [0, 0, 1]) or not np.allclose(model.jnt_pos[joint], 0)):
                raise ValueError(f"panda0_joint{i} must be a z-axis hinge at the origin of panda0_link{i}")
            adr.append(model.jnt_qposadr[joint])
        site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if model.site_bodyid[site_id] != links[7]:
            raise ValueError(f"site {site} must be attached to panda0_link7")
        return cls(
            base_pos=model.body_pos[links[0]].astype(np.float32),
            base_rot=rot(model.body_quat[links[0]]).astype(np.float32),
            link_pos=np.stack([model.body_pos[b] for b in links[1:]]).astype(np.float32),
            link_rot=np.stack([rot(model.body_quat[b]) for b in links[1:]]).astype(np.float32),
            site_pos=model.site_pos[site_id].astype(np.float32),
            qpos_adr=np.asarray(adr),
        )

    def site_position(self, arm_qpos: jax.Array) -> jax.Array:
        """World position [3] of the site for joint angles `arm_qpos` [7]."""
        pos, rot = jnp.asarray(self.base_pos), jnp.asarray(self.base_rot)
        for i in range(7):
            pos = pos + rot @ self.link_pos[i]
            rot = rot @ self.link_rot[i] @ _rot_z(arm_qpos[i])
        return pos + rot @ self.site_pos


def solve_position(kin: ArmKinematics, arm_qpos: jax.Array, target: jax.Array, iterations: int = 6,
                   damping: float = 3e-2, max_update_norm: float = 2.0) -> jax.Array:
    """Joint angles [7] that put the site at `target` [3], moving joints 1-6 only.

    Starts from `arm_qpos` [7] (the current pose) and runs `iterations` damped least-squares steps
    dq = J^T (J J^T + lambda^2 I)^-1 err on the 3x6 site Jacobian. Like dm_control, damping is only applied while the
    error is large (> 0.1 m); near the target the step is the plain least-squares (pseudo-inverse) step, so the
    solution converges quadratically. Updates are clipped to `max_update_norm`. Joint limits are not enforced here
    (neither does Robodesk); the position actuators' ctrlrange clips the command.
    """

    def position_of(q6, q7):
        return kin.site_position(jnp.concatenate([q6, q7[None]]))

    def iteration(q6, _):
        err = target - position_of(q6, arm_qpos[6])
        jac = jax.jacfwd(position_of)(q6, arm_qpos[6])  # [3, 6]
        lam = jnp.where(jnp.linalg.norm(err) > 0.1, damping, 1e-6)
        dq = jac.T @ jnp.linalg.solve(jac @ jac.T + lam**2 * jnp.eye(3, dtype=jac.dtype), err)
        norm = jnp.linalg.norm(dq)
        dq = dq * jnp.minimum(1.0, max_update_norm / jnp.maximum(norm, 1e-12))
        return q6 + dq, None

    q6, _ = jax.lax.scan(iteration, arm_qpos[:6], None, length=iterations)
    return jnp.concatenate([q6, arm_qpos[6:7]])
