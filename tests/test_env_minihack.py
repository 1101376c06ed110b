"""MiniHack on host worker processes: the env contract eagerly and under jit + scan, auto-reset, flags, the oracle's
ranking, KeyChest's layouts, worker crashes and hangs, bad input, reproducibility.

One KeyRoom env (4 worlds, 2 workers, 5-step episodes) serves most tests; the KeyChest and crash tests start
their own pools, a KeyChest success is played by a worker in this process on a hand-made level, and KeyRoom games
are played to the stairs the same way, by a search over the level map. The file takes about 7 s on 2 idle cores.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("nle")
pytest.importorskip("minihack")

from sensei_jax.envs import Env, EnvState, RestorableEnv  # noqa: E402
from sensei_jax.envs.minihack import MiniHack, MiniHackConfig, WorkerCrashed, WorkerPool, tasks  # noqa: E402
from sensei_jax.envs.minihack import pool as pool_module  # noqa: E402
from sensei_jax.reward.labels import Label  # noqa: E402

N = 4
EPISODE = 5
KEYROOM = tasks.TASKS["keyroom"]
KEYCHEST = tasks.TASKS["keychest"]


@pytest.fixture(scope="module")
def env():
    env = MiniHack.from_config(MiniHackConfig(task="keyroom", num_envs=N, episode_length=EPISODE, workers=2))
    yield env
    env.close()


def one_hot(index, env) -> jax.Array:
    return jax.nn.one_hot(jnp.asarray(index), env.action_size, dtype=jnp.float32)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


# --------------------------------------------------------------------------------------------------------------
# The contract


def test_reset_and_step_follow_the_contract_eagerly(env):
    spec = env.observation_spec()
    assert {k: (v.shape, v.dtype) for k, v in spec.items()} == {
        "image": ((64, 64, 3), np.uint8), "inventory": ((1,), np.float32), "reward_image": ((80, 80, 3), np.uint8)}
    assert env.action_size == 9 and env.host_stepped and env.auto_reset and env.discrete_actions
    assert isinstance(env, Env) and not isinstance(env, RestorableEnv)

    state = env.reset_batch(jax.random.key(0), N)
    assert isinstance(state, EnvState)
    for name, s in spec.items():
        assert state.obs[name].shape == (N, *s.shape) and state.obs[name].dtype == s.dtype
    assert state.reward.dtype == jnp.float32 and state.done.dtype == jnp.bool_
    np.testing.assert_array_equal(state.world, np.arange(N))
    np.testing.assert_array_equal(state.info["episode_step"], 0)
    assert not np.any(state.done) and not np.any(state.info["is_terminal"])
    assert set(state.info["interaction_flags"]) == {"key_picked_up", "has_key", "near_locked_door", "door_open"}
    assert set(state.info["success"]) == {"keyroom"}
    assert state.info["features"].shape == (N, len(tasks.FEATURES))
    # Every frame shows the agent: the screen is not blank.
    assert np.all(np.asarray(state.obs["reward_image"]).reshape(N, -1).max(-1) > 0)

    stepped = env.step(state, one_hot([0, 1, 2, 3], env))
    np.testing.assert_array_equal(stepped.info["episode_step"], 1)
    # APPLY without the key takes no game time: NetHack's -0.01, clipped to 0 as the authors' wrapper did.
    applied = env.step(stepped, one_hot([8] * N, env))
    np.testing.assert_array_equal(applied.reward, 0.0)
    np.testing.assert_array_equal(applied.info["episode_step"], 2)
    assert stepped.obs["image"].shape == (N, 64, 64, 3)
    with pytest.raises(ValueError, match=r"actions must be \[4, 9\]"):
        env.step(state, jnp.zeros((N, 5)))


def test_image_is_the_reward_view_resized_by_index_gather(env):
    state = _np(env.reset_batch(jax.random.key(1), N))
    src = np.minimum(((np.arange(64) + 0.5) * 80 / 64).astype(int), 79)
    np.testing.assert_array_equal(state.obs["image"], state.obs["reward_image"][:, src][:, :, src])
    # 80 -> 64 keeps 4 of every 5 rows; 80 -> 80 changes nothing.
    assert len(set(src.tolist())) == 64 and set(range(80)) - set(src.tolist()) == set(range(2, 80, 5))
    np.testing.assert_array_equal(pool_module._resize_index(80, 80), np.arange(6400))
    # The same pixels as PIL's NEAREST resize, which the authors' ResizeImage wrapper used.
    from PIL import Image

    for frame in state.obs["reward_image"]:
        np.testing.assert_array_equal(np.asarray(Image.fromarray(frame).resize((64, 64), Image.NEAREST)),
                                      frame[src][:, src])


def test_jit_scan_auto_resets_after_the_episode_length(env):
    reset = jax.jit(env.reset_batch, static_argnums=1)

    @jax.jit
    def rollout(state, actions):
        def body(state, action):
            state = env.step(state, action)
            return state, (state.done, state.info["episode_step"], state.info["is_terminal"], state.reward)
        return jax.lax.scan(body, state, actions)

    actions = one_hot(jax.random.randint(jax.random.key(2), (2 * EPISODE + 2, N), 0, 9), env)
    last, (done, step, terminal, reward) = _np(rollout(reset(jax.random.key(3), N), actions))
    expected_step = np.tile(np.array([1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2])[:, None], (1, N))
    np.testing.assert_array_equal(step, expected_step)  # the done step already holds the next episode's start
    np.testing.assert_array_equal(done, expected_step == 0)
    assert not terminal.any()  # a time limit is not a terminal state
    assert reward.dtype == np.float32 and np.all((reward >= 0) & (reward <= 1))
    np.testing.assert_array_equal(last.info["episode_step"], 2)


def test_auto_reset_observation_is_the_next_episodes_first(env):
    """The frame returned on a done step is exactly the first frame of the episode seeded from the world's own
    generator (numpy default_rng(seed), second draw), rebuilt here in this process."""
    pool = env.pool
    worlds = np.array([2])
    pool.reset(worlds, np.array([1234]))
    for _ in range(EPISODE):
        out = pool.step(worlds, np.array([0]))
    assert out["done"][0] and out["episode_step"][0] == 0

    rng = np.random.default_rng(1234)
    rng.integers(1, 2**62, size=2)  # the first episode's seeds
    core, disp = (int(s) for s in rng.integers(1, 2**62, size=2))
    local = tasks.make_env(KEYROOM, 5)
    try:
        first = tasks.start_episode(local, KEYROOM, core, disp)
        expected = tasks.TileRenderer().render(first["glyphs_crop"])
    finally:
        local.close()
    np.testing.assert_array_equal(out["reward_image"][0], expected)


def test_same_seeds_give_the_same_frames(env):
    @jax.jit
    def rollout(key):
        state = env.reset_batch(key, N)

        def body(state, action):
            state = env.step(state, action)
            return state, state.obs["reward_image"]
        return jax.lax.scan(body, state, one_hot(jnp.tile(jnp.arange(4)[:, None], (1, N)), env))[1]

    first, again, other = (np.asarray(rollout(jax.random.key(k))) for k in (7, 7, 8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[:, 0], first[:, 1])  # the worlds of one key differ from each other


# --------------------------------------------------------------------------------------------------------------
# Flags and the oracle on hand-made observations


def observation(crop=None, inventory=(), message=""):
    glyphs = np.full((5, 5), tasks.FLOOR_GLYPH, np.int16)
    glyphs[2, 2] = tasks.ROGUE_GLYPH
    for (row, col), glyph in (crop or {}).items():
        glyphs[row, col] = glyph
    inv = np.full(55, 5976, np.int16)
    inv[:len(inventory)] = inventory
    text = np.zeros(256, np.uint8)
    text[:len(message)] = np.frombuffer(message.encode(), np.uint8)
    return {"glyphs_crop": glyphs, "inv_glyphs": inv, "message": text}


def flags(task, obs) -> dict[str, bool]:
    return dict(zip(task.interactions, tasks.interaction_flags(task, tasks.features(task, obs)).tolist()))


def test_flags_from_hand_made_observations():
    assert flags(KEYROOM, observation()) == dict.fromkeys(KEYROOM.interactions, False)
    assert flags(KEYROOM, observation(inventory=(1906, tasks.KEY_GLYPH)))["has_key"]
    assert not flags(KEYROOM, observation(inventory=(1906, 2103)))["has_key"]  # a lock pick is not the key
    picked = observation(inventory=(tasks.KEY_GLYPH,), message="h - a key named The Master Key of Thievery.")
    assert flags(KEYROOM, picked)["key_picked_up"]
    assert not flags(KEYCHEST, picked)["key_picked_up"]
    assert flags(KEYCHEST, observation(message="g - a key."))["key_picked_up"]
    assert not flags(KEYCHEST, observation(message="You see here a key."))["key_picked_up"]
    assert not flags(KEYCHEST, observation(message="g - a key.  h - a key."))["key_picked_up"]  # the whole line
    # A closed door counts next to the agent (diagonals too), not two tiles away; an open door anywhere in view.
    for corner in ((1, 1), (1, 3), (3, 1), (3, 3)):
        assert flags(KEYROOM, observation({corner: tasks.CLOSED_DOOR_GLYPHS[0]}))["near_locked_door"]
    assert not flags(KEYROOM, observation({(0, 2): tasks.CLOSED_DOOR_GLYPHS[1]}))["near_locked_door"]
    assert flags(KEYROOM, observation({(0, 4): tasks.OPEN_DOOR_GLYPHS[1]}))["door_open"]
    assert flags(KEYCHEST, observation(message=tasks.LOOTABLE))["chest_open"]
    assert not flags(KEYCHEST, observation(message="This door is locked."))["chest_open"]
    np.testing.assert_array_equal(tasks.success_flags(KEYCHEST, 2), [True])
    np.testing.assert_array_equal(tasks.success_flags(KEYROOM, 1), [False])  # death is terminal, not success


def score(task, **kwargs) -> float:
    return float(tasks.interest_score(tasks.features(tasks.TASKS[task], observation(**kwargs)), task))


def label(task, first, second) -> int:
    return int(tasks.compare(np.array([score(task, **first)]), np.array([score(task, **second)]))[1][0])


def test_oracle_ranks_frames_by_the_authors_rules():
    key, empty = {"inventory": (tasks.KEY_GLYPH,)}, {}
    assert label("keyroom", key, empty) == Label.FIRST
    assert label("keyroom", empty, key) == Label.SECOND
    assert label("keyroom", empty, empty) == Label.UNKNOWN  # no rule applies
    assert label("keyroom", key, key) == Label.TIE
    stairs = {"crop": {(0, 0): tasks.STAIRS_DOWN_GLYPH}}
    door = {"crop": {(0, 0): tasks.OPEN_DOOR_GLYPHS[0]}}
    door_and_key = {"crop": {(0, 0): tasks.OPEN_DOOR_GLYPHS[0]}, "inventory": (tasks.KEY_GLYPH,)}
    assert label("keyroom", stairs, door_and_key) == Label.FIRST  # rule 1 before everything
    assert label("keyroom", door, key) == Label.FIRST  # rule 2 before rule 3
    assert label("keyroom", door, door_and_key) == Label.TIE  # both show an open door: tie
    closed_and_key = {"crop": {(4, 4): tasks.CLOSED_DOOR_GLYPHS[0]}, "inventory": (tasks.KEY_GLYPH,)}
    assert label("keyroom", key, closed_and_key) == Label.SECOND  # rule 3's closed-door tie-break
    seen = {"crop": {(1, 1): tasks.KEY_GLYPH}}
    assert label("keyroom", seen, empty) == Label.FIRST and label("keyroom", key, seen) == Label.FIRST
    prob, _ = tasks.compare(np.array([score("keyroom", **key), 0.0]), np.array([0.0, score("keyroom", **key)]))
    np.testing.assert_array_equal(prob, [1.0, 0.0])

    chest_seen = {"crop": {(0, 1): tasks.CHEST_GLYPH}}
    assert label("keychest", key, empty) == Label.FIRST
    assert label("keychest", {"message": tasks.LOOTABLE}, {**key, **chest_seen}) == Label.FIRST
    assert label("keychest", {**key, **chest_seen}, key) == Label.FIRST
    assert label("keychest", key, chest_seen) == Label.FIRST
    assert label("keychest", seen, chest_seen) == Label.FIRST
    assert label("keychest", {"crop": {(1, 1): tasks.KEY_GLYPH, (0, 1): tasks.CHEST_GLYPH}}, seen) == Label.FIRST
    assert label("keychest", empty, empty) == Label.UNKNOWN
    with pytest.raises(ValueError, match="minihack.task"):
        tasks.interest_score(np.zeros(len(tasks.FEATURES)), "keyhole")


def test_renderer_draws_minihacks_tiles_with_the_authors_remapping(env):
    local = tasks.make_env(KEYROOM, 5)
    try:
        obs = tasks.start_episode(local, KEYROOM, 11, 12)
        local._glyph_mapper = __import__("minihack.tiles.glyph_mapper", fromlist=["GlyphMapper"]).GlyphMapper()
        reference = local._glyph_mapper.to_rgb(obs["glyphs_crop"])
    finally:
        local.close()
    assert obs["glyphs_crop"][2, 2] == tasks.ROGUE_GLYPH
    np.testing.assert_array_equal(tasks.TileRenderer(remap={}).render(obs["glyphs_crop"]), reference)
    remapped = tasks.TileRenderer().render(obs["glyphs_crop"])
    changed = np.argwhere(np.any(remapped != reference, axis=-1))
    assert changed.size and changed.min() >= 32 and changed.max() < 48  # only the agent's tile: a tourist now
    tourist = tasks.TileRenderer(remap={}).render(np.array([[tasks.TOURIST_GLYPH]]))
    np.testing.assert_array_equal(remapped[32:48, 32:48], tourist)


# --------------------------------------------------------------------------------------------------------------
# KeyChest


def _layout(des: str) -> list[str]:
    lines = des.splitlines()
    return lines[lines.index("MAP") + 1:lines.index("ENDMAP")]


def test_keycorridor_layouts_follow_minigrids_rules():
    for seed in range(20):
        des = tasks.keycorridor_des(np.random.default_rng(seed))
        rows = _layout(des)
        assert len(rows) == 9 and all(len(r) == 10 for r in rows)  # 10 x 10 grid, bottom wall row dropped
        doors = [tuple(int(v) for v in re.findall(r"\d+", line)) for line in des.splitlines()
                 if line.startswith("DOOR:closed,(")]
        assert all(rows[y][x] == "+" for x, y in doors) and sum(r.count("+") for r in rows) == len(doors)
        chest = tuple(int(v) for v in des.split('not_trapped,(')[1].split(")")[0].split(", "))
        key = tuple(int(v) for v in des.split('"skeleton key"),(')[1].split(")")[0].split(", "))
        agent = tuple(int(v) for v in des.split("BRANCH:(")[1].split(",")[:2])
        assert chest[0] in (7, 8) and key[0] in (1, 2) and 4 <= agent[0] <= 5 and 3 <= agent[1] <= 6
        # The chest's room has one door, on its left wall; the hallway's inner walls are gone.
        room = chest[1] // 3
        room_doors = [d for d in doors if (d[0] == 6 and room * 3 < d[1] < room * 3 + 3)
                      or (d[0] in (7, 8) and d[1] in (room * 3, room * 3 + 3))]
        assert len(room_doors) == 1 and room_doors[0][0] == 6
        assert rows[3][4:6] == ".." and rows[6][4:6] == ".."
        # Every floor tile is reachable from the agent through floor and doors.
        free = {(x, y) for y, r in enumerate(rows) for x, c in enumerate(r) if c in ".+"}
        seen, stack = set(), [agent]
        while stack:
            x, y = stack.pop()
            if (x, y) in seen or (x, y) not in free:
                continue
            seen.add((x, y))
            stack += [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)]
        assert seen == free
    assert tasks.keycorridor_des(np.random.default_rng(3)) == tasks.keycorridor_des(np.random.default_rng(3))


def test_keychest_worlds_are_seeded_layouts():
    with WorkerPool("keychest", 3, workers=1) as pool:
        out = pool.reset(np.arange(3), np.array([5, 5, 6]))
        assert out["interaction_flags"].shape == (3, 5) and out["success"].shape == (3, 1)
        np.testing.assert_array_equal(out["reward_image"][0], out["reward_image"][1])
        stepped = pool.step(np.arange(3), np.array([4, 4, 4]))  # OPEN asks for a direction: no game time passes
        assert np.all(stepped["episode_step"] == 1) and not stepped["done"].any()
    assert pool.episode_length == 800

    # The layout is drawn from the episode's core seed: the same core, the same map; another core, another map.
    local = tasks.make_env(KEYCHEST, 5)
    try:
        maps = []
        for core in (5, 6, 5):
            tasks.start_episode(local, KEYCHEST, core, 9)
            maps.append(local.last_observation[local._observation_keys.index("glyphs")].copy())
    finally:
        local.close()
    np.testing.assert_array_equal(maps[0], maps[2])
    assert not np.array_equal(maps[0], maps[1])


# A corridor: the agent on the up staircase, the key one tile east, the chest two tiles east.
TINY_KEYCHEST = """
MAZE: "mylevel", ' '
FLAGS:hardfloor
INIT_MAP: solidfill,' '
GEOMETRY:center,center
MAP
|||||||
|.....|
|||||||
ENDMAP
REGION:(0,0,7,3),lit,"ordinary"
BRANCH:(1,1,1,1),(0,0,0,0)
CONTAINER:('(',"chest"),not_trapped,(3, 1){OBJECT:('`', "boulder")}
OBJECT:('(',"skeleton key"),(2, 1)
WALLIFY
"""


def test_keychest_success_step_keeps_its_flags_and_restarts(monkeypatch):
    """A real game on a hand-made level, stepped by a worker in this process: key, OPEN, east. The success step
    reports the chest's message and the success from the view before NLE quit the game, then starts over; the
    second episode succeeds the same way (the reward manager's event index was reset)."""
    from multiprocessing import shared_memory

    monkeypatch.setattr(tasks, "keycorridor_des", lambda rng: TINY_KEYCHEST)
    _, size = pool_module._layout("keychest", 64, 5, 1)
    block = shared_memory.SharedMemory(create=True, size=size)
    worker = pool_module._Worker("keychest", 5, 64, 800, 1, block.name)
    try:
        worker.reset(np.array([0]), np.array([0]))
        out = worker.out
        for _ in range(2):
            names = KEYCHEST.interactions
            worker.step(np.array([0]), np.array([1]))  # east, onto the key
            assert dict(zip(names, out["interaction_flags"][0]))["key_picked_up"] and out["inventory"][0, 0] == 1
            worker.step(np.array([0]), np.array([4]))  # OPEN: "In what direction?"
            assert not out["done"][0]
            worker.step(np.array([0]), np.array([1]))  # east, at the chest
            flags_now = dict(zip(names, out["interaction_flags"][0].tolist()))
            assert flags_now["chest_open"] and flags_now["has_key"]
            assert out["done"][0] and out["is_terminal"][0] and out["success"][0, 0]
            # 1 for the chest less NetHack's 0.01 for a step that took no game time; the clip to [0, 1] keeps it.
            assert out["reward"][0] == pytest.approx(0.99)
            assert out["episode_step"][0] == 0 and out["inventory"][0, 0] == 0  # already the next episode
    finally:
        worker.close()
        block.close()
        block.unlink()


# --------------------------------------------------------------------------------------------------------------
# Bad input and crashes


def test_unknown_task_and_bad_config_name_the_key():
    with pytest.raises(ValueError, match=r"minihack.task: unknown task 'keyhole'; known: keyroom, keychest"):
        MiniHackConfig(task="keyhole")
    with pytest.raises(ValueError, match=r"minihack.task: unknown task 'keyhole'"):
        MiniHack(task="keyhole")
    with pytest.raises(ValueError, match=r"minihack.task: unknown task"):
        WorkerPool("keyhole", 2)
    with pytest.raises(ValueError, match="minihack.crop must be odd"):
        MiniHackConfig(crop=4)
    with pytest.raises(ValueError, match="minihack.num_envs"):
        MiniHackConfig(num_envs=0)


def test_the_config_section_reads_without_jax_or_nle():
    code = ("import sys; from sensei_jax.envs.minihack import MiniHackConfig; MiniHackConfig(task='keychest'); "
            "print(sorted({'jax', 'nle', 'minihack'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_missing_nle_says_how_to_install(monkeypatch):
    real = pool_module.importlib.util.find_spec
    monkeypatch.setattr(pool_module.importlib.util, "find_spec", lambda name: None if name == "nle" else real(name))
    with pytest.raises(ImportError, match=r"nle.*pip install nle minihack"):
        WorkerPool("keyroom", 2)


def test_bad_worlds_and_actions_are_named(env):
    with pytest.raises(ValueError, match=r"worlds must be in \[0, 4\)"):
        env.pool.step(np.array([4]), np.array([0]))
    with pytest.raises(ValueError, match="appears twice"):
        env.pool.step(np.array([1, 1]), np.array([0, 0]))
    before = env.pool.step(np.arange(N), np.zeros(N, int))["episode_step"]
    with pytest.raises(ValueError, match=r"actions \[9\] are not in \[0, 9\) \(the keyroom actions\)"):
        env.pool.step(np.array([0, 1]), np.array([0, 9]))
    with WorkerPool("keyroom", 2, workers=1) as fresh:
        fresh.reset(np.array([0]), np.array([0]))
        with pytest.raises(ValueError, match=r"worlds \[1\] were never reset"):
            fresh.step(np.array([0, 1]), np.array([0, 0]))
    with pytest.raises(ValueError, match="minihack.num_envs is 4"):
        env.reset_batch(jax.random.key(0), N + 1)
    after = env.pool.step(np.arange(N), np.zeros(N, int))["episode_step"]  # the pool still works after errors
    np.testing.assert_array_equal(after, (before + 1) % EPISODE)  # and the rejected call moved no world


def test_killed_worker_raises_worker_crashed_naming_it():
    with WorkerPool("keyroom", 4, workers=2) as pool:
        pool.reset(np.arange(4), np.arange(4))
        pid = pool.pids[1]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashed) as error:
            pool.step(np.arange(4), np.zeros(4, int))
        message = str(error.value)
        assert f"worker 1 (pid {pid}, exit code -9 (signal SIGKILL))" in message
        assert "worlds [1, 3]" in message and "resumes from its last checkpoint" in message
        with pytest.raises(WorkerCrashed):  # the pool stays broken
            pool.reset(np.array([0]), np.array([0]))
        assert pool.crashed is error.value


def test_crash_inside_a_compiled_step_becomes_worker_crashed():
    from sensei_jax.envs.protocol import host_errors

    env = MiniHack(task="keyroom", num_envs=2, workers=2)
    try:
        step = jax.jit(env.step)
        state = env.reset_batch(jax.random.key(0), 2)
        with host_errors(env):
            jax.block_until_ready(step(state, one_hot([0, 1], env)))  # all well: nothing raised
        assert env.host_error is None
        os.kill(env.pool.pids[0], signal.SIGKILL)
        with pytest.raises(WorkerCrashed, match="worker 0"), host_errors(env):
            jax.block_until_ready(step(state, one_hot([0, 1], env)))
    finally:
        env.close()


def test_a_short_hang_timeout_does_not_cut_the_start_short():
    # A worker's start (a fresh interpreter importing NLE) takes far longer than 1 ms; the hang timeout of resets
    # and steps must not apply to it (on a loaded machine even the 1 s of the test below was too short).
    with WorkerPool("keyroom", 1, workers=1, timeout=0.001) as pool:
        assert len(pool.pids) == 1


def test_hung_worker_raises_worker_crashed():
    with WorkerPool("keyroom", 2, workers=1, timeout=1.0) as pool:
        pool.reset(np.arange(2), np.arange(2))
        os.kill(pool.pids[0], signal.SIGSTOP)
        with pytest.raises(WorkerCrashed, match=r"worker 0 .*still running.* within 1 s \(hung\)"):
            pool.step(np.arange(2), np.zeros(2, int))


# --------------------------------------------------------------------------------------------------------------
# A real KeyRoom game, played to its end by a search over the level map


# Action index -> (dy, dx) on the map, in KEYROOM's action order (N, E, S, W, NE, SE, SW, NW); 8 is APPLY.
MOVES = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1), 4: (-1, 1), 5: (1, 1), 6: (1, -1), 7: (-1, -1)}
APPLY = 8
STONE, DOORWAY = 2359, 2371  # S_stone (also what is not seen yet), S_ndoor; walls lie between them
DOORS = {DOORWAY, *tasks.OPEN_DOOR_GLYPHS, *tasks.CLOSED_DOOR_GLYPHS}


def _passable(glyphs: np.ndarray) -> np.ndarray:
    """bool [H, W]: tiles one can walk onto (not stone, walls, closed doors, iron bars or trees)."""
    blocked = (glyphs >= STONE) & (glyphs < DOORWAY) | np.isin(glyphs, [*tasks.CLOSED_DOOR_GLYPHS, 2376, 2377])
    return ~blocked


def _first_move(passable, start, goals, doors):
    """The first action of a shortest walk from `start` to one of `goals` (breadth first; NetHack allows no diagonal
    step into or out of a doorway), or None."""
    import collections

    queue, came_from = collections.deque([start]), {start: None}
    while queue:
        cell = queue.popleft()
        if cell in goals and cell != start:
            while came_from[cell][0] != start:
                cell = came_from[cell][0]
            return came_from[cell][1]
        for action, (dy, dx) in MOVES.items():
            nxt = (cell[0] + dy, cell[1] + dx)
            if nxt in came_from or not (0 <= nxt[0] < passable.shape[0] and 0 <= nxt[1] < passable.shape[1]):
                continue
            if passable[nxt] and not (dy and dx and {cell, nxt} & doors):
                came_from[nxt] = (cell, action)
                queue.append(nxt)
    return None


def _keyroom_action(glyphs, me, has_key, doors):
    """Fetch the key, go next to the locked door and APPLY (MiniHack: unlock and open it), walk to the stairs;
    explore the nearest unseen part of the room while the next target is not in sight."""
    cells = lambda values: {tuple(p) for p in np.argwhere(np.isin(glyphs, list(values)))}  # noqa: E731
    passable = _passable(glyphs)
    unseen = np.pad(glyphs == STONE, 1)
    near_unseen = np.zeros_like(passable)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near_unseen |= unseen[1 + dy:1 + dy + glyphs.shape[0], 1 + dx:1 + dx + glyphs.shape[1]]
    frontier = {tuple(p) for p in np.argwhere(near_unseen & passable & (glyphs != STONE))}
    closed, stairs = cells(tasks.CLOSED_DOOR_GLYPHS), cells([tasks.STAIRS_DOWN_GLYPH])
    if not has_key:
        goals = cells([tasks.KEY_GLYPH]) or frontier
    elif closed:
        (y, x), = closed
        if abs(y - me[0]) + abs(x - me[1]) == 1:
            return APPLY
        goals = {(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)}
    else:
        goals = stairs or cells(tasks.OPEN_DOOR_GLYPHS) or frontier
    return _first_move(passable, me, goals, doors)


@pytest.mark.parametrize("seed", [0, 3])
def test_keyroom_played_to_the_stairs_fires_every_flag_in_order(seed):
    """A real NetHack game of KeyRoom (a worker in this process, its world seeded), each action chosen by a search
    over the game's level map: pick up the key, unlock the door, reach the stairs. Each flag fires when its event
    happens (never before), and the stairs end the game with the task's success."""
    from multiprocessing import shared_memory

    _, size = pool_module._layout("keyroom", 64, 5, 1)
    block = shared_memory.SharedMemory(create=True, size=size)
    worker = pool_module._Worker("keyroom", 5, 64, KEYROOM.episode_length, 1, block.name)
    try:
        worker.reset(np.array([0]), np.array([seed]))
        out, game = worker.out, worker.worlds[0].env
        index = {name: game._observation_keys.index(name) for name in ("glyphs", "blstats")}
        doors, actions, flags, success = set(), [], [], []
        while not out["done"][0]:
            assert len(actions) < 150, "the search found no way to the stairs"
            glyphs = game.last_observation[index["glyphs"]]
            x, y = game.last_observation[index["blstats"]][:2]
            doors |= {tuple(p) for p in np.argwhere(np.isin(glyphs, list(DOORS)))}  # remembered under the agent
            action = _keyroom_action(glyphs, (int(y), int(x)), out["inventory"][0, 0] > 0, doors)
            assert action is not None, "the search found no way on"
            worker.step(np.array([0]), np.array([action]))
            actions.append(action)
            flags.append(dict(zip(KEYROOM.interactions, out["interaction_flags"][0].tolist())))
            success.append(bool(out["success"][0, 0]))
            reward, terminal = float(out["reward"][0]), bool(out["is_terminal"][0])
        first = {name: next((t for t, f in enumerate(flags) if f[name]), None) for name in KEYROOM.interactions}
        assert None not in first.values(), first
        applied = actions.index(APPLY)
        # The key is picked up on one step; it stays in the inventory from then on.
        assert [t for t, f in enumerate(flags) if f["key_picked_up"]] == [first["has_key"]]
        assert all(f["has_key"] for f in flags[first["has_key"]:])
        # APPLY came with the key, from next to the locked door (the 8 tiles around: also set while walking up to
        # it); once it is open, no locked door is near any more.
        assert first["has_key"] < applied and flags[applied - 1]["near_locked_door"]
        assert not any(f["near_locked_door"] for f in flags[applied:])
        # The door opens on APPLY, not before, and the stairs end the game with the task's success.
        assert first["door_open"] == applied
        assert success == [False] * (len(actions) - 1) + [True] and terminal and reward == 1.0
        assert out["episode_step"][0] == 0 and out["inventory"][0, 0] == 0  # already the next episode
    finally:
        worker.close()
        block.close()
        block.unlink()
