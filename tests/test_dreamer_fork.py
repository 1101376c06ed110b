"""The 2023 DreamerV3 forms SENSEI's fork trains with, each an option of the `dreamer`/`train` sections, checked at
tiny size against what it must compute: the dense GRU core, the learned initial state, windows that start from it,
the backprop actor, discounted imagination weights, the continuation's mode and one optimizer per critic.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sensei_jax.dreamer.actor_critic import RewardSource, imagination_weight
from sensei_jax.dreamer.agent import Agent
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.loop import Trainer
from sensei_jax.dreamer.rssm import RSSM
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.envs.toy import PointReach

B, T, A = 3, 6, 2
OBS = {"proprio": ((4,), np.float32)}


def _batch(rng):
    return {"proprio": rng.normal(size=(B, T, 4)).astype(np.float32),
            "action": rng.uniform(-1, 1, (B, T, A)).astype(np.float32),
            "reward": rng.normal(size=(B, T)).astype(np.float32),
            "is_first": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool)}


def _one_hot_latent(rng, size, n):
    stoch = np.eye(size.classes, dtype=np.float32)[rng.integers(0, size.classes, (n, size.stoch))]
    return {"deter": jnp.asarray(rng.normal(size=(n, size.deter)), jnp.float32), "stoch": jnp.asarray(stoch)}


# ------------------------------------------------------------------------------------------------------------------
# Sequence model.


def test_dense_gru_core_is_one_layernormed_linear_over_deter_and_input():
    cfg = DreamerConfig.tiny(rssm_core="dense", norm="layer", prior_layers=1)
    size = cfg.size()
    rssm = RSSM(cfg, A, 10, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    latent = _one_hot_latent(rng, size, B)
    action = jnp.asarray(rng.uniform(-3, 3, (B, A)), jnp.float32)
    got = rssm.core(latent, action)

    clipped = action / jnp.maximum(1.0, jnp.abs(action))
    x = np.asarray(rssm.in_dense(jnp.concatenate([latent["stoch"].reshape(B, -1), clipped], -1)))
    z = np.concatenate([np.asarray(latent["deter"]), x], -1) @ np.asarray(rssm.gru_gates.kernel[...])
    z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-3)
    z = z * np.asarray(rssm.gru_norm.scale[...]) + np.asarray(rssm.gru_norm.shift[...])
    reset, cand, update = np.split(z, 3, -1)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    cand = np.tanh(sigmoid(reset) * cand)
    update = sigmoid(update - 1.0)
    expected = update * cand + (1 - update) * np.asarray(latent["deter"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert rssm.gru_gates.bias is None and len(rssm.prior_mlp.layers) == 1
    # The block core is a different network: the option is not a relabelling.
    block = RSSM(DreamerConfig.tiny(norm="layer"), A, 10, rngs=nnx.Rngs(0))
    assert len(block.prior_mlp.layers) == 2 and not hasattr(block, "in_dense")


def test_learned_initial_state_replaces_the_carry_on_is_first():
    cfg = DreamerConfig.tiny(rssm_core="dense", initial_state="learned")
    size = cfg.size()
    rssm = RSSM(cfg, A, 10, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    raw = rng.normal(size=size.deter).astype(np.float32)
    rssm.initial_deter[...] = jnp.asarray(raw)
    start = rssm.initial(B)
    np.testing.assert_allclose(start["deter"], np.broadcast_to(np.tanh(raw), (B, size.deter)), rtol=1e-6)
    mode = np.argmax(np.asarray(rssm.prior_logits(jnp.tanh(jnp.asarray(raw))[None])), -1)
    np.testing.assert_array_equal(start["stoch"], np.broadcast_to(np.eye(size.classes)[mode], start["stoch"].shape))

    embeds = jnp.asarray(rng.normal(size=(B, T, 10)), jnp.float32)
    acts = jnp.asarray(rng.uniform(-1, 1, (B, T, A)), jnp.float32)
    first = jnp.zeros((B, T), bool).at[:, 0].set(True)
    keys = jax.random.split(jax.random.key(0), T)
    garbage = _one_hot_latent(rng, size, B)
    _, reset = rssm.observe(garbage, acts, embeds, first, keys)
    _, started = rssm.observe(start, acts.at[:, 0].set(0.0), embeds, first.at[:, 0].set(False), keys)
    _, carried = rssm.observe(garbage, acts, embeds, first.at[:, 0].set(False), keys)
    np.testing.assert_allclose(reset["deter"], started["deter"], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(reset["deter"] - carried["deter"]).max()) > 1e-3


def test_replay_without_context_stores_no_latents():
    env = PointReach(image_size=16, episode_length=8)
    agent = Agent(DreamerConfig.tiny(), {"position": ((2,), np.float32), "target": ((2,), np.float32)},
                  env.action_size)
    base = TrainConfig(env="point_reach", steps=64, num_envs=2, batch_size=2, batch_length=4, replay_capacity=64,
                       obs_keys=("position", "target"), progress=False)
    with_context = Trainer(base, agent, env, "unused")
    without = Trainer(dataclasses.replace(base, replay_context=0), agent, env, "unused")
    assert {"deter", "stoch"} <= set(with_context.replay.specs)
    assert not {"deter", "stoch"} & set(without.replay.specs)
    assert without.replay.length == 4 and with_context.replay.length == 5


# ------------------------------------------------------------------------------------------------------------------
# Actor-critic.


def test_imagination_weights_by_hand():
    cont = jnp.array([[1.0, 1.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(imagination_weight(cont, 0.9, "cont"), [[1, 1, 0.5], [0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(imagination_weight(cont, 0.9, "discounted"), [[1, 0.9, 0.405], [0, 0, 0]],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="imag_weight"):
        imagination_weight(cont, 0.9, "nope")


@pytest.fixture(scope="module")
def backprop_setup():
    """A continuous-action agent with every fork option on, and heads randomized so rewards and values depend on
    the imagined states (zero-initialized outputs would give an advantage of exactly 0)."""
    cfg = DreamerConfig.tiny(actor_grad_cont="backprop", actor_entropy=0.0, imag_horizon=3, rssm_core="dense",
                             initial_state="learned", prior_layers=1, imag_weight="discounted", imag_cont="mode",
                             critic_optimizers="separate")
    agent = Agent(cfg, OBS, A)
    state = agent.init(jax.random.key(0))
    rng = np.random.default_rng(3)

    def randomize(tree):
        tree = jax.tree.map(lambda x: x, tree)
        tree["out"]["kernel"] = jnp.asarray(rng.normal(size=tree["out"]["kernel"].shape) * 0.3, jnp.float32)
        return tree

    params = dict(state["params"])
    params["wm"] = dict(params["wm"], reward=randomize(params["wm"]["reward"]))
    params["critics"] = {k: randomize(v) for k, v in params["critics"].items()}
    state = dict(state, params=params, slow_critics=params["critics"])
    starts = _one_hot_latent(rng, cfg.size(), 8)
    is_terminal = jnp.zeros(8, bool)
    agents = {"backprop": agent, "reinforce": Agent(dataclasses.replace(cfg, actor_grad_cont="reinforce"), OBS, A)}

    def gradients(some, state):
        """d(actor loss) / d(actor params) split into the path through the imagined states (policy_params) and the
        direct path (loss_params)."""
        wm = some.world_model(state)
        p = state["params"]["actor"]

        def objective(policy_params, loss_params):
            loss, (traj, _, _) = some.actor_objective(state, state["params"], wm, {}, starts, is_terminal,
                                                      jax.random.key(4), policy_params, loss_params)
            return loss, traj["cont"]

        grads, cont = jax.grad(objective, argnums=(0, 1), has_aux=True)(p, p)
        return grads, cont

    compiled = {k: jax.jit(lambda s, a=a: gradients(a, s)) for k, a in agents.items()}
    return agent, state, lambda s, grad_from: compiled[grad_from](s)


def _norm(tree):
    return float(optax.tree.norm(tree))


def test_backprop_actor_gradient_flows_through_the_dynamics(backprop_setup):
    agent, state, gradients = backprop_setup
    (through, direct), cont = gradients(state, "backprop")
    assert _norm(through) > 1e-6
    assert _norm(direct) == 0.0  # no entropy term and no log-prob: all of the gradient comes through the model
    # Cut the action's only way into the dynamics (its columns of the GRU input projection): the gradient vanishes.
    wm = state["params"]["wm"]
    linear = wm["rssm"]["in_dense"]["linear"]
    cut = {**linear, "kernel": linear["kernel"].at[-A:].set(0.0)}
    cut_wm = dict(wm, rssm=dict(wm["rssm"], in_dense={**wm["rssm"]["in_dense"], "linear": cut}))
    cut_state = dict(state, params=dict(state["params"], wm=cut_wm))
    (through, _), _ = gradients(cut_state, "backprop")
    assert _norm(through) == 0.0
    # imag_cont: mode makes every imagined continuation 0 or 1 (the start's is 1 - is_terminal).
    assert set(np.unique(np.asarray(cont))) <= {0.0, 1.0}


def test_reinforce_has_no_path_through_the_imagined_states(backprop_setup):
    _, state, gradients = backprop_setup
    (through, direct), _ = gradients(state, "reinforce")
    assert _norm(through) == 0.0
    assert _norm(direct) > 1e-6


def test_fork_train_step_starts_windows_from_the_learned_state(backprop_setup):
    """train.replay_context 0: a window without stored context is observed from the initial state, exactly as if its
    first step were an episode start. The learned initial vector gets gradient; the actor and both critics'
    separate optimizer states train."""
    agent, state, _ = backprop_setup
    plain = _batch(np.random.default_rng(5))
    restarted = dict(plain, is_first=plain["is_first"].copy())
    restarted["is_first"][:, 0] = True
    train = jax.jit(agent.train)
    new_plain, metrics = train(state, plain, jax.random.key(6))
    new_restarted, _ = train(state, restarted, jax.random.key(6))
    for a, b in zip(jax.tree.leaves(new_plain["params"]), jax.tree.leaves(new_restarted["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(bool(np.isfinite(v)) for v in metrics.values())
    assert float(jnp.abs(new_plain["params"]["wm"]["rssm"]["initial_deter"]).max()) > 0  # started at zero
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state["params"]["actor"],
                         new_plain["params"]["actor"])
    assert max(jax.tree.leaves(moved)) > 0
    assert isinstance(new_plain["opt"]["critics"], dict) and set(new_plain["opt"]["critics"]) == {"extr"}
    # Discrete actions keep REINFORCE, as in both references.
    assert not Agent(agent.cfg, OBS, 3, discrete=True).backprop


def test_separate_critic_optimizers_clip_each_critic_on_its_own_gradient():
    """With clipping active, a shared optimizer scales critic A's update by the joint norm with critic B's gradient;
    separate optimizers make A's update independent of B's gradient."""
    sources = {"b": RewardSource(lambda traj, wm, extras: jnp.zeros(traj["cont"].shape))}
    updates = {}
    for mode in ("shared", "separate"):
        cfg = DreamerConfig.tiny(critic_optimizers=mode, ac_clip=1e-3, reward_scales={"extr": 1.0, "b": 1.0})
        agent = Agent(cfg, OBS, A, reward_sources=sources)
        state = agent.init(jax.random.key(0))
        params, opt_state = state["params"]["critics"], state["opt"]["critics"]
        assert isinstance(opt_state, dict) == (mode == "separate")
        grad_a = jax.tree.map(lambda x: jnp.full_like(x, 0.01), params["extr"])
        for scale in (0.01, 10.0):
            grads = {"extr": grad_a, "b": jax.tree.map(lambda x: jnp.full_like(x, scale), params["b"])}
            update, _ = agent.critic_updates(grads, opt_state, params)
            updates[mode, scale] = np.concatenate([np.ravel(x) for x in jax.tree.leaves(update["extr"])])
    np.testing.assert_allclose(updates["separate", 0.01], updates["separate", 10.0], rtol=1e-6)
    assert np.abs(updates["shared", 0.01]).max() > 2 * np.abs(updates["shared", 10.0]).max()
