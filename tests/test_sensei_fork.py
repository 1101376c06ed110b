"""SENSEI's exploration against its reference code, at tiny size: the `Disag` reward's time alignment, heads that
must not shape the representation, and the fork settings and task heads of configs/robodesk_sensei.yaml.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sensei_jax import config as config_lib
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.world_model import WorldModel
from sensei_jax.envs.robodesk.tasks import TASKS
from sensei_jax.explore import plan2explore, sensei
from sensei_jax.explore.config import ExploreConfig

SENSEI_TASK_HEADS = ("open_slide", "open_slide_easy", "open_drawer", "open_drawer_medium", "open_drawer_easy",
                     "push_green", "stack", "upright_block_off_table", "flat_block_in_bin", "flat_block_in_shelf",
                     "lift_upright_block", "lift_ball")


def test_disagreement_alignment_against_a_hand_built_ensemble():
    """Member m predicts m * deter[0] in every latent dim, so the std over the 4 members at a state is
    |deter[0]| * std(0, 1, 2, 3), whatever the stoch and action."""
    members, horizon = 4, 3
    model = plan2explore.DisagreementEnsemble(2, 3, 1, members=members, layers=0, rngs=nnx.Rngs(0))
    kernel = np.zeros((members, 2 + 3 + 1, 3), np.float32)
    kernel[:, 0, :] = np.arange(members, dtype=np.float32)[:, None]
    model.out.kernel[...] = jnp.asarray(kernel)
    deter0 = np.array([[1.0, 2.0, 3.0, 4.0], [-2.0, 5.0, 0.5, 7.0]], np.float32)  # [N, H + 1]
    rng = np.random.default_rng(0)
    traj = {"deter": jnp.asarray(np.stack([deter0, rng.normal(size=deter0.shape)], -1), jnp.float32),
            "stoch": jnp.asarray(rng.normal(size=(2, horizon + 1, 3, 1)), jnp.float32),
            "action": jnp.asarray(rng.normal(size=(2, horizon + 1, 1)), jnp.float32)}
    std = np.abs(deter0) * np.std(np.arange(members))
    extras = {sensei.ENSEMBLE: model}
    for alignment, expected in (("incoming", std[:, :-1]), ("outgoing", std[:, 1:])):
        source = sensei.reward_sources(ExploreConfig(disagreement_alignment=alignment))["disagreement"]
        reward = np.asarray(source.fn(traj, None, extras))
        assert reward.shape == (2, horizon + 1)
        np.testing.assert_array_equal(reward[:, 0], 0.0)  # the start state is never a reward
        np.testing.assert_allclose(reward[:, 1:], expected, rtol=1e-5, err_msg=alignment)
    with pytest.raises(ValueError, match="disagreement_alignment"):
        sensei.disagreement_reward(traj, None, extras, alignment="sideways")


def test_semantic_task_and_reward_heads_do_not_shape_the_representation():
    """SENSEI's grad_heads [decoder, cont]: the semantic, task-success and reward losses give exactly zero gradient
    to the encoder and the RSSM, and a nonzero one to their own head; the reconstruction loss does reach both."""
    B, T, A = 2, 4, 2
    space = {"proprio": ((5,), np.float32), sensei.SEMANTIC_KEY: ((), np.float32),
             sensei.TASK_KEY.format("x"): ((), np.float32)}
    dreamer = DreamerConfig.tiny(grad_heads=("decoder", "cont"), norm="layer")
    explore = ExploreConfig(ensemble_size=2, ensemble_units=8, ensemble_layers=1, task_heads=("x",))
    model = WorldModel(dreamer, space, A, sensei.head_specs(explore, ("x",)), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    rng = np.random.default_rng(1)

    def randomize(head):  # zero-initialized outputs would block every gradient below them
        return {**head, "out": {**head["out"], "kernel": jnp.asarray(
            rng.normal(size=head["out"]["kernel"].shape) * 0.3, jnp.float32)}}

    params = {**params, "reward": randomize(params["reward"]),
              "heads": {k: randomize(v) for k, v in params["heads"].items()}}
    batch = {"proprio": rng.normal(size=(B, T, 5)).astype(np.float32),
             "action": rng.uniform(-1, 1, (B, T, A)).astype(np.float32),
             "reward": rng.normal(size=(B, T)).astype(np.float32) * 3,
             sensei.SEMANTIC_KEY: rng.normal(size=(B, T)).astype(np.float32) * 3,
             sensei.TASK_KEY.format("x"): (rng.uniform(size=(B, T)) > 0.5).astype(np.float32),
             "is_first": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool)}
    names = ("semantic", "task_x", "reward", "proprio")

    @jax.jit
    def gradients(params):
        def losses(p):
            wm = nnx.merge(graphdef, p)
            per = wm.loss(batch, wm.rssm.initial(B), jnp.zeros((B, A)), jax.random.key(2))[1][0]
            return jnp.stack([per[name].mean() for name in names])

        jacobian = jax.jacrev(losses)(params)  # every leaf [len(names), ...]
        return {name: jax.tree.map(lambda g, i=i: g[i], jacobian) for i, name in enumerate(names)}

    grads = gradients(params)
    norm = lambda tree: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))  # noqa: E731
    own = {"semantic": grads["semantic"]["heads"]["semantic"], "task_x": grads["task_x"]["heads"]["task_x"],
           "reward": grads["reward"]["reward"]}
    for name in ("semantic", "task_x", "reward"):
        assert norm(grads[name]["vector_encoder"]) == 0.0, name
        assert norm(grads[name]["rssm"]) == 0.0, name
        assert norm(own[name]) > 0.0, name
    assert norm(grads["proprio"]["vector_encoder"]) > 0.0 and norm(grads["proprio"]["rssm"]) > 0.0


@pytest.mark.parametrize("name", ["robodesk_sensei.yaml", "robodesk_sensei_tiny.yaml", "robodesk_p2x.yaml",
                                  "robodesk_motif.yaml"])
def test_paper_configs_set_the_forks_settings(name):
    cfg = config_lib.load(config_lib.CONFIG_DIR / name, [])
    d = cfg.dreamer
    assert (d.rssm_core, d.initial_state, d.prior_layers) == ("dense", "learned", 1)
    assert (d.actor_grad_cont, d.imag_weight, d.imag_cont, d.critic_optimizers) == \
        ("backprop", "discounted", "mode", "separate")
    assert cfg.train.replay_context == 0
    assert cfg.explore.disagreement_alignment == "outgoing"
    assert cfg.explore.task_heads == SENSEI_TASK_HEADS
    assert set(SENSEI_TASK_HEADS) <= set(TASKS)


def test_embedded_default_keeps_the_2024_forms():
    cfg = config_lib.load(None, [])
    d = cfg.dreamer
    assert (d.rssm_core, d.initial_state, d.prior_layers, d.actor_grad_cont, d.imag_weight, d.imag_cont,
            d.critic_optimizers) == ("block", "zeros", 2, "reinforce", "cont", "mean", "shared")
    assert cfg.train.replay_context == 1 and cfg.explore.disagreement_alignment == "incoming"
