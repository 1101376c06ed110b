"""Replay buffer (ring of per-step arrays, windows sampled inside jit) and the PointReach toy env."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sensei_jax.dreamer.replay import Replay
from sensei_jax.envs.toy import PointReach

STREAMS, CAPACITY, LENGTH = 3, 30, 4  # 10 steps per stream


def _filled_replay(steps: int, recency: float = 0.0, batch: int = 512):
    replay = Replay({"t": jax.ShapeDtypeStruct((), jnp.int32), "x": jax.ShapeDtypeStruct((2,), jnp.float32)},
                    num_streams=STREAMS, capacity=CAPACITY, length=LENGTH, batch_size=batch, recency=recency)
    state = replay.init()
    add = jax.jit(replay.add)
    for t in range(steps):
        # value = 1000 * stream + t identifies every stored step
        state = add(state, {"t": 1000 * jnp.arange(STREAMS) + t, "x": jnp.full((STREAMS, 2), t, jnp.float32)})
    return replay, state


def test_windows_are_consecutive_steps_of_one_stream_after_wrap_around():
    replay, state = _filled_replay(25)  # 25 steps into a ring of 10: steps 15..24 remain
    batch, (stream, slots) = jax.jit(replay.sample)(state, jax.random.key(0))
    t = np.asarray(batch["t"])
    assert t.shape == (512, LENGTH) and batch["x"].shape == (512, LENGTH, 2)
    np.testing.assert_array_equal(np.diff(t, axis=1), 1)  # consecutive, never across the write pointer
    assert (t // 1000 == np.asarray(stream)[:, None]).all()
    starts = t[:, 0] % 1000
    assert starts.min() == 15 and starts.max() == 24 - LENGTH + 1  # every valid window, nothing evicted
    assert len(np.unique(starts)) == 10 - LENGTH + 1 and len(np.unique(np.asarray(stream))) == STREAMS
    np.testing.assert_array_equal(np.asarray(batch["x"])[..., 0], t % 1000)


def test_partially_filled_buffer_samples_only_written_steps():
    replay, state = _filled_replay(6)
    assert bool(replay.can_sample(state))
    batch, _ = replay.sample(state, jax.random.key(1))
    starts = np.asarray(batch["t"])[:, 0] % 1000
    assert set(starts.tolist()) == {0, 1, 2}


def test_recency_mix_prefers_recent_windows():
    _, state = _filled_replay(25)
    uniform = Replay(_filled_replay(1)[0].specs, STREAMS, CAPACITY, LENGTH, 4096, recency=0.0)
    recent = Replay(uniform.specs, STREAMS, CAPACITY, LENGTH, 4096, recency=1.0)
    u = np.asarray(uniform.sample(state, jax.random.key(2))[0]["t"])[:, 0] % 1000
    r = np.asarray(recent.sample(state, jax.random.key(2))[0]["t"])[:, 0] % 1000
    assert r.mean() > u.mean() + 1.0
    assert np.mean(r == 21) > 0.3 and np.mean(u == 21) < 0.25  # the newest window is the most likely


def test_update_writes_back_at_sampled_indices():
    replay, state = _filled_replay(12)
    batch, indices = replay.sample(state, jax.random.key(3), batch_size=2)
    state = replay.update(state, indices, {"x": -jnp.ones((2, LENGTH, 2))})
    stream, slots = map(np.asarray, indices)
    x = np.asarray(state.data["x"])
    assert (x[stream[:, None], slots] == -1).all()
    written = {(int(b), int(s)) for b, row in zip(stream, slots) for s in row}
    assert (x == -1).sum() == 2 * len(written)  # nothing else was touched


def test_bad_steps_and_sizes_are_named():
    replay, state = _filled_replay(1)
    with pytest.raises(KeyError, match="'x'"):
        replay.add(state, {"t": jnp.zeros(STREAMS, jnp.int32)})
    with pytest.raises(ValueError, match="replay key 'x'"):
        replay.add(state, {"t": jnp.zeros(STREAMS, jnp.int32), "x": jnp.zeros((STREAMS, 3))})
    with pytest.raises(ValueError, match="fewer than the sequence length"):
        Replay(replay.specs, num_streams=4, capacity=8, length=4, batch_size=2)


def test_sizing_holds_each_image_once():
    # SENSEI scale: 1M steps of 64x64x3 images in 16 streams: one byte per pixel, no second copy.
    specs = {"image": jax.ShapeDtypeStruct((64, 64, 3), jnp.uint8)}
    replay = Replay(specs, num_streams=16, capacity=1_000_000, length=65, batch_size=16)
    assert replay.nbytes() == 1_000_000 * 64 * 64 * 3


def test_point_reach_env_api_and_reward():
    env = PointReach(image_size=16, episode_length=4, random_target=False, fixed_target=(0.5, 0.5))
    state = jax.jit(env.reset_batch, static_argnums=1)(jax.random.key(0), 3)
    assert state.obs["image"].shape == (3, 16, 16, 3) and state.obs["image"].dtype == jnp.uint8
    assert state.obs["position"].shape == (3, 2) and not state.done.any()
    step = jax.jit(env.step)
    toward = jnp.sign(state.target - state.position)
    closer, away = step(state, toward), step(state, -toward)
    assert (closer.reward > away.reward).all()
    for _ in range(3):
        closer = step(closer, toward)
    assert closer.done.all() and (closer.info["episode_step"] == 4).all()
    # the image shows the agent (red channel) where the position is
    image = np.asarray(closer.obs["image"][0]).astype(float)
    row, col = np.unravel_index(image[..., 0].argmax(), image.shape[:2])
    x, y = (col + 0.5) / 16 * 2 - 1, 1 - (row + 0.5) / 16 * 2
    np.testing.assert_allclose([x, y], np.asarray(closer.position[0]), atol=0.15)
