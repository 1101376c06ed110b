"""DreamerV3 core: distributions, returns, normalizer, KL, RSSM shapes, optimizers, and the Agent contract.

One agent (tiny preset, 16x16 images plus a vector, with a registered extra reward source, extra head, extra module
and a stateful weighting) is compiled once per module and shared by the train/policy tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sensei_jax.config import Config, ConfigError, load
from sensei_jax.dreamer import distributions as D
from sensei_jax.dreamer.actor_critic import (
    RewardSource, lambda_return, retnorm_init, retnorm_scale, retnorm_update)
from sensei_jax.dreamer.agent import Agent, ExtraModule, first_nonfinite_loss
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.heads import HeadSpec
from sensei_jax.dreamer.nets import Linear
from sensei_jax.dreamer.optim import adaptive_grad_clip, make_optimizer
from sensei_jax.dreamer.rssm import RSSM, feature

B, T, A = 3, 8, 2
OBS_SPACE = {"image": ((16, 16, 3), np.uint8), "proprio": ((4,), np.float32)}


# ------------------------------------------------------------------------------------------------------------------
# Math.


def test_symlog_symexp_round_trip():
    x = jnp.array([-1e6, -123.4, -1.0, -1e-3, 0.0, 1e-3, 0.5, 7.0, 1e6], jnp.float32)
    np.testing.assert_allclose(D.symexp(D.symlog(x)), x, rtol=1e-5)
    np.testing.assert_allclose(D.symlog(jnp.array([0.0, np.e - 1, -(np.e - 1)])), [0.0, 1.0, -1.0], rtol=1e-6)


def test_twohot_round_trip_and_log_prob():
    bins = D.twohot_bins(255, 20.0)
    x = jnp.array([-5000.0, -3.3, -1e-2, 0.0, 0.37, 2.0, 42.0, 1e5], jnp.float32)

    @jax.jit
    def compute(x):
        weights = D.twohot_encode(x, bins)
        dist = D.TwoHot(jnp.log(weights + 1e-30), bins)
        flat = D.TwoHot(jnp.zeros((8, 255)), bins)
        return dict(weights=weights, mean=dist.mean(), own=dist.log_prob(x).mean(), flat=flat.log_prob(x).mean(),
                    flat_mean=flat.mean(), saturated=D.twohot_encode(jnp.array([1e30]), bins))

    out = compute(x)
    weights = out["weights"]
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    assert int(jnp.max(jnp.sum(weights > 0, -1))) <= 2
    # Expected bin equals symlog(x), so the distribution whose probabilities are the encoding predicts x back.
    np.testing.assert_allclose(np.sum(np.asarray(weights) * np.asarray(bins), -1), D.symlog(x), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out["mean"], x, rtol=1e-3, atol=1e-5)
    # Zero logits predict exactly 0; the target's own distribution has the highest log-likelihood.
    np.testing.assert_array_equal(out["flat_mean"], 0.0)
    assert float(out["own"]) > float(out["flat"])
    # Beyond the last bin the target saturates at the end bin.
    np.testing.assert_allclose(out["saturated"][0, -1], 1.0)


def test_latent_categorical_unimix_and_straight_through():
    @jax.jit
    def compute(logits):
        dist = D.LatentCategorical(logits, unimix=0.01)
        weighted = lambda lg: jnp.sum(D.LatentCategorical(lg, 0.01).sample(jax.random.key(0)) * jnp.arange(4.0))  # noqa: E731
        return jnp.exp(dist.logp), dist.sample(jax.random.key(0)), jax.grad(weighted)(jnp.zeros((1, 1, 4)))

    probs, sample, grad = compute(jnp.array([[[30.0, 0.0, 0.0, 0.0]]]))
    np.testing.assert_allclose(probs[0, 0, 1:], 0.01 / 4, rtol=1e-3)
    np.testing.assert_allclose(sample, np.eye(4)[None, :1], atol=1e-6)
    assert float(jnp.abs(grad).sum()) > 0  # the straight-through gradient reaches the logits


def test_action_distributions():
    x = jnp.array([[0.3, -0.2]])

    @jax.jit
    def compute(x):
        normal = D.BoundedNormal(jnp.array([[10.0, -10.0]]), jnp.array([[-100.0, 100.0]]), 0.1, 1.0)
        ref = jax.scipy.stats.norm.logpdf(x, normal.loc, normal.scale).sum(-1)
        cat = D.ActionCategorical(jnp.array([[0.0, 50.0, 0.0]]), unimix=0.01)
        return normal.mode(), normal.scale, normal.log_prob(x), ref, cat.mode(), jnp.exp(cat.logp)

    mode, scale, logp, ref, cat_mode, cat_probs = compute(x)
    np.testing.assert_allclose(mode, [[1.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(scale, [[0.1, 1.0]], atol=1e-6)
    np.testing.assert_allclose(logp, ref, rtol=1e-5)
    np.testing.assert_allclose(cat_mode, [[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(cat_probs.sum(-1), 1.0, rtol=1e-6)
    assert float(cat_probs[0, 0]) == pytest.approx(0.01 / 3, rel=1e-3)


def test_lambda_return_matches_hand_computation():
    rng = np.random.default_rng(0)
    reward = rng.normal(size=(2, 4)).astype(np.float32)
    discount = rng.uniform(0.5, 1.0, size=(2, 4)).astype(np.float32)
    value = rng.normal(size=(2, 5)).astype(np.float32)
    lam = 0.95
    expected = np.zeros((2, 4), np.float32)
    for n in range(2):
        ret = value[n, 4]
        for t in reversed(range(4)):
            ret = reward[n, t] + discount[n, t] * ((1 - lam) * value[n, t + 1] + lam * ret)
            expected[n, t] = ret
    np.testing.assert_allclose(lambda_return(reward, discount, value, lam), expected, rtol=1e-5)
    # lam = 0 is one-step TD, lam = 1 the discounted Monte-Carlo return bootstrapped at the end.
    td = reward + discount * value[:, 1:]
    np.testing.assert_allclose(lambda_return(reward, discount, value, 0.0), td, rtol=1e-5)
    mc = value[:, 4]
    for t in reversed(range(4)):
        mc = reward[:, t] + discount[:, t] * mc
    np.testing.assert_allclose(lambda_return(reward, discount, value, 1.0)[:, 0], mc, rtol=1e-5)
    with pytest.raises(ValueError, match="lambda_return shapes"):
        lambda_return(reward, discount, value[:, :4], lam)


def test_percentile_return_normalizer():
    returns = jnp.arange(101, dtype=jnp.float32).reshape(1, 101)  # P5 = 5, P95 = 95
    cfg = DreamerConfig.tiny(retnorm_rate=1.0)
    state = retnorm_update(retnorm_init(), returns, cfg)
    np.testing.assert_allclose([state["low"], state["high"]], [5.0, 95.0], rtol=1e-6)
    assert float(retnorm_scale(state, cfg)) == pytest.approx(90.0)
    # The EMA moves by `rate` toward the batch percentiles; small ranges are not blown up (scale >= 1).
    cfg = DreamerConfig.tiny()
    state = retnorm_update(retnorm_init(), returns, cfg)
    np.testing.assert_allclose([state["low"], state["high"]], [0.05, 0.95], rtol=1e-5)
    assert float(retnorm_scale(state, cfg)) == 1.0
    for _ in range(2000):
        state = {"low": 0.99 * state["low"] + 0.05, "high": 0.99 * state["high"] + 0.95}
    assert float(retnorm_scale(state, cfg)) == 90.0 or float(retnorm_scale(state, cfg)) == pytest.approx(90.0, 1e-3)


def test_kl_free_bits_and_stop_gradients():
    cfg = DreamerConfig.tiny()
    rssm = RSSM(cfg, A, 10, rngs=nnx.Rngs(0))
    size = cfg.size()
    rng = np.random.default_rng(1)
    post = jnp.asarray(rng.normal(size=(2, size.stoch, size.classes)) * 3, jnp.float32)
    prior = jnp.asarray(rng.normal(size=(2, size.stoch, size.classes)) * 3, jnp.float32)

    @jax.jit
    def compute(post, prior):
        dyn_grads = jax.grad(lambda a, b: rssm.kl_losses(a, b)[0].sum(), argnums=(0, 1))(post, prior)
        rep_grads = jax.grad(lambda a, b: rssm.kl_losses(a, b)[1].sum(), argnums=(0, 1))(post, prior)
        same = rssm.kl_losses(post, post)[0]
        same_grad = jax.grad(lambda x: rssm.kl_losses(x, x)[0].sum())(post)
        return rssm.kl_losses(post, prior), dyn_grads, rep_grads, same, same_grad

    (dyn, rep), (g_dyn_post, g_dyn_prior), (g_rep_post, g_rep_prior), same, same_grad = compute(post, prior)
    p, q = D.unimix_logits(post, cfg.unimix), D.unimix_logits(prior, cfg.unimix)
    manual = np.sum(np.exp(p) * (p - q), (-2, -1))
    assert (manual > cfg.free_nats).all()
    np.testing.assert_allclose(dyn, manual, rtol=1e-5)
    np.testing.assert_allclose(rep, manual, rtol=1e-5)
    # Identical distributions: KL 0, clipped up to the free nats, and no gradient flows.
    np.testing.assert_allclose(same, cfg.free_nats)
    assert float(jnp.abs(same_grad).sum()) == 0.0
    # dyn trains only the prior, rep only the posterior.
    assert float(jnp.abs(g_dyn_post).sum()) == 0.0 and float(jnp.abs(g_dyn_prior).sum()) > 0
    assert float(jnp.abs(g_rep_post).sum()) > 0 and float(jnp.abs(g_rep_prior).sum()) == 0.0


def test_observe_and_imagine_shapes():
    cfg = DreamerConfig.tiny(compute_dtype="bfloat16")
    size = cfg.size()
    rssm = RSSM(cfg, A, 10, rngs=nnx.Rngs(0))
    latent = rssm.initial(B)
    embeds = jnp.zeros((B, T, 10))
    acts = jnp.zeros((B, T, A))
    first = jnp.zeros((B, T), bool)
    last, outs = jax.eval_shape(rssm.observe, latent, acts, embeds, first, jax.random.key(0))
    assert outs["deter"].shape == (B, T, size.deter) and outs["deter"].dtype == jnp.float32
    assert outs["stoch"].shape == (B, T, size.stoch, size.classes)
    assert outs["post"].shape == outs["prior"].shape == (B, T, size.stoch, size.classes)
    assert last["deter"].shape == (B, size.deter)
    policy = lambda lat, key: jnp.tanh(feature(lat)[:, :A])  # noqa: E731
    latents, actions = jax.eval_shape(lambda l, k: rssm.imagine(l, policy, 5, k), latent, jax.random.key(0))
    assert latents["deter"].shape == (B, 6, size.deter)
    assert latents["stoch"].shape == (B, 6, size.stoch, size.classes)
    assert actions.shape == (B, 6, A)


def test_observe_continues_exactly_from_a_carried_latent():
    """Replay context: observing a sequence in two pieces, carrying the latent, equals observing it whole."""
    cfg = DreamerConfig.tiny()
    rssm = RSSM(cfg, A, 10, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    embeds = jnp.asarray(rng.normal(size=(B, 2 * T, 10)), jnp.float32)
    acts = jnp.asarray(rng.uniform(-1, 1, (B, 2 * T, A)), jnp.float32)
    first = jnp.zeros((B, 2 * T), bool).at[:, 0].set(True).at[1, T + 2].set(True)
    keys = jax.random.split(jax.random.key(3), 2 * T)

    @jax.jit
    def run(embeds, acts, first):
        _, whole = rssm.observe(rssm.initial(B), acts, embeds, first, keys)
        last, head = rssm.observe(rssm.initial(B), acts[:, :T], embeds[:, :T], first[:, :T], keys[:T])
        _, tail = rssm.observe(last, acts[:, T:], embeds[:, T:], first[:, T:], keys[T:])
        return whole, head, tail

    whole, head, tail = run(embeds, acts, first)
    for name in ("deter", "stoch", "post"):
        joined = jnp.concatenate([head[name], tail[name]], 1)
        np.testing.assert_allclose(joined, whole[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_every_preset_builds_with_the_expected_sizes():
    for preset, expected in (("medium", (1024, 640, 32, 32, 3, 48)), ("small", (512, 512, 32, 32, 2, 32))):
        size = DreamerConfig(preset=preset).size()
        assert (size.deter, size.units, size.stoch, size.classes, size.layers, size.cnn_depth) == expected
        agent = Agent(DreamerConfig(preset=preset), {"image": ((64, 64, 3), np.uint8)}, 5)
        params = nnx.split(nnx.eval_shape(lambda: agent._builders(0)["wm"]()))[1]
        assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) > 1_000_000
    assert DreamerConfig.tiny(deter=128).size().deter == 128
    assert DreamerConfig().discount == pytest.approx(1 - 1 / 333)


def test_bf16_laprop_layernorm_and_discrete_variants_trace():
    """Every option combination traces to a train step whose new state matches the old one leaf by leaf."""
    rng = np.random.default_rng(0)
    for kwargs, discrete in ((dict(compute_dtype="bfloat16", optimizer="laprop", warmup=10, norm="layer"), False),
                             (dict(critic_slow_target=True, critic_slow_every=2), True)):
        agent = Agent(DreamerConfig.tiny(**kwargs), {"image": ((8, 8, 3), np.uint8)}, 3, discrete)
        state = jax.eval_shape(agent.init, jax.random.key(0))
        batch = {"image": np.zeros((2, 4, 8, 8, 3), np.uint8), "action": np.zeros((2, 4, 3), np.float32),
                 "reward": rng.normal(size=(2, 4)).astype(np.float32), "is_first": np.zeros((2, 4), bool),
                 "is_terminal": np.zeros((2, 4), bool)}
        new_state, metrics = jax.eval_shape(agent.train, state, batch, jax.random.key(1))
        same = jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype, new_state, state)
        assert all(jax.tree.leaves(same)), kwargs
        assert all(m.dtype == jnp.float32 and m.shape == () for m in metrics.values())
        videos = jax.eval_shape(agent.report, state, batch, jax.random.key(2))
        assert videos["openloop/image"].shape == (2, 4, 8, 24, 3) and videos["openloop/image"].dtype == jnp.uint8
    with pytest.raises(ValueError, match="'image' has shape"):
        jax.eval_shape(agent.train, state, dict(batch, image=np.zeros((2, 4, 16, 16, 3), np.uint8)), jax.random.key(1))
    with pytest.raises(ValueError, match="missing key 'reward'"):
        jax.eval_shape(agent.train, state, {k: v for k, v in batch.items() if k != "reward"}, jax.random.key(1))


def test_config_section_and_validation():
    cfg = load(None, ["--dreamer.preset", "medium", "--dreamer.optimizer", "laprop"])
    assert isinstance(cfg, Config) and cfg.dreamer.size().deter == 1024 and cfg.dreamer.optimizer == "laprop"
    with pytest.raises(ConfigError, match="divisible"):
        load(None, ["--dreamer.deter", "100"])
    with pytest.raises(ConfigError, match="dreamer.optimizer"):
        load(None, ["--dreamer.optimizer", "sgd"])
    with pytest.raises(ValueError, match="not registered"):
        Agent(DreamerConfig.tiny(reward_scales={"extr": 1.0, "semantic": 0.1}), OBS_SPACE, A)
    with pytest.raises(ValueError, match="observation key"):
        Agent(DreamerConfig.tiny(encoder_keys=("nope",)), OBS_SPACE, A)


def test_optimizers_descend_and_agc_clips():
    target = jnp.array([3.0, -2.0])
    loss = lambda p: jnp.sum((p["w"] - target) ** 2)  # noqa: E731
    for name in ("adam", "laprop"):
        cfg = DreamerConfig.tiny(optimizer=name, model_lr=0.05)
        opt = make_optimizer(cfg, "model")
        params = {"w": jnp.zeros(2)}
        state = opt.init(params)
        update = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p))
        for _ in range(100):
            updates, state = update(params, state)
            params = optax.apply_updates(params, updates)
        assert float(loss(params)) < 0.1 * float(loss({"w": jnp.zeros(2)})), name
    clip = adaptive_grad_clip(0.3, 1e-3)
    params = {"w": jnp.array([3.0, 4.0])}  # |p| = 5, so |update| <= 1.5
    out, _ = clip.update({"w": jnp.array([30.0, 40.0])}, clip.init(params), params)
    assert float(jnp.linalg.norm(out["w"])) == pytest.approx(1.5, rel=1e-5)
    out, _ = clip.update({"w": jnp.array([0.3, 0.4])}, clip.init(params), params)
    np.testing.assert_allclose(out["w"], [0.3, 0.4])


# ------------------------------------------------------------------------------------------------------------------
# The agent, with every extension point in use.


class Ensemble(nnx.Module):
    """A stand-in for the Plan2Explore ensemble: K linear predictors of the next stoch from (deter, action)."""

    def __init__(self, in_size, out_size, members, rngs):
        self.members = nnx.Dict({f"m{i}": Linear(in_size, out_size, rngs=rngs) for i in range(members)})

    def __call__(self, x):
        return jnp.stack([self.members[f"m{i}"](x) for i in range(len(self.members))])


def _ensemble_loss(module, outs, batch, key):
    inputs = jnp.concatenate([outs["deter"][:, :-1], outs["action"][:, :-1]], -1)
    target = outs["stoch"][:, 1:].reshape(outs["stoch"].shape[0], T - 1, -1)
    pred = module(inputs)
    loss = jnp.mean(jnp.sum((pred - target[None]) ** 2, -1))
    return loss, {"pred_std": pred.std(0).mean()}


def _disagreement(traj, wm, extras):
    inputs = jnp.concatenate([traj["deter"], traj["action"]], -1)
    std = extras["ensemble"](inputs).std(0).mean(-1)  # [N, H + 1], reward of the state the action leads to
    return jnp.concatenate([jnp.zeros_like(std[:, :1]), std[:, :-1]], 1)


def _semantic(traj, wm, extras):
    return wm.heads["semantic"](traj["feat"]).mean()


class Switch:
    """A stateful weighting like SENSEI's go/explore switch: per-state weights from a threshold on a return."""

    def init(self):
        return {"threshold": jnp.zeros(())}

    def __call__(self, state, ctx):
        high = ctx.returns["semantic"] >= state["threshold"]
        weights = {"extr": jnp.full_like(high, 0.5, jnp.float32), "semantic": jnp.where(high, 0.1, 1.0),
                   "disag": jnp.where(high, 1.0, 0.0)}
        state = {"threshold": 0.99 * state["threshold"] + 0.01 * jnp.percentile(ctx.returns["semantic"], 75)}
        return weights, state, {"explore_frac": high.mean()}


@pytest.fixture(scope="module")
def setup():
    cfg = DreamerConfig.tiny(model_lr=1e-3, reward_scales={"extr": 1.0, "semantic": 0.1, "disag": 1.0},
                             grad_heads=("decoder", "cont"))
    size = cfg.size()
    agent = Agent(
        cfg, OBS_SPACE, A,
        reward_sources={"semantic": RewardSource(_semantic), "disag": RewardSource(_disagreement)},
        weighting=Switch(),
        extra_heads={"semantic": HeadSpec(target="semantic_reward")},
        extra_modules={"ensemble": ExtraModule(
            make=lambda rngs: Ensemble(size.deter + A, size.stoch_size, 3, rngs),
            loss=_ensemble_loss, optimizer=optax.adam(1e-3))},
    )
    state = agent.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (B, T, 16, 16, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(B, T, 4)).astype(np.float32),
        "action": rng.uniform(-1, 1, (B, T, A)).astype(np.float32),
        "reward": rng.normal(size=(B, T)).astype(np.float32),
        "semantic_reward": rng.uniform(0, 1, (B, T)).astype(np.float32),
        "is_first": np.eye(B, T, dtype=bool),
        "is_terminal": np.zeros((B, T), bool),
        "context": {"deter": rng.normal(size=(B, size.deter)).astype(np.float32),
                    "stoch": rng.integers(0, size.classes, (B, size.stoch)).astype(np.int32),
                    "action": rng.uniform(-1, 1, (B, A)).astype(np.float32)},
    }
    train = jax.jit(lambda s, b, k: agent.train(s, b, k, return_latents=True))
    policy = jax.jit(agent.policy, static_argnames="mode")
    return agent, state, batch, train, policy


def test_train_steps_reduce_world_model_loss(setup):
    agent, state, batch, train, _ = setup
    size = agent.cfg.size()
    first_state, metrics, latents = train(state, batch, jax.random.key(1))
    for name in ("image", "proprio", "reward", "cont", "kl_dyn", "kl_rep", "semantic", "model", "actor",
                 "critic_extr", "critic_semantic", "critic_disag", "ensemble"):
        assert f"loss/{name}" in metrics and float(metrics[f"finite/{name}"]) == 1.0, name
    assert all(v.shape == () for v in metrics.values())
    assert "weighting/explore_frac" in metrics and "ensemble/pred_std" in metrics
    assert first_nonfinite_loss(metrics) is None
    assert latents["deter"].shape == (B, T, size.deter) and latents["stoch"].shape == (B, T, size.stoch)
    assert latents["stoch"].dtype == jnp.int32
    losses = [float(metrics["loss/model"])]
    s = first_state
    for i in range(14):
        s, metrics, _ = train(s, batch, jax.random.key(2 + i))
        losses.append(float(metrics["loss/model"]))
    assert int(s["step"]) == 15
    assert np.mean(losses[-3:]) < 0.9 * losses[0], losses
    # Every parameter group moved; the slow critic follows the online one but lags behind it.
    for group in ("wm", "actor", "critics", "extras"):
        moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state["params"][group], s["params"][group])
        assert max(jax.tree.leaves(moved)) > 0, group
    online = jax.tree.leaves(s["params"]["critics"]["extr"])
    slow = jax.tree.leaves(s["slow_critics"]["extr"])
    start = jax.tree.leaves(state["params"]["critics"]["extr"])
    gap = sum(float(jnp.abs(o - w).sum()) for o, w in zip(online, slow))
    travel = sum(float(jnp.abs(o - w).sum()) for o, w in zip(online, start))
    assert 0 < gap < travel
    assert float(s["weighting"]["threshold"]) != 0.0
    assert float(s["retnorm"]["extr"]["high"]) != 0.0


def test_nan_in_a_loss_is_reported_by_name(setup):
    agent, state, batch, train, _ = setup
    bad = dict(batch, semantic_reward=np.full((B, T), np.nan, np.float32))
    _, metrics, _ = train(state, bad, jax.random.key(0))
    assert float(metrics["finite/semantic"]) == 0.0
    assert first_nonfinite_loss(metrics) == "semantic"
    assert first_nonfinite_loss({"loss/a": np.float32(1.0), "loss/b": np.float32(np.inf)}) == "b"


def test_policy_outputs_in_range(setup):
    agent, state, batch, _, policy = setup
    carry = agent.initial_carry(B)
    obs = {"image": batch["image"][:, 0], "proprio": batch["proprio"][:, 0], "is_first": np.ones(B, bool)}
    for step in range(3):
        action, carry = policy(state, carry, obs, jax.random.key(step), mode="explore")
        assert action.shape == (B, A) and action.dtype == jnp.float32
        assert float(jnp.abs(action).max()) <= 1.0
        obs = dict(obs, is_first=np.zeros(B, bool))
    assert carry["deter"].shape == (B, agent.cfg.size().deter)
    np.testing.assert_allclose(carry["stoch"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(carry["action"], action)
    assert float(jnp.abs(carry["deter"]).sum()) > 0


def test_discrete_policy_is_one_hot():
    cfg = DreamerConfig.tiny()
    agent = Agent(cfg, {"position": ((3,), np.float32)}, 4, discrete=True)
    state = agent.init(jax.random.key(1))
    obs = {"position": np.ones((5, 3), np.float32), "is_first": np.ones(5, bool)}
    action, _ = jax.jit(agent.policy, static_argnames="mode")(state, agent.initial_carry(5), obs, jax.random.key(0))
    np.testing.assert_array_equal(action.sum(-1), 1.0)
    assert set(np.unique(np.asarray(action))) <= {0.0, 1.0}
