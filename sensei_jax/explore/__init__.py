"""SENSEI on top of DreamerV3: the semantic reward, the Plan2Explore ensemble, the go/explore switch, the Explorer.

Modules: `config` (the `explore` section, `ExploreConfig`), `plan2explore` (the disagreement ensemble), `sensei`
(reward sources, the go/explore switch, `build_agent`), `explorer` (`Explorer`: exploration on the DreamerV3
`Trainer`, `load_reward_model`), `interactions` (`InteractionLog`), `transfer` (a task policy from an exploration
checkpoint: `transfer.transfer`). Names import lazily, so reading a config stays free of jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ExploreConfig": "sensei_jax.explore.config",
    "DisagreementEnsemble": "sensei_jax.explore.plan2explore",
    "GoExploreSwitch": "sensei_jax.explore.sensei",
    "build_agent": "sensei_jax.explore.sensei",
    "Explorer": "sensei_jax.explore.explorer",
    "load_reward_model": "sensei_jax.explore.explorer",
    "InteractionLog": "sensei_jax.explore.interactions",
    "find_exploration": "sensei_jax.explore.transfer",
})
