"""Plan2Explore ensemble and the go/explore switch, on tiny sizes."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sensei_jax import config as config_lib
from sensei_jax.dreamer.actor_critic import WeightContext
from sensei_jax.explore import plan2explore
from sensei_jax.explore.config import ExploreConfig
from sensei_jax.explore.sensei import GoExploreSwitch, clip_semantic

CELLS = 16


def grid_transitions(positions: np.ndarray, actions: np.ndarray):
    """A 1-D grid walker: state one-hot over CELLS cells, action in {-1, +1} moves one cell (clipped)."""
    nxt = np.clip(positions + actions, 0, CELLS - 1)
    eye = np.eye(CELLS, dtype=np.float32)
    deter = np.stack([positions / CELLS, np.ones_like(positions, dtype=np.float64)], -1).astype(np.float32)
    return deter, eye[positions], actions[:, None].astype(np.float32), eye[nxt]


def test_ensemble_shapes_and_member_axis():
    model = plan2explore.DisagreementEnsemble(4, 6, 2, members=5, units=8, layers=2, rngs=nnx.Rngs(0))
    x = jnp.ones((3, 7, 4)), jnp.ones((3, 7, 6)), jnp.ones((3, 7, 2))
    assert model(*x).shape == (5, 3, 7, 6)
    assert model.disagreement(*x).shape == (3, 7)
    assert model.out.kernel[...].shape == (5, 8, 6)  # stacked member weights, no per-member modules
    # Members differ only by initialization: different predictions on the same input.
    predictions = model(*x)
    assert float(jnp.abs(predictions[0] - predictions[1]).max()) > 1e-3


def test_disagreement_higher_on_unseen_transitions():
    cfg = ExploreConfig(ensemble_size=8, ensemble_units=64, ensemble_layers=2, ensemble_lr=3e-3)
    model, optimizer = plan2explore.create(cfg, deter_size=2, stoch_size=CELLS, action_size=1,
                                           key=jax.random.key(0))
    rng = np.random.default_rng(0)
    # Training data only visits the left half of the grid.
    seen_pos = rng.integers(0, CELLS // 2, 512)
    seen_act = rng.choice([-1, 1], 512)
    seen = [jnp.asarray(a) for a in grid_transitions(seen_pos, seen_act)]
    unseen_pos = rng.integers(CELLS // 2 + 1, CELLS, 256)
    unseen = [jnp.asarray(a) for a in grid_transitions(unseen_pos, rng.choice([-1, 1], 256))]

    step = nnx.jit(plan2explore.train_step)
    first = step(model, optimizer, *seen)
    for _ in range(300):
        metrics = step(model, optimizer, *seen)
    assert float(metrics["p2e/loss"]) < 0.2 * float(first["p2e/loss"])
    seen_disag = float(model.disagreement(*seen[:3]).mean())
    unseen_disag = float(model.disagreement(*unseen[:3]).mean())
    assert unseen_disag > 3 * seen_disag, (seen_disag, unseen_disag)


def test_shift_transitions_aligns_next_latent():
    deter, stoch, action = jnp.zeros((2, 5, 3)), jnp.arange(10.0).reshape(2, 5, 1), jnp.zeros((2, 5, 1))
    d, s, a, target = plan2explore.shift_transitions(deter, stoch, action)
    assert d.shape == (2, 4, 3) and a.shape == (2, 4, 1)
    np.testing.assert_array_equal(np.asarray(target - s), 1.0)


@pytest.mark.parametrize("form", ["paper", "code"])
def test_switch_picks_mode_per_state(form):
    switch = GoExploreSwitch(ExploreConfig(threshold=form, threshold_decay=0.0))  # decay 0: this batch's quantile
    # 8 imagined states; rewards and returns rise together. The top quarter (>= 0.75 quantile) must explore.
    reward = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    ret = reward * 4.0  # code form: threshold = max(1, P75 - P5) of returns = 21 - 1.4 = 19.6
    weights, state, metrics = switch.weights(switch.init(), reward, ret)
    explore = np.asarray(reward >= 5.25) if form == "paper" else np.asarray(ret >= 19.6)
    assert explore.sum() == (2 if form == "paper" else 3)
    np.testing.assert_allclose(np.asarray(weights["semantic"]), np.where(explore, 0.1, 1.0) / 1.1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(weights["disagreement"]), np.where(explore, 1.0, 0.0) / 1.1, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["sensei/explore_fraction"]), explore.mean())
    np.testing.assert_allclose(float(metrics["sensei/go_fraction"]), 1 - explore.mean())
    assert int(state["count"]) == 1


@pytest.mark.parametrize("mode_reward", ["state", "next"])
def test_switch_judges_the_step_into_an_interesting_state_by_the_state_it_starts_from(mode_reward):
    # One imagined trajectory, H = 3: s_0 boring, s_1 boring, s_2 and s_3 interesting (semantic 10 against 0).
    # Step 1 goes from s_1 into s_2. With `state` it is a go step (semantic weight 1: the semantic critic pays for
    # entering); with `next` it is already an explore step (semantic weight 0.1), which leaves the go mode no
    # credit for the crossing (the bug docs/exploration.md describes).
    switch = GoExploreSwitch(ExploreConfig(threshold="paper", threshold_decay=0.0, mode_reward=mode_reward))
    semantic = jnp.array([[0.0, 0.0, 10.0, 10.0]])  # the head at s_0..s_3, [N=1, H+1=4]
    zeros = jnp.zeros((1, 3))
    ctx = WeightContext(rewards={"semantic": semantic[:, 1:], "disagreement": zeros},
                        state_rewards={"semantic": semantic[:, :-1], "disagreement": zeros},
                        returns={"semantic": zeros, "disagreement": zeros}, values={}, return_scales={},
                        retnorm={}, scales={}, traj={})
    weights, _, metrics = switch(switch.init(), ctx)
    explore = [False, False, True] if mode_reward == "state" else [False, True, True]
    np.testing.assert_allclose(np.asarray(weights["semantic"][0]) * 1.1, np.where(explore, 0.1, 1.0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(weights["disagreement"][0]) * 1.1, np.where(explore, 1.0, 0.0),
                               rtol=1e-6)
    # The diagnostics split the states by mode.
    np.testing.assert_allclose(float(metrics["sensei/semantic_reward_go"]), 0.0)
    np.testing.assert_allclose(float(metrics["sensei/semantic_reward_explore"]), 10.0)


def test_switch_forms_disagree_where_they_should():
    # Small semantic returns: the code form's floor max(1, .) keeps every state in "go"; the paper form still
    # sends its top quantile exploring.
    reward = jnp.linspace(0.0, 0.1, 20)
    for form, expect_explore in (("paper", True), ("code", False)):
        switch = GoExploreSwitch(ExploreConfig(threshold=form, threshold_decay=0.0))
        _, _, metrics = switch.weights(switch.init(), reward, reward)
        assert (float(metrics["sensei/explore_fraction"]) > 0) == expect_explore, form


def test_switch_threshold_tracks_ema():
    switch = GoExploreSwitch(ExploreConfig(threshold="paper", threshold_decay=0.9))
    state = switch.init()
    for _ in range(3):
        _, state, _ = switch.weights(state, jnp.arange(101.0), jnp.zeros(101))
    # The debiased EMA of a constant quantile is that quantile.
    np.testing.assert_allclose(float(switch.threshold(state)), 75.0, rtol=1e-5)
    _, state, _ = switch.weights(state, jnp.arange(101.0) + 100.0, jnp.zeros(101))
    assert 75.0 < float(switch.threshold(state)) < 175.0
    # Without update the statistics are left alone, and the states are judged by the old threshold.
    weights, same, _ = switch.weights(state, jnp.array([0.0, 1e4]), jnp.zeros(2), update=False)
    assert same is state
    np.testing.assert_allclose(np.asarray(weights["disagreement"]) * 1.1, [0.0, 1.0], rtol=1e-6)
    # Jittable as the actor-critic uses it.
    jitted = jax.jit(lambda s, r: switch.weights(s, r, r))
    assert jitted(state, jnp.arange(10.0))[0]["semantic"].shape == (10,)


def test_fixed_behaviours_and_clip():
    reward = jnp.array([-500.0, 0.0, 500.0])
    np.testing.assert_array_equal(np.asarray(clip_semantic(reward, 200.0)), [-200.0, 0.0, 200.0])
    switch = GoExploreSwitch(ExploreConfig(behaviour="p2x"))
    weights, _, metrics = switch.weights(switch.init(), reward, reward)
    assert set(weights) == {"disagreement"} and switch.sources == ("disagreement",)
    np.testing.assert_array_equal(np.asarray(weights["disagreement"]), 1.0)
    assert float(metrics["sensei/explore_fraction"]) == 1.0
    switch = GoExploreSwitch(ExploreConfig(behaviour="motif"))
    assert switch.sources == ("semantic",) and switch.denominator == 1.0


def test_explore_config_section_and_validation():
    cfg = config_lib.load(None, ["--explore.steps", "1000", "--explore.behaviour", "p2x"])
    assert cfg.explore.steps == 1000 and cfg.explore.sources == ("disagreement",)
    with pytest.raises(config_lib.ConfigError, match="quantile"):
        config_lib.load(None, ["--explore.quantile", "1.5"])
    with pytest.raises(config_lib.ConfigError, match="behaviour"):
        config_lib.load(None, ["--explore.behaviour", "rnd"])
    assert ExploreConfig().resolved_weights["explore"] == {"semantic": 0.1, "disagreement": 1.0}
    # A dotted override changes one weight of a file's table and keeps the rest.
    keyroom = config_lib.load(config_lib.CONFIG_DIR / "minihack_keyroom_sensei.yaml",
                              ["--explore.weights.go.disagreement", "0.05"])
    assert keyroom.explore.weights == {"go": {"semantic": 1.0, "disagreement": 0.05},
                                       "explore": {"semantic": 0.3, "disagreement": 1.0}}
    # A preset's label over a table of another shape is refused; null gives the preset back.
    with pytest.raises(config_lib.ConfigError, match="'p2x' is a preset of explore: disagreement"):
        config_lib.load(config_lib.CONFIG_DIR / "minihack_keyroom_sensei.yaml", ["--explore.behaviour", "p2x"])
    p2x = config_lib.load(config_lib.CONFIG_DIR / "minihack_keyroom_p2x.yaml")
    assert p2x.explore.weights is None and p2x.explore.sources == ("disagreement",)


@pytest.mark.parametrize(("old", "new"), [
    ("batch_size", "train.batch_size"), ("batch_length", "train.batch_length"), ("train_ratio", "train.train_ratio"),
    ("replay_capacity", "train.replay_capacity"), ("prefill", "train.train_start and train.random_steps"),
    ("collect_chunk", "train.collect_steps"), ("log_every", "train.log_every"),
    ("checkpoint_every", "train.save_every")])
def test_the_explore_schedule_keys_moved_to_the_train_section(old, new):
    with pytest.raises(config_lib.ConfigError, match=rf"'explore\.{old}' was removed: it moved to {re.escape(new)}"):
        config_lib.load(None, [f"--explore.{old}", "8"])


def test_exploration_runs_on_the_train_sections_schedule():
    """`explore` reads the schedule keys `train` reads: none of them is left at a default of its own."""
    from sensei_jax.dreamer.train_config import SCHEDULE_KEYS
    from sensei_jax.explore.explorer import train_config

    overrides = {"train": {"batch_size": 3, "batch_length": 5, "train_ratio": 7.0, "replay_capacity": 4096,
                           "replay_context": 0, "replay_recency": 0.5, "train_start": 11, "random_steps": 13,
                           "collect_steps": 17, "log_every": 19, "save_every": 23, "steps": 99}}
    cfg = config_lib.load(None, overrides)
    loop = train_config(cfg.explore, 4, cfg.train)
    assert {k: getattr(loop, k) for k in SCHEDULE_KEYS} == {k: getattr(cfg.train, k) for k in SCHEDULE_KEYS}
    # What exploring sets itself: its budget and worlds; a replay of at least one window per world.
    assert (loop.steps, loop.num_envs, loop.store_final_obs) == (cfg.explore.steps, 4, False)
    assert train_config(cfg.explore, 1024, cfg.train).replay_capacity == 1024 * 5
    # A replay too small for the train command's worlds still loads (an exploration sizes its own), and the train
    # command refuses it, naming the keys.
    small = config_lib.load(None, {"train": {"replay_capacity": 64, "num_envs": 16, "batch_length": 16}})
    with pytest.raises(ValueError, match=r"train.replay_capacity 64 gives 4 steps per env over train.num_envs 16"):
        small.train.check_replay()
    cfg.train.check_replay()


def test_code_switch_threshold_is_the_undebiased_ema_of_the_return_quantiles():
    # The reference code's form: threshold = max(1, EMA(P75) - EMA(P5)) of the semantic lambda-returns, the EMAs
    # at decay 0.99 starting from zero and not debiased, so the floor holds for the first updates.
    switch = GoExploreSwitch(ExploreConfig(threshold="code", threshold_decay=0.99))
    rng = np.random.default_rng(0)
    state, high, low = switch.init(), 0.0, 0.0
    thresholds = []
    for step in range(8):
        returns = rng.uniform(0.0, 50.0, (4, 6)).astype(np.float32) * (1 + step)  # [N, H]
        returns[0] = rng.uniform(0.0, 2.0, 6)  # one trajectory of small returns, near the threshold
        rewards = -returns  # the code form compares returns, not rewards
        zeros = jnp.zeros_like(returns)
        ctx = WeightContext(rewards={"semantic": jnp.asarray(rewards), "disagreement": zeros},
                            state_rewards={"semantic": jnp.asarray(rewards), "disagreement": zeros},
                            returns={"semantic": jnp.asarray(returns), "disagreement": zeros}, values={},
                            return_scales={}, retnorm={}, scales={}, traj={})
        weights, state, metrics = switch(state, ctx)
        high = 0.99 * high + 0.01 * np.quantile(returns.astype(np.float64), 0.75)
        low = 0.99 * low + 0.01 * np.quantile(returns.astype(np.float64), 0.05)
        threshold = max(1.0, high - low)
        thresholds.append(threshold)
        np.testing.assert_allclose(float(switch.threshold(state)), threshold, rtol=1e-5)
        np.testing.assert_allclose(float(metrics["sensei/threshold"]), threshold, rtol=1e-5)
        explore = returns >= threshold
        np.testing.assert_allclose(np.asarray(weights["disagreement"]) * 1.1, explore.astype(np.float32), rtol=1e-6)
        assert 0 < explore.sum() < explore.size  # some states go, some explore
        assert int(state["count"]) == step + 1
    # Both regimes occurred: the floor at first, the EMA difference later.
    assert thresholds[0] == 1.0 and thresholds[-1] > 2.0


def test_replay_loss_drops_transitions_into_a_new_episode():
    # Replay posteriors [B=2, T=6]; sequence 0 starts a new episode at step 5 and sequence 1 at step 2. The
    # transitions 4 -> 5 of sequence 0 and 1 -> 2 of sequence 1 cross an episode boundary and must not count.
    model = plan2explore.DisagreementEnsemble(3, 8, 2, members=3, units=8, layers=1, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    batch_size, length = 2, 6
    outs = {"deter": rng.normal(size=(batch_size, length, 3)).astype(np.float32),
            "stoch": np.eye(4, dtype=np.float32)[rng.integers(0, 4, (batch_size, length, 2))],  # [B, T, 2, 4]
            "action": rng.uniform(-1, 1, (batch_size, length, 2)).astype(np.float32)}
    is_first = np.zeros((batch_size, length), bool)
    is_first[:, 0] = True
    is_first[0, 5] = is_first[1, 2] = True
    loss_fn = lambda o, first: plan2explore.replay_loss(model, {k: jnp.asarray(v) for k, v in o.items()},
                                                        {"is_first": jnp.asarray(first)}, jax.random.key(0))[0]
    loss = float(loss_fn(outs, is_first))

    # It is the loss of the kept transitions alone, averaged over them.
    stoch = outs["stoch"].reshape(batch_size, length, -1)
    keep = ~is_first[:, 1:]
    kept = [x[keep] for x in (outs["deter"][:, :-1], stoch[:, :-1], outs["action"][:, :-1], stoch[:, 1:])]
    expected, _ = plan2explore.ensemble_loss(model, *map(jnp.asarray, kept))
    np.testing.assert_allclose(loss, float(expected), rtol=1e-6)

    # Garbage in everything the crossing transition 4 -> 5 of sequence 0 uses (its inputs at step 4 and its
    # target at step 5, which no kept transition uses) leaves the loss unchanged ...
    garbage = {k: v.copy() for k, v in outs.items()}
    garbage["deter"][0, 4] = 1e3
    garbage["action"][0, 4] = -1e3
    garbage["stoch"][0, 5] = 1e3
    np.testing.assert_allclose(float(loss_fn(garbage, is_first)), loss, rtol=1e-6)
    # ... and changes it where that step is no boundary (so the garbage would have counted).
    no_boundary = is_first.copy()
    no_boundary[0, 5] = False
    assert float(loss_fn(garbage, no_boundary)) > 100 * float(loss_fn(outs, no_boundary))
