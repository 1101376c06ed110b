"""Robodesk on MJX (Warp backend): a functional, batched environment with pixels.

    env = Robodesk(task="open_drawer", camera="right", image_size=64)
    state = jax.jit(env.reset)(key)                          # one world
    state = jax.jit(env.step)(state, action)                 # action float32 [5] in [-1, 1]
    states = jax.jit(env.reset_batch, static_argnums=1)(key, 16)   # 16 worlds, leaves [16, ...]
    states = jax.jit(env.step)(states, actions)              # actions [16, 5]

With `reward_image_size` set, every observation also holds obs['reward_image'], uint8 [size, size, 3] from
`reward_camera`, rendered by the same batch renderer: the view the reward model scores during exploration.

The worlds of a batch are simulated natively by MJX-Warp (one kernel launch per stage for all worlds) and rendered
by its batch ray tracer, whose render context is built for a fixed world count. Batches therefore go through
`reset_batch` / `step` with a leading world axis, not through `jax.vmap(env.step)`.

A `State` holds the MJX data of its worlds (always with a world axis, also for a single world), the observation,
the reward of the last step, `done`, and `info`:
  interaction_flags: dict of 8 bool, as SENSEI's paper counts them: |joint velocity| > 0.02 of drawer, slide and
      buttons; any |linear velocity| (x, y, z) > 0.02 of the free bodies ball, upright block and flat block (their
      angular velocity does not count: an object spinning in place has not been moved)
  success: dict task -> bool for every task in TASKS
  episode_step: int32 simulator control steps taken in this episode (Robodesk counts action_repeat per step)
  initial_object_pos: float32 [3, 3] object positions recorded at reset (the reward's "did not move" reference)
  task_solved: bool, the episode's task succeeded at some step (drives the 'success' reward mode)
  contact_overflow: bool, the contact or constraint budget overflowed during the step (see `check_budgets`)
  invalid_action: bool, the action had NaN/inf entries (they were replaced by 0)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import warp

# Warp prints a banner and a line per kernel module it loads (hundreds per compile); keep warnings and errors.
warp.config.quiet = True
warp.config.log_level = warp.LOG_WARNING

from flax import struct  # noqa: E402
from mujoco import mjx  # noqa: E402
from mujoco.mjx._src import render_util  # noqa: E402
from mujoco.mjx.warp import types as mjxw_types  # noqa: E402

from sensei_jax.envs.robodesk import assets, device_blocks, ik, model, tasks  # noqa: E402
from sensei_jax.envs.robodesk.config import REWARD_IMAGE_KEY, RobodeskConfig  # noqa: E402

_D = RobodeskConfig()  # the constructor's defaults are the `env` section's: one set of defaults

ACTION_SIZE = 5
END_EFFECTOR_SCALE = 0.01  # m per unit action
WRIST_SCALE = 0.02  # fraction of the wrist's ctrlrange per unit action
SUBSTEPS = 10  # 2 ms physics steps per 20 ms control step
MAX_IMAGE_SIZE = 1024


@struct.dataclass
class State:
    data: mjx.Data  # MJX-Warp data, world axis first ([N, ...]; N = 1 for a single world)
    obs: dict[str, jax.Array]
    reward: jax.Array  # float32 [] or [N]
    done: jax.Array  # bool [] or [N]
    info: dict[str, Any]
    rng: jax.Array  # PRNG key(s) for auto-reset
    single: bool = struct.field(pytree_node=False, default=False)


class BudgetOverflowError(RuntimeError):
    """The contact or constraint budget of the simulation overflowed."""


def _name2id(m: mujoco.MjModel, kind: mujoco.mjtObj, name: str) -> int:
    index = mujoco.mj_name2id(m, kind, name)
    if index < 0:
        raise ValueError(f"the Robodesk model has no {kind.name[6:].lower()} named {name!r}")
    return index


class Robodesk:
    """Robodesk (Kannan et al. 2021) on MJX-Warp with the Warp batch renderer, a `sensei_jax.envs.RestorableEnv`.
    See the module docstring."""

    def __init__(self, task: str = _D.task, reward: str = _D.reward, camera: str = _D.camera,
                 image_size: int = _D.image_size, action_repeat: int = _D.action_repeat,
                 episode_length: int = _D.episode_length, auto_reset: bool = _D.auto_reset,
                 cameras: Mapping[str, int] | Sequence[str] | None = None, assets_dir: str | None = _D.assets_dir,
                 contacts_per_world: int = _D.contacts_per_world, constraints_per_world: int = _D.constraints_per_world,
                 ik_iterations: int = _D.ik_iterations, solver_iterations: int = _D.solver_iterations,
                 ls_iterations: int = _D.ls_iterations, shadows: bool = _D.shadows, render_images: bool = True,
                 reward_camera: str = _D.reward_camera, reward_image_size: int | None = _D.reward_image_size):
        tasks.check_task(task)
        if reward not in tasks.REWARD_MODES:
            raise ValueError(f"unknown reward mode {reward!r}; expected one of {tasks.REWARD_MODES}")
        self._check_camera(camera, image_size)
        if cameras is None:
            cameras = {}
        elif not isinstance(cameras, Mapping):
            cameras = {name: image_size for name in cameras}
        for name, size in cameras.items():
            self._check_camera(name, size)
        if reward_image_size is not None:
            self._check_camera(reward_camera, reward_image_size)
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if contacts_per_world < 1 or constraints_per_world < 1:
            raise ValueError("contacts_per_world and constraints_per_world must be positive")
        self.task, self.reward_mode = task, reward
        self.camera, self.image_size = camera, int(image_size)
        self.extra_cameras = dict(cameras)
        self.reward_camera = reward_camera
        self.reward_image_size = None if reward_image_size is None else int(reward_image_size)
        self.action_repeat, self.episode_length, self.auto_reset = int(action_repeat), int(episode_length), auto_reset
        self.contacts_per_world, self.constraints_per_world = int(contacts_per_world), int(constraints_per_world)
        self.ik_iterations, self.shadows, self.render_images = int(ik_iterations), bool(shadows), bool(render_images)

        self.assets_dir = assets.resolve_assets_dir(assets_dir)
        if solver_iterations < 1 or ls_iterations < 1:
            raise ValueError(f"solver_iterations and ls_iterations must be >= 1, got {solver_iterations}, "
                             f"{ls_iterations}")
        self.mj_model = model.load_model(self.assets_dir, int(solver_iterations), int(ls_iterations))
        self.mjx_model = mjx.put_model(self.mj_model, impl="warp")
        self.kinematics = ik.ArmKinematics.from_model(self.mj_model)
        self._index_model()
        self._render_contexts: dict[tuple, Any] = {}

    @classmethod
    def from_config(cls, cfg, **overrides) -> "Robodesk":
        """Builds the env from a `RobodeskConfig` (the `env` section); keyword overrides win."""
        kwargs = dict(task=cfg.task, reward=cfg.reward, camera=cfg.camera, image_size=cfg.image_size,
                      action_repeat=cfg.action_repeat, episode_length=cfg.episode_length, auto_reset=cfg.auto_reset,
                      assets_dir=cfg.assets_dir, cameras=dict(getattr(cfg, "cameras", {}) or {}))
        for key in ("contacts_per_world", "constraints_per_world", "ik_iterations", "solver_iterations",
                    "ls_iterations", "shadows", "reward_camera", "reward_image_size"):
            if hasattr(cfg, key):
                kwargs[key] = getattr(cfg, key)
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Model bookkeeping

    @staticmethod
    def _check_camera(camera: str, size: int) -> None:
        if camera not in model.CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; expected one of {model.CAMERAS}")
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 8 <= size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image size {size!r} for camera {camera!r} is not an int in [8, {MAX_IMAGE_SIZE}]")

    def _index_model(self) -> None:
        m = self.mj_model
        J, B, G, S = mujoco.mjtObj.mjOBJ_JOINT, mujoco.mjtObj.mjOBJ_BODY, mujoco.mjtObj.mjOBJ_GEOM, mujoco.mjtObj.mjOBJ_SITE
        qadr = lambda name: int(m.jnt_qposadr[_name2id(m, J, name)])  # noqa: E731
        dadr = lambda name: int(m.jnt_dofadr[_name2id(m, J, name)])  # noqa: E731
        self.robot_qpos_adr = np.array([qadr(j) for j in model.ROBOT_JOINTS])
        self.robot_dof_adr = np.array([dadr(j) for j in model.ROBOT_JOINTS])
        if not (np.array_equal(self.robot_qpos_adr, np.arange(9)) and np.array_equal(self.robot_dof_adr, np.arange(9))):
            raise ValueError("the robot's joints must come first in qpos/qvel")
        self.drawer_qadr, self.slide_qadr = qadr("drawer_joint"), qadr("slide_joint")
        self.light_qadr = np.array([qadr(f"{c}_light") for c in model.BUTTON_COLORS])
        self.object_qadr = {o: qadr(o) for o in model.OBJECTS}
        self.object_body = np.array([_name2id(m, B, o) for o in tasks.OBJECTS])
        self.button_body = np.array([_name2id(m, B, f"{c}_button") for c in model.BUTTON_COLORS])
        self.drawer_handle_geom = _name2id(m, G, "drawer_handle")
        self.ee_site, self.slide_site = _name2id(m, S, "end_effector"), _name2id(m, S, "slide_handle")
        # Interaction flags: the dof of each hinge/slide joint, the three linear dofs (qvel's first three entries
        # of a free joint, world-frame x, y, z) of each free body.
        joint_of = {"drawer": "drawer_joint", "slide": "slide_joint", "red_button": "red_button",
                    "green_button": "green_button", "blue_button": "blue_button", "ball": "ball",
                    "upright_block": "upright_block", "flat_block": "flat_block"}
        self.interaction_dofs = {}
        for name in tasks.INTERACTIONS:
            joint = _name2id(m, J, joint_of[name])
            ndof = 3 if m.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE else 1
            self.interaction_dofs[name] = np.arange(m.jnt_dofadr[joint], m.jnt_dofadr[joint] + ndof)
        self.ctrl_range = m.actuator_ctrlrange.astype(np.float32)  # [9, 2]
        self.qpos0 = m.qpos0.astype(np.float32)
        self.physics_state_size = m.nq + m.nv + m.nu + 9 + 2

    # ------------------------------------------------------------------------------------------------------------
    # Spaces

    @property
    def action_size(self) -> int:
        return ACTION_SIZE

    def observation_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Observation name -> (shape, dtype) for one world."""
        spec = {}
        if self.render_images:
            spec["image"] = ((self.image_size, self.image_size, 3), np.dtype(np.uint8))
            for name, size in self.extra_cameras.items():
                spec[f"image_{name}"] = ((size, size, 3), np.dtype(np.uint8))
            if self.reward_image_size is not None:
                size = self.reward_image_size
                spec[REWARD_IMAGE_KEY] = ((size, size, 3), np.dtype(np.uint8))
        nq_obj = self.mj_model.nq - 9
        nv_obj = self.mj_model.nv - 9
        spec.update({
            "qpos_robot": ((9,), np.dtype(np.float32)), "qvel_robot": ((9,), np.dtype(np.float32)),
            "end_effector": ((3,), np.dtype(np.float32)), "qpos_objects": ((nq_obj,), np.dtype(np.float32)),
            "qvel_objects": ((nv_obj,), np.dtype(np.float32)),
        })
        return spec

    # ------------------------------------------------------------------------------------------------------------
    # Reset

    def _blank_data(self, num_envs: int) -> mjx.Data:
        """Fresh MJX-Warp data for `num_envs` worlds. The per-world fields get a world axis; the contact buffers
        are shared by the batch, one buffer of `contacts_per_world * num_envs` rows (not one per world), so memory
        grows linearly with the world count. Under `shard_map`, `num_envs` is this device's block."""
        def make(_):
            return mjx.make_data(self.mj_model, impl="warp", naconmax=self.contacts_per_world * num_envs,
                                 njmax=self.constraints_per_world)
        return device_blocks.vary(jax.vmap(make)(jnp.arange(num_envs)))

    def physics_bytes(self, num_envs: int) -> int:
        """Device bytes of the MJX-Warp data of `num_envs` worlds (shapes only, nothing is allocated): what the
        physics state costs beside the observations, for sizing worlds per device."""
        shapes = jax.eval_shape(lambda: self._blank_data(int(num_envs)))
        return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize for x in jax.tree.leaves(shapes)))

    def _initial_qpos(self, key: jax.Array) -> jax.Array:
        """Robodesk's reset distribution for one world: qpos [nq] float32."""
        k = jax.random.split(key, 8)
        u = lambda i, shape=(): jax.random.uniform(k[i], shape)  # noqa: E731
        q = jnp.asarray(self.qpos0)
        q = q.at[self.drawer_qadr].add(-0.10 * u(0))
        q = q.at[self.slide_qadr].add(0.20 * u(1))
        f, b, up = self.object_qadr["flat_block"], self.object_qadr["ball"], self.object_qadr["upright_block"]
        q = q.at[f:f + 2].add(jnp.array([0.3, 0.07]) * u(2, (2,)))
        q = q.at[b:b + 2].add(jnp.array([0.48, 0.08]) * u(3, (2,)))
        q = q.at[up:up + 2].add(jnp.array([0.3, 0.05]) * u(4, (2,)) + jnp.array([0.05, 0.0]))
        low, high = self.ctrl_range[:, 0], self.ctrl_range[:, 1]
        robot = jnp.asarray(model.INIT_ROBOT_QPOS, jnp.float32) + model.ROBOT_RESET_NOISE * jax.random.uniform(
            k[5], (9,), minval=low, maxval=high)
        return q.at[:9].set(robot)

    def _data_from(self, qpos: jax.Array, qvel: jax.Array, ctrl: jax.Array) -> mjx.Data:
        """Batched data [N] at the given state, with forward kinematics and gravity compensation computed."""
        data = self._blank_data(qpos.shape[0])
        data = data.replace(qpos=qpos, qvel=qvel, ctrl=ctrl)
        data = jax.vmap(mjx.forward, in_axes=(None, 0))(self.mjx_model, data)
        return data.replace(qfrc_applied=data.qfrc_applied.at[:, :9].set(data.qfrc_bias[:, :9]))

    def reset(self, key: jax.Array) -> State:
        """A new episode in one world. `key`: a PRNG key. Returns a State without a world axis."""
        key = _typed_key(key)
        if key.shape != ():
            raise ValueError(f"reset takes one PRNG key, got shape {key.shape}; use reset_batch for several worlds")
        return self._unbatch(self._reset_worlds(key[None]))

    def reset_batch(self, key: jax.Array, num_envs: int) -> State:
        """`num_envs` independent worlds, each reset from its own split of `key`. Leaves get a world axis [N].

        Under `shard_map`, `num_envs` is this device's block of worlds and the blocks together are the worlds of
        an unsharded `reset_batch(key, num_envs * blocks)`: each device takes its rows of the same key split."""
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        return self._reset_worlds(_block_keys(_typed_key(key), int(num_envs)))

    def reset_worlds(self, keys: jax.Array) -> State:
        """One world per PRNG key of `keys` [N]: for callers that hold per-world keys (e.g. sharded ones)."""
        keys = _typed_key(keys)
        if keys.ndim != 1:
            raise ValueError(f"reset_worlds takes PRNG keys of shape [N], got shape {keys.shape}")
        return self._reset_worlds(keys)

    def _reset_worlds(self, keys: jax.Array) -> State:
        rng, init = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
        qpos = jax.vmap(self._initial_qpos)(init)
        n = qpos.shape[0]
        ctrl = jnp.broadcast_to(qpos[:, :9], (n, self.mj_model.nu))
        data = self._data_from(qpos, jnp.zeros((n, self.mj_model.nv)), ctrl)
        scene = self._scene(data, data.xpos[:, self.object_body])
        info = {
            "interaction_flags": {name: jnp.zeros(n, bool) for name in tasks.INTERACTIONS},
            "success": jax.vmap(tasks.all_successes)(scene),
            "episode_step": jnp.zeros(n, jnp.int32),
            "initial_object_pos": scene.initial_object_pos,
            "task_solved": jnp.zeros(n, bool),
            "contact_overflow": self._overflow(data),
            "invalid_action": jnp.zeros(n, bool),
        }
        obs, data = self._observe(data)
        return State(data=data, obs=obs, reward=jnp.zeros(n, jnp.float32), done=jnp.zeros(n, bool), info=info,
                     rng=rng)

    # ------------------------------------------------------------------------------------------------------------
    # Step

    def step(self, state: State, action: jax.Array) -> State:
        """One agent step: `action_repeat` x (IK + 10 physics substeps). `action` [5] (or [N, 5] for a batch).

        Actions are clipped to [-1, 1]; NaN/inf entries are replaced by 0 and flagged in info['invalid_action'].
        """
        action = jnp.asarray(action)
        expected = (ACTION_SIZE,) if state.single else (state.reward.shape[0], ACTION_SIZE)
        if action.shape != expected:
            raise ValueError(f"action has shape {action.shape}, expected {expected} "
                             f"({'one world' if state.single else f'{expected[0]} worlds'} x {ACTION_SIZE})")
        if not jnp.issubdtype(action.dtype, jnp.floating):
            raise ValueError(f"action must be floating point, got {action.dtype}")
        if state.single:
            return self._unbatch(self._step_worlds(self._batch(state), action[None]))
        return self._step_worlds(state, action)

    def _control(self, data: mjx.Data, action: jax.Array) -> jax.Array:
        """Robodesk's action -> joint position targets [N, 9]."""
        target = data.site_xpos[:, self.ee_site] + END_EFFECTOR_SCALE * action[:, :3]
        arm = jax.vmap(lambda q, t: ik.solve_position(self.kinematics, q, t, self.ik_iterations))(
            data.qpos[:, :7], target)
        wrist_low, wrist_high = self.ctrl_range[6]
        wrist_delta = (action[:, 3] + 1.0) * (wrist_high - wrist_low) / 2.0 + wrist_low
        wrist = jnp.clip(data.qpos[:, 6] + WRIST_SCALE * wrist_delta, wrist_low, wrist_high)
        grip_low, grip_high = self.ctrl_range[7]
        grip = (action[:, 4] + 1.0) * (grip_high - grip_low) / 2.0 + grip_low
        return jnp.concatenate([arm[:, :6], wrist[:, None], grip[:, None], grip[:, None]], axis=1)

    def _physics_substeps(self, data: mjx.Data, ctrl: jax.Array) -> tuple[mjx.Data, jax.Array]:
        def substep(carry, _):
            data, overflow = carry
            # Gravity and Coriolis compensation of the arm, from the previous substep's bias forces (as Robodesk).
            data = data.replace(ctrl=ctrl, qfrc_applied=data.qfrc_applied.at[:, :9].set(data.qfrc_bias[:, :9]))
            data = jax.vmap(mjx.step, in_axes=(None, 0))(self.mjx_model, data)
            return (data, overflow | self._overflow(data)), None

        overflow = device_blocks.vary(jnp.zeros(ctrl.shape[0], bool))
        (data, overflow), _ = jax.lax.scan(substep, (data, overflow), None, length=SUBSTEPS)
        # dm_control's Physics.step ends with mj_step1, so Robodesk reads positions (rewards, IK start, camera) of
        # the new qpos; mjx.step leaves them one substep behind. One forward pass per control step matches it.
        data = jax.vmap(mjx.forward, in_axes=(None, 0))(self.mjx_model, data)
        return data, overflow | self._overflow(data)

    def _step_worlds(self, state: State, action: jax.Array) -> State:
        invalid = ~jnp.all(jnp.isfinite(action), axis=-1)
        action = jnp.clip(jnp.where(jnp.isfinite(action), action, 0.0), -1.0, 1.0).astype(jnp.float32)
        initial = state.info["initial_object_pos"]

        def repeat(carry, _):
            data, reward, solved, overflow = carry
            data, step_overflow = self._physics_substeps(data, self._control(data, action))
            scene = self._scene(data, initial)
            success = tasks.success(self.task, scene)
            if self.reward_mode == "dense":
                reward = reward + tasks.dense_reward(self.task, scene)
            elif self.reward_mode == "sparse":
                reward = reward + success.astype(jnp.float32)
            else:  # success: 1 the first time the task is solved in this episode
                reward = reward + (success & ~solved).astype(jnp.float32)
            return (data, reward, solved | success, overflow | step_overflow), None

        n = action.shape[0]
        carry = device_blocks.vary((state.data, jnp.zeros(n, jnp.float32), state.info["task_solved"],
                                    jnp.zeros(n, bool)))
        (data, reward, solved, overflow), _ = jax.lax.scan(repeat, carry, None, length=self.action_repeat)

        scene = self._scene(data, initial)
        episode_step = state.info["episode_step"] + self.action_repeat
        done = episode_step >= self.episode_length
        info = {
            "interaction_flags": self._interaction_flags(data),
            "success": jax.vmap(tasks.all_successes)(scene),
            "episode_step": episode_step,
            "initial_object_pos": initial,
            "task_solved": solved,
            "contact_overflow": overflow,
            "invalid_action": invalid,
        }
        obs, data = self._observe(data)
        new = State(data=data, obs=obs, reward=reward, done=done, info=info, rng=state.rng)
        if self.auto_reset:
            new = self._auto_reset(new)
        return new

    def _auto_reset(self, state: State) -> State:
        """Worlds whose episode ended start a new one; their State keeps `done`, `reward` and the final `info`
        except that obs, physics, episode_step, initial_object_pos and task_solved come from the reset."""

        def reset_done(state: State) -> State:
            keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(state.rng)
            fresh = self._reset_worlds(keys[1])
            done = state.done
            data = _where_worlds(done, fresh.data, state.data)
            obs = jax.tree.map(lambda a, b: _where(done, a, b), fresh.obs, state.obs)
            info = dict(state.info)
            for key in ("episode_step", "initial_object_pos", "task_solved"):
                info[key] = _where(done, fresh.info[key], state.info[key])
            rng = _where(done, jax.random.key_data(keys[0]), jax.random.key_data(state.rng))
            return state.replace(data=data, obs=obs, info=info, rng=jax.random.wrap_key_data(rng))

        return jax.lax.cond(jnp.any(state.done), reset_done, lambda s: s, state)

    # ------------------------------------------------------------------------------------------------------------
    # Observations, flags, rendering

    def scene(self, state: State) -> tasks.Scene:
        """What the task functions read (end effector, objects, handles, buttons, lights) of `state`: a
        `tasks.Scene` with a world axis [N, ...] for a batch, without one for a single world."""
        initial = state.info["initial_object_pos"]
        scene = self._scene(state.data, initial[None] if state.single else initial)
        return jax.tree.map(lambda x: x[0], scene) if state.single else scene

    def _scene(self, data: mjx.Data, initial_object_pos: jax.Array) -> tasks.Scene:
        return tasks.Scene(
            end_effector=data.site_xpos[:, self.ee_site],
            object_pos=data.xpos[:, self.object_body],
            initial_object_pos=initial_object_pos,
            drawer_q=data.qpos[:, self.drawer_qadr],
            slide_q=data.qpos[:, self.slide_qadr],
            light_q=data.qpos[:, self.light_qadr],
            button_pos=data.xpos[:, self.button_body],
            drawer_handle=data.geom_xpos[:, self.drawer_handle_geom],
            slide_handle=data.site_xpos[:, self.slide_site],
        )

    def _interaction_flags(self, data: mjx.Data) -> dict[str, jax.Array]:
        return {name: jnp.max(jnp.abs(data.qvel[:, dofs]), axis=-1) > tasks.INTERACTION_VELOCITY
                for name, dofs in self.interaction_dofs.items()}

    def _overflow(self, data: mjx.Data) -> jax.Array:
        n = data.qpos.shape[0]
        # MJX-Warp counts past its buffers: `ncollision` (broadphase pairs) and `nacon` (contacts) keep growing
        # while the extra ones are dropped. Reaching the budget is reported as overflow (conservative).
        budget = self.contacts_per_world * n
        contacts = (jnp.max(data._impl.nacon) >= budget) | (jnp.max(data._impl.ncollision) >= budget)
        constraints = data._impl.nefc >= self.constraints_per_world
        return jnp.broadcast_to(contacts, (n,)) | constraints.reshape(n)

    def _vector_obs(self, data: mjx.Data) -> dict[str, jax.Array]:
        return {
            "qpos_robot": data.qpos[:, :9].astype(jnp.float32),
            "qvel_robot": data.qvel[:, :9].astype(jnp.float32),
            "end_effector": data.site_xpos[:, self.ee_site].astype(jnp.float32),
            "qpos_objects": data.qpos[:, 9:].astype(jnp.float32),
            "qvel_objects": data.qvel[:, 9:].astype(jnp.float32),
        }

    def _observe(self, data: mjx.Data) -> tuple[dict[str, jax.Array], mjx.Data]:
        obs = self._vector_obs(data)
        if self.render_images:
            views = {"image": (self.camera, self.image_size)}
            views.update({f"image_{name}": (name, size) for name, size in self.extra_cameras.items()})
            if self.reward_image_size is not None:
                views[REWARD_IMAGE_KEY] = (self.reward_camera, self.reward_image_size)
            images, data = self._render_views(data, views)
            obs.update(images)
        return obs, data

    def _render_context(self, num_envs: int, views: tuple[tuple[str, int], ...], slot: int = 0):
        """The render context for `num_envs` worlds and `views`; `slot` tells apart the contexts of device blocks
        that share a Warp device (see `device_blocks.render_slots`), since refitting and rendering write into it."""
        key = (num_envs, views, slot)
        if key not in self._render_contexts:
            self._render_contexts[key] = mjx.create_render_context(
                self.mj_model, nworld=num_envs, devices=device_blocks.warp_devices(), cam_active=[c for c, _ in views],
                cam_res=[(s, s) for _, s in views], render_rgb=[True] * len(views),
                render_depth=[False] * len(views), use_textures=True, use_shadows=self.shadows,
                enabled_geom_groups=[0, 1, 2])
        return self._render_contexts[key]

    def _render_views(self, data: mjx.Data, views: dict[str, tuple[str, int]]) -> tuple[dict, mjx.Data]:
        """Renders {obs name: (camera, size)} for all worlds: uint8 [N, size, size, 3] each.

        A camera appears once per render context, so views are grouped into as few contexts as possible. Under
        `shard_map` on CPU each device block renders with its own context, picked by a switch on the block index."""
        groups: list[dict[str, tuple[str, int]]] = []
        for name, view in views.items():
            for group in groups:
                if view[0] not in {c for c, _ in group.values()}:
                    group[name] = view
                    break
            else:
                groups.append({name: view})
        images = {}
        n = data.qpos.shape[0]
        slots = device_blocks.render_slots()
        for group in groups:
            ordered = tuple(group.values())
            contexts = [self._render_context(n, ordered, slot).pytree() for slot in range(slots)]

            def render_with(context):
                def render_one(d):
                    d = mjx.refit_bvh(self.mjx_model, d, context)
                    pixels, _, d = mjx.render(self.mjx_model, d, context)
                    return pixels, d
                return jax.vmap(render_one)

            if slots == 1:
                pixels, data = render_with(contexts[0])(data)
            else:
                pixels, data = jax.lax.switch(device_blocks.block_index(), [render_with(c) for c in contexts], data)
            for index, name in enumerate(group):
                rgb = render_util.get_rgb(contexts[0], index, pixels)
                images[name] = jnp.round(rgb * 255.0).astype(jnp.uint8)
        return images, data

    def render(self, state: State, camera: str | None = None, size: int | None = None) -> jax.Array:
        """Renders `camera` at `size` x `size`: uint8 [size, size, 3] (or [N, ...] for a batch)."""
        camera = self.camera if camera is None else camera
        size = self.image_size if size is None else size
        self._check_camera(camera, size)
        images, _ = self._render_views(state.data, {"image": (camera, int(size))})
        return images["image"][0] if state.single else images["image"]

    # ------------------------------------------------------------------------------------------------------------
    # Saving and restoring physics

    def physics_state(self, state: State) -> jax.Array:
        """Everything needed to restore a world and re-render it: float32 [S] (or [N, S]).

        Layout: qpos [nq], qvel [nv], ctrl [nu], initial_object_pos [9], episode_step [1], task_solved [1].
        """
        d = state.data
        n = d.qpos.shape[0]
        flat = jnp.concatenate([
            d.qpos, d.qvel, d.ctrl, jnp.reshape(state.info["initial_object_pos"], (n, 9)),
            jnp.reshape(state.info["episode_step"], (n, 1)).astype(jnp.float32),
            jnp.reshape(state.info["task_solved"], (n, 1)).astype(jnp.float32)], axis=1).astype(jnp.float32)
        return flat[0] if state.single else flat

    def restore(self, physics_state: jax.Array, key: jax.Array | None = None) -> State:
        """A State from `physics_state` [S] (one world) or [N, S]; positions, images and flags are recomputed.

        Velocities are restored too, so interaction flags are those of the saved moment. `key` seeds later
        auto-resets (default: key 0)."""
        physics_state = jnp.asarray(physics_state, jnp.float32)
        single = physics_state.ndim == 1
        batch = physics_state[None] if single else physics_state
        if batch.ndim != 2 or batch.shape[1] != self.physics_state_size:
            raise ValueError(f"physics state has shape {physics_state.shape}, expected [{self.physics_state_size}] "
                             f"or [N, {self.physics_state_size}]")
        m = self.mj_model
        n = batch.shape[0]
        qpos, qvel, ctrl, rest = jnp.split(batch, np.cumsum([m.nq, m.nv, m.nu]), axis=1)
        data = self._data_from(qpos, qvel, ctrl)
        initial = rest[:, :9].reshape(n, 3, 3)
        scene = self._scene(data, initial)
        info = {
            "interaction_flags": self._interaction_flags(data),
            "success": jax.vmap(tasks.all_successes)(scene),
            "episode_step": rest[:, 9].astype(jnp.int32),
            "initial_object_pos": initial,
            "task_solved": rest[:, 10] > 0.5,
            "contact_overflow": self._overflow(data),
            "invalid_action": jnp.zeros(n, bool),
        }
        obs, data = self._observe(data)
        key = jax.random.key(0) if key is None else _typed_key(key)
        state = State(data=data, obs=obs, reward=jnp.zeros(n, jnp.float32),
                      done=info["episode_step"] >= self.episode_length, info=info, rng=_block_keys(key, n))
        return self._unbatch(state) if single else state

    # ------------------------------------------------------------------------------------------------------------
    # Single world <-> batch of one

    @staticmethod
    def _unbatch(state: State) -> State:
        squeeze = lambda x: x[0]  # noqa: E731
        return State(data=state.data, obs=jax.tree.map(squeeze, state.obs), reward=state.reward[0],
                     done=state.done[0], info=jax.tree.map(squeeze, state.info), rng=state.rng[0], single=True)

    @staticmethod
    def _batch(state: State) -> State:
        expand = lambda x: x[None]  # noqa: E731
        return State(data=state.data, obs=jax.tree.map(expand, state.obs), reward=state.reward[None],
                     done=state.done[None], info=jax.tree.map(expand, state.info), rng=state.rng[None], single=False)

    def check_budgets(self, state: State) -> None:
        """Raises BudgetOverflowError (on the host) if any world overflowed its contact/constraint budget."""
        overflow = np.asarray(state.info["contact_overflow"])
        if overflow.any():
            raise BudgetOverflowError(
                f"{int(overflow.sum())} world(s) hit the contact/constraint budget (contacts_per_world="
                f"{self.contacts_per_world}, constraints_per_world={self.constraints_per_world}); contacts beyond it "
                f"are dropped. Raise env.contacts_per_world / env.constraints_per_world.")


def _typed_key(key: jax.Array) -> jax.Array:
    """Accepts new-style typed keys and legacy uint32 [..., 2] keys; returns typed keys."""
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        return key
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
        raise ValueError(f"expected a PRNG key (jax.random.key), got dtype {key.dtype} shape {key.shape}")
    return jax.random.wrap_key_data(key)


def _block_keys(key: jax.Array, num_envs: int) -> jax.Array:
    """`split(key, num_envs)`, or under `shard_map` this device's `num_envs` rows of the split over all blocks,
    so that a sharded batch draws the same per-world keys as the unsharded one."""
    blocks = device_blocks.block_count()
    if blocks == 1:
        return jax.random.split(key, num_envs)
    keys = jax.random.split(key, num_envs * blocks)
    return jax.lax.dynamic_slice_in_dim(keys, device_blocks.block_index() * num_envs, num_envs)


def _where(done: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.where(done.reshape(done.shape + (1,) * (a.ndim - done.ndim)), a, b)


def _where_worlds(done: jax.Array, fresh: mjx.Data, current: mjx.Data) -> mjx.Data:
    """Per-world select between two batched MJX-Warp datas; world-shared buffers (contacts) keep `current`."""
    batch_dim = mjxw_types._BATCH_DIM["Data"]

    def merge(path, a, b):
        name = jax.tree_util.keystr(path, simple=True, separator="__").removeprefix("_impl__")
        if batch_dim.get(name, True) and a.ndim >= 1 and a.shape[:1] == done.shape:
            return _where(done, a, b)
        return b

    return jax.tree_util.tree_map_with_path(merge, fresh, current)
