"""Robodesk on MJX-Warp (CPU): determinism, batching, IK, tasks, flags, cameras, restore, bad input.

One env (32 px images from all three cameras, a 48 px reward view, 2 worlds) is compiled once per module; every
test reuses its jitted reset/step/restore functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from sensei_jax.envs.robodesk import AssetsError, BudgetOverflowError, Robodesk, TASKS, assets, ik, model, tasks

SIZE = 32
REWARD_SIZE = 48  # the reward view: the 'right' camera again, at another size than the agent's image
N = 2


@pytest.fixture(scope="module")
def env():
    return Robodesk(task="open_drawer", reward="dense", camera="right", image_size=SIZE, action_repeat=1,
                    episode_length=3, cameras={"top": SIZE, "left": SIZE}, reward_camera="right",
                    reward_image_size=REWARD_SIZE)


@pytest.fixture(scope="module")
def fns(env):
    return {"reset_batch": jax.jit(env.reset_batch, static_argnums=1), "reset": jax.jit(env.reset),
            "step": jax.jit(env.step), "restore": jax.jit(env.restore)}


@pytest.fixture(scope="module")
def batch(fns):
    return fns["reset_batch"](jax.random.key(3), N)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


def test_reset_is_deterministic_per_key_and_varies_across_keys(fns, batch):
    again = fns["reset_batch"](jax.random.key(3), N)
    for name in ("image", "qpos_robot", "qpos_objects"):
        np.testing.assert_array_equal(np.asarray(batch.obs[name]), np.asarray(again.obs[name]))
    other = fns["reset_batch"](jax.random.key(4), N)
    assert not np.allclose(np.asarray(batch.obs["qpos_objects"]), np.asarray(other.obs["qpos_objects"]))
    # The two worlds of one batch get different randomizations.
    assert not np.allclose(np.asarray(batch.obs["qpos_robot"][0]), np.asarray(batch.obs["qpos_robot"][1]))


def test_observation_spec_matches_observations(env, batch):
    spec = env.observation_spec()
    assert set(spec) == set(batch.obs)
    for name, (shape, dtype) in spec.items():
        assert batch.obs[name].shape == (N, *shape), name
        assert batch.obs[name].dtype == dtype, name
    assert env.action_size == 5
    assert env.physics_state(batch).shape == (N, env.physics_state_size)


def test_step_is_deterministic_and_batched_equals_single(fns, batch):
    action = jnp.array([[0.8, -0.3, 0.5, 0.2, 1.0], [-0.5, 0.4, -0.2, -1.0, -1.0]], jnp.float32)
    a = fns["step"](batch, action)
    b = fns["step"](batch, action)
    np.testing.assert_array_equal(np.asarray(a.obs["qpos_robot"]), np.asarray(b.obs["qpos_robot"]))
    np.testing.assert_array_equal(np.asarray(a.obs["image"]), np.asarray(b.obs["image"]))
    # World 1 of the batch equals a single env reset from the same split key and stepped with the same action.
    single = fns["reset"](jax.random.split(jax.random.key(3), N)[1])
    np.testing.assert_allclose(np.asarray(single.obs["qpos_objects"]), np.asarray(batch.obs["qpos_objects"][1]),
                               atol=1e-6)
    single = fns["step"](single, action[1])
    assert single.obs["image"].shape == (SIZE, SIZE, 3) and single.reward.shape == ()
    np.testing.assert_allclose(np.asarray(single.obs["qpos_robot"]), np.asarray(a.obs["qpos_robot"][1]), atol=1e-4)
    np.testing.assert_allclose(float(single.reward), float(a.reward[1]), atol=1e-4)
    # The end effector moved in the commanded direction (+x for world 0).
    moved = np.asarray(a.obs["end_effector"] - batch.obs["end_effector"])
    assert moved[0, 0] > 2e-4 and moved[1, 0] < -1e-4


def test_ik_reaches_reachable_targets(env):
    kin = env.kinematics
    m = env.mj_model
    rng = np.random.default_rng(0)
    data = mujoco.MjData(m)
    solve = jax.jit(jax.vmap(lambda q, t: ik.solve_position(kin, q, t, env.ik_iterations)))
    starts, targets = [], []
    for _ in range(16):
        q = np.asarray(model.INIT_ROBOT_QPOS) + 0.15 * rng.uniform(m.actuator_ctrlrange[:, 0],
                                                                     m.actuator_ctrlrange[:, 1])
        data.qpos[:9] = q
        mujoco.mj_kinematics(m, data)
        # Our forward kinematics agree with MuJoCo's.
        np.testing.assert_allclose(np.asarray(kin.site_position(jnp.asarray(q[:7], jnp.float32))),
                                   data.site_xpos[env.ee_site], atol=2e-5)
        direction = rng.normal(size=3)
        starts.append(q[:7])
        targets.append(data.site_xpos[env.ee_site] + 0.02 * direction / np.linalg.norm(direction))
    solved = solve(jnp.asarray(np.array(starts), jnp.float32), jnp.asarray(np.array(targets), jnp.float32))
    reached = jax.vmap(kin.site_position)(solved)
    errors = np.linalg.norm(np.asarray(reached) - np.array(targets), axis=1)
    assert errors.max() < 1e-3, errors
    np.testing.assert_array_equal(np.asarray(solved[:, 6]), np.array(starts, np.float32)[:, 6])  # joint 7 untouched


def _scene(**changes) -> tasks.Scene:
    initial = jnp.array([[-0.2, 0.72, 0.799], [0.3, 0.8, 0.85], [0.3, 0.65, 0.775]], jnp.float32)
    scene = tasks.Scene(end_effector=jnp.array([0.0, 0.6, 1.0]), object_pos=initial, initial_object_pos=initial,
                        drawer_q=jnp.array(-0.05), slide_q=jnp.array(0.1), light_q=jnp.zeros(3),
                        button_pos=jnp.array([[-0.45, 0.625, 0.76], [-0.25, 0.625, 0.76], [-0.05, 0.625, 0.76]]),
                        drawer_handle=jnp.array([0.0, 0.5, 0.66]), slide_handle=jnp.array([-0.3, 0.78, 0.935]))
    return scene._replace(**changes)


def _move(scene: tasks.Scene, name: str, position) -> tasks.Scene:
    return scene._replace(object_pos=scene.object_pos.at[tasks.OBJECTS.index(name)].set(jnp.asarray(position)))


def _solved_scene(task: str) -> tasks.Scene:
    s = _scene()
    if task.startswith("open_slide"):
        return s._replace(slide_q=jnp.array(0.58))
    if task.startswith("open_drawer"):
        return s._replace(drawer_q=jnp.array(-0.25))
    if task.startswith("push_"):
        i = ("red", "green", "blue").index(task.split("_")[1])
        return s._replace(light_q=s.light_q.at[i].set(-0.005))
    if task == "stack":
        flat = s.object_pos[2]
        return _move(s, "upright_block", flat + jnp.array([0.0, 0.0, 0.0377804]))
    name = next(o for o in tasks.OBJECTS if o in task)
    if task.endswith("off_table"):
        return _move(s, name, [0.0, 0.3, 0.05])
    if task.endswith("in_bin"):
        return _move(s, name, [0.4, 0.5, 0.1])
    if task.endswith("in_shelf"):
        return _move(s, name, [0.4, 1.1, 0.95])
    if task.startswith("lift_"):
        return _move(s, name, s.object_pos[tasks.OBJECTS.index(name)] + jnp.array([0.0, 0.0, 0.12]))
    raise AssertionError(task)


@pytest.mark.parametrize("task", TASKS)
def test_each_task_succeeds_exactly_when_satisfied(task):
    base, solved = _scene(), _solved_scene(task)
    assert not bool(tasks.success(task, base))
    assert bool(tasks.success(task, solved))
    assert 0.0 <= float(tasks.dense_reward(task, base)) <= 1.0
    if task != "stack":  # stack's dense term is -offset + dist, clipped; the solved scene is not always higher
        assert float(tasks.dense_reward(task, solved)) > float(tasks.dense_reward(task, base))
    # Only tasks about the same thing fire with it (open_drawer implies open_drawer_easy; in_bin implies off_table).
    fired = {t for t, ok in tasks.all_successes(solved).items() if bool(ok)}
    assert task in fired and {_subject(t) for t in fired} == {_subject(task)}, fired


def _subject(task: str) -> str:
    if task == "stack":
        return "stack"
    return next((o for o in tasks.OBJECTS if o in task), task.replace("_easy", "").replace("_medium", ""))


def test_reset_positions_are_recorded_not_live():
    # Robodesk's reference compares against live views, so "did not move" never fails; ours does.
    s = _move(_solved_scene("ball_off_table"), "flat_block", [0.3, 0.5, 0.775])  # flat block pushed 15 cm
    assert not bool(tasks.success("ball_off_table", s))
    lifted = _solved_scene("lift_ball")
    assert float(tasks.dense_reward("lift_ball", lifted)) > 0.85  # height term counts (0 in the reference)


def test_restore_rerenders_the_same_image_and_success_fires_in_simulation(env, fns, batch):
    after = fns["step"](batch, jnp.zeros((N, 5)))
    saved = env.physics_state(after)
    restored = fns["restore"](saved)
    for name in ("image", "image_top", "image_left", "qpos_objects", "end_effector"):
        np.testing.assert_allclose(np.asarray(restored.obs[name], np.float32), np.asarray(after.obs[name], np.float32),
                                   atol=1 if name.startswith("image") else 1e-5, err_msg=name)
    # Open the drawer in the saved state: the simulator-side success flags follow.
    opened = saved.at[:, env.drawer_qadr].set(-0.25)
    state = fns["restore"](opened)
    assert np.all(np.asarray(state.info["success"]["open_drawer"]))
    np.testing.assert_allclose(np.asarray(env.scene(state).drawer_q), -0.25, atol=1e-6)
    assert env.scene(state).object_pos.shape == (N, 3, 3)
    assert not np.any(np.asarray(fns["restore"](saved).info["success"]["open_drawer"]))


def test_interaction_flags_fire_when_an_object_moves(env, fns, batch):
    saved = np.asarray(env.physics_state(batch)).copy()
    m = env.mj_model
    ball_dof = m.nq + env.interaction_dofs["ball"][0]
    drawer_dof = m.nq + env.interaction_dofs["drawer"][0]
    saved[0, ball_dof] = 0.3  # ball rolling in world 0
    saved[1, drawer_dof] = -0.1  # drawer sliding in world 1
    flags = _np(fns["restore"](jnp.asarray(saved)).info["interaction_flags"])
    assert set(flags) == set(tasks.INTERACTIONS)
    assert flags["ball"].tolist() == [True, False]
    assert flags["drawer"].tolist() == [False, True]
    assert not any(flags[k].any() for k in flags if k not in ("ball", "drawer"))


def test_free_bodies_count_linear_velocity_only(env, fns, batch):
    # The paper's count: a ball spinning in place has not been moved; one rolling faster than 0.02 m/s has.
    saved = np.asarray(env.physics_state(batch)).copy()
    m = env.mj_model
    ball = m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "ball")]
    block = m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "flat_block")]
    assert m.jnt_type[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "ball")] == mujoco.mjtJoint.mjJNT_FREE
    saved[:, m.nq:m.nq + m.nv] = 0.0
    saved[0, m.nq + ball + 3:m.nq + ball + 6] = 5.0  # world 0: the ball spins fast about all three axes
    saved[0, m.nq + block + 5] = -3.0  # ... and the flat block turns about z
    saved[1, m.nq + ball + 2] = 1.5 * tasks.INTERACTION_VELOCITY  # world 1: the ball moves up, slowly
    saved[1, m.nq + block + 1] = 0.5 * tasks.INTERACTION_VELOCITY  # ... the flat block creeps, below threshold
    flags = _np(fns["restore"](jnp.asarray(saved)).info["interaction_flags"])
    assert flags["ball"].tolist() == [False, True]
    assert flags["flat_block"].tolist() == [False, False]
    assert not any(flags[k].any() for k in flags if k != "ball")


def test_reward_view_renders_its_camera_at_its_size(env, fns, batch):
    spec = env.observation_spec()
    assert spec["reward_image"] == ((REWARD_SIZE, REWARD_SIZE, 3), np.dtype(np.uint8))
    after = fns["step"](batch, jnp.zeros((N, 5)))
    view = np.asarray(after.obs["reward_image"])
    assert view.shape == (N, REWARD_SIZE, REWARD_SIZE, 3) and view.std() > 10
    np.testing.assert_array_equal(view, np.asarray(jax.jit(lambda s: env.render(s, "right", REWARD_SIZE))(after)))
    # A restored state renders the same reward view (what the explore test re-renders against).
    restored = fns["restore"](env.physics_state(after))
    np.testing.assert_allclose(np.asarray(restored.obs["reward_image"], np.float32), view.astype(np.float32), atol=1)


def test_cameras_give_different_non_blank_images(batch):
    images = {k: np.asarray(batch.obs[k][0], np.float32) for k in ("image", "image_top", "image_left")}
    for name, image in images.items():
        assert image.std() > 10, name
    names = list(images)
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(images[names[i]] - images[names[j]]).mean() > 10, (names[i], names[j])


def test_render_any_size_matches_observation(env, batch):
    image = np.asarray(jax.jit(lambda s: env.render(s, "right", SIZE))(batch))
    np.testing.assert_array_equal(image, np.asarray(batch.obs["image"]))
    large = jax.jit(lambda s: env.render(s, "top", 48))(batch)
    assert large.shape == (N, 48, 48, 3) and large.dtype == jnp.uint8


def test_auto_reset_and_nan_actions(env, fns, batch):
    state = batch
    bad = jnp.array([[jnp.nan, 0.0, 0.0, 0.0, 0.0], [0.0, jnp.inf, 0.0, 0.0, 0.0]])
    state = fns["step"](state, bad)
    assert np.asarray(state.info["invalid_action"]).all()
    assert np.isfinite(np.asarray(state.obs["qpos_robot"])).all()
    for _ in range(2):
        state = fns["step"](state, jnp.zeros((N, 5)))
    # episode_length 3 with action_repeat 1: the third step ends the episode and the worlds start anew.
    assert np.asarray(state.done).all()
    assert np.asarray(state.info["episode_step"]).tolist() == [0, 0]
    assert not np.allclose(np.asarray(state.obs["qpos_objects"]), np.asarray(batch.obs["qpos_objects"]))
    # The physics was reset too, not only the observation.
    np.testing.assert_array_equal(np.asarray(state.data.qpos[:, 9:]), np.asarray(state.obs["qpos_objects"]))
    np.testing.assert_array_equal(np.asarray(state.data.qvel), 0.0)


def test_bad_inputs_raise(env, batch, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown Robodesk task"):
        Robodesk(task="open_door")
    with pytest.raises(ValueError, match="unknown camera"):
        Robodesk(camera="front")
    with pytest.raises(ValueError, match="image size"):
        Robodesk(image_size=4)
    with pytest.raises(ValueError, match="reward mode"):
        Robodesk(reward="shaped")
    with pytest.raises(ValueError, match="for camera 'right'"):
        Robodesk(reward_image_size=4)
    with pytest.raises(ValueError, match="action has shape"):
        env.step(batch, jnp.zeros((N, 4)))
    with pytest.raises(ValueError, match="floating point"):
        env.step(batch, jnp.zeros((N, 5), jnp.int32))
    with pytest.raises(ValueError, match="physics state has shape"):
        env.restore(jnp.zeros(7))
    with pytest.raises(ValueError, match="unknown camera"):
        env.render(batch, "front", 32)
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path))
    with pytest.raises(AssetsError, match=assets.ENV_VAR):
        assets.resolve_assets_dir(None)
    with pytest.raises(AssetsError, match="env.assets_dir"):
        assets.resolve_assets_dir(tmp_path / "nowhere")


def test_sdist_checksum_is_verified(tmp_path):
    fake = tmp_path / assets.SDIST_NAME
    fake.write_bytes(b"not the robodesk sdist")
    with pytest.raises(AssetsError, match="sha256"):
        assets.unpack_sdist(fake, tmp_path / "out")


def test_contact_budget_overflow_is_detected():
    small = Robodesk(contacts_per_world=2, render_images=False, image_size=SIZE)
    state = jax.jit(small.reset_batch, static_argnums=1)(jax.random.key(0), 1)
    assert np.asarray(state.info["contact_overflow"]).all()  # 9+ contacts at rest
    with pytest.raises(BudgetOverflowError, match="contacts_per_world"):
        small.check_budgets(state)


def test_env_info_summarises_the_model():
    from sensei_jax import config as config_lib
    from sensei_jax.pipeline import env_tools

    summary = env_tools.info(config_lib.load(None, ["--env.task", "lift_ball"]))
    assert summary["sizes"]["nq"] == 38 and summary["sizes"]["nv"] == 35 and summary["sizes"]["nu"] == 9
    assert summary["task"] == "lift_ball" and summary["cameras"] == ["top", "right", "left"]
    assert summary["observation_spec"]["image"] == [[64, 64, 3], "uint8"]
    assert summary["physics_state_size"] == 93 and len(summary["tasks"]) == len(TASKS)


def test_physics_memory_grows_linearly_with_the_world_count(env):
    # The contact buffers are shared by the batch (contacts_per_world rows per world), so doubling the worlds
    # doubles the bytes; buffers sized for the whole batch in every world would grow quadratically.
    table = {n: env.physics_bytes(n) for n in (4, 16, 64)}
    print("physics bytes per world count:", {n: f"{b / 1e6:.3f} MB ({b / n / 1e3:.1f} kB/world)"
                                             for n, b in table.items()})
    assert table[64] / table[16] == pytest.approx(4.0, rel=0.01)
    assert table[16] / table[4] == pytest.approx(4.0, rel=0.01)
    blank = jax.eval_shape(lambda: env._blank_data(16))
    assert blank._impl.contact__frame.shape[0] == env.contacts_per_world * 16


def test_the_constructor_defaults_are_the_config_sections():
    """One set of defaults: `Robodesk(...)`'s keyword defaults are `RobodeskConfig`'s, so a config and a direct
    construction cannot drift apart (they once differed in action_repeat, 1 against 2)."""
    import dataclasses
    import inspect

    from sensei_jax.envs.robodesk.config import RobodeskConfig

    defaults = {name: p.default for name, p in inspect.signature(Robodesk.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    section = {f.name: getattr(RobodeskConfig(), f.name) for f in dataclasses.fields(RobodeskConfig)}
    shared = sorted(set(defaults) & set(section) - {"cameras"})  # cameras: None stands for the section's {}
    assert len(shared) >= 15, shared
    assert {name: defaults[name] for name in shared} == {name: section[name] for name in shared}
