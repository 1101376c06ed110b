"""Reward sources are data: a source registered in `sensei_jax.explore.sources` is weighted by `explore.weights`
like the built-in ones, and a tiny exploration optimizes it (its critic, its weight, its diagnostics); the
behaviours p2x and motif are weight presets, and bad weight tables are refused naming the key."""

import jax.numpy as jnp
import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax.dreamer.actor_critic import RewardSource
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.envs.toy import PointReach
from sensei_jax.explore import sources
from sensei_jax.explore.config import PRESETS, ExploreConfig
from sensei_jax.explore.explorer import Explorer
from sensei_jax.explore.sensei import GoExploreSwitch, build_agent
from sensei_jax.reward.config import RewardConfig
from sensei_jax.reward.model import RewardModel, RewardModelConfig, init_params

LATENT = "latent_energy"  # the test's fourth source
STEPS = 128
SCHEDULE = TrainConfig(batch_size=4, batch_length=8, train_ratio=32.0, replay_capacity=1024, train_start=64,
                       random_steps=64, collect_steps=32, log_every=STEPS, save_every=STEPS, progress=False)


def latent_energy(traj, wm, extras):
    """The mean square of the imagined deterministic state, [N, H + 1]: a term of the latent alone."""
    return jnp.square(traj["deter"].astype(jnp.float32)).mean(-1)


def latent_parts(explore, dreamer, action_size) -> sources.SourceParts:
    return sources.SourceParts(RewardSource(latent_energy))


@pytest.fixture
def latent_source():
    sources.register(sources.SourceSpec(LATENT, latent_parts))
    yield LATENT
    sources.unregister(LATENT)


def tiny(**kwargs) -> ExploreConfig:
    return ExploreConfig(steps=STEPS, ensemble_size=2, ensemble_units=16, ensemble_layers=1, task_heads=(), **kwargs)


def explore(cfg: ExploreConfig, out_dir, reward_model=None) -> dict:
    dreamer = DreamerConfig.tiny(imag_horizon=4, encoder_keys=("position",), decoder_keys=("position",))
    explorer = Explorer(cfg, dreamer, PointReach(image_size=16, episode_length=32), 4, reward_model=reward_model,
                        seed=1, train=SCHEDULE)
    return explorer.run(out_dir, log=lambda _: None)


def test_a_registered_fourth_source_is_optimized_beside_sensei_s_two(latent_source, tmp_path):
    weights = {"go": {"semantic": 1.0, "disagreement": 0.0, LATENT: 0.5},
               "explore": {LATENT: 0.5, "disagreement": 1.0, "semantic": 0.1}}
    cfg = tiny(behaviour="sensei_latent", weights=weights)
    assert cfg.sources == ("semantic", "disagreement", LATENT)  # registry order, not the order written
    config = RewardModelConfig.from_config(RewardConfig(image_size=64, channels=(4, 8, 8), hidden=16))
    summary = explore(cfg, tmp_path, RewardModel(config, init_params(config, 0)))
    final = summary["final_metrics"]
    assert summary["train_steps"] > 0 and summary["behaviour"] == "sensei_latent"
    # Its own critic, trained on its reward; its weight 0.5 in both modes over the explore weights' sum 1.6.
    assert np.isfinite(final[f"loss/critic_{LATENT}"]) and final[f"rew/{LATENT}"] > 0
    np.testing.assert_allclose(final[f"weight/{LATENT}"], 0.5 / 1.6, rtol=1e-6)
    assert 0.1 / 1.6 - 1e-6 <= final["weight/semantic"] <= 1.0 / 1.6 + 1e-6
    # The switch reports what each mode achieves on it, as on the disagreement.
    assert {f"weighting/sensei/{LATENT}_return_go", f"weighting/sensei/{LATENT}_return_explore"} <= set(final)


def test_a_run_of_the_fourth_source_alone_needs_no_reward_model(latent_source, tmp_path):
    cfg = tiny(behaviour="latent_only", weights={"explore": {LATENT: 2.0}})
    assert not cfg.needs_reward_model and cfg.modes == ("explore",)
    final = explore(cfg, tmp_path)["final_metrics"]
    critics = sorted(k for k in final if k.startswith("loss/critic_"))
    assert critics == [f"loss/critic_{LATENT}"], critics
    assert final[f"weight/{LATENT}"] == 1.0 and final["weighting/sensei/explore_fraction"] == 1.0


def test_p2x_and_motif_are_presets_of_one_mode():
    for behaviour, sources_, mode in (("p2x", ("disagreement",), "explore"), ("motif", ("semantic",), "go")):
        cfg = ExploreConfig(behaviour=behaviour)
        assert (cfg.sources, cfg.modes, cfg.resolved_weights) == (sources_, (mode,), PRESETS[behaviour])
        # The same table given as weights is the same exploration under another label.
        same = ExploreConfig(behaviour="mine", weights=PRESETS[behaviour])
        assert GoExploreSwitch(same).table == GoExploreSwitch(cfg).table
    sensei = ExploreConfig()
    assert sensei.modes == ("go", "explore") and GoExploreSwitch(sensei).denominator == pytest.approx(1.1)
    # The baseline's preset replaces weights the sensei run set.
    custom = ExploreConfig(weights={"go": {"semantic": 1.0, "disagreement": 0.05},
                                    "explore": {"semantic": 0.25, "disagreement": 1.0}})
    assert custom.with_preset("p2x").resolved_weights == PRESETS["p2x"]


@pytest.mark.parametrize(("weights", "message"), [
    ({"go": {"rnd": 1.0}}, r"explore.weights.go.rnd: no reward source 'rnd' is registered \(registered: semantic"),
    ({"stay": {"semantic": 1.0}}, r"maps 'go' and/or 'explore'"),
    ({"go": {"semantic": 1.0}, "explore": {"disagreement": 1.0}}, "must list the same sources"),
    ({"go": {"disagreement": 0.0}, "explore": {"disagreement": 1.0}}, "'semantic' must be one of the sources"),
    ({"explore": {"disagreement": 0.0}}, "sum to no positive number"),
    ({"go": {}}, "names no reward source"),
])
def test_bad_weight_tables_name_the_key(weights, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load(None, {"explore": {"weights": weights}})


def test_behaviour_labels_and_moved_weight_keys():
    with pytest.raises(config_lib.ConfigError, match="names no weight preset"):
        config_lib.load(None, ["--explore.behaviour", "rnd"])
    with pytest.raises(config_lib.ConfigError, match="names the run's folder"):
        config_lib.load(None, {"explore": {"behaviour": "a/b", "weights": PRESETS["p2x"]}})
    for old, new in (("go_weights", "explore.weights.go"), ("explore_weights", "explore.weights.explore")):
        with pytest.raises(config_lib.ConfigError, match=rf"'explore.{old}' was removed: .*{new}"):
            config_lib.load(None, {"explore": {old: [1.0, 0.0]}})


def test_an_agent_needs_the_replay_keys_of_its_sources():
    with pytest.raises(ValueError, match=r"reward source 'semantic' .* needs the replay keys \['semantic_reward'\]"):
        build_agent(DreamerConfig.tiny(), ExploreConfig(behaviour="motif"), {"position": ((2,), np.float32)}, 2)
    with pytest.raises(ValueError, match="registered already"):
        sources.register(sources.SourceSpec("semantic", latent_parts))


def test_an_older_spec_s_weight_pairs_read_as_the_table():
    """spec.json of an exploration written before `explore.weights` stores (semantic, disagreement) pairs; a
    transfer reads them as the same table (SENSEI) or as the preset (p2x, motif)."""
    from sensei_jax import sections
    from sensei_jax.explore.config import upgrade_section

    old = {"behaviour": "sensei", "go_weights": [1.0, 0.1], "explore_weights": [0.3, 1.0], "steps": 8}
    cfg = sections.from_dict(ExploreConfig, upgrade_section(old), prefix="explore")
    assert cfg.resolved_weights == {"go": {"semantic": 1.0, "disagreement": 0.1},
                                    "explore": {"semantic": 0.3, "disagreement": 1.0}} and cfg.steps == 8
    for behaviour in ("p2x", "motif"):
        cfg = sections.from_dict(ExploreConfig, upgrade_section({**old, "behaviour": behaviour}), prefix="explore")
        assert cfg.weights is None and cfg.resolved_weights == PRESETS[behaviour]
    assert upgrade_section({"weights": None}) == {"weights": None}
